#include "supervisor/stack.hpp"

#include <cxxabi.h>

#include <array>
#include <cstdlib>
#include <memory>

namespace loopfleet::supervisor {
namespace {

constexpr std::string_view python_frame_prefix = "  File \"";

// `  File "/srv/app.py", line 14 in block` -> {"/srv/app.py", "block", 14}
bool parse_python_frame(std::string_view line, frame& f) {
  if (!line.starts_with(python_frame_prefix)) return false;
  line.remove_prefix(python_frame_prefix.size());
  auto quote = line.rfind("\", line ");
  if (quote == std::string_view::npos) return false;
  f.object = std::string(line.substr(0, quote));
  std::string_view rest = line.substr(quote + 8);
  auto in = rest.find(" in ");
  f.line = std::atoi(std::string(rest.substr(0, in)).c_str());
  f.symbol = in == std::string_view::npos ? "" : std::string(rest.substr(in + 4));
  f.text = (f.symbol.empty() ? "??" : f.symbol) + "() at " + f.object + ":" + std::to_string(f.line);
  return true;
}

frame parse_native_frame(const std::string& line) {
  frame f;
  auto open = line.find('(');
  auto close = line.find(')', open == std::string::npos ? 0 : open);
  f.object = line.substr(0, open == std::string::npos ? line.find(' ') : open);
  if (open != std::string::npos && close != std::string::npos) {
    std::string inside = line.substr(open + 1, close - open - 1);
    std::string name = inside.substr(0, inside.find('+'));
    if (!name.empty()) {
      int status = 0;
      std::unique_ptr<char, decltype(&std::free)> demangled(
          abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status), std::free);
      f.symbol = status == 0 && demangled ? demangled.get() : name;
    }
  }
  f.text = (f.symbol.empty() ? "??" : f.symbol) + " (" + f.object + ")";
  return f;
}

// Python code that is not the application's: the standard library, and the packages that
// sit between the loop and the app's handler.
bool python_library(std::string_view file) {
  if (file.empty() || file.front() == '<') return true;  // <frozen runpy>, <string>
  static constexpr std::array<std::string_view, 12> runners = {"loopfleet", "uvicorn", "aiohttp", "starlette",
                                                               "fastapi",   "anyio",   "h11",     "httptools",
                                                               "uvloop",    "click",   "asgiref", "yarl"};
  for (std::string_view tree : {std::string_view("-packages/"), std::string_view("/python/")}) {
    auto at = file.find(tree);
    if (at == std::string_view::npos) continue;
    std::string_view top = file.substr(at + tree.size());
    top = top.substr(0, top.find('/'));
    for (auto r : runners)
      if (top == r) return true;
  }
  // /usr/lib/python3.11/asyncio/...: the standard library, unless under site- or dist-packages.
  return file.find("/lib/python3") != std::string_view::npos && file.find("-packages/") == std::string_view::npos;
}

std::string base_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

}  // namespace

bool is_python_stack_header(std::string_view line) {
  return line == "Stack (most recent call first):" ||
         (line.starts_with("Current thread 0x") && line.ends_with("(most recent call first):"));
}

bool is_python_stack_line(std::string_view line) {
  return line.starts_with(python_frame_prefix) || line == "  <no Python frame>" || line == "  ...";
}

std::vector<frame> parse_stack(const std::vector<std::string>& lines) {
  std::vector<frame> out;
  for (const auto& line : lines) {
    frame f;
    if (parse_python_frame(line, f))
      out.push_back(std::move(f));
    else if (!is_python_stack_header(line) && !is_python_stack_line(line))
      out.push_back(parse_native_frame(line));
  }
  return out;
}

std::string blocking_frame(const std::vector<frame>& frames) {
  for (const frame& f : frames)
    if (f.line > 0 && !python_library(f.object))
      return f.symbol + "() at " + base_name(f.object) + ":" + std::to_string(f.line);
  // Frames up to the signal trampoline belong to the handler that printed the stack.
  std::size_t start = 0;
  for (std::size_t i = 0; i < frames.size(); ++i)
    if (frames[i].symbol.find("print_stack") != std::string::npos) start = i + 1;
  for (std::size_t i = start; i < frames.size(); ++i) {
    const frame& f = frames[i];
    if (f.line > 0) continue;
    bool library = f.object.find(".so") != std::string::npos;
    // The function's name is before '('; a template's demangled form starts with its return type.
    std::string_view name = std::string_view(f.symbol).substr(0, f.symbol.find('('));
    bool runtime = name.empty() || name.starts_with("std::") || name.find(" std::") != std::string_view::npos ||
                   name.starts_with("__");
    if (!library && !runtime) return f.symbol;
  }
  return "";
}

}  // namespace loopfleet::supervisor
