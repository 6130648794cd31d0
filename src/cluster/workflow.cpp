// Durable workflows (include/loopfleet/workflow.hpp): the executor that runs a workflow's task
// on a worker, replaying its journal (journal.hpp), and the API that starts, signals and
// waits for workflows.
//
// One run of the executor: read the journal; append a claim (expecting the subject's last
// sequence, so a claim never lands between two entries another executor is writing); run the
// coroutine. Each await through the context either finds its index in the journal (replay:
// the journaled value, at once) or runs and appends its entry, naming the claim and expecting
// the executor's own last sequence. The coroutine ends in one of:
//  - it returns or throws: `done` or `fail` is appended, the task acked;
//  - a durable timer not yet due: the task is handed back to JetStream with the delay;
//  - a signal not yet sent: the task is acked (the signal's sender queues a wake);
//  - a newer claim is found (this executor was thought dead): it stops, writes nothing more,
//    and leaves the task alone (fenced);
//  - the worker drains, or the journal cannot be written: the task is handed back now.
// These endings unwind the coroutine by exceptions that are not std::exception, so a workflow's
// `catch (const std::exception&)` does not swallow them.
#include <loopfleet/workflow.hpp>

#include "cluster/client.hpp"
#include "cluster/journal.hpp"
#include "cluster/node.hpp"
#include "runtime/log.hpp"
#include "runtime/one_shot.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <optional>
#include <utility>

// GCC 12 mistakes Asio's coroutine frame allocator (its own operator new and delete) for a
// mismatched pair once the executor coroutine is inlined into its callers: a false positive.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace loopfleet::workflow {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using cluster::append_result;
using cluster::entry;
using cluster::journal_view;
using cluster::unix_ms;

namespace {

// How long an executor keeps trying a journal write that fails for a passing reason (an
// election, a reconnect) before it hands the workflow back.
constexpr auto write_patience = 30s;

// The endings that are not the workflow's own result.
struct suspended {
  std::int64_t deadline_ms;
};
struct parked {};
struct fenced {
  std::string why;
};
struct handed_back {
  std::string why;
};
struct nondeterministic {
  std::string why;
};

// A blocking nats.c call on one of the client's journal threads, awaited on the loop.
template <class R>
struct blocking_call {
  std::function<R()> work;
  detail::one_shot<R> done;
};

template <class R>
asio::awaitable<R> off_loop(cluster::blocking_pool& thread, std::function<R()> work) {
  auto op = std::make_shared<blocking_call<R>>();
  op->work = std::move(work);
  return detail::async_one_shot(std::move(op), [&thread](const std::shared_ptr<blocking_call<R>>& op) {
    thread.post([op] { op->done.complete(op->work()); });
  });
}

struct read_outcome {
  bool ok = false;
  std::vector<entry> entries;
  std::string why;
};

asio::awaitable<read_outcome> read_from(cluster::client& c, std::string id, std::uint64_t from) {
  std::function<read_outcome()> work = [js = c.connection.js(), id, from] {
    read_outcome r;
    r.ok = cluster::read_journal(js, id, from, r.entries, r.why);
    return r;
  };
  read_outcome r = co_await off_loop(c.journal_io, std::move(work));
  co_return r;
}

// What the waiter needs: the end is a journal's last entry (only a signal racing the end can
// follow it), so one read of the last entry answers a finished workflow; otherwise the whole
// journal is read.
// `whole`: when the last entry is not the end, read the whole journal (an end with a signal
// after it); otherwise the last entry is all.
asio::awaitable<read_outcome> read_end(cluster::client& c, std::string id, bool whole) {
  std::function<read_outcome()> work = [js = c.connection.js(), id, whole] {
    read_outcome r;
    std::optional<entry> last;
    if (!cluster::read_last_entry(js, id, last, r.why)) return r;
    if (last && (last->what == entry::kind::done || last->what == entry::kind::fail)) {
      r.ok = true;
      r.entries.push_back(std::move(*last));
      return r;
    }
    r.ok = last && whole ? cluster::read_journal(js, id, 1, r.entries, r.why) : true;
    return r;
  };
  read_outcome r = co_await off_loop(c.journal_io, std::move(work));
  co_return r;
}

}  // namespace

