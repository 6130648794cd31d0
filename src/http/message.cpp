#include <loopfleet/http.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <strings.h>

#include <cctype>

namespace loopfleet::http {

void request::locate_path() {
  path_at_ = authority_at_ = authority_len_ = 0;
  std::string_view t = target_;
  if (t.empty() || t.front() == '/') return;  // origin form, the usual case
  // Absolute form: scheme "://" authority [path]; a scheme is a letter, then letters, digits, + - .
  auto colon = t.find("://");
  if (colon == std::string_view::npos || colon == 0 || !std::isalpha(static_cast<unsigned char>(t.front()))) return;
  for (char c : t.substr(0, colon))
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return;
  auto at = colon + 3;
  auto end = t.find_first_of("/?", at);
  if (end == std::string_view::npos) end = t.size();
  authority_at_ = static_cast<std::uint32_t>(at);
  authority_len_ = static_cast<std::uint32_t>(end - at);
  path_at_ = static_cast<std::uint32_t>(end);
}

std::string_view request::path() const {
  std::string_view t = std::string_view(target_).substr(path_at_);
  t = t.substr(0, t.find('?'));
  return t.empty() && authority_len_ ? std::string_view("/") : t;  // "http://host" asks for "/"
}

std::string_view request::query() const {
  std::string_view t = target_;
  auto q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::string_view request::query_param(std::string_view name) const {
  std::string_view rest = query();
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return {};
}

std::string_view request::param(std::string_view name) const {
  for (const auto& [k, v] : params_)
    if (k == name) return v;
  return {};
}

std::string_view request::header(std::string_view name) const {
  if (authority_len_ && name.size() == 4 && ::strncasecmp(name.data(), "host", 4) == 0)
    return std::string_view(target_).substr(authority_at_, authority_len_);
  for (const auto& f : fields_) {
    std::string_view n(fields_text_.data() + f.name_at, f.name_len);
    if (n.size() == name.size() && ::strncasecmp(n.data(), name.data(), n.size()) == 0)
      return {fields_text_.data() + f.value_at, f.value_len};
  }
  return {};
}

bool request::has_header(std::string_view name) const {
  for (const auto& f : fields_) {
    std::string_view n(fields_text_.data() + f.name_at, f.name_len);
    if (n.size() == name.size() && ::strncasecmp(n.data(), name.data(), n.size()) == 0) return true;
  }
  return false;
}

std::vector<std::pair<std::string_view, std::string_view>> request::headers() const {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  out.reserve(fields_.size());
  for (const auto& f : fields_)
    out.emplace_back(std::string_view(fields_text_.data() + f.name_at, f.name_len),
                     std::string_view(fields_text_.data() + f.value_at, f.value_len));
  return out;
}

void request::clear() {
  method_.clear();
  target_.clear();
  path_at_ = authority_at_ = authority_len_ = 0;
  fields_text_.clear();
  fields_.clear();
  params_.clear();
  body_.clear();
  version_ = 11;
}

response text(std::string body, int status) {
  response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

response json(const boost::json::value& value, int status) {
  response r;
  r.status = status;
  r.body = boost::json::serialize(value);
  r.content_type = "application/json";
  return r;
}

namespace detail {
request make_request(std::string method, std::string target) {
  request r;
  r.method_ = std::move(method);
  r.target_ = std::move(target);
  r.locate_path();
  return r;
}
}  // namespace detail

}  // namespace loopfleet::http
