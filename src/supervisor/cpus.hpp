// How many workers `--workers auto` means: the CPUs this process may run on, or fewer when
// its cgroup has a CPU quota (a container given "1.5 CPUs" still shows every core of the
// host in its affinity mask). The parsing is pure: file texts in, numbers out.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace loopfleet::supervisor {

// cgroup v2 `cpu.max` ("max 100000" or "150000 100000"): CPUs allowed, or none for no limit.
std::optional<double> parse_cpu_max(std::string_view text);

// cgroup v1 `cpu.cfs_quota_us` (-1 = no limit) and `cpu.cfs_period_us`.
std::optional<double> parse_cfs_quota(std::string_view quota, std::string_view period);

// This process's cgroup path from /proc/self/cgroup: the v2 line ("0::/path") when
// `controller` is empty, else the v1 hierarchy that lists it ("4:cpu,cpuacct:/path").
std::optional<std::string> own_cgroup(std::string_view proc_self_cgroup, std::string_view controller);

// Where a cgroup hierarchy is mounted, from /proc/self/mountinfo: `root` is the cgroup path
// the mount shows at `point` (not "/" inside a container without a cgroup namespace).
struct cgroup_mount {
  std::string root;
  std::string point;
};
// The cgroup2 mount when `controller` is empty, else the v1 mount carrying that controller.
std::optional<cgroup_mount> find_cgroup_mount(std::string_view mountinfo, std::string_view controller);

struct cpu_quota {
  double cpus = 0;
  std::string cgroup;  // the cgroup whose limit it is (this one or an ancestor)
  int version = 0;     // 1 or 2
};

// The tightest CPU quota over this process's cgroup and its ancestors, in v2 and v1 (`cpu`),
// reading /proc/self/cgroup, /proc/self/mountinfo and the cgroup files through `read`
// (nullopt = no such file). None when nothing limits.
using read_file_fn = std::function<std::optional<std::string>(const std::string& path)>;
std::optional<cpu_quota> find_cpu_quota(const read_file_fn& read);

// Workers for `auto`: max(1, min(affinity CPUs, floor(quota))). Rounded down, as Go's
// automaxprocs does: a loop more than the quota pays for gets the whole group throttled for
// the rest of each period, tens of milliseconds in which no loop answers; half a CPU left
// unused costs throughput only.
int auto_workers(int affinity_cpus, std::optional<double> quota_cpus);

struct worker_count {
  int workers;
  std::string why;  // "auto: CPU quota 1.0 of cgroup /x", shown by `loopfleet status`
};
// `auto` on this machine, now: available_cpus() and find_cpu_quota() on the real files.
worker_count auto_worker_count();

}  // namespace loopfleet::supervisor
