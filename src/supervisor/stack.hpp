// Reading the stack a blocked worker printed (glibc's backtrace_symbols_fd lines, one frame
// each: "/path/object(symbol+0xoffset) [0xaddress]"): demangled frames, and which one
// blocked the loop.
#pragma once

#include <string>
#include <vector>

namespace loopfleet::supervisor {

struct frame {
  std::string object;  // the binary or shared library
  std::string symbol;  // demangled; empty when the object exports no name for it
  std::string text;    // "symbol (object)" for logs
};

std::vector<frame> parse_stack(const std::vector<std::string>& lines);

// The first frame that is the application's own code: past the signal handler that printed
// the stack, skipping shared libraries (libc's sleep, libstdc++) and std:: templates.
// Empty if none is named.
std::string blocking_frame(const std::vector<frame>& frames);

}  // namespace loopfleet::supervisor
