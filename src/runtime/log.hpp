// One-line log records on stderr: "2026-11-26T05:40:00.123Z info hello[1234] message".
// Each record is a single write(2), so lines from many workers sharing a pipe do not mix.
#pragma once

#include <string_view>

namespace loopfleet::log {

enum class level { debug, info, warn, error };

// The program name shown in every record; set once at start-up.
void set_name(std::string_view name);
void write(level lv, std::string_view message);

inline void info(std::string_view m) { write(level::info, m); }
inline void warn(std::string_view m) { write(level::warn, m); }
inline void error(std::string_view m) { write(level::error, m); }

}  // namespace loopfleet::log
