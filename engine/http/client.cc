#include "engine/http/client.h"

#include <httplib.h>

#include <regex>

namespace weft::http {

std::optional<Url> Url::parse(const std::string& text) {
  static const std::regex re(R"(^(https?://[^/\s?#]+)(/[^\s?#]*)?$)");
  std::smatch m;
  if (!std::regex_match(text, m, re)) return std::nullopt;
  Url u{m[1], m[2]};
  while (!u.path.empty() && u.path.back() == '/') u.path.pop_back();
  return u;
}

std::string Response::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  return "";
}

struct Client::Impl {
  Url base;
  httplib::Client client;
  Impl(const Url& u, int timeout_ms) : base(u), client(u.origin) {
    client.set_tcp_nodelay(true);
    client.set_keep_alive(true);
    client.set_connection_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
    client.set_read_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
    client.set_write_timeout(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
    if (u.origin.rfind("https://", 0) == 0) {
      client.enable_server_certificate_verification(true);
      client.set_ca_cert_path("/etc/ssl/certs/ca-certificates.crt");
    }
  }
  Response wrap(const httplib::Result& r) {
    Response out;
    if (!r) {
      out.error = httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.body = r->body;
    for (const auto& [k, v] : r->headers) out.headers.emplace(k, v);
    return out;
  }
  httplib::Headers convert(const Headers& h) { return httplib::Headers(h.begin(), h.end()); }
};

Client::Client(const Url& base, int timeout_ms) : impl_(std::make_unique<Impl>(base, timeout_ms)) {}
Client::~Client() = default;

Response Client::get(const std::string& path, const Headers& headers) {
  return impl_->wrap(impl_->client.Get((impl_->base.path + path).c_str(), impl_->convert(headers)));
}

Response Client::post(const std::string& path, const std::string& body, const std::string& content_type,
                      const Headers& headers) {
  return impl_->wrap(impl_->client.Post((impl_->base.path + path).c_str(), impl_->convert(headers), body,
                                        content_type.c_str()));
}

Response Client::patch(const std::string& path, const std::string& body, const std::string& content_type,
                       const Headers& headers) {
  return impl_->wrap(impl_->client.Patch((impl_->base.path + path).c_str(), impl_->convert(headers), body,
                                         content_type.c_str()));
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

}  // namespace weft::http
