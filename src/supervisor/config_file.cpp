// `loopfleet run --config FILE`: a TOML file read by the same table as the flags
// (run_settings), apart from config.cpp because toml++ is the heaviest header we compile and
// only this needs it. A key the table does not know is an error that lists the known ones.
#include "supervisor/config.hpp"

#include "runtime/flags.hpp"

#include <cmath>
#include <cstdint>

#include "supervisor/toml.hpp"

namespace loopfleet::supervisor {
namespace {

// A whole number from an integer, or from a float that holds one (128.0). toml++ 3.3.0's
// value<int64_t>() converts any float without a range check, which is undefined for 1e44
// (found by tests/fuzz/config_fuzz.cpp), so floats are checked here.
std::optional<std::int64_t> whole_number(const toml::node& node) {
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) {
    double v = f->get();
    if (std::fabs(v) < 0x1p62 && v == std::trunc(v)) return static_cast<std::int64_t>(v);
  }
  return std::nullopt;
}

// Reads one value into the member its setting names; errors start with `where` and the key.
struct value_reader {
  const toml::node& node;
  config& into;
  const std::string& key;
  const std::string& where;
  const setting<config>& s;

  std::optional<std::string> want(std::string_view what) const { return where + key + " must be " + std::string(what); }

  std::optional<std::string> operator()(std::string config::*m) const {
    auto text = node.value<std::string>();
    if (!text) return want("a string");
    into.*m = *text;
    return std::nullopt;
  }
  std::optional<std::string> operator()(std::vector<std::string> config::*m) const {
    auto& out = into.*m;
    out.clear();
    if (auto text = node.value<std::string>()) {
      out.push_back(*text);
      return std::nullopt;
    }
    const toml::array* a = node.as_array();
    if (!a) return want("a string or an array of strings");
    for (const auto& item : *a) {
      auto text = item.value<std::string>();
      if (!text) return want("an array of strings");
      out.push_back(*text);
    }
    return std::nullopt;
  }
  std::optional<std::string> operator()(std::chrono::milliseconds config::*m) const {
    // At most 1e12 ms, the bound parse_duration puts on flags: converting a larger double
    // (1e300, inf) to an integer is undefined (found by tests/fuzz/config_fuzz.cpp).
    if (auto v = node.value<double>(); v && *v >= 0 && *v * 1000 <= 1e12) {
      into.*m = std::chrono::milliseconds(static_cast<long long>(*v * 1000));
      return std::nullopt;
    }
    if (auto text = node.value<std::string>())
      if (auto d = parse_duration(*text)) {
        into.*m = *d;
        return std::nullopt;
      }
    return want("a duration in seconds (e.g. 30 or 0.5)");
  }
  std::optional<std::string> operator()(std::size_t config::*m) const {
    if (auto v = whole_number(node); v && *v > 0) {
      into.*m = static_cast<std::size_t>(*v);
      return std::nullopt;
    }
    if (auto text = node.value<std::string>())
      if (auto n = parse_size(*text); n && *n > 0) {
        into.*m = *n;
        return std::nullopt;
      }
    return want("a size in bytes (e.g. 4096 or \"16k\")");
  }
  std::optional<std::string> operator()(int config::*m) const {
    auto v = whole_number(node);
    if (!v || *v < s.range.min || *v > s.range.max)
      return want("a whole number from " + std::to_string(s.range.min) + " to " + std::to_string(s.range.max));
    into.*m = static_cast<int>(*v);
    return std::nullopt;
  }
  std::optional<std::string> operator()(bool config::*m) const {
    auto b = node.value<bool>();
    if (!b) return want("true or false");
    into.*m = *b;
    return std::nullopt;
  }
  std::optional<std::string> operator()(const setting<config>::parsed& p) const {
    std::string text;
    if (auto n = p.numbers ? whole_number(node) : std::nullopt) text = std::to_string(*n);
    else if (auto t = node.value<std::string>()) text = *t;
    else return want(p.file_form);
    if (auto err = p.parse(text, into)) return where + key + " '" + text + "' " + *err;
    return std::nullopt;
  }
};

const setting<config>* find_key(std::string_view key) {
  for (const auto& s : run_settings())
    if (s.scope != setting_scope::flag_only && file_key(s.name) == key) return &s;
  return nullptr;
}

std::string known_keys() {
  std::string out;
  for (const auto& s : run_settings())
    if (s.scope != setting_scope::flag_only) out += (out.empty() ? "" : ", ") + file_key(s.name);
  return out;
}

}  // namespace

std::optional<std::string> load_config_file(const std::string& path, config& c) {
  auto result = toml::parse_file(path);
  if (!result) {
    const auto& e = result.error();
    if (!e.source().begin) return "cannot read config file " + path + ": " + std::string(e.description());
    return path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
  }
  for (const auto& [key, node] : result.table()) {
    std::string k(key.str());
    std::string where = path + ":" + std::to_string(node.source().begin.line) + ": ";
    const setting<config>* s = find_key(k);
    if (!s) return where + "unknown key '" + k + "' (known: " + known_keys() + ")";
    if (auto err = std::visit(value_reader{node, c, k, where, *s}, s->where)) return err;
  }
  return std::nullopt;
}

}  // namespace loopfleet::supervisor
