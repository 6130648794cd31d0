// `_loopfleet`: the C++ cluster client for Python workers (python/loopfleet/cluster.py is its
// only user and documents the API).
//
// The client runs as it does in a C++ worker, on an io_context, here one of its own on a
// thread of its own: retries, idempotency, in-progress signals, dead letters and the drain are
// the C++ ones. The two loops meet in two ways only:
// - Python -> C++: a call, submit or drain is co_spawned onto the client's loop (thread-safe,
//   no GIL needed there); its outcome comes back with the asyncio loop's call_soon_threadsafe.
// - C++ -> Python: a served call or a job is handed to the asyncio loop the same way, with a
//   reply_token that Python completes (from its own thread) when its coroutine ends. A job past
//   its time limit cancels the token, and Python cancels the task.
// The GIL is taken on the client's thread only to hand something over or to drop a reference;
// nothing on either loop waits for the other.
#include <loopfleet/cluster.hpp>

#include "cluster/client.hpp"
#include "runtime/one_shot.hpp"

#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <pybind11/pybind11.h>

#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <thread>

namespace py = pybind11;
namespace asio = boost::asio;
namespace cluster = loopfleet::cluster;

namespace {

// A Python object kept by C++ where the GIL is not held: its reference is dropped with the GIL.
class py_ref {
 public:
  explicit py_ref(py::object o) : obj_(o.release().ptr()) {}
  py_ref(const py_ref&) = delete;
  py_ref& operator=(const py_ref&) = delete;
  ~py_ref() {
    if (!obj_ || !Py_IsInitialized()) return;  // at interpreter teardown: leak rather than crash
    py::gil_scoped_acquire gil;
    Py_DECREF(obj_);
  }
  py::handle get() const { return obj_; }

