#include "supervisor/cpus.hpp"

#include "supervisor/config.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace loopfleet::supervisor {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

std::optional<long long> whole_number(std::string_view s) {
  s = trim(s);
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

bool lists(std::string_view comma_list, std::string_view name) {
  for (auto item : split(comma_list, ','))
    if (item == name) return true;
  return false;
}

// mountinfo escapes blanks and backslashes in paths as \ooo (octal).
std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      auto digits = s.substr(i + 1, 3);
      if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>((digits[0] - '0') * 64 + (digits[1] - '0') * 8 + (digits[2] - '0'));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::string cpus_text(double cpus) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", cpus);
  std::string s = b;
  while (s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();  // 1.50 -> 1.5, 1.00 -> 1.0
  return s;
}

}  // namespace

std::optional<double> parse_cpu_max(std::string_view text) {
  auto fields = split(trim(text), ' ');
  if (fields.size() != 2 || fields[0] == "max") return std::nullopt;
  auto quota = whole_number(fields[0]), period = whole_number(fields[1]);
  if (!quota || !period || *quota <= 0 || *period <= 0) return std::nullopt;
  return static_cast<double>(*quota) / static_cast<double>(*period);
}

std::optional<double> parse_cfs_quota(std::string_view quota, std::string_view period) {
  auto q = whole_number(quota), p = whole_number(period);
  if (!q || !p || *q <= 0 || *p <= 0) return std::nullopt;  // -1: no limit
  return static_cast<double>(*q) / static_cast<double>(*p);
}

std::optional<std::string> own_cgroup(std::string_view proc_self_cgroup, std::string_view controller) {
  for (auto line : split(proc_self_cgroup, '\n')) {
    // "ID:CONTROLLERS:PATH"; the path itself may contain ':'.
    auto first = line.find(':');
    if (first == std::string_view::npos) continue;
    auto second = line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    auto id = line.substr(0, first), controllers = line.substr(first + 1, second - first - 1);
    bool match = controller.empty() ? id == "0" && controllers.empty() : lists(controllers, controller);
    if (match) return std::string(line.substr(second + 1));
  }
  return std::nullopt;
}

std::optional<cgroup_mount> find_cgroup_mount(std::string_view mountinfo, std::string_view controller) {
  for (auto line : split(mountinfo, '\n')) {
    // "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS"
    auto fields = split(line, ' ');
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 4) continue;
    std::string_view type = dash[1], super = dash[3];
    bool match = controller.empty() ? type == "cgroup2" : type == "cgroup" && lists(super, controller);
    if (match) return cgroup_mount{unescape(fields[3]), unescape(fields[4])};
  }
  return std::nullopt;
}

std::optional<cpu_quota> find_cpu_quota(const read_file_fn& read) {
  auto cgroups = read("/proc/self/cgroup");
  auto mounts = read("/proc/self/mountinfo");
  if (!cgroups || !mounts) return std::nullopt;
  std::optional<cpu_quota> tightest;
  for (int version : {2, 1}) {
    std::string_view controller = version == 2 ? "" : "cpu";
    auto path = own_cgroup(*cgroups, controller);
    auto mount = find_cgroup_mount(*mounts, controller);
    if (!path || !mount) continue;
    // Outside the mount's root the hierarchy shows nothing of ours (another namespace).
    bool under_root = mount->root == "/" || *path == mount->root || path->starts_with(mount->root + "/");
    if (!under_root) continue;
    // Every ancestor up to the mount's root may limit: a container's quota usually sits on
    // the container's cgroup while the process runs in a child of it.
    std::string level = *path;
    for (;;) {
      std::string rel = mount->root == "/" ? level : level.substr(mount->root.size());
      std::string dir = mount->point + (rel == "/" ? "" : rel);
      std::optional<double> cpus;
      if (version == 2) {
        if (auto max = read(dir + "/cpu.max")) cpus = parse_cpu_max(*max);
      } else {
        auto quota = read(dir + "/cpu.cfs_quota_us"), period = read(dir + "/cpu.cfs_period_us");
        if (quota && period) cpus = parse_cfs_quota(*quota, *period);
      }
      if (cpus && (!tightest || *cpus < tightest->cpus)) tightest = cpu_quota{*cpus, level, version};
      if (level.size() <= mount->root.size() || level == "/") break;
      auto slash = level.rfind('/');
      level = slash == 0 ? "/" : level.substr(0, slash);
    }
  }
  return tightest;
}

int auto_workers(int affinity_cpus, std::optional<double> quota_cpus) {
  int n = affinity_cpus;
  if (quota_cpus) n = std::min(n, static_cast<int>(std::floor(*quota_cpus)));
  return std::max(1, n);
}

worker_count auto_worker_count() {
  int affinity = available_cpus();
  auto quota = find_cpu_quota([](const std::string& path) -> std::optional<std::string> {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  });
  int n = auto_workers(affinity, quota ? std::optional(quota->cpus) : std::nullopt);
  std::string cpus = std::to_string(affinity) + (affinity == 1 ? " CPU" : " CPUs") + " in the affinity mask";
  if (!quota) return {n, "auto: " + cpus};
  std::string limit =
      "CPU quota " + cpus_text(quota->cpus) + " of cgroup " + quota->cgroup + (quota->version == 1 ? " (v1)" : " (v2)");
  if (n < affinity) return {n, "auto: " + limit + ", below the " + cpus};
  return {n, "auto: " + cpus + " (" + limit + " is no tighter)"};
}

}  // namespace loopfleet::supervisor
