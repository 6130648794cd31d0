// What the worker's start-up needs of the offload pools, kept out of the public
// include/loopfleet/offload.hpp (it would bring asio/io_context.hpp to every application).
#pragma once

#include <boost/asio/io_context.hpp>

namespace loopfleet::detail {

// Forks the process-pool helpers now if any task is registered (the runtime does this before
// serving, so the first call does not wait for a fork).
void start_process_pool(boost::asio::io_context& loop);

}  // namespace loopfleet::detail
