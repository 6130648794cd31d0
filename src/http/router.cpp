#include "http/router_impl.hpp"

#include <stdexcept>

namespace loopfleet::http {

router::router() : impl_(std::make_unique<detail::router_impl>()) {}
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;
router::~router() = default;

router& router::add(std::string_view method, std::string_view pattern, sync_handler s, async_handler a) {
  impl_->add(method, pattern, std::move(s), std::move(a));
  return *this;
}

}  // namespace loopfleet::http

namespace loopfleet::http::detail {
namespace {

bool is_param(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  path.remove_prefix(1);  // the leading '/'
  while (true) {
    auto slash = path.find('/');
    out.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

void add_allowed(std::string* allow, std::string_view method) {
  if (!allow) return;
  if (!allow->empty()) *allow += ", ";
  *allow += method;
  if (method == "GET") *allow += ", HEAD";
}

}  // namespace

void router_impl::add(std::string_view method, std::string_view pattern, sync_handler s, async_handler a) {
  if (!pattern.starts_with('/'))
    throw std::invalid_argument("route pattern '" + std::string(pattern) + "' must start with '/'");
  route r{std::string(method), std::string(pattern), {}, std::move(s), std::move(a)};
  r.segments = split_path(pattern);
  bool has_params = false;
  for (const auto& seg : r.segments) has_params |= is_param(seg);
  auto& bucket = has_params ? patterned_ : exact_[r.pattern];
  for (const auto& other : bucket)
    if (other.method == r.method && other.pattern == r.pattern)
      throw std::invalid_argument("route " + r.method + " " + r.pattern + " is registered twice");
  if (!has_params) r.segments.clear();
  bucket.push_back(std::move(r));
}

bool router_impl::match_segments(const route& r, std::string_view path, request& req) {
  // Beast accepts any request-target ("?x", "*", "http://host/"); only an origin-form path
  // can match a pattern, and an empty one must not lose a leading '/' it does not have
  // (found by tests/fuzz/http_fuzz.cpp: "POST ?echo" read past the target).
  if (!path.starts_with('/')) return false;
  path.remove_prefix(1);
  std::size_t first_param = req.params_.size();
  for (std::size_t i = 0; i < r.segments.size(); ++i) {
    auto slash = path.find('/');
    bool last = i + 1 == r.segments.size();
    if ((slash == std::string_view::npos) != last) break;
    std::string_view seg = path.substr(0, slash);
    const std::string& want = r.segments[i];
    if (is_param(want)) {
      if (seg.empty()) break;
      req.params_.emplace_back(std::string_view(want).substr(1, want.size() - 2), seg);
    } else if (seg != want) {
      break;
    }
    if (last) return true;
    path.remove_prefix(slash + 1);
  }
  req.params_.resize(first_param);
  return false;
}

const route* router_impl::find(std::string_view method, std::string_view path, request& req,
                               std::string* allow) const {
  if (auto it = exact_.find(path); it != exact_.end()) {
    for (const auto& r : it->second)
      if (r.method == method) return &r;
    for (const auto& r : it->second) add_allowed(allow, r.method);
  }
  for (const auto& r : patterned_) {
    if (!match_segments(r, path, req)) continue;
    if (r.method == method) return &r;
    req.params_.clear();
    add_allowed(allow, r.method);
  }
  return nullptr;
}

match_result router_impl::match(request& req) const {
  match_result m;
  std::string_view path = req.path();
  m.found = find(req.method(), path, req, nullptr);
  if (!m.found && req.method() == "HEAD") m.found = find("GET", path, req, nullptr);
  if (!m.found) find(req.method(), path, req, &m.allow);
  return m;
}

}  // namespace loopfleet::http::detail
