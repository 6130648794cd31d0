// The directories loopfleet keeps its control socket and state in (runtime_dir(), the front's
// state, the NATS data dir). Whoever controls such a directory controls what is in it: a
// local user who creates /tmp/loopfleet-UID first could replace the control socket, or point
// a symlink at a file of ours. So a directory is used only if it belongs to its owner and
// nobody else may write to it or to the directories above it; otherwise start-up refuses
// with one line naming the path, what was found and the fix. The verdicts are pure.
// In the runtime because the supervisor, the front and the control client all keep or look
// for their files here, and none of them should link another's layer to find them.
#pragma once

#include "runtime/user.hpp"

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace loopfleet {

// Where sockets and generated files go: $XDG_RUNTIME_DIR/loopfleet, /run/loopfleet as root,
// else /tmp/loopfleet-UID.
std::string runtime_dir();

// Default control socket path for an instance name: in runtime_dir(). The supervisor listens
// there and the control client looks there.
std::string default_control_path(const std::string& name);

// Creates `path` and its missing parents, mode 0700, for a path the user chose (--control);
// errors surface when the path is used. Directories of our own go through
// ensure_private_dir, which also refuses one another user controls.
void make_private_dirs(const std::string& path);

// What lstat (or stat, for an ancestor) found at a path.
struct path_facts {
  enum kind_t { missing, directory, symlink, other } kind = missing;
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;    // permission bits and the sticky bit
  std::string owner;  // the owner's user name, or empty
};

// A private directory: a real directory (not a symlink), owned by `want`, not writable by
// group or others. `fix_owner` is the advice when someone else owns it.
std::optional<std::string> private_dir_problem(std::string_view what, const std::string& path, const path_facts& f,
                                               const run_as& want, std::string_view fix_owner);

// A directory above it: whoever may rename entries there may swap ours for theirs, so it is
// owned by root, by `want` or by `self` (the supervisor), and not writable by others unless
// sticky (/tmp).
std::optional<std::string> ancestor_problem(std::string_view what, const std::string& path, const std::string& ancestor,
                                            const path_facts& f, const run_as& want, uid_t self);

// Whether `who` may pass through the directory `f` (search permission), with its groups.
bool can_search(const path_facts& f, const run_as& who);

// The identity of this process (effective uid, gid and groups), as a run_as.
run_as current_user();

// Creates `path` and its missing parents and checks all of them: the directory itself is
// created 0700 and handed to `owner` (who may be another user than us: the nats-server child
// under --user), parents we create are 0700, or 0711 when `owner` is not us, so that owner
// can pass through to it. Returns the one-line error, or nullopt.
std::optional<std::string> ensure_private_dir(std::string_view what, const std::string& path, const run_as& owner,
                                              std::string_view fix_owner);

// Checks an existing private directory without creating anything (the CLI, before it trusts
// a control socket found there). A missing one is not a problem.
std::optional<std::string> check_private_dir(std::string_view what, const std::string& path,
                                             std::string_view fix_owner);

// Writes `text` to `path` (in a directory `owner` may write to), readable by `owner` only.
// What was there is unlinked first and the file is created O_EXCL|O_NOFOLLOW: a symlink
// planted there cannot redirect our write to a file of root's.
std::optional<std::string> write_private_file(const std::string& path, const std::string& text, const run_as& owner);

}  // namespace loopfleet
