// Schedules: names, specs, the firing policy and the stored form (schedule.hpp).
#include "cluster/schedule.hpp"

#include "runtime/flags.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace loopfleet::cluster {

std::optional<std::string> check_name(std::string_view what, std::string_view name) {
  if (name.empty()) return std::string(what) + " name is empty";
  if (name.size() > 128) return std::string(what) + " name '" + std::string(name.substr(0, 32)) + "...' is longer than 128";
  for (char ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_')
      return std::string(what) + " name '" + std::string(name) +
             "' may use letters, digits, '-' and '_' only (it names a NATS subject)";
  return std::nullopt;
}

std::optional<std::string> parse_every(std::string_view text, std::int64_t& every_ms) {
  auto d = parse_duration(text);
  if (!d) return "'" + std::string(text) + "' " + duration_form;
  if (*d < min_every)
    return "'" + std::string(text) + "' is shorter than the shortest period, " +
           std::to_string(min_every.count() / 1000) + "s (each tick is a replicated publish on every node)";
  every_ms = d->count();
  return std::nullopt;
}

namespace {

// "YYYY-MM-DDTHH:MM:SS[.fff]Z" (or "+00:00" for Z) to Unix ms.
std::optional<std::int64_t> parse_utc(std::string_view text) {
  std::string t(text);
  if (t.size() > 6 && t.ends_with("+00:00")) t.replace(t.size() - 6, 6, "Z");
  if (t.empty() || (t.back() != 'Z' && t.back() != 'z')) return std::nullopt;
  t.pop_back();
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, used = 0;
  if (std::sscanf(t.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &used) != 6) return std::nullopt;
  std::int64_t ms = 0;
  std::string_view frac = std::string_view(t).substr(static_cast<std::size_t>(used));
  if (!frac.empty()) {
    if (frac.front() != '.' || frac.size() < 2) return std::nullopt;
    frac.remove_prefix(1);
    int scale = 100;
    for (char ch : frac) {
      if (!std::isdigit(static_cast<unsigned char>(ch))) return std::nullopt;
      ms += (ch - '0') * scale;
      scale /= 10;
    }
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  std::time_t when = ::timegm(&tm);
  // timegm normalizes 2026-02-30 to March: a date that does not come back unchanged is no date.
  std::tm back{};
  if (when == -1 || !::gmtime_r(&when, &back) || back.tm_year != y - 1900 || back.tm_mon != mo - 1 ||
      back.tm_mday != d || back.tm_hour != h || back.tm_min != mi || back.tm_sec != s)
    return std::nullopt;
  return static_cast<std::int64_t>(when) * 1000 + ms;
}

}  // namespace

std::optional<std::string> parse_at(std::string_view text, std::int64_t now_ms, std::int64_t& at_ms) {
  if (text.starts_with("+")) {
    auto d = parse_duration(text.substr(1));
    if (!d) return "'" + std::string(text) + "': '" + std::string(text.substr(1)) + "' " + duration_form;
    if (d->count() == 0) return "'" + std::string(text) + "' is now: give a time in the future, e.g. +2s";
    at_ms = now_ms + d->count();
    return std::nullopt;
  }
  auto t = parse_utc(text);
  if (!t)
    return "'" + std::string(text) +
           "' is not a time: give RFC 3339 in UTC, e.g. 2026-12-02T01:00:00Z, or +DURATION, e.g. +90s";
  if (*t <= now_ms)
    return "'" + std::string(text) + "' is " + std::to_string((now_ms - *t) / 1000) +
           " s in the past: give a time in the future";
  at_ms = *t;
  return std::nullopt;
}

std::optional<std::string> parse_schedule_entry(std::string_view entry, schedule& out) {
  auto word = [](std::string_view& rest) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    auto end = rest.find(' ');
    std::string_view w = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    return w;
  };
  std::string quoted = "schedule '" + std::string(entry) + "': ";
  std::string_view rest = entry;
  std::string_view name = word(rest), kind = word(rest), every = word(rest);
  if (kind != "every" || every.empty())
    return quoted + "give NAME every DURATION [PAYLOAD], e.g. \"report every 1h daily\"";
  if (auto err = check_name("the schedule", name)) return quoted + *err;
  schedule s;
  s.name = s.job = std::string(name);
  if (auto err = parse_every(every, s.every_ms)) return quoted + *err;
  s.payload = std::string(rest);
  out = std::move(s);
  return std::nullopt;
}

std::string utc_text(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = static_cast<int>(ms - static_cast<std::int64_t>(secs) * 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char out[48];
  if (frac)
    std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  else
    std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
  return out;
}

namespace {

std::string duration_text(std::int64_t ms) {
  for (auto [unit, size] : {std::pair{"d", 86400000LL}, {"h", 3600000LL}, {"m", 60000LL}, {"s", 1000LL}})
    if (ms % size == 0) return std::to_string(ms / size) + unit;
  return std::to_string(ms) + "ms";
}

// The smallest multiple of `every` greater than `after`.
std::int64_t tick_after(std::int64_t every, std::int64_t after) {
  std::int64_t floor = after / every - (after % every != 0 && after < 0 ? 1 : 0);
  return (floor + 1) * every;
}

// The smallest multiple of `every` at or after `from`.
std::int64_t tick_from(std::int64_t every, std::int64_t from) { return tick_after(every, from - 1); }

// The ticks can fire after this (exclusive): the schedule's creation or its last tick fired.
std::int64_t fired_up_to(const schedule& s, std::optional<std::int64_t> last_fired) {
  return std::max(s.created_ms, last_fired.value_or(s.created_ms));
}

}  // namespace

std::string spec_text(const schedule& s) {
  if (s.every_ms > 0) return "every " + duration_text(s.every_ms);
  return "at " + utc_text(s.at_ms);
}

std::string tick_id(std::string_view name, std::int64_t tick_ms) {
  return "schedule:" + std::string(name) + "@" + std::to_string(tick_ms);
}

std::vector<std::int64_t> due_ticks(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                                    std::chrono::milliseconds window, std::size_t limit) {
  std::vector<std::int64_t> out;
  std::int64_t after = fired_up_to(s, last_fired);
  std::int64_t oldest = now_ms - window.count();
  if (s.every_ms > 0) {
    std::int64_t t = std::max(tick_after(s.every_ms, after), tick_from(s.every_ms, oldest));
    for (; t <= now_ms && out.size() < limit; t += s.every_ms) out.push_back(t);
  } else if (s.at_ms > after && s.at_ms >= oldest && s.at_ms <= now_ms && limit > 0) {
    out.push_back(s.at_ms);
  }
  return out;
}

std::optional<std::int64_t> next_tick(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                                      std::chrono::milliseconds window) {
  std::int64_t after = fired_up_to(s, last_fired);
  std::int64_t oldest = now_ms - window.count();
  if (s.every_ms > 0) return std::max(tick_after(s.every_ms, after), tick_from(s.every_ms, oldest));
  if (s.at_ms > after && s.at_ms >= oldest) return s.at_ms;
  return std::nullopt;
}

std::int64_t missed_ticks(const schedule& s, std::optional<std::int64_t> last_fired, std::int64_t now_ms,
                          std::chrono::milliseconds window) {
  std::int64_t after = fired_up_to(s, last_fired);
  std::int64_t oldest = now_ms - window.count();  // ticks before this are past catching up
  if (s.every_ms > 0) {
    std::int64_t first = tick_after(s.every_ms, after);
    std::int64_t first_kept = tick_from(s.every_ms, oldest);
    return first < first_kept ? (first_kept - first) / s.every_ms : 0;
  }
  return s.at_ms > after && s.at_ms < oldest ? 1 : 0;
}

bool should_move(bool stored, std::int64_t tick_ms, std::int64_t now_ms) {
  return stored || now_ms - tick_ms <= move_duplicates_within.count();
}

bool too_old_to_move(std::int64_t tick_ms, std::int64_t now_ms) { return now_ms - tick_ms > move_within.count(); }

bool same_schedule(const schedule& a, const schedule& b) {
  return a.name == b.name && a.job == b.job && a.payload == b.payload && a.every_ms == b.every_ms &&
         a.at_ms == b.at_ms && a.max_attempts == b.max_attempts && a.time_limit_ms == b.time_limit_ms;
}

std::string to_json(const schedule& s) {
  boost::json::object o{{"name", s.name},
                        {"job", s.job},
                        {"payload", s.payload},
                        {"created_ms", s.created_ms},
                        {"max_attempts", s.max_attempts},
                        {"time_limit_ms", s.time_limit_ms},
                        {"source", s.source}};
  if (s.every_ms > 0) o["every_ms"] = s.every_ms;
  else o["at_ms"] = s.at_ms;
  return boost::json::serialize(o);
}

std::optional<schedule> schedule_from_json(std::string_view text) {
  boost::json::parse_options po;
  po.allow_invalid_utf8 = true;  // a payload is bytes, as given
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec, {}, po);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  auto text_of = [&o](const char* key) -> std::optional<std::string> {
    const auto* f = o.if_contains(key);
    if (!f || !f->is_string()) return std::nullopt;
    return std::string(f->as_string());
  };
  auto number_of = [&o](const char* key) -> std::int64_t {
    const auto* f = o.if_contains(key);
    return f && f->is_int64() ? f->as_int64() : f && f->is_uint64() ? static_cast<std::int64_t>(f->as_uint64()) : 0;
  };
  schedule s;
  auto name = text_of("name"), job = text_of("job"), payload = text_of("payload");
  if (!name || !job || !payload || check_name("", *name) || check_name("", *job)) return std::nullopt;
  s.name = *name;
  s.job = *job;
  s.payload = *payload;
  s.source = text_of("source").value_or("");
  s.every_ms = number_of("every_ms");
  s.at_ms = number_of("at_ms");
  s.created_ms = number_of("created_ms");
  s.max_attempts = static_cast<int>(std::clamp<std::int64_t>(number_of("max_attempts"), 1, 1000));
  s.time_limit_ms = number_of("time_limit_ms") > 0 ? number_of("time_limit_ms") : 30000;
  if ((s.every_ms > 0) == (s.at_ms > 0) || (s.every_ms > 0 && s.every_ms < min_every.count())) return std::nullopt;
  return s;
}

}  // namespace loopfleet::cluster
