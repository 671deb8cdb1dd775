#pragma once
// commercetools as a source (shared/reference/apis.md): OAuth2 client credentials with the
// token cached until shortly before it expires (and fetched again once on 401
// invalid_token), and the delta pull: customers ordered by lastModifiedAt then id, paged by
// a `where` predicate rather than offset (offset stops at 10,000). The cursor is
// "lastModifiedAt|id" of the last record returned; storing it only after a page's records
// are durable is the caller's job.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/http/client.h"

namespace weft::connectors::commercetools {

struct Settings {
  std::string auth_url;       // e.g. https://auth.europe-west1.gcp.commercetools.com
  std::string api_url;        // e.g. https://api.europe-west1.gcp.commercetools.com
  std::string project;
  std::string client_id;      // resolved secrets, never logged
  std::string client_secret;
  int timeout_ms = 10000;
};

struct Page {
  std::vector<std::string> records;  // each result as JSON text
  // Per record "lastModifiedAt|id:version", a message id for it. In the page's order, so the
  // inbox's message-id index grows at its end instead of at random places (an index page
  // changed at a random place costs a 4 KiB page write per batch).
  std::vector<std::string> versions;
  std::string cursor;                // after the last record; the input cursor if none
  bool more = false;                 // a full page came back: ask again from `cursor`
};

// A failed call: `status` is the HTTP status (0: no answer), `transient` says whether a
// retry may succeed (timeouts, 5xx, 429, 409 concurrent modification).
struct Error {
  int status = 0;
  bool transient = false;
  std::string message;
};

class Source {
 public:
  // `now_ms` is injectable for tests of token expiry.
  explicit Source(Settings s, std::function<int64_t()> now_ms = {});
  ~Source();

  // Up to `limit` (1..500) customers modified after `cursor` ("" = from the beginning).
  bool customers_since(const std::string& cursor, int limit, Page* out, Error* err);
  // One customer by id (for payloadNotIncluded messages); false with err->status 404 if gone.
  bool customer(const std::string& id, std::string* json, Error* err);
  int tokens_fetched() const;

 private:
  bool ensure_token(bool force, Error* err);
  http::Response authorized_get(const std::string& path, Error* err);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::connectors::commercetools
