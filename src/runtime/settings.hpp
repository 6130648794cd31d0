// Each setting declared once. A table row names a setting, says which member of an options
// struct holds it, its kind and range, the default --help shows and its help line; the flags,
// --help and (for `loopfleet run`) the TOML keys and the unknown-key error are all made from
// the table. Written three or four times (field, flag, key, list of known keys), a setting was
// sooner or later added to one place and forgotten in another, and its range drifted apart.
// After userver's static-config schema, which validates a component's options and rejects
// unknown keys from one declaration. The default value itself stays in the struct's member
// initializer: a default-constructed struct is what every caller and test starts from.
#pragma once

#include "runtime/flags.hpp"

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace loopfleet {

// An int setting's bounds, both included.
struct int_range {
  int min = 0;
  int max = 0;
};

enum class setting_scope { both, flag_only, file_only };

template <class T>
struct setting {
  // A value no plain kind types (an enum, "a number or auto"): `parse` stores it or returns
  // why not, as the words after the value ("is not shared or reuseport").
  struct parsed {
    std::optional<std::string> (*parse)(std::string_view text, T& into) = nullptr;
    std::string_view file_form = "a string";  // what a file is told the value must be
    bool numbers = false;                     // a file may give a whole number (workers = 4)
  };
  // The kind is the member's type: text, a list of texts, a duration, a size in bytes, an
  // int in `range`, a switch, or parsed.
  using member = std::variant<std::string T::*, std::vector<std::string> T::*, std::chrono::milliseconds T::*,
                              std::size_t T::*, int T::*, bool T::*, parsed>;

  std::string_view name;  // "ready-delay": the flag --ready-delay and the file key ready_delay
  member where;
  int_range range{};
  std::string_view shown_default{};  // for --help where the value does not say it (0 = auto)
  setting_scope scope = setting_scope::both;
  std::string_view help;
};

// "ready-delay" -> "ready_delay": TOML keys are conventionally snake_case.
inline std::string file_key(std::string_view name) {
  std::string key(name);
  for (char& ch : key)
    if (ch == '-') ch = '_';
  return key;
}

// Registers the table's flags, bound to the members of `into`.
template <class T>
void add_settings(flag_set& flags, T& into, std::span<const setting<T>> table) {
  for (const auto& s : table) {
    if (s.scope == setting_scope::file_only) continue;
    std::string flag = "--" + std::string(s.name);
    std::string help(s.help);
    struct adder {
      flag_set& flags;
      T& into;
      const setting<T>& s;
      std::string& flag;
      std::string& help;
      void operator()(std::string T::*m) { flags.add_string(flag, &(into.*m), help); }
      void operator()(std::vector<std::string> T::*m) { flags.add_list(flag, &(into.*m), help); }
      void operator()(std::chrono::milliseconds T::*m) { flags.add_duration(flag, &(into.*m), help); }
      void operator()(std::size_t T::*m) { flags.add_size(flag, &(into.*m), help); }
      void operator()(int T::*m) { flags.add_int(flag, &(into.*m), s.range.min, s.range.max, help); }
      void operator()(bool T::*m) { flags.add_bool(flag, &(into.*m), help); }
      void operator()(const typename setting<T>::parsed& p) {
        flags.add_parsed(flag, help,
                         [parse = p.parse, target = &into](std::string_view v) { return parse(v, *target); });
      }
    };
    std::visit(adder{flags, into, s, flag, help}, s.where);
    if (!s.shown_default.empty()) flags.show_default(std::string(s.shown_default));
  }
}

// For a parsed setting that is one of a few words: stores the value of `text`, or says
// "is not shared or reuseport".
template <class E>
std::optional<std::string> one_of(std::string_view text, E& out,
                                  std::initializer_list<std::pair<std::string_view, E>> words) {
  std::string names;
  std::size_t left = words.size();
  for (const auto& [word, value] : words) {
    if (text == word) {
      out = value;
      return std::nullopt;
    }
    names += std::string(word) + (--left > 1 ? ", " : left == 1 ? " or " : "");
  }
  return "is not " + names;
}

}  // namespace loopfleet