 private:
  PyObject* obj_;
};
using shared_ref = std::shared_ptr<const py_ref>;
shared_ref keep(py::object o) { return std::make_shared<const py_ref>(std::move(o)); }

// What Python gave start(): the asyncio loop's call_soon_threadsafe, and the package's
// functions that settle a future, run a served call or a job, and cancel one.
struct hooks {
  shared_ref post, settle, run_call, run_job, cancel;
};

struct bridge {
  std::optional<asio::io_context> loop;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  hooks to;
  bool stopped = false;
};
// Never destroyed: nats.c's threads and the client's may look at it while Python tears down.
bridge& the_bridge() {
  static bridge* b = new bridge;
  return *b;
}

// Runs `f` with the GIL; a Python error in it is reported as unraisable, not thrown into C++.
template <class F>
void with_python(F&& f) {
  if (!Py_IsInitialized()) return;
  py::gil_scoped_acquire gil;
  try {
    f();
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("loopfleet cluster");
  }
}

// loop.call_soon_threadsafe(fn, args...); the caller holds the GIL.
template <class... A>
void post_to_asyncio(const shared_ref& fn, A&&... args) {
  the_bridge().to.post->get()(fn->get(), std::forward<A>(args)...);
}

// An outcome for Python: reason -1 is success, otherwise cluster_error::reason.
constexpr int ok = -1, other_error = 99;

template <class F>
void settle(const shared_ref& future, int reason, const std::string& message, F&& value) {
  with_python([&] { post_to_asyncio(the_bridge().to.settle, future->get(), reason, message, value()); });
}

// The answer to a served call or the end of a job, completed by Python's coroutine.
struct reply_token {
  loopfleet::detail::one_shot<std::exception_ptr, std::string> done;
  void finish(std::string out) { done.complete(nullptr, std::move(out)); }
  void fail(std::string why) { done.complete(std::make_exception_ptr(std::runtime_error(why)), {}); }
};
using shared_token = std::shared_ptr<reply_token>;

// Hands `give(token)` to Python and awaits the token. A cancelled awaiter (a job past its
// time limit) completes at once and tells Python to cancel its task.
asio::awaitable<std::string> answered_by_python(std::function<void(const shared_token&)> give) {
  return loopfleet::detail::async_one_shot(std::make_shared<reply_token>(),
                                           [give = std::move(give)](const shared_token& t) {
                                             if (t->done.slot().is_connected()) {
                                               std::weak_ptr<reply_token> w = t;
                                               t->done.slot().assign([w](asio::cancellation_type) {
                                                 auto t = w.lock();
                                                 if (!t || !t->done.complete(std::make_exception_ptr(std::runtime_error("cancelled")), {}))
                                                   return;
                                                 with_python([&] { post_to_asyncio(the_bridge().to.cancel, py::cast(t)); });
                                               });
                                             }
                                             give(t);
                                           });
}

asio::awaitable<std::string> python_call(shared_ref handler, std::string payload) {
  auto give = [handler, payload = std::move(payload)](const shared_token& t) {
    with_python([&] { post_to_asyncio(the_bridge().to.run_call, handler->get(), py::bytes(payload), py::cast(t)); });
  };
  auto answer = answered_by_python(std::move(give));
  std::string out = co_await std::move(answer);
  co_return out;
}

asio::awaitable<void> python_job(shared_ref handler, cluster::job& j) {
  auto give = [handler, &j](const shared_token& t) {
    with_python([&] {
      post_to_asyncio(the_bridge().to.run_job, handler->get(), j.name, py::bytes(j.payload), j.id, j.attempt,
                      j.key, py::cast(t));
    });
  };
  auto answer = answered_by_python(std::move(give));
  j.result = co_await std::move(answer);
}

// Python -> C++: each runs on the client's loop and settles its asyncio future.
template <class T>
asio::awaitable<void> settled(asio::awaitable<T> op, shared_ref future) {
  int reason = ok;
  std::string message;
  std::optional<T> value;
  try {
    value = co_await std::move(op);
  } catch (const cluster::cluster_error& e) {
    reason = static_cast<int>(e.why());
    message = e.what();
  } catch (const std::exception& e) {
    reason = other_error;
    message = e.what();
  }
  settle(future, reason, message, [&]() -> py::object {
    if (!value) return py::none();
    if constexpr (std::is_same_v<T, std::string>) return py::bytes(*value);
    else return py::int_(*value);
  });
}

asio::io_context& client_loop() {
  bridge& b = the_bridge();
  if (!b.loop || b.stopped)
    throw cluster::cluster_error(cluster::cluster_error::reason::not_configured,
                                 b.stopped ? "the cluster client has stopped (the worker is exiting)"
                                           : "the cluster client has not started");
  return *b.loop;
}

template <class T>
void spawn(asio::awaitable<T> op, py::object future) {
  asio::co_spawn(client_loop(), settled(std::move(op), keep(std::move(future))), asio::detached);
}

cluster::job_options options(const std::string& key, int max_attempts, long long time_limit_ms,
                             long long retry_for_ms) {
  cluster::job_options o;
  o.idempotency_key = key;
  o.max_attempts = max_attempts;
  o.time_limit = std::chrono::milliseconds(time_limit_ms);
  o.retry_for = std::chrono::milliseconds(retry_for_ms);
  return o;
}

void start(py::object post, py::object settle_fn, py::object run_call, py::object run_job, py::object cancel) {
  bridge& b = the_bridge();
  if (b.loop) return;
  b.to = {keep(post), keep(settle_fn), keep(run_call), keep(run_job), keep(cancel)};
  b.loop.emplace(1);
  b.work.emplace(b.loop->get_executor());
  // Signals stay with Python's main thread (SIGTERM starts its drain; the supervisor's stack
  // signal goes to the asyncio loop's thread by tid): this thread, and the nats.c threads it
  // starts, block them all.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  b.thread = std::thread([&b] {
    asio::post(*b.loop, [&b] { cluster::start_client(*b.loop); });
    b.loop->run();
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void stop() {
  bridge& b = the_bridge();
  if (!b.loop || b.stopped) return;
  b.stopped = true;
  py::gil_scoped_release release;  // the client's thread may be waiting for the GIL
  b.work.reset();
  b.loop->stop();
  if (b.thread.joinable()) b.thread.join();
  b.loop.reset();  // the client goes with its loop (its fetch threads are joined)
}

}  // namespace

PYBIND11_MODULE(_loopfleet, m) {
  m.doc() = "loopfleet's C++ cluster client (use the loopfleet.cluster module)";
  py::class_<reply_token, shared_token>(m, "ReplyToken", py::dynamic_attr())
      .def("finish", [](reply_token& t, py::bytes out) { t.finish(std::string(out)); })
      .def("fail", &reply_token::fail);

  m.def("start", &start);
  m.def("stop", &stop);
  m.def("node_name", [] { return cluster::node_name(); });

  m.def("serve", [](std::string name, py::object handler) {
    cluster::serve(std::move(name), cluster::call_coroutine([h = keep(std::move(handler))](std::string payload) {
                     return python_call(h, std::move(payload));
                   }));
  });
  m.def("handle_jobs", [](std::string name, py::object handler, int concurrency) {
    cluster::handle_jobs(
        std::move(name), [h = keep(std::move(handler))](cluster::job& j) { return python_job(h, j); }, concurrency);
  });

  m.def("call", [](std::string name, py::bytes payload, long long timeout_ms, py::object future) {
    spawn(cluster::call(std::move(name), std::string(payload), std::chrono::milliseconds(timeout_ms)),
          std::move(future));
  });
  m.def("submit", [](std::string name, py::bytes payload, std::string key, int max_attempts, long long time_limit_ms,
                     long long retry_for_ms, py::object future) {
    spawn(cluster::submit(std::move(name), std::string(payload), options(key, max_attempts, time_limit_ms, retry_for_ms)),
          std::move(future));
  });
  m.def("submit_and_wait", [](std::string name, py::bytes payload, std::string key, int max_attempts,
                              long long time_limit_ms, long long retry_for_ms, long long timeout_ms, py::object future) {
    spawn(cluster::submit_and_wait(std::move(name), std::string(payload),
                                   options(key, max_attempts, time_limit_ms, retry_for_ms),
                                   std::chrono::milliseconds(timeout_ms)),
          std::move(future));
  });
  m.def("drain", [](py::object future) {
    auto f = keep(std::move(future));
    asio::post(client_loop(), [f] {
      cluster::drain_client([f] { settle(f, ok, "", [] { return py::none(); }); });
    });
  });

  // cluster_error::reason, by name, for the Python exceptions.
  py::dict reasons;
  reasons["not_configured"] = static_cast<int>(cluster::cluster_error::reason::not_configured);
  reasons["no_responders"] = static_cast<int>(cluster::cluster_error::reason::no_responders);
  reasons["timeout"] = static_cast<int>(cluster::cluster_error::reason::timeout);
  reasons["handler_failed"] = static_cast<int>(cluster::cluster_error::reason::handler_failed);
  reasons["publish_failed"] = static_cast<int>(cluster::cluster_error::reason::publish_failed);
  m.attr("REASONS") = reasons;
}