struct context::impl {
  cluster::client& c;
  std::string id, workflow, node;
  journal_view view;
  std::uint64_t claim = 0;
  int n = 0;  // the index of the last await

  // Reads what was appended since the view's end; fenced if another executor claimed since.
  asio::awaitable<void> refresh() {
    read_outcome r = co_await read_from(c, id, view.last_seq + 1);
    if (!r.ok) throw handed_back{r.why};
    for (const auto& e : r.entries) cluster::add_to(view, e);
    check_fence();
  }
  void check_fence() const {
    if (claim && !view.claims.empty() && view.claims.back().seq != claim)
      throw fenced{"workflow " + id + " was claimed again (claim " + std::to_string(view.claims.back().seq) +
                   ", on " + view.claims.back().node + ") while this executor (claim " + std::to_string(claim) +
                   ") was thought dead"};
  }
  // Appends `e` as this executor; returns the entry the journal keeps for its index (another
  // executor's, if it got there first).
  asio::awaitable<entry> write(entry e, std::string msg_id) {
    e.claim = claim;
    e.node = node;
    std::optional<std::chrono::steady_clock::time_point> failing_since;
    for (int attempt = 0;; ++attempt) {
      std::function<append_result()> work = [js = c.connection.js(), id = id, e, msg_id, last = view.last_seq] {
        return cluster::append_entry(js, id, e, msg_id, last);
      };
      append_result r = co_await off_loop(c.journal_io, std::move(work));
      if (r.what != append_result::outcome::failed) failing_since.reset();
      if (r.what == append_result::outcome::stored) {
        e.seq = r.seq;
        cluster::add_to(view, e);
        co_return e;
      }
      if (r.what == append_result::outcome::failed) {
        // A lost node's streams elect new leaders, and writes fail meanwhile (seconds, more on a
        // busy machine). Handed back, the workflow would run this step again; so wait it out
        // while the task is kept alive, unless the worker is leaving.
        auto now = std::chrono::steady_clock::now();
        if (!failing_since) failing_since = now;
        if (!r.transient || (c.runner.draining() && attempt >= 8) || now - *failing_since > write_patience)
          throw handed_back{"journal write failed: " + r.why};
        asio::steady_timer pause(c.loop, cluster::retry_delay(attempt));
        co_await pause.async_wait(asio::use_awaitable);
        continue;
      }
      // Duplicate (its index was written already) or someone appended since our view: read on.
      co_await refresh();
      if (e.what == entry::kind::got) {
        if (auto it = view.bound.find(e.n); it != view.bound.end()) co_return it->second;
      } else if (e.what == entry::kind::done || e.what == entry::kind::fail) {
        if (view.end) co_return *view.end;
      } else if (auto it = view.at.find(e.n); it != view.at.end()) {
        co_return it->second;
      }
      if (r.what == append_result::outcome::duplicate && attempt >= 3)
        throw handed_back{"journal entry " + msg_id + " is a duplicate but cannot be read"};
    }
  }
  // The journal's entry for await `n` must be what the code asks for now.
  void expect(const entry& e, entry::kind k, const std::string& name) const {
    if (e.what == k && e.name == name) return;
    throw nondeterministic{"workflow " + workflow + " (id " + id + "): await " + std::to_string(e.n) + " is " +
                           cluster::kind_name(e.what) + " '" + e.name + "' in the journal but the code asked for " +
                           cluster::kind_name(k) + " '" + name +
                           "' (the code changed under a running workflow: see docs/workflows.md, versioning)"};
  }
  void before_live_await() const {
    if (c.runner.draining()) throw handed_back{"the worker is draining"};
  }
};

const std::string& context::id() const { return impl_.id; }
const std::string& context::node() const { return impl_.node; }

