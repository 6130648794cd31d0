#include "runtime/private_dir.hpp"
#include "runtime/user.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

using namespace loopfleet;

namespace {
run_as user(uid_t uid, gid_t gid = 100) {
  run_as u;
  u.uid = uid;
  u.gid = gid;
  u.groups = {gid};
  u.name = "u" + std::to_string(uid);
  return u;
}
path_facts dir(uid_t uid, mode_t mode, gid_t gid = 0) {
  path_facts f;
  f.kind = path_facts::directory;
  f.uid = uid;
  f.gid = gid;
  f.mode = mode;
  return f;
}
std::string problem(const path_facts& f, uid_t want = 1000) {
  return private_dir_problem("runtime directory", "/tmp/loopfleet-1000", f, user(want), "FIX").value_or("");
}
}  // namespace

TEST(PrivateDir, OwnedAndNotWritableByOthersIsFine) {
  EXPECT_EQ(problem(dir(1000, 0700)), "");
  EXPECT_EQ(problem(dir(1000, 0755)), "");  // readable is not a takeover
}

TEST(PrivateDir, AnotherOwnerIsRefusedWithTheFix) {
  auto p = dir(1001, 0700);
  p.owner = "mallory";
  std::string e = problem(p);
  EXPECT_NE(e.find("/tmp/loopfleet-1000 is owned by mallory (uid 1001), mode 0700, not by u1000 (uid 1000)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("FIX"), std::string::npos);
  EXPECT_EQ(e.find('\n'), std::string::npos);
}

TEST(PrivateDir, GroupOrOtherWritableIsRefused) {
  EXPECT_NE(problem(dir(1000, 0777)).find("is mode 0777: others may write into it; chmod 700"), std::string::npos);
  EXPECT_NE(problem(dir(1000, 0770)).find("mode 0770"), std::string::npos);
}

TEST(PrivateDir, SymlinkOrFileIsRefused) {
  path_facts link;
  link.kind = path_facts::symlink;
  link.uid = 1000;
  EXPECT_NE(problem(link).find("is a symbolic link"), std::string::npos);
  path_facts file = dir(1000, 0600);
  file.kind = path_facts::other;
  EXPECT_NE(problem(file).find("is not a directory"), std::string::npos);
}

TEST(PrivateDir, AncestorsMayBelongToRootOrUsAndBeStickyIfWritable) {
  auto check = [](const path_facts& f) {
    return ancestor_problem("data directory", "/x/y", "/x", f, user(65534), 0).value_or("");
  };
  EXPECT_EQ(check(dir(0, 0755)), "");
  EXPECT_EQ(check(dir(0, 01777)), "");  // /tmp
  EXPECT_EQ(check(dir(65534, 0700)), "");
  EXPECT_NE(check(dir(0, 0777)).find("without the sticky bit"), std::string::npos);
  EXPECT_NE(check(dir(1234, 0755)).find("who could replace /x/y"), std::string::npos);
}

TEST(PrivateDir, SearchPermissionByOwnerGroupOrOthers) {
  run_as nobody = user(65534, 65534);
  EXPECT_FALSE(can_search(dir(0, 0700), nobody));
  EXPECT_TRUE(can_search(dir(0, 0711), nobody));
  EXPECT_TRUE(can_search(dir(0, 0710, 65534), nobody));
  EXPECT_FALSE(can_search(dir(0, 0701, 65534), nobody));  // a member gets the group bits, not other's
  EXPECT_TRUE(can_search(dir(65534, 0700), nobody));
  EXPECT_TRUE(can_search(dir(1, 0700), user(0)));
}

TEST(RunAs, NamesNumbersAndErrors) {
  run_as who;
  ASSERT_FALSE(resolve_user("nobody", who));
  EXPECT_EQ(who.uid, 65534u);
  EXPECT_EQ(who.name, "nobody");
  // The user's groups from the database: none besides its own, nothing of ours.
  EXPECT_EQ(who.gid, 65534u);
  EXPECT_TRUE(who.groups.empty());
  ASSERT_FALSE(resolve_user("65534:65534", who));
  EXPECT_EQ(who.gid, 65534u);
  EXPECT_TRUE(who.groups.empty());
  ASSERT_FALSE(resolve_user("nobody:root", who));
  EXPECT_EQ(who.gid, 0u);
  EXPECT_TRUE(who.groups.empty());

  EXPECT_EQ(*resolve_user("nosuch-loopfleet", who),
            "--user 'nosuch-loopfleet': no such user (create it, or use a numeric uid:gid)");
  EXPECT_NE(resolve_user("nobody:nosuch-loopfleet", who)->find("no such group 'nosuch-loopfleet'"), std::string::npos);
  EXPECT_NE(resolve_user("4000000", who)->find("give one, e.g. --user 4000000:4000000"), std::string::npos);
  EXPECT_NE(resolve_user("nobody:", who)->find("give USER, USER:GROUP or UID:GID"), std::string::npos);
}
