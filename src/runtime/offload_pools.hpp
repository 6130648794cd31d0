// What the two offload pools share with each other and with the worker's start-up, behind the
// public include/loopfleet/offload.hpp.
#pragma once

#include <loopfleet/offload.hpp>

#include <boost/asio/io_context.hpp>

namespace loopfleet::detail {

// The pool sizes, fixed at the first use of either pool: configure_offload, else the
// LOOPFLEET_OFFLOAD_* environment, else the CPUs available over LOOPFLEET_WORKERS.
offload_options frozen_offload_config();

// Forks the process-pool helpers now if any task is registered (the runtime does this before
// serving, so the first call does not wait for a fork).
void start_process_pool(boost::asio::io_context& loop);

}  // namespace loopfleet::detail