asio::awaitable<std::string> context::run_step(std::string name, step_function fn) {
  auto& s = impl_;
  int n = ++s.n;
  if (auto it = s.view.at.find(n); it != s.view.at.end()) {
    s.expect(it->second, entry::kind::step, name);
    if (it->second.error) throw std::runtime_error(it->second.body);
    co_return it->second.body;
  }
  s.before_live_await();
  entry e;
  e.what = entry::kind::step;
  e.n = n;
  e.name = name;
  auto began = std::chrono::steady_clock::now();
  asio::steady_timer pause(s.c.loop);
  for (int attempt = 1;; ++attempt) {
    std::string failure;
    bool ok = false;
    try {
      e.body = co_await fn();
      ok = true;
    } catch (const std::exception& x) {
      failure = *x.what() ? x.what() : "the step failed";
    }
    e.attempts = attempt;
    if (ok) break;
    if (attempt >= 3) {
      e.error = true;
      e.body = failure;
      break;
    }
    log::warn("workflow " + s.id + ": step " + name + " failed attempt " + std::to_string(attempt) + " of 3: " +
              failure);
    pause.expires_after(attempt == 1 ? 100ms : 1s);
    co_await pause.async_wait(asio::use_awaitable);
    s.check_fence();
  }
  e.value = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count();
  std::string key = s.id + "/" + std::to_string(n);
  entry kept = co_await s.write(std::move(e), std::move(key));
  s.expect(kept, entry::kind::step, name);
  if (kept.error) throw std::runtime_error(kept.body);
  co_return kept.body;
}

asio::awaitable<void> context::sleep(std::chrono::milliseconds duration) {
  auto& s = impl_;
  int n = ++s.n;
  std::int64_t deadline;
  if (auto it = s.view.at.find(n); it != s.view.at.end()) {
    s.expect(it->second, entry::kind::timer, "sleep");
    deadline = it->second.value;
  } else {
    s.before_live_await();
    entry e;
    e.what = entry::kind::timer;
    e.n = n;
    e.name = "sleep";
    e.value = unix_ms() + duration.count();  // the deadline is fixed once, when first journaled
    std::string key = s.id + "/" + std::to_string(n);
    entry kept = co_await s.write(std::move(e), std::move(key));
    s.expect(kept, entry::kind::timer, "sleep");
    deadline = kept.value;
  }
  if (unix_ms() >= deadline) co_return;
  throw suspended{deadline};
}

asio::awaitable<std::string> context::wait_signal(std::string name) {
  auto& s = impl_;
  int n = ++s.n;
  auto payload_of = [&s](const entry& got) -> std::string {
    for (const auto& sig : s.view.signals)
      if (static_cast<std::int64_t>(sig.seq) == got.value) return sig.body;
    return {};
  };
  if (auto it = s.view.bound.find(n); it != s.view.bound.end()) {
    s.expect(it->second, entry::kind::got, name);
    co_return payload_of(it->second);
  }
  if (auto it = s.view.at.find(n); it != s.view.at.end()) s.expect(it->second, entry::kind::waiting, name);
  s.before_live_await();
  // Signals sent since the journal was read count too.
  co_await s.refresh();
  bool waiting_written = s.view.at.contains(n);
  for (;;) {
    if (const entry* sig = s.view.unbound_signal(name)) {
      entry got;
      got.what = entry::kind::got;
      got.n = n;
      got.name = name;
      got.value = static_cast<std::int64_t>(sig->seq);
      std::string key = s.id + "/got/" + std::to_string(n);
      entry kept = co_await s.write(std::move(got), std::move(key));
      s.expect(kept, entry::kind::got, name);
      co_return payload_of(kept);
    }
    if (waiting_written) break;
    entry w;
    w.what = entry::kind::waiting;
    w.n = n;
    w.name = name;
    // Written expecting our last sequence: a signal appended meanwhile makes it fail, and the
    // loop binds that signal instead of parking.
    std::string key = s.id + "/" + std::to_string(n);
    entry kept = co_await s.write(std::move(w), std::move(key));
    s.expect(kept, entry::kind::waiting, name);
    waiting_written = true;
    co_await s.refresh();
  }
  throw parked{};
}

