#pragma once
// weft serve's HTTP side (cpp-httplib): webhooks, the admin API, health and metrics.
//
//   POST /webhooks/{tenant}/{connection}          202 once durable in the inbox
//   GET  /healthz                                 no token
//   GET  /readyz, /metrics                        admin token
//   GET  /api/tenants, /api/tenants/{t}
//   POST /api/tenants/{t}/flows/{f}/dry-run       the same output as `weft dry-run`
//   GET  /api/tenants/{t}/parked[?kind=&flow=]    dead letters and rejections
//   GET  /api/tenants/{t}/parked/{id}
//   POST /api/tenants/{t}/parked/{id}/replay, POST /api/tenants/{t}/replay {"kind","ids"}
//   GET  /api/tenants/{t}/conflicts, POST /api/tenants/{t}/conflicts/{id}/resolve {"side"}
//   POST /api/tenants/{t}/flows/{f}/jobs/{job}    pull, backfill, reconcile
//   GET  /api/trace/{correlationId}
//   POST /api/reload[?tenant=]
// Errors everywhere: {"error":{"code","message","correlationId"}}. Every answer carries
// X-Correlation-ID (adopted from traceparent or X-Correlation-ID, else made).
#include <memory>
#include <string>

#include "engine/serve/engine.h"

namespace weft::serve {

class Server {
 public:
  // `admin_token`: the bearer token the admin API requires (never empty).
  Server(Engine& engine, std::string admin_token);
  ~Server();
  // Binds host:port (port 0: an ephemeral one); false with *error when it cannot.
  bool listen(const std::string& host, int port, std::string* error);
  int port() const;
  // Serves until stop() (blocking); call from a thread of its own.
  void run();
  // Stops accepting; requests being answered finish.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The correlation id of a request: the trace id of a W3C traceparent, else a sane
// X-Correlation-ID (1-128 of [A-Za-z0-9._:-]), else a new one.
std::string correlation_id_from(const std::string& traceparent, const std::string& x_correlation_id);

}  // namespace weft::serve
