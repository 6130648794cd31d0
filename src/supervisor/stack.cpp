#include "supervisor/stack.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace loopfleet::supervisor {

std::vector<frame> parse_stack(const std::vector<std::string>& lines) {
  std::vector<frame> out;
  for (const auto& line : lines) {
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
    out.push_back(std::move(f));
  }
  return out;
}

std::string blocking_frame(const std::vector<frame>& frames) {
  // Frames up to the signal trampoline belong to the handler that printed the stack.
  std::size_t start = 0;
  for (std::size_t i = 0; i < frames.size(); ++i)
    if (frames[i].symbol.find("print_stack") != std::string::npos) start = i + 1;
  for (std::size_t i = start; i < frames.size(); ++i) {
    const frame& f = frames[i];
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
