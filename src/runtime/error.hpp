#pragma once

#include <stdexcept>

namespace loopfleet {

// A problem the user must fix before the worker can start (bad flag, address in use...).
// Its message is one line that names the problem and the fix; run_worker prints it and
// exits with code 2, without a stack trace.
struct startup_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace loopfleet
