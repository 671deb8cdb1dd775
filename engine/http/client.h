#pragma once
// The outbound HTTP client every connector uses: one per connection, keep-alive, TCP_NODELAY
// (without it cpp-httplib's keep-alive requests wait ~40 ms for Nagle + delayed ACK, see
// shared/reference/http.md), timeouts, and certificate verification for https. Plain
// http://127.0.0.1:PORT works for fakes and local sandboxes.
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace weft::http {

// "https://api.example.com/v3" -> origin "https://api.example.com", path "/v3".
struct Url {
  std::string origin;  // scheme://host[:port]
  std::string path;    // "" or "/prefix" (no trailing slash)
  static std::optional<Url> parse(const std::string& text);
};

using Headers = std::multimap<std::string, std::string>;

struct Response {
  int status = 0;          // 0: no answer (see error)
  std::string body;
  Headers headers;
  std::string error;       // why there was no answer: "connection refused", "timeout", ...
  std::string header(const std::string& name) const;
};

class Client {
 public:
  explicit Client(const Url& base, int timeout_ms = 10000);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // `path` is appended to the base URL's path; query strings go in `path`.
  Response get(const std::string& path, const Headers& headers = {});
  Response post(const std::string& path, const std::string& body, const std::string& content_type,
                const Headers& headers = {});
  Response patch(const std::string& path, const std::string& body, const std::string& content_type,
                 const Headers& headers = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes a query parameter value.
std::string url_encode(const std::string& s);

}  // namespace weft::http