// (The step's function and name are built before the co_await: GCC 12 mis-destroys a capturing
// lambda or a class temporary inside a co_await expression.)
asio::awaitable<std::string> context::call(std::string name, std::string payload, std::chrono::milliseconds timeout) {
  step_function fn = [name, payload, timeout]() -> asio::awaitable<std::string> {
    std::string out = co_await cluster::call(name, payload, timeout);
    co_return out;
  };
  std::string step_name = "call " + name;
  std::string r = co_await run_step(std::move(step_name), std::move(fn));
  co_return r;
}

asio::awaitable<std::string> context::submit(std::string name, std::string payload) {
  // The job's idempotency key is the step's identity: a step run again stores no second job.
  std::string key = impl_.id + "/" + std::to_string(impl_.n + 1);
  step_function fn = [name, payload, key]() -> asio::awaitable<std::string> {
    cluster::job_options o;
    o.idempotency_key = key;
    std::uint64_t job = co_await cluster::submit(name, payload, o);
    co_return std::to_string(job);
  };
  std::string step_name = "submit " + name;
  std::string r = co_await run_step(std::move(step_name), std::move(fn));
  co_return r;
}

namespace {

using cluster::task_verdict;

struct ending {
  enum class what { returned, threw, suspended, parked, fenced, handed_back } w = what::returned;
  std::string text;  // returned: the result; threw: the error; fenced, handed_back: why
  std::int64_t deadline_ms = 0;
};

asio::awaitable<ending> run_body(const workflow_function& fn, context& ctx, std::string input) {
  ending out;
  try {
    out.text = co_await fn(ctx, std::move(input));
  } catch (const suspended& s) {
    out = {ending::what::suspended, "", s.deadline_ms};
  } catch (const parked&) {
    out.w = ending::what::parked;
  } catch (const fenced& f) {
    out = {ending::what::fenced, f.why};
  } catch (const handed_back& h) {
    out = {ending::what::handed_back, h.why};
  } catch (const nondeterministic& x) {
    out = {ending::what::threw, x.why};
  } catch (const std::exception& e) {
    out = {ending::what::threw, *e.what() ? e.what() : "the workflow failed"};
  } catch (...) {
    out = {ending::what::threw, "the workflow threw a non-std exception"};
  }
  co_return out;
}

// Appends done or fail; the ending it leaves the task in.
asio::awaitable<ending> finish(context::impl& s, ending end) {
  entry e;
  e.what = end.w == ending::what::returned ? entry::kind::done : entry::kind::fail;
  e.body = end.text;
  try {
    std::string key = s.id + "/end";
    co_await s.write(std::move(e), std::move(key));
  } catch (const fenced& f) {
    end = {ending::what::fenced, f.why};
  } catch (const handed_back& h) {
    end = {ending::what::handed_back, h.why};
  }
  co_return end;
}

bool first_delivery(natsMsg* msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) return false;
  bool first = meta->NumDelivered == 1;
  jsMsgMetaData_Destroy(meta);
  return first;
}

