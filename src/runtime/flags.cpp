#include "runtime/flags.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace loopfleet {
namespace {

std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

std::string format_size(std::size_t n) {
  if (n && n % (1024 * 1024) == 0) return std::to_string(n / (1024 * 1024)) + "m";
  if (n && n % 1024 == 0) return std::to_string(n / 1024) + "k";
  return std::to_string(n);
}

}  // namespace

const char* const duration_form =
    "is not a duration: give seconds such as 30 or 0.5, milliseconds such as 250ms, or 5m, 2h, 1d";

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  double scale = 1000.0;  // plain numbers are seconds
  if (text.ends_with("ms")) {
    scale = 1.0;
    text.remove_suffix(2);
  } else if (!text.empty()) {
    // Minutes, hours and days for schedules ("every 1h"); "m" is never a size here.
    switch (text.back()) {
      case 's': scale = 1000.0; break;
      case 'm': scale = 60e3; break;
      case 'h': scale = 3600e3; break;
      case 'd': scale = 86400e3; break;
      default: scale = 0; break;
    }
    if (scale) text.remove_suffix(1);
    else scale = 1000.0;
  }
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
      value < 0 || value * scale > 1e12)
    return std::nullopt;
  return std::chrono::milliseconds(static_cast<long long>(std::llround(value * scale)));
}

std::optional<std::size_t> parse_size(std::string_view text) {
  std::size_t scale = 1;
  if (!text.empty()) {
    switch (text.back() | 0x20) {
      case 'k': scale = 1024; break;
      case 'm': scale = 1024 * 1024; break;
      case 'g': scale = 1024 * 1024 * 1024; break;
    }
    if (scale != 1) text.remove_suffix(1);
  }
  std::size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > (SIZE_MAX / scale))
    return std::nullopt;
  return value * scale;
}

void flag_set::add(flag f) { flags_.push_back(std::move(f)); }

void flag_set::add_string(std::string name, std::string* out, std::string help) {
  add({name, "TEXT", std::move(help), *out, false, [out](std::string_view v) -> std::optional<std::string> {
         *out = std::string(v);
         return std::nullopt;
       }});
}

void flag_set::add_list(std::string name, std::vector<std::string>* out, std::string help) {
  add({name, "VALUE", std::move(help), "", true, [out](std::string_view v) -> std::optional<std::string> {
         out->emplace_back(v);
         return std::nullopt;
       }});
}

void flag_set::add_duration(std::string name, std::chrono::milliseconds* out, std::string help) {
  add({name, "SECONDS", std::move(help), format_duration(*out), false,
       [out](std::string_view v) -> std::optional<std::string> {
         auto d = parse_duration(v);
         if (!d) return duration_form;
         *out = *d;
         return std::nullopt;
       }});
}

void flag_set::add_size(std::string name, std::size_t* out, std::string help) {
  add({name, "BYTES", std::move(help), format_size(*out), false,
       [out](std::string_view v) -> std::optional<std::string> {
         auto n = parse_size(v);
         if (!n || *n == 0) return "is not a size: give a positive number of bytes, optionally with k, m or g";
         *out = *n;
         return std::nullopt;
       }});
}

void flag_set::add_int(std::string name, int* out, int min, int max, std::string help) {
  add({name, "N", std::move(help), std::to_string(*out), false,
       [out, min, max](std::string_view v) -> std::optional<std::string> {
         int n = 0;
         auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
         if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < min || n > max)
           return "is not a whole number from " + std::to_string(min) + " to " + std::to_string(max);
         *out = n;
         return std::nullopt;
       }});
}

void flag_set::add_bool(std::string name, bool* out, std::string help) {
  add({name, "", std::move(help), "", false, [out](std::string_view) -> std::optional<std::string> {
         *out = true;
         return std::nullopt;
       }});
}

void flag_set::add_parsed(std::string name, std::string help,
                          std::function<std::optional<std::string>(std::string_view)> set) {
  add({name, "TEXT", std::move(help), "", false, std::move(set)});
}

void flag_set::show_default(std::string text) { flags_.back().default_text = std::move(text); }

std::optional<std::string> flag_set::parse(std::span<const std::string_view> args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return std::nullopt;
    }
    if (!arg.starts_with("--"))
      return "unexpected argument '" + std::string(arg) + "' (flags start with --; see " + program_ + " --help)";
    std::string_view name = arg, value;
    bool inline_value = false;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    const flag* f = nullptr;
    for (const auto& candidate : flags_)
      if (candidate.name == name) f = &candidate;
    if (!f) return "unknown flag " + std::string(name) + " (see " + program_ + " --help)";
    if (f->metavar.empty()) {  // a switch
      if (inline_value) return std::string(name) + " takes no value";
    } else if (!inline_value) {
      if (i + 1 >= args.size()) return std::string(name) + " needs a value: " + f->metavar;
      value = args[++i];
    }
    if (auto err = f->set(value)) return std::string(name) + " '" + std::string(value) + "' " + *err;
  }
  return std::nullopt;
}

std::string flag_set::usage() const {
  std::string out = "usage: " + program_ + " [flags]\n\nflags:\n";
  for (const auto& f : flags_) {
    std::string left = "  " + f.name + (f.metavar.empty() ? "" : " " + f.metavar);
    if (left.size() < 32) left.resize(32, ' ');
    out += left + " " + f.help;
    if (!f.default_text.empty()) out += " [default: " + f.default_text + "]";
    if (f.repeatable) out += " (repeatable)";
    out += '\n';
  }
  out += "  --help                         show this help\n";
  return out;
}

void split_commas(std::vector<std::string>& list) {
  std::vector<std::string> out;
  for (const auto& item : list) {
    std::string_view rest = item;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      if (auto part = rest.substr(0, comma); !part.empty()) out.emplace_back(part);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  list = std::move(out);
}

}  // namespace loopfleet
