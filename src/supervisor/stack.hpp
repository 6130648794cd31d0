// Reading the stack a blocked worker printed: demangled frames, and which one blocked the
// loop. Two dialects, one frame per line:
// - a native worker's glibc backtrace_symbols_fd: "/path/object(symbol+0xoffset) [0xaddress]";
// - a Python worker's faulthandler: "  File \"/path/app.py\", line 14 in block", innermost
//   first, under a "Stack (most recent call first):" header.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace loopfleet::supervisor {

struct frame {
  std::string object;  // the binary or shared library; the source file of a Python frame
  std::string symbol;  // demangled; empty when the object exports no name for it
  std::string text;    // for logs: "symbol (object)", or "function() at file:line"
  int line = 0;        // a Python frame's line number; 0 for native frames
};

std::vector<frame> parse_stack(const std::vector<std::string>& lines);

// The first frame that is the application's own code: past the signal handler that printed
// the stack, skipping shared libraries (libc's sleep, libstdc++) and std:: templates; for
// Python, skipping the standard library, loopfleet and the servers and frameworks it runs
// (uvicorn, aiohttp, starlette, fastapi, anyio). Empty if none is named.
std::string blocking_frame(const std::vector<frame>& frames);

// faulthandler's first line of a traceback, which opens a Python stack dump (it cannot print
// our markers: it writes from its own signal handler).
bool is_python_stack_header(std::string_view line);
// A line that continues a faulthandler traceback; any other line ends it.
bool is_python_stack_line(std::string_view line);

}  // namespace loopfleet::supervisor