asio::awaitable<task_verdict> execute(std::string workflow, const workflow_function& fn, natsMsg* msg) {
  cluster::client& c = cluster::connected_client();
  std::string id = cluster::task_id(msg);
  bool wake = cluster::is_wake(msg);
  context::impl s{c, id, workflow, cluster::node_name().empty() ? "-" : cluster::node_name(), {}, 0, 0};
  // A first delivery that carries the start needs no read: the claim below expects the start
  // to be the journal's last entry, and reads what follows it if it is not.
  std::optional<entry> start = first_delivery(msg) ? cluster::task_start(msg) : std::nullopt;
  if (start) {
    start->name = workflow;
    cluster::add_to(s.view, *start);
  } else {
    read_outcome r = co_await read_from(c, id, 1);
    if (!r.ok) {
      log::warn("workflow " + id + ": " + r.why + "; trying again in 1 s");
      co_return task_verdict{task_verdict::what::later, 1s};
    }
    s.view = cluster::view_of(r.entries);
  }
  if (!s.view.start) {
    log::warn("workflow " + id + ": its task came but it has no start entry; dropped");
    co_return task_verdict{task_verdict::what::term};
  }
  if (s.view.finished()) co_return task_verdict{};
  if (wake && !s.view.parked_on_signal()) co_return task_verdict{};  // its executor reads the signal itself

  // The claim: expecting the end of what was read, so it follows every entry of the last holder.
  for (int attempt = 0;; ++attempt) {
    entry claim;
    claim.what = entry::kind::claim;
    claim.node = s.node;
    claim.value = getpid();
    std::function<append_result()> work = [js = c.connection.js(), id, claim, last = s.view.last_seq] {
      return cluster::append_entry(js, id, claim, "", last);
    };
    append_result a = co_await off_loop(c.journal_io, std::move(work));
    if (a.what == append_result::outcome::stored) {
      claim.seq = a.seq;
      cluster::add_to(s.view, claim);
      s.claim = a.seq;
      break;
    }
    if (a.what == append_result::outcome::failed || attempt >= 10) {
      log::warn("workflow " + id + ": cannot claim it (" + (a.why.empty() ? "its journal keeps changing" : a.why) +
                "); trying again in 1 s");
      co_return task_verdict{task_verdict::what::later, 1s};
    }
    read_outcome more = co_await read_from(c, id, s.view.last_seq + 1);
    if (!more.ok) co_return task_verdict{task_verdict::what::later, 1s};
    for (const auto& e : more.entries) cluster::add_to(s.view, e);
    if (s.view.finished()) co_return task_verdict{};
  }

  context ctx(s);
  ending end = co_await run_body(fn, ctx, s.view.start->body);
  if (end.w == ending::what::returned || end.w == ending::what::threw) {
    if (end.w == ending::what::threw) log::warn("workflow " + workflow + " " + id + " failed: " + end.text);
    end = co_await finish(s, std::move(end));
  }
  switch (end.w) {
    case ending::what::returned:
    case ending::what::threw:
    case ending::what::parked: co_return task_verdict{};
    case ending::what::suspended:
      co_return task_verdict{task_verdict::what::later,
                             std::chrono::milliseconds(std::max<std::int64_t>(0, end.deadline_ms - unix_ms()))};
    case ending::what::fenced:
      log::warn("workflow " + id + ": " + end.text + "; this executor stops and writes nothing more");
      co_return task_verdict{task_verdict::what::abandon};
    case ending::what::handed_back:
      if (!c.runner.draining()) log::warn("workflow " + id + ": handed back (" + end.text + ")");
      co_return task_verdict{task_verdict::what::later, c.runner.draining() ? 0ms : 1000ms};
  }
  co_return task_verdict{};
}

[[noreturn]] void throw_for(const cluster::request_result& r) {
  using reason = workflow_error::reason;
  reason why = r.code == "unknown_workflow" ? reason::unknown_workflow
               : r.code == "conflict"       ? reason::conflict
               : r.code == "finished"       ? reason::finished
               : r.code == "invalid"        ? reason::invalid
                                            : reason::unavailable;
  throw workflow_error(why, r.why);
}

// Waits for workflow `id`'s end entry. A subscription to its journal subject hears each
// append as it is stored; the journal is also read (again, with backoff, while it cannot be:
// leaders are being elected after a node loss), for an end that was there before.
struct end_wait {
  explicit end_wait(asio::io_context& loop) : wake(loop) {}
  std::optional<entry> end;  // on the loop
  asio::steady_timer wake;   // cancelled to wake the waiter
  natsSubscription* sub = nullptr;
};

void on_journal_entry(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto w = *static_cast<std::shared_ptr<end_wait>*>(closure);
  if (entry e = cluster::parse_entry(msg); e.what == entry::kind::done || e.what == entry::kind::fail) {
    cluster::post_to_client([w, e = std::move(e)](cluster::client&) mutable {
      if (!w->end) w->end = std::move(e);
      w->wake.cancel();
    });
  }
  natsMsg_Destroy(msg);
}

void on_wait_removed(void* closure) { delete static_cast<std::shared_ptr<end_wait>*>(closure); }

