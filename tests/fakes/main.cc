// weft-fakes: the fake commercetools project and the fake Omnisend API in one process, for
// the sync benchmark and the README's demo (the tests use the fakes in-process instead).
// (CMakeLists.txt keeps it out of the weft_fakes library the tests link.)

#include <CLI/CLI.hpp>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "tests/fakes/commercetools.h"
#include "tests/fakes/omnisend.h"

namespace json = boost::json;

namespace {

const char* kDescription = R"(weft-fakes: a fake commercetools project and a fake Omnisend API (v3) on 127.0.0.1,
each on a free port, for benchmarks and demos.

Once both listen (and the customers are seeded), it prints ONE line of JSON to stdout:
  {"commercetools":{"url":"http://127.0.0.1:P","project":"..","client_id":"..","client_secret":".."},
   "omnisend":{"url":"http://127.0.0.1:P/v3","api_key":".."}}
The commercetools url serves both OAuth (/oauth/token) and the API (/{project}/customers).

It serves until SIGTERM, SIGINT or SIGHUP, or until its stdin reaches end of file (so a
script that holds a pipe to it stops it by closing the pipe or by exiting). A stdin that
is /dev/null (what `weft-fakes &` gets in a non-interactive shell) is not watched.

On exit, with --report FILE, it writes (then renames into place) one JSON object:
  {"contacts":N,"order_violations":N,"retry_after_violations":N,"requests":N,"commercetools_requests":N}
contacts: Omnisend contacts held; order_violations: Omnisend writes whose
customProperties.commercetoolsVersion was lower than one already written to that contact;
retry_after_violations: Omnisend requests sent before the wait a 429 asked for was over
(per email); requests: requests the fake Omnisend received.

Omnisend faults are shares of requests between 0 and 1, drawn from --seed (repeatable).
Example:
  weft-fakes --customers 100000 --omnisend-rate-limited 0.05 --report /tmp/fakes.json)";

// True when fd 0 is /dev/null or closed: its end of file says nothing.
bool stdin_is_null() {
  struct stat in, null;
  if (fstat(0, &in) != 0) return true;
  return stat("/dev/null", &null) == 0 && S_ISCHR(in.st_mode) && in.st_rdev == null.st_rdev;
}

bool write_file(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!(out << content << '\n')) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{kDescription, "weft-fakes"};
  app.get_formatter()->column_width(34);
  int customers = 0;
  std::string omnisend_key = "test-key", ct_project = "acme-shop", ct_client_id = "client-id",
              ct_client_secret = "client-secret", report;
  weft::fakes::Faults faults;
  std::string customers_file;
  app.add_option("--customers-file", customers_file,
                 "seed commercetools with the customers of this NDJSON file (e.g. from "
                 "shared/bench/gen_customers.py); their id and lastModifiedAt are kept")
      ->type_name("FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--customers", customers, "seed commercetools with sample customers 0..N-1 (id "
                                           "00000000-0000-0000-0000-<i, 12 digits>, email c<i>@x.se)")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--omnisend-key", omnisend_key, "the X-API-KEY the fake Omnisend accepts")->capture_default_str();
  app.add_option("--ct-project", ct_project, "commercetools project key")->capture_default_str();
  app.add_option("--ct-client-id", ct_client_id, "commercetools API client id")->capture_default_str();
  app.add_option("--ct-client-secret", ct_client_secret, "commercetools API client secret")->capture_default_str();
  app.add_option("--omnisend-server-error", faults.server_error, "share of Omnisend requests answered 500/502/503")
      ->type_name("SHARE")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--omnisend-rate-limited", faults.rate_limited,
                 "share answered 429 with {\"retryAfter\": retry-after-s} in the body")
      ->type_name("SHARE")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--omnisend-timeout", faults.timeout, "share that wait --omnisend-timeout-ms, then answer 504")
      ->type_name("SHARE")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--omnisend-reset", faults.reset, "share whose connection is closed before a whole answer")
      ->type_name("SHARE")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--omnisend-timeout-ms", faults.timeout_ms, "how long a timed-out request hangs")
      ->type_name("MS")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--omnisend-retry-after-s", faults.retry_after_s, "the wait a 429 asks for, in seconds")
      ->type_name("S")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--omnisend-retry-after-header", faults.retry_after_header,
               "also send a Retry-After header with a 429 (the real API does not)");
  app.add_option("--omnisend-latency-ms", faults.latency_ms, "added to every Omnisend request")
      ->type_name("MS")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", faults.seed, "seed of the fault draws")->type_name("N")->capture_default_str();
  app.add_option("--report", report, "on exit, write the counters as JSON to this file")->type_name("FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // Termination signals are blocked in every thread (the servers' threads inherit this
  // mask) and taken by sigwait below, so the report is written whatever stops us.
  sigset_t stop;
  sigemptyset(&stop);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, s);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  weft::fakes::FakeCommercetools ct(ct_project, ct_client_id, ct_client_secret);
  weft::fakes::FakeOmnisend omnisend(omnisend_key);
  if (ct.port() <= 0 || omnisend.port() <= 0) {
    std::cerr << "weft-fakes: cannot listen on 127.0.0.1\n";
    return 1;
  }
  omnisend.set_faults(faults);
  if (customers > 0) ct.put_customers_bulk(0, customers);
  if (!customers_file.empty()) {
    std::ifstream in(customers_file);
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::error_code ec;
      boost::json::value v = boost::json::parse(line, ec);
      if (ec || !v.is_object()) {
        std::fprintf(stderr, "weft-fakes: %s:%zu: not a JSON object\n", customers_file.c_str(), n);
        return 2;
      }
      v.as_object().erase("version");  // the fake numbers versions from 1
      ct.put_customer(std::move(v.as_object()));
    }
  }

  json::object ready{
      {"commercetools", json::object{{"url", ct.url()},
                                     {"project", ct_project},
                                     {"client_id", ct_client_id},
                                     {"client_secret", ct_client_secret}}},
      {"omnisend", json::object{{"url", omnisend.base_url()}, {"api_key", omnisend_key}}}};
  std::cout << json::serialize(ready) << std::endl;

  if (!stdin_is_null()) {
    std::thread([] {
      char buf[4096];
      for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR)) break;
      }
      kill(getpid(), SIGTERM);  // taken by the sigwait below
    }).detach();
  }
  int sig = 0;
  sigwait(&stop, &sig);

  if (!report.empty()) {
    json::object counters{{"contacts", omnisend.contact_count()},
                          {"order_violations", omnisend.order_violations()},
                          {"retry_after_violations", omnisend.retry_after_violations()},
                          {"requests", omnisend.request_count()},
                          {"commercetools_requests", ct.requests().size()}};
    if (!write_file(report, json::serialize(counters))) {
      std::cerr << "weft-fakes: cannot write " << report << "\n";
      return 1;
    }
  }
  return 0;
}

