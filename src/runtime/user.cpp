#include "runtime/user.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace loopfleet {
namespace {

std::optional<unsigned long> number(std::string_view s) {
  unsigned long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > 0xfffffffeUL) return std::nullopt;
  return v;
}

// getpw*_r/getgr*_r want a caller's buffer; ERANGE means a bigger one.
template <typename Entry, typename Lookup>
bool look_up(Lookup lookup, Entry& entry, std::vector<char>& buf) {
  buf.resize(1024);
  for (;;) {
    Entry* found = nullptr;
    int rc = lookup(&entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    return rc == 0 && found;
  }
}

}  // namespace

std::optional<std::string> resolve_user(std::string_view spec, run_as& out) {
  out = run_as{};
  out.spec = std::string(spec);
  std::string quoted = "--user '" + out.spec + "'";
  auto colon = spec.find(':');
  std::string user(spec.substr(0, colon));
  std::optional<std::string> group;
  if (colon != std::string_view::npos) group = std::string(spec.substr(colon + 1));
  if (user.empty() || (group && group->empty()))
    return quoted + ": give USER, USER:GROUP or UID:GID, e.g. --user nobody or --user 65534:65534";

  passwd pw{};
  std::vector<char> buf;
  bool known = false;
  if (auto uid = number(user)) {
    out.uid = static_cast<uid_t>(*uid);
    known = look_up([&](passwd* e, char* b, std::size_t n, passwd** r) { return ::getpwuid_r(out.uid, e, b, n, r); },
                    pw, buf);
  } else {
    known = look_up(
        [&](passwd* e, char* b, std::size_t n, passwd** r) { return ::getpwnam_r(user.c_str(), e, b, n, r); }, pw, buf);
    if (!known) return quoted + ": no such user (create it, or use a numeric uid:gid)";
    out.uid = pw.pw_uid;
  }
  if (known) out.name = pw.pw_name;

  if (group) {
    if (auto gid = number(*group)) {
      out.gid = static_cast<gid_t>(*gid);
    } else {
      ::group gr{};
      std::vector<char> gbuf;
      if (!look_up(
              [&](::group* e, char* b, std::size_t n, ::group** r) { return ::getgrnam_r(group->c_str(), e, b, n, r); },
              gr, gbuf))
        return quoted + ": no such group '" + *group + "' (create it, or use a numeric gid)";
      out.gid = gr.gr_gid;
    }
    return std::nullopt;  // that group only: no supplementary groups
  }
  if (!known)
    return quoted + ": uid " + user +
           " has no entry in the user database, so its group is unknown: give one, e.g. --user " + user + ":" + user;
  out.gid = pw.pw_gid;
  // The user's groups as the group database lists them. getgrouplist includes the primary
  // group, which the gid grants anyway: leaving it out, a user with no other groups has an
  // empty supplementary list, as /proc/PID/status shows for a login of that user.
  std::vector<gid_t> listed(16);
  for (;;) {
    int got = static_cast<int>(listed.size());
    if (::getgrouplist(pw.pw_name, out.gid, listed.data(), &got) >= 0) {
      listed.resize(got);
      break;
    }
    if (listed.size() > 65536) return quoted + ": cannot list its groups (too many)";
    listed.resize(std::max<std::size_t>(got, listed.size() * 2));
  }
  for (gid_t g : listed)
    if (g != out.gid) out.groups.push_back(g);
  return std::nullopt;
}

bool become_user(const run_as& who) {
  return ::setgroups(who.groups.size(), who.groups.data()) == 0 && ::setgid(who.gid) == 0 && ::setuid(who.uid) == 0;
}

}  // namespace loopfleet
