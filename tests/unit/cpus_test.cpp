#include "supervisor/cpus.hpp"

#include <gtest/gtest.h>

#include <map>

using namespace loopfleet::supervisor;

TEST(CpuQuota, CgroupV2CpuMax) {
  EXPECT_FALSE(parse_cpu_max("max 100000\n"));
  EXPECT_DOUBLE_EQ(*parse_cpu_max("150000 100000\n"), 1.5);
  EXPECT_DOUBLE_EQ(*parse_cpu_max("50000 100000"), 0.5);
  EXPECT_FALSE(parse_cpu_max(""));
  EXPECT_FALSE(parse_cpu_max("garbage"));
  EXPECT_FALSE(parse_cpu_max("100000 0"));
}

TEST(CpuQuota, CgroupV1CfsQuota) {
  EXPECT_FALSE(parse_cfs_quota("-1\n", "100000\n"));
  EXPECT_DOUBLE_EQ(*parse_cfs_quota("100000\n", "100000\n"), 1.0);
  EXPECT_DOUBLE_EQ(*parse_cfs_quota("250000", "100000"), 2.5);
  EXPECT_FALSE(parse_cfs_quota("x", "100000"));
  EXPECT_FALSE(parse_cfs_quota("100000", "0"));
}

TEST(CpuQuota, OwnCgroupFromProcSelfCgroup) {
  std::string hybrid =
      "9:name=systemd:/\n4:memory:/m\n3:cpuset:/\n2:cpu,cpuacct:/docker/abc\n1:cpuacct:/\n0::/user.slice/x:y\n";
  EXPECT_EQ(*own_cgroup(hybrid, "cpu"), "/docker/abc");
  EXPECT_EQ(*own_cgroup(hybrid, ""), "/user.slice/x:y");  // a ':' in the path stays
  EXPECT_EQ(*own_cgroup(hybrid, "cpuset"), "/");
  EXPECT_FALSE(own_cgroup("0::/\n", "cpu"));
  EXPECT_FALSE(own_cgroup("1:cpu:/a\n", ""));
  // "cpuacct" alone is not "cpu".
  EXPECT_FALSE(own_cgroup("1:cpuacct:/a\n", "cpu"));
}

TEST(CpuQuota, MountsFromMountinfo) {
  std::string mountinfo =
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
      "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n"
      "41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
  auto v1 = find_cgroup_mount(mountinfo, "cpu");
  ASSERT_TRUE(v1);
  EXPECT_EQ(v1->root, "/docker/abc");
  EXPECT_EQ(v1->point, "/sys/fs/cgroup/cpu");
  auto v2 = find_cgroup_mount(mountinfo, "");
  ASSERT_TRUE(v2);
  EXPECT_EQ(v2->point, "/sys/fs/cgroup/uni fied");
  EXPECT_FALSE(find_cgroup_mount(mountinfo, "memory"));
}

namespace {
read_file_fn fake(std::map<std::string, std::string> files) {
  return [files](const std::string& path) -> std::optional<std::string> {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  };
}
}  // namespace

TEST(CpuQuota, TightestLimitOverAncestorsAndVersions) {
  auto read = fake({
      {"/proc/self/cgroup", "2:cpu:/outer/inner\n0::/svc\n"},
      {"/proc/self/mountinfo",
       "1 0 0:1 / /cg/cpu rw - cgroup cgroup rw,cpu\n2 0 0:2 / /cg/v2 rw - cgroup2 cgroup2 rw\n"},
      {"/cg/cpu/cpu.cfs_quota_us", "-1\n"},
      {"/cg/cpu/cpu.cfs_period_us", "100000\n"},
      {"/cg/cpu/outer/cpu.cfs_quota_us", "150000\n"},
      {"/cg/cpu/outer/cpu.cfs_period_us", "100000\n"},
      {"/cg/cpu/outer/inner/cpu.cfs_quota_us", "300000\n"},
      {"/cg/cpu/outer/inner/cpu.cfs_period_us", "100000\n"},
      {"/cg/v2/svc/cpu.max", "max 100000\n"},
  });
  auto q = find_cpu_quota(read);
  ASSERT_TRUE(q);
  EXPECT_DOUBLE_EQ(q->cpus, 1.5);  // the parent's limit is tighter than the process's own
  EXPECT_EQ(q->cgroup, "/outer");
  EXPECT_EQ(q->version, 1);

  auto v2 = find_cpu_quota(fake({
      {"/proc/self/cgroup", "0::/a/b\n"},
      {"/proc/self/mountinfo", "2 0 0:2 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"},
      {"/sys/fs/cgroup/a/b/cpu.max", "200000 100000\n"},
      {"/sys/fs/cgroup/a/cpu.max", "max 100000\n"},
  }));
  ASSERT_TRUE(v2);
  EXPECT_DOUBLE_EQ(v2->cpus, 2.0);
  EXPECT_EQ(v2->cgroup, "/a/b");
  EXPECT_EQ(v2->version, 2);
}

TEST(CpuQuota, ContainerWithoutCgroupNamespaceSeesItsCgroupAtTheMountPoint) {
  // Docker on cgroup v1: the mount's root is the container's cgroup.
  auto q = find_cpu_quota(fake({
      {"/proc/self/cgroup", "5:cpu,cpuacct:/docker/abc\n"},
      {"/proc/self/mountinfo", "7 1 0:5 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"},
      {"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n"},
      {"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"},
  }));
  ASSERT_TRUE(q);
  EXPECT_DOUBLE_EQ(q->cpus, 0.5);
  EXPECT_EQ(q->cgroup, "/docker/abc");
}

TEST(CpuQuota, ACgroupOutsideTheMountsRootIsNotLookedUp) {
  // "/docker/abcdef" is not under the mount's root "/docker/abc", though it starts with it.
  EXPECT_FALSE(find_cpu_quota(fake({
      {"/proc/self/cgroup", "5:cpu:/docker/abcdef\n"},
      {"/proc/self/mountinfo", "7 1 0:5 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n"},
      {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "50000\n"},
      {"/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"},
      {"/sys/fs/cgroup/cpuef/cpu.cfs_quota_us", "50000\n"},
      {"/sys/fs/cgroup/cpuef/cpu.cfs_period_us", "100000\n"},
  })));
}

TEST(CpuQuota, NoLimitAnywhere) {
  EXPECT_FALSE(find_cpu_quota(fake({})));
  EXPECT_FALSE(find_cpu_quota(fake({
      {"/proc/self/cgroup", "0::/\n"},
      {"/proc/self/mountinfo", "2 0 0:2 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"},
  })));
}

TEST(CpuQuota, WorkersRoundDownWithAtLeastOne) {
  EXPECT_EQ(auto_workers(8, std::nullopt), 8);
  EXPECT_EQ(auto_workers(8, 1.5), 1);
  EXPECT_EQ(auto_workers(8, 2.0), 2);
  EXPECT_EQ(auto_workers(8, 0.25), 1);
  EXPECT_EQ(auto_workers(2, 16.0), 2);  // the affinity mask still bounds it
}