asio::awaitable<std::optional<entry>> await_end(cluster::client& c, std::string id,
                                                std::chrono::milliseconds timeout) {
  auto w = std::make_shared<end_wait>(c.loop);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Subscribed only once a read finds the workflow running (a finished one costs one read
  // and no interest to spread through the cluster); the read after subscribing sees an end
  // stored in between. The server takes a client's subscription before its next request.
  auto subscribe = [&] {
    auto* closure = new std::shared_ptr<end_wait>(w);
    if (natsConnection_Subscribe(&w->sub, c.connection.nc(), cluster::journal_subject(id).c_str(),
                                 on_journal_entry, closure) != NATS_OK) {
      delete closure;
      w->sub = nullptr;
    } else {
      natsSubscription_SetOnCompleteCB(w->sub, on_wait_removed, closure);
    }
  };
  bool subscribed = false;
  for (int failures = 0; !w->end && std::chrono::steady_clock::now() < deadline;) {
    // Until a read succeeds (and subscribes), the whole journal: an end anywhere; after, the
    // last entry: an end come since.
    read_outcome r = co_await read_end(c, id, !subscribed);
    std::chrono::milliseconds pause = cluster::retry_delay(failures++);
    if (r.ok) {
      if (auto v = cluster::view_of(r.entries); v.end && !w->end) w->end = v.end;
      if (w->end) continue;
      if (!std::exchange(subscribed, true)) {
        subscribe();
        continue;
      }
      // With a subscription, it says when the end comes; a read now and then covers an end
      // stored before the subscription's interest reached the executor's server.
      if (w->sub) pause = 5000ms;
    }
    auto until = std::min(deadline, std::chrono::steady_clock::now() + pause);
    w->wake.expires_at(until);
    boost::system::error_code ec;
    co_await w->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (w->sub) {
    natsSubscription_Unsubscribe(w->sub);
    natsSubscription_Destroy(w->sub);
  }
  co_return w->end;
}

}  // namespace

void define(std::string name, workflow_function fn, int concurrency) {
  if (auto bad = cluster::invalid_token("workflow name", name); !bad.empty())
    throw workflow_error(workflow_error::reason::invalid, bad);
  auto body = std::make_shared<workflow_function>(std::move(fn));
  cluster::job_def def;
  def.task = [name, body](natsMsg* msg) { return execute(name, *body, msg); };
  def.concurrency = std::max(1, concurrency);
  def.stream = cluster::workflow_task_stream;
  def.subject = cluster::task_subject(name);
  def.durable = cluster::task_consumer(name);
  cluster::handlers().workflows["workflow " + name] = std::move(def);
}

namespace {

// Runs start_workflow or signal_workflow (journal.hpp) off the loop; throws what it refused.
using request = cluster::request_result (*)(jsCtx*, const std::string&, const std::string&, const std::string&);

asio::awaitable<void> send_request(request what, std::string a, std::string b, std::string c) {
  cluster::client& client = cluster::connected_client();
  std::function<cluster::request_result()> work = [js = client.connection.js(), what, a, b, c] {
    return what(js, a, b, c);
  };
  cluster::request_result r = co_await off_loop(client.journal_io, std::move(work));
  if (!r.code.empty()) throw_for(r);
}

}  // namespace

asio::awaitable<void> start(std::string name, std::string id, std::string input) {
  return send_request(cluster::start_workflow, std::move(name), std::move(id), std::move(input));
}

asio::awaitable<void> signal(std::string id, std::string name, std::string payload) {
  return send_request(cluster::signal_workflow, std::move(id), std::move(name), std::move(payload));
}

asio::awaitable<std::string> result(std::string id, std::chrono::milliseconds timeout) {
  if (auto bad = cluster::invalid_token("workflow id", id); !bad.empty())
    throw workflow_error(workflow_error::reason::invalid, bad);
  cluster::client& c = cluster::connected_client();
  std::optional<entry> end = co_await await_end(c, id, timeout);
  if (!end)
    throw workflow_error(workflow_error::reason::timeout,
                         "workflow " + id + " did not finish within " + std::to_string(timeout.count()) + " ms");
  if (end->what == entry::kind::fail) throw workflow_error(workflow_error::reason::failed, end->body);
  co_return end->body;
}

}  // namespace loopfleet::workflow
