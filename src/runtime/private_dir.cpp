#include "runtime/private_dir.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace loopfleet {
namespace {

std::string octal(mode_t mode) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(mode & 07777));
  return b;
}

std::string who(uid_t uid, const std::string& name) {
  return name.empty() ? "uid " + std::to_string(uid) : name + " (uid " + std::to_string(uid) + ")";
}

std::string user_name(uid_t uid) {
  passwd pw{}, *found = nullptr;
  char buf[4096];
  return ::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found ? pw.pw_name : "";
}

path_facts facts_of(const std::string& path, bool follow) {
  path_facts f;
  struct stat st {};
  if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) return f;
  f.kind = S_ISLNK(st.st_mode) ? path_facts::symlink : S_ISDIR(st.st_mode) ? path_facts::directory : path_facts::other;
  f.uid = st.st_uid;
  f.gid = st.st_gid;
  f.mode = st.st_mode & 07777;
  f.owner = user_name(st.st_uid);
  return f;
}

// "/a/b/c" -> "/", "/a", "/a/b" (relative paths start from ".").
std::vector<std::string> ancestors(const std::string& path) {
  std::vector<std::string> out;
  if (path.starts_with("/"))
    out.push_back("/");
  else
    out.push_back(".");
  for (std::size_t at = 1; at < path.size(); ++at)
    if (path[at] == '/' && path[at - 1] != '/') out.push_back(path.substr(0, at));
  return out;
}

std::string trimmed(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

std::string runtime_dir() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) return std::string(xdg) + "/loopfleet";
  if (::getuid() == 0) return "/run/loopfleet";
  return "/tmp/loopfleet-" + std::to_string(::getuid());
}

std::string default_control_path(const std::string& name) { return runtime_dir() + "/" + name + ".sock"; }

void make_private_dirs(const std::string& path) {
  for (std::size_t at = 1; at <= path.size(); ++at)
    if (at == path.size() || path[at] == '/') ::mkdir(path.substr(0, at).c_str(), 0700);
}

std::optional<std::string> private_dir_problem(std::string_view what, const std::string& path, const path_facts& f,
                                               const run_as& want, std::string_view fix_owner) {
  std::string it = std::string(what) + " " + path;
  switch (f.kind) {
    case path_facts::missing:
      return it + " does not exist and could not be created (check the permissions of its parent)";
    case path_facts::symlink:
      return it + " is a symbolic link, which is refused (whoever made it chooses where it points): remove it (rm " +
             path + ")";
    case path_facts::other:
      return it + " is not a directory: remove it (rm " + path + ")";
    case path_facts::directory:
      break;
  }
  if (f.uid != want.uid)
    return it + " is owned by " + who(f.uid, f.owner) + ", mode " + octal(f.mode) + ", not by " +
           who(want.uid, want.name) + ": another user could take it over; " + std::string(fix_owner);
  if (f.mode & 022) return it + " is mode " + octal(f.mode) + ": others may write into it; chmod 700 " + path;
  return std::nullopt;
}

std::optional<std::string> ancestor_problem(std::string_view what, const std::string& path, const std::string& ancestor,
                                            const path_facts& f, const run_as& want, uid_t self) {
  std::string it = std::string(what) + " " + path + ": its parent " + ancestor;
  if (f.kind != path_facts::directory) return it + " is not a directory";
  if (f.uid != 0 && f.uid != want.uid && f.uid != self)
    return it + " is owned by " + who(f.uid, f.owner) + ", who could replace " + path +
           "; choose a place whose parents belong to root or to " + who(want.uid, want.name);
  if ((f.mode & 022) && !(f.mode & S_ISVTX))
    return it + " is mode " + octal(f.mode) + " without the sticky bit, so anyone may replace " + path +
           "; chmod go-w " + ancestor;
  return std::nullopt;
}

bool can_search(const path_facts& f, const run_as& who) {
  if (who.uid == 0) return true;
  if (f.uid == who.uid) return f.mode & S_IXUSR;
  bool member = f.gid == who.gid || std::find(who.groups.begin(), who.groups.end(), f.gid) != who.groups.end();
  return f.mode & (member ? S_IXGRP : S_IXOTH);
}

run_as current_user() {
  run_as me;
  me.uid = ::geteuid();
  me.gid = ::getegid();
  me.name = user_name(me.uid);
  int n = ::getgroups(0, nullptr);
  if (n > 0) {
    me.groups.resize(n);
    n = ::getgroups(n, me.groups.data());
    me.groups.resize(n > 0 ? n : 0);
  }
  return me;
}

std::optional<std::string> ensure_private_dir(std::string_view what, const std::string& raw_path, const run_as& owner,
                                              std::string_view fix_owner) {
  std::string path = trimmed(raw_path);
  uid_t self = ::geteuid();
  bool for_other = owner.uid != self;
  auto chain = ancestors(path);
  for (const auto& a : chain) {
    if (a != "/" && a != "." && ::mkdir(a.c_str(), 0700) == 0 && for_other) ::chmod(a.c_str(), 0711);
    path_facts f = facts_of(a, true);
    if (auto err = ancestor_problem(what, path, a, f, owner, self)) return err;
    if (for_other && !can_search(f, owner))
      return std::string(what) + " " + path + ": " + who(owner.uid, owner.name) + " cannot reach it, its parent " + a +
             " is mode " + octal(f.mode) + " owned by " + who(f.uid, f.owner) + "; chmod o+x " + a +
             ", or choose a place it can reach";
  }
  if (::mkdir(path.c_str(), 0700) == 0 && for_other) {
    // Ours a moment ago, in a parent that only root, we or the owner may change: lchown
    // cannot be sent elsewhere by a symlink.
    if (::lchown(path.c_str(), owner.uid, owner.gid) != 0)
      return std::string(what) + " " + path + ": cannot give it to " + who(owner.uid, owner.name) + ": " +
             std::strerror(errno);
  }
  return private_dir_problem(what, path, facts_of(path, false), owner, fix_owner);
}

std::optional<std::string> check_private_dir(std::string_view what, const std::string& raw_path,
                                             std::string_view fix_owner) {
  std::string path = trimmed(raw_path);
  path_facts f = facts_of(path, false);
  if (f.kind == path_facts::missing) return std::nullopt;
  run_as me = current_user();
  for (const auto& a : ancestors(path))
    if (auto err = ancestor_problem(what, path, a, facts_of(a, true), me, me.uid)) return err;
  return private_dir_problem(what, path, f, me, fix_owner);
}

std::optional<std::string> write_private_file(const std::string& path, const std::string& text, const run_as& owner) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot create " + path + ": " + std::strerror(errno);
  bool ok = true;
  for (std::size_t done = 0; ok && done < text.size();) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  int e = errno;
  if (ok && owner.uid != ::geteuid() && ::fchown(fd, owner.uid, owner.gid) != 0) {
    ok = false;
    e = errno;
  }
  ::close(fd);
  if (!ok) return "cannot write " + path + ": " + std::strerror(e);
  return std::nullopt;
}

}  // namespace loopfleet
