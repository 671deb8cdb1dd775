#include "engine/serve/server.h"

#include <httplib.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <cstdint>
#include <charconv>
#include <chrono>

#include "engine/cli/commands.h"
#include "engine/serve/jobs.h"
#include "engine/util/ids.h"
#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"

namespace weft::serve {

namespace json = boost::json;

std::string correlation_id_from(const std::string& traceparent, const std::string& x_correlation_id) {
  // W3C: version "-" trace-id (32 hex, not all zero) "-" parent-id (16 hex) "-" flags
  if (traceparent.size() >= 55 && traceparent[2] == '-' && traceparent[35] == '-') {
    std::string id = traceparent.substr(3, 32);
    bool hex = true, zero = true;
    for (char c : id) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) hex = false;
      if (c != '0') zero = false;
    }
    if (hex && !zero) {
      for (char& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return id;
    }
  }
  if (!x_correlation_id.empty() && x_correlation_id.size() <= 128) {
    bool ok = true;
    for (char c : x_correlation_id)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' || c == '-')) ok = false;
    if (ok) return x_correlation_id;
  }
  return util::new_correlation_id();
}

namespace {

// A name (or with `path`, a path) from a request, for the log: at most 64 characters,
// anything but letters, digits, '_', '-', '.' (and '/') shown as '?'.
std::string log_safe(std::string_view name, bool path = false) {
  std::string out;
  for (char c : name.substr(0, 64))
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || (path && c == '/') ? c : '?';
  if (name.size() > 64) out += "...";
  return out;
}

void send_json(httplib::Response& res, int status, const json::value& v) {
  res.status = status;
  res.set_content(json::serialize(v), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message,
                const std::string& cid, int retry_after = 0) {
  if (retry_after > 0) res.set_header("Retry-After", std::to_string(retry_after));
  send_json(res, status, json::object{{"error", json::object{{"code", code}, {"message", message}, {"correlationId", cid}}}});
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  // The lengths are not secret (the token's length is fixed by whoever made it); the content is.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

json::object parked_json(const store::Parked& p, bool full) {
  json::object o{{"id", p.id},          {"kind", p.kind},           {"flow", p.flow},
                 {"stage", p.stage},    {"key", p.record_key},      {"error", p.error},
                 {"reason", p.reason},  {"where", p.location},      {"correlation_id", p.correlation_id},
                 {"script_version", p.script_version},              {"attempts", p.attempts},
                 {"at", util::iso8601_ms(p.created_ms)},            {"replayed", p.replayed_ms != 0}};
  if (full) {
    std::error_code ec;
    json::value d = json::parse(p.detail, ec, {}, workspace::json_parse_options(8));
    o["detail"] = ec ? json::value(p.detail) : d;
    json::value src = json::parse(p.source, ec, {}, workspace::json_parse_options(8));
    o["source"] = ec ? json::value(p.source) : src;
  }
  return o;
}

json::object conflict_json(const store::Conflict& c) {
  std::error_code ec;
  json::value d = json::parse(c.detail, ec);
  json::object o{{"id", c.id},         {"flow", c.flow},           {"kind", c.kind},
                 {"key", c.record_key}, {"field", c.field},        {"detail", ec ? json::value(c.detail) : d},
                 {"correlation_id", c.correlation_id},             {"at", util::iso8601_ms(c.created_ms)}};
  if (c.resolved_ms) {
    o["resolved_at"] = util::iso8601_ms(c.resolved_ms);
    o["resolution"] = c.resolution;
  }
  return o;
}

}  // namespace

struct Server::Impl {
  Engine& engine;
  std::string token;
  httplib::Server http;
  int port = 0;
  Impl(Engine& e, std::string t) : engine(e), token(std::move(t)) {}

  // Wraps a handler: correlation id, admin token, metrics, exceptions as 500s.
  using Fn = std::function<void(const httplib::Request&, httplib::Response&, const std::string& cid)>;
  httplib::Server::Handler wrap(const char* route, bool admin, Fn fn) {
    return [this, route, admin, fn](const httplib::Request& req, httplib::Response& res) {
      std::string cid = correlation_id_from(req.get_header_value("traceparent"), req.get_header_value("X-Correlation-ID"));
      res.set_header("X-Correlation-ID", cid);
      if (admin && !authorized(req)) {
        send_error(res, 401, "unauthorized", "this route needs the admin token (Authorization: Bearer ...)", cid);
      } else {
        try {
          fn(req, res, cid);
        } catch (const std::exception& e) {
          spdlog::error("{} {}: {} [correlation {}]", req.method, req.path, engine.secrets().redact(e.what()), cid);
          send_error(res, 500, "internal", "the request failed on the server; see its log", cid);
        }
      }
      count_http(route, res);
    };
  }

  // At most one log line per second per key (a flood of bad requests must not flood the log);
  // *suppressed: how many were left out since the last line.
  bool throttle(const std::string& key, int* suppressed) {
    std::lock_guard<std::mutex> lock(log_mu);
    auto& [last, count] = log_seen[key];
    int64_t now = util::now_ms();
    if (now - last < 1000) {
      ++count;
      return false;
    }
    *suppressed = count;
    last = now;
    count = 0;
    return true;
  }
  std::mutex log_mu;
  std::map<std::string, std::pair<int64_t, int>> log_seen;

  bool authorized(const httplib::Request& req) const {
    std::string h = req.get_header_value("Authorization");
    if (h.size() < 7 || strncasecmp(h.c_str(), "Bearer ", 7) != 0) return false;
    return constant_time_equal(h.substr(7), token);
  }

  WebhookCall webhook_call(const httplib::Request& req, const std::string& tenant, const std::string& connection,
                           const std::string& cid) {
    WebhookCall call;
    call.tenant = tenant;
    call.connection = connection;
    call.content_type = req.get_header_value("Content-Type");
    call.authorization = req.get_header_value("Authorization");
    call.header = [&req](const std::string& name) { return req.get_header_value(name.c_str()); };
    call.correlation_id = cid;
    return call;
  }

  // Names nobody configured are not kept as labels or log keys: anyone can send them.
  static bool unknown_names(const WebhookAnswer& a) {
    return a.code == "unknown_tenant" || a.code == "unknown_connection";
  }

  void count_webhook(const WebhookCall& call, int status, bool unknown = false) {
    engine.metrics().add("weft_webhook_requests_total",
                         {{"tenant", unknown ? "_unknown" : call.tenant},
                          {"connection", unknown ? "_unknown" : call.connection},
                          {"status", std::to_string(status)}},
                         1, "Webhook requests by answer");
  }

  // A webhook answered with an error: counted, logged (at most once a second per tenant and
  // error), and sent.
  void refuse_webhook(const WebhookCall& call, const WebhookAnswer& a, httplib::Response& res, const std::string& cid) {
    bool unknown = unknown_names(a);
    count_webhook(call, a.status, unknown);
    std::string tenant = unknown ? "_unknown" : call.tenant, connection = unknown ? "_unknown" : call.connection;
    // Names nobody configured are the sender's text (decoded from the URL): shown only cut
    // short and with anything but name characters masked, so a crafted path cannot write a
    // log line of its own or pose as another record's correlation id.
    std::string message = unknown ? "no tenant/connection '" + log_safe(call.tenant) + "/" + log_safe(call.connection) +
                                        "' in this workspace"
                                  : a.message;
    if (int more = 0; throttle(tenant + "/" + a.code, &more))
      spdlog::warn("tenant {}: webhook {}: {} {}: {}{} [correlation {}]", tenant, connection, a.status, a.code,
                   message, more ? " (and " + std::to_string(more) + " more like it in the last second)" : "", cid);
    send_error(res, a.status, a.code, a.message, cid, a.retry_after_s);
  }

  // Bodies. cpp-httplib reads a body whole before calling a plain handler, whoever sent it;
  // so every route that takes a body is a content-reader route, which decides from the
  // headers first what to keep: an unknown tenant or connection, a wrong bearer token, a
  // body over the connection's limit, or an admin route without the token keeps nothing
  // (the body is read and dropped, so the connection stays in step for its next request).
  static constexpr size_t kMaxAdminBody = size_t{64} << 20;

  // How a body was read: kept (within the limit), or dropped (over it, or compressed), or
  // not readable at all (cut short, over the server's payload limit).
  struct BodyRead {
    bool ok = true, over = false, encoded = false;
  };

  // Reads the body: kept while within `limit` bytes, else dropped. A request without
  // Content-Length or Transfer-Encoding has no body (RFC 9112 6.3): nothing is read. A
  // compressed body (Content-Encoding) is read as the bytes it is, and dropped: httplib
  // would inflate it as it reads (unbounded by the payload limit, which counts compressed
  // bytes) and stop at a broken stream, leaving the rest to be read as the next request.
  static BodyRead read_body(const httplib::Request& req, const httplib::ContentReader& reader, size_t limit,
                            std::string* body) {
    BodyRead r;
    if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) return r;
    std::string encoding = req.get_header_value("Content-Encoding");
    if (!encoding.empty() && encoding != "identity") {
      r.encoded = true;
      limit = 0;
      // httplib reads the header from this request as it reads: its own object, handed to
      // content-reader handlers as const (see admin_post).
      const_cast<httplib::Request&>(req).headers.erase("Content-Encoding");
    }
    r.ok = reader([&](const char* data, size_t n) {
      if (r.over) return true;
      if (body->size() + n > limit) {
        r.over = true;
        std::string().swap(*body);
        return true;
      }
      body->append(data, n);
      return true;
    });
    return r;
  }

  // The answer for a body that was not kept; false if it was.
  bool refused_body(const BodyRead& r, size_t limit, httplib::Response& res, const std::string& cid) {
    if (!r.ok) {
      if (res.status == 413) send_error(res, 413, "payload_too_large", "the body is too large", cid);
      else send_error(res, 400, "bad_request", "the body could not be read", cid);
    } else if (r.encoded) {
      send_error(res, 415, "unsupported_media_type", "Content-Encoding is not supported: send the body as it is", cid);
    } else if (r.over) {
      send_error(res, 413, "payload_too_large", "body is more than the limit of " + std::to_string(limit) + " bytes",
                 cid);
    } else {
      return false;
    }
    return true;
  }

  void count_http(const char* route, const httplib::Response& res) {
    engine.metrics().add("weft_http_requests_total", {{"route", route}, {"status", std::to_string(res.status)}}, 1,
                         "HTTP requests answered, by route and status");
  }

  // An admin route that takes a body: the token before the body (kept only then, up to
  // kMaxAdminBody), then the handler as wrap() runs it, with the body in req.body.
  httplib::Server::HandlerWithContentReader admin_post(const char* route, Fn fn) {
    httplib::Server::Handler inner = wrap(route, true, std::move(fn));
    return [this, route, inner](const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
      std::string body;
      bool authorized_ = authorized(req);
      BodyRead r = read_body(req, reader, authorized_ ? kMaxAdminBody : 0, &body);
      if (!authorized_ || r.over || r.encoded || !r.ok) {
        std::string cid =
            correlation_id_from(req.get_header_value("traceparent"), req.get_header_value("X-Correlation-ID"));
        res.set_header("X-Correlation-ID", cid);
        if (!authorized_)
          send_error(res, 401, "unauthorized", "this route needs the admin token (Authorization: Bearer ...)", cid);
        else
          refused_body(r, kMaxAdminBody, res, cid);
        return count_http(route, res);
      }
      // httplib gives content-reader handlers the request without its body (it did not read
      // it); the request object is its own, not const: the body goes where handlers read it.
      const_cast<httplib::Request&>(req).body = std::move(body);
      inner(req, res);
    };
  }

  // A request with a body that no route takes: read and dropped, then 404.
  httplib::Server::HandlerWithContentReader no_route() {
    return [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      std::string body;
      read_body(req, reader, 0, &body);
      std::string cid = correlation_id_from(req.get_header_value("traceparent"), req.get_header_value("X-Correlation-ID"));
      res.set_header("X-Correlation-ID", cid);
      send_error(res, 404, "not_found", "no route " + req.method + " " + log_safe(req.path, true), cid);
      count_http("none", res);
    };
  }

  void webhook(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    std::string cid = correlation_id_from(req.get_header_value("traceparent"), req.get_header_value("X-Correlation-ID"));
    res.set_header("X-Correlation-ID", cid);
    try {
      WebhookCall call = webhook_call(req, req.matches[1], req.matches[2], cid);
      // First what the headers decide: nothing of the body is kept for a refused request.
      call.headers_only = true;
      if (req.has_header("Content-Length")) {
        const std::string v = req.get_header_value("Content-Length");
        size_t n = 0;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        call.content_length = ec == std::errc() && end == v.data() + v.size() ? n : SIZE_MAX;
      }
      WebhookAnswer a;
      try {
        a = engine.webhook(call);
      } catch (...) {
        std::string body;
        read_body(req, reader, 0, &body);  // the connection stays in step; then the 500
        throw;
      }
      std::string body;
      BodyRead r = read_body(req, reader, a.status == 100 ? a.max_body_bytes : 0, &body);
      if (a.status != 100) {
        refuse_webhook(call, a, res, cid);
      } else if (refused_body(r, a.max_body_bytes, res, cid)) {
        count_webhook(call, res.status);
      } else {
        auto started = std::chrono::steady_clock::now();
        call.headers_only = false;
        call.body = std::move(body);
        a = engine.webhook(call);
        if (a.status != 202) {
          refuse_webhook(call, a, res, cid);
        } else {
          count_webhook(call, a.status);
          engine.metrics().observe(
              "weft_webhook_ack_seconds", {{"tenant", call.tenant}, {"connection", call.connection}},
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
              "Time from a webhook's body read to its 202 (checks, parsing and the durable commit)");
          json::array accepted, duplicates;
          for (auto& id : a.accepted) accepted.push_back(json::value(id));
          for (auto& id : a.duplicates) duplicates.push_back(json::value(id));
          send_json(res, 202,
                    json::object{{"accepted", accepted}, {"duplicates", duplicates}, {"correlationId", cid}});
        }
      }
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {} [correlation {}]", req.method, log_safe(req.path, true), engine.secrets().redact(e.what()), cid);
      send_error(res, 500, "internal", "the request failed on the server; see its log", cid);
    }
    count_http("webhook", res);
  }

  static json::value body_json(const httplib::Request& req) {
    if (req.body.empty()) return json::object();
    std::error_code ec;
    json::value v = json::parse(req.body, ec, {}, workspace::json_parse_options(8));
    if (ec) throw std::invalid_argument("the body is not JSON: " + ec.message());
    return v;
  }

  void routes() {
    http.Post(R"(/webhooks/([^/]+)/([^/]+))",
              [this](const auto& req, auto& res, const auto& reader) { webhook(req, res, reader); });

    http.Get("/healthz", wrap("healthz", false, [](const auto&, auto& res, const auto&) {
      send_json(res, 200, json::object{{"status", "ok"}});
    }));
    http.Get("/readyz", wrap("readyz", true, [this](const auto&, auto& res, const auto& cid) {
      std::string why;
      if (engine.ready(&why)) send_json(res, 200, json::object{{"status", "ready"}});
      else send_error(res, 503, "not_ready", why, cid);
    }));
    http.Get("/metrics", wrap("metrics", true, [this](const auto&, auto& res, const auto&) {
      refresh_gauges();
      res.status = 200;  // (counted by wrap: set before, not by httplib after)
      res.set_content(engine.metrics().render(), "text/plain; version=0.0.4");
    }));

    http.Get("/api/tenants", wrap("tenants", true, [this](const auto&, auto& res, const auto&) {
      send_json(res, 200, json::object{{"tenants", engine.tenants_json()}});
    }));
    http.Get(R"(/api/tenants/([^/]+))", wrap("tenant", true, [this](const auto& req, auto& res, const auto& cid) {
      auto t = engine.tenant_json(req.matches[1]);
      if (!t) return send_error(res, 404, "unknown_tenant", "no tenant '" + std::string(req.matches[1]) + "'", cid);
      send_json(res, 200, *t);
    }));
    http.Post(R"(/api/tenants/([^/]+)/flows/([^/]+)/dry-run)",
              admin_post("dry-run", [this](const auto& req, auto& res, const auto& cid) {
                std::string tenant = req.matches[1], flow = req.matches[2];
                auto v = engine.active(tenant);
                if (!v) return send_error(res, 404, "unknown_tenant", "tenant '" + tenant + "' is not running", cid);
                if (!v->flow(flow))
                  return send_error(res, 404, "unknown_flow", "tenant " + tenant + " has no flow '" + flow + "'", cid);
                json::object context;
                if (req.has_param("context")) {
                  std::error_code ec;
                  json::value c = json::parse(req.get_param_value("context"), ec, {}, workspace::json_parse_options(8));
                  if (ec || !c.is_object())
                    return send_error(res, 400, "bad_request", "context: must be a JSON object", cid);
                  context = c.as_object();
                }
                std::string error;
                json::array out = cli::dry_run_json(v, flow, context, req.body, engine.db_path(), &error);
                if (!error.empty()) return send_error(res, 400, "dry_run_failed", engine.secrets().redact(error), cid);
                send_json(res, 200, json::object{{"records", out}});
              }));

    http.Get(R"(/api/tenants/([^/]+)/parked)", wrap("parked", true, [this](const auto& req, auto& res, const auto& cid) {
      std::string tenant = req.matches[1];
      std::string kind = req.get_param_value("kind");
      if (!kind.empty() && kind != "dead_letter" && kind != "rejection")
        return send_error(res, 400, "bad_request", "kind: dead_letter or rejection", cid);
      auto r = engine.reader();
      json::array list;
      for (const auto& p : r->parked(tenant, req.get_param_value("flow"), kind, req.has_param("all"), 1000))
        list.push_back(parked_json(p, false));
      send_json(res, 200, json::object{{"parked", list}});
    }));
    http.Get(R"(/api/tenants/([^/]+)/parked/(\d{1,18}))", wrap("parked-one", true, [this](const auto& req, auto& res, const auto& cid) {
      auto r = engine.reader();
      auto p = r->parked_by_id(std::stoll(req.matches[2]));
      if (!p || p->tenant != req.matches[1])
        return send_error(res, 404, "not_found", "no parked record " + std::string(req.matches[2]), cid);
      send_json(res, 200, parked_json(*p, true));
    }));
    http.Post(R"(/api/tenants/([^/]+)/parked/(\d{1,18})/replay)",
              admin_post("replay", [this](const auto& req, auto& res, const auto& cid) {
                std::string error;
                int64_t n = engine.replay(req.matches[1], {std::stoll(req.matches[2])}, "", &error);
                if (n == 0) return send_error(res, 404, "not_found", error, cid);
                send_json(res, 202, json::object{{"replayed", n}});
              }));
    http.Post(R"(/api/tenants/([^/]+)/replay)", admin_post("replay", [this](const auto& req, auto& res, const auto& cid) {
      json::value b;
      try {
        b = body_json(req);
      } catch (const std::exception& e) {
        return send_error(res, 400, "malformed_json", e.what(), cid);
      }
      // No ids means every parked record of the kind: so a body that is not exactly what is
      // expected (an unknown key such as "id", an id as text) is refused, never read as "all".
      std::string kind;
      std::vector<int64_t> ids;
      if (!b.is_object()) return send_error(res, 400, "bad_request", "the body must be a JSON object", cid);
      for (const auto& [k, v] : b.as_object()) {
        if (k == "kind") {
          if (!v.is_string() || (v.as_string() != "dead_letter" && v.as_string() != "rejection"))
            return send_error(res, 400, "bad_request", "kind: \"dead_letter\" or \"rejection\"", cid);
          kind = std::string(v.as_string());
        } else if (k == "ids") {
          if (!v.is_array()) return send_error(res, 400, "bad_request", "ids: a list of parked record ids", cid);
          for (const auto& x : v.as_array()) {
            if (!x.is_int64() || x.as_int64() <= 0)
              return send_error(res, 400, "bad_request",
                                "ids: " + json::serialize(x) + " is not a parked record id (a positive integer)", cid);
            ids.push_back(x.as_int64());
          }
          if (ids.empty()) return send_error(res, 400, "bad_request", "ids: empty (leave it out to replay all)", cid);
        } else {
          return send_error(res, 400, "bad_request",
                            "unknown key \"" + std::string(k) + "\" (the body takes \"kind\" and \"ids\")", cid);
        }
      }
      std::string error;
      int64_t n = engine.replay(req.matches[1], ids, kind, &error);
      if (!error.empty() && n == 0) return send_error(res, 404, "not_found", error, cid);
      send_json(res, 202, json::object{{"replayed", n}});
    }));

    http.Get(R"(/api/tenants/([^/]+)/conflicts)", wrap("conflicts", true, [this](const auto& req, auto& res, const auto&) {
      auto r = engine.reader();
      json::array list;
      for (const auto& c : r->conflicts(req.matches[1], req.has_param("all"), 1000)) list.push_back(conflict_json(c));
      send_json(res, 200, json::object{{"conflicts", list}});
    }));
    http.Post(R"(/api/tenants/([^/]+)/conflicts/(\d{1,18})/resolve)",
              admin_post("resolve", [this](const auto& req, auto& res, const auto& cid) {
                json::value b;
                try {
                  b = body_json(req);
                } catch (const std::exception& e) {
                  return send_error(res, 400, "malformed_json", e.what(), cid);
                }
                std::string side;
                if (b.is_object())
                  if (auto* s = b.as_object().if_contains("side"); s && s->is_string()) side = std::string(s->as_string());
                if (side != "source" && side != "destination")
                  return send_error(res, 400, "bad_request", "side: \"source\" or \"destination\"", cid);
                std::string error;
                if (!engine.resolve_conflict(req.matches[1], std::stoll(req.matches[2]), side, cid, &error)) {
                  bool twice = error.find("already resolved") != std::string::npos;
                  return send_error(res, twice ? 409 : 404, twice ? "conflict" : "not_found", error, cid);
                }
                send_json(res, 200, json::object{{"resolved", std::stoll(req.matches[2])}, {"side", side}});
              }));

    http.Post(R"(/api/tenants/([^/]+)/flows/([^/]+)/jobs/([^/]+))",
              admin_post("job", [this](const auto& req, auto& res, const auto& cid) {
                JobRequest r{req.matches[1], req.matches[2], req.matches[3], "api"};
                std::string error;
                int64_t run = 0;
                if (!engine.start_job(r, &error, &run)) {
                  int status = error.find("already running") != std::string::npos ? 409 : 404;
                  return send_error(res, status, status == 409 ? "conflict" : "not_found", error, cid);
                }
                send_json(res, 202, json::object{{"run", run}, {"job", r.job}, {"flow", r.flow}});
              }));

    http.Get(R"(/api/trace/([^/]+))", wrap("trace", true, [this](const auto& req, auto& res, const auto& cid) {
      auto r = engine.reader();
      json::array events;
      for (const auto& e : r->trace(req.matches[1]))
        events.push_back(json::object{{"at", util::iso8601_ms(e.at_ms)}, {"tenant", e.tenant}, {"flow", e.flow},
                                      {"key", e.record_key}, {"stage", e.stage}, {"detail", e.detail}});
      if (events.empty())
        return send_error(res, 404, "not_found", "nothing recorded for correlation id " + std::string(req.matches[1]), cid);
      send_json(res, 200, json::object{{"correlationId", std::string(req.matches[1])}, {"events", events}});
    }));

    http.Post("/api/reload", admin_post("reload", [this](const auto& req, auto& res, const auto&) {
      std::string tenant = req.get_param_value("tenant");
      json::object r = engine.reload(tenant, "api");
      bool refused = tenant.empty() ? false : r["result"] == "refused";
      if (tenant.empty())
        for (auto& [_, v] : r)
          if (v.is_object() && v.as_object().contains("result") && v.as_object()["result"] == "refused") refused = true;
      send_json(res, refused ? 422 : 200, r);
    }));

    // Last: bodies for anything else are read and dropped, never kept.
    // ([\s\S]: a path may hold a decoded newline, which '.' does not match.)
    http.Post(R"([\s\S]*)", no_route());
    http.Put(R"([\s\S]*)", no_route());
    http.Patch(R"([\s\S]*)", no_route());
    http.Delete(R"([\s\S]*)", no_route());
  }

  // Gauges computed when scraped: backlog and oldest waiting operation per flow.
  void refresh_gauges() {
    auto r = engine.reader();
    util::Metrics& m = engine.metrics();
    m.clear_gauge("weft_outbox_backlog");
    m.clear_gauge("weft_outbox_oldest_age_seconds");
    m.clear_gauge("weft_inbox_backlog");
    m.clear_gauge("weft_parked");
    int64_t now = util::now_ms();
    for (const auto& s : r->status()) {
      util::Labels l{{"tenant", s.tenant}, {"flow", s.flow}};
      m.set("weft_outbox_backlog", l, static_cast<double>(s.outbox), "Planned operations not yet delivered");
      m.set("weft_outbox_oldest_age_seconds", l,
            s.outbox_oldest_ms ? static_cast<double>(now - s.outbox_oldest_ms) / 1000.0 : 0.0,
            "Age of the oldest operation waiting in the outbox");
      m.set("weft_parked", {{"tenant", s.tenant}, {"flow", s.flow}, {"kind", "dead_letter"}},
            static_cast<double>(s.dead_letters), "Dead letters and rejections waiting for a replay");
      m.set("weft_parked", {{"tenant", s.tenant}, {"flow", s.flow}, {"kind", "rejection"}},
            static_cast<double>(s.rejections));
    }
    for (const auto& t : engine.tenant_names())
      m.set("weft_inbox_backlog", {{"tenant", t}}, static_cast<double>(r->inbox_backlog(t)),
            "Received records not yet through the pipeline");
  }
};

Server::Server(Engine& engine, std::string admin_token) : impl_(std::make_unique<Impl>(engine, std::move(admin_token))) {
  auto& h = impl_->http;
  // Without TCP_NODELAY every keep-alive answer waits ~40 ms (shared/reference/http.md).
  h.set_tcp_nodelay(true);
  h.new_task_queue = [] { return new httplib::ThreadPool(64); };
  h.set_keep_alive_max_count(100000);
  h.set_read_timeout(30, 0);
  // Above every connection's own limit: what a read may take at most. What is kept is
  // bounded by each route (content readers, above).
  size_t max = std::max<size_t>(engine.options().limits.max_body_bytes, size_t{64} << 20);
  h.set_payload_max_length(max);
  h.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    impl_->count_http("none", res);  // no route, or refused by httplib itself
    std::string cid = correlation_id_from(req.get_header_value("traceparent"), req.get_header_value("X-Correlation-ID"));
    res.set_header("X-Correlation-ID", cid);
    std::string code = res.status == 404 ? "not_found" : res.status == 413 ? "payload_too_large" : "http_" + std::to_string(res.status);
    std::string message = res.status == 404 ? "no route " + req.method + " " + req.path
                          : res.status == 413 ? "the body is too large"
                                              : "the request was refused";
    send_json(res, res.status, json::object{{"error", json::object{{"code", code}, {"message", message}, {"correlationId", cid}}}});
  });
  impl_->routes();
}

Server::~Server() { stop(); }

bool Server::listen(const std::string& host, int port, std::string* error) {
  if (port == 0) {
    impl_->port = impl_->http.bind_to_any_port(host.c_str());
  } else {
    impl_->port = impl_->http.bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (impl_->port <= 0) {
    *error = "cannot listen on " + host + ":" + std::to_string(port) + " (in use, or not an address of this machine)";
    return false;
  }
  return true;
}

int Server::port() const { return impl_->port; }
void Server::run() { impl_->http.listen_after_bind(); }
void Server::stop() { impl_->http.stop(); }

}  // namespace weft::serve
