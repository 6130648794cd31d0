// A small typed command-line parser. Each layer registers its own flags into one flag_set,
// so `--help` lists them all and every error names the flag and the expected form.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loopfleet {

class flag_set {
 public:
  explicit flag_set(std::string program) : program_(std::move(program)) {}

  // "--name VALUE" or "--name=VALUE"; a later occurrence wins.
  void add_string(std::string name, std::string* out, std::string help);
  // May be given many times; each adds one value.
  void add_list(std::string name, std::vector<std::string>* out, std::string help);
  // Seconds, fractions allowed: "30", "0.5", "250ms", "2s" (also "5m", "2h", "1d").
  void add_duration(std::string name, std::chrono::milliseconds* out, std::string help);
  // Bytes with an optional k/m/g suffix (powers of 1024): "16k", "1m", "4096".
  void add_size(std::string name, std::size_t* out, std::string help);
  void add_int(std::string name, int* out, int min, int max, std::string help);
  // A switch without a value: "--name" sets it.
  void add_bool(std::string name, bool* out, std::string help);
  // A value the kinds above cannot type (an enum, "a number or auto"): `set` stores it or says
  // why not (" is not shared or reuseport", after the flag and the value).
  void add_parsed(std::string name, std::string help, std::function<std::optional<std::string>(std::string_view)> set);
  // The default --help shows for the flag added last, where its value does not say it (a 0
  // that means "auto", an empty list that means 127.0.0.1:8080).
  void show_default(std::string text);

  // Parses args (without the program name). Returns an error sentence, or nullopt.
  // "--help"/"-h" sets help_requested() and stops.
  std::optional<std::string> parse(std::span<const std::string_view> args);
  bool help_requested() const { return help_; }
  std::string usage() const;

 private:
  struct flag {
    std::string name, metavar, help, default_text;
    bool repeatable = false;
    // Stores the value or returns why it is invalid.
    std::function<std::optional<std::string>(std::string_view)> set;
  };
  void add(flag f);
  std::string program_;
  std::vector<flag> flags_;
  bool help_ = false;
};

// Parsers shared with config files and other front ends.
// Seconds by default: "30", "0.5", "2s", "250ms", "5m", "2h", "1d".
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
// What a bad duration is told, after the flag and the value: "is not a duration: give ...".
extern const char* const duration_form;
std::optional<std::size_t> parse_size(std::string_view text);
// "a,b" in one value of a list counts as two: --join a,b is --join a --join b.
void split_commas(std::vector<std::string>& list);

}  // namespace loopfleet

namespace loopfleet {
struct worker_options;
// Registers --listen, --backlog, --drain-timeout and --name (worker.cpp).
void add_worker_flags(flag_set& flags, worker_options& options);
}  // namespace loopfleet
