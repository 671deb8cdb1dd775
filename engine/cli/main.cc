// The `weft` command line: argument parsing only; the work is in commands.h.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "engine/cli/commands.h"
#include "engine/cli/common.h"

int main(int argc, char** argv) {
  using namespace weft::cli;
  CLI::App app{
      "weft: an integration engine for commerce data.\n"
      "Lua mappings per tenant, tested with fixtures and dry-runs before they touch an API.",
      "weft"};
  app.set_version_flag("--version", std::string("weft ") + WEFT_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  // Every --tenant is read the same way: "acme/" is acme; "../x" and "a/b" are refused.
  const CLI::Validator tenant_name([](std::string& t) { return normalize_tenant(&t); }, "TENANT");

  CheckOptions check;
  auto* c = app.add_subcommand("check", "Validate every tenant.json and compile every flow script.\n"
                                        "Prints file:line errors; exit 2 if there are any.");
  c->add_option("--workspace,workspace", check.workspace, "workspace folder (default: .)");

  TestOptions test;
  auto* t = app.add_subcommand("test", "Run fixture cases (<tenant>/tests/*.json) and print a diff for each\n"
                                       "mismatch; ends with 'N passed, N failed'; exit 1 if any failed.");
  t->add_option("dirs", test.dirs, "workspaces or tenant folders (default: .)");
  t->add_option("--flow", test.flow, "only the cases of this flow");
  t->add_flag("--watch", test.watch, "rerun the affected cases whenever a script, lib module or fixture changes");

  DryRunOptions dry;
  auto* d = app.add_subcommand("dry-run", "Map records with a flow and print, per record, the payload, the\n"
                                          "normalization notes, the destination-schema validation, and the plan:\n"
                                          "the identity decision, the merge per field and the exact HTTP requests\n"
                                          "(secrets redacted). No network, no writes. Exit 1 if any was rejected.");
  d->add_option("--workspace", dry.workspace, "workspace folder (default: .)");
  d->add_option("--tenant", dry.tenant, "tenant folder name")->required()->transform(tenant_name);
  d->add_option("--flow", dry.flow, "flow name from tenant.json")->required();
  d->add_option("--input", dry.input, "a JSON record, a JSON array of records, or NDJSON; - for stdin")->required();
  d->add_option("--context", dry.context, "JSON object merged over the flow's context, e.g. '{\"locale\":\"sv-SE\"}'");
  d->add_flag("--pretty", dry.pretty, "indent the output (the default on a terminal)");
  d->add_option("--db", dry.db, "plan against this store, read-only (default: as if nothing had been synced)");

  MapOptions map;
  auto* m = app.add_subcommand("map", "Map an NDJSON stream: one payload per line out (input order kept),\n"
                                      "rejections with their reasons to --rejects. Memory stays bounded\n"
                                      "whatever the input size. Exit 1 if any record was rejected.");
  m->add_option("--workspace", map.workspace, "workspace folder (default: .)");
  m->add_option("--tenant", map.tenant, "tenant folder name")->required()->transform(tenant_name);
  m->add_option("--flow", map.flow, "flow name from tenant.json")->required();
  m->add_option("--input", map.input, "NDJSON input file; - for stdin (default)");
  m->add_option("--output", map.output, "NDJSON output file; - for stdout (default)");
  m->add_option("--rejects", map.rejects, "NDJSON file for rejected records, with reasons");
  m->add_option("--context", map.context, "JSON object merged over the flow's context");
  m->add_option("--workers", map.workers, "mapping threads, each with its own Lua state (default 1)")
      ->check(CLI::Range(1, 64));
  m->add_option("--max-line-bytes", map.max_line_bytes,
                "longest input line; longer ones are rejected as line_too_long, unread (default 67108864)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 30));

  ServeOptions serve;
  auto* sv = app.add_subcommand("serve", "The long-running engine: webhooks, scheduled pulls, backfills and reconciliation,\n"
                                         "live reload of the workspace, the admin API and metrics. SIGHUP reloads;\n"
                                         "SIGTERM/SIGINT stop gracefully (nothing received is lost).");
  sv->add_option("--workspace", serve.workspace, "workspace folder (default: .)");
  sv->add_option("--db", serve.db, "the store (default: <workspace>/.weft/weft.db)");
  sv->add_option("--listen", serve.listen, "HOST:PORT to listen on (port 0: any free port)")->capture_default_str();
  sv->add_option("--log-format", serve.log_format, "text (the default) or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}));
  sv->add_option("--admin-token-env", serve.admin_token_env,
                 "environment variable holding the admin API's bearer token (unset: one is made and kept in\n"
                 "<workspace>/.weft/admin-token)")
      ->capture_default_str();
  sv->add_option("--max-backlog", serve.max_backlog, "per tenant: received records waiting before webhooks answer 503")
      ->capture_default_str();
  sv->add_option("--max-body-bytes", serve.max_body_bytes, "largest webhook body (a connection may set its own)")
      ->capture_default_str();
  sv->add_flag("--no-watch", serve.no_watch, "do not watch the workspace (reload with SIGHUP or POST /api/reload)");
  sv->add_option("--port-file", serve.port_file, "write the port to this file once listening");

  SyncOptions sync;
  auto* sy = app.add_subcommand("sync", "One delta pull and delivery, run to completion: pulls each flow's source from\n"
                                        "its stored cursor, maps, merges and plans, and delivers every planned\n"
                                        "operation (retrying as the flow's policy says). Prints a progress line on a\n"
                                        "terminal and a JSON summary. Safe to kill: a rerun resumes.\n"
                                        "Exit 1 if records were rejected or dead-lettered, 2 on configuration errors.");
  sy->add_option("--workspace", sync.workspace, "workspace folder (default: .)");
  sy->add_option("--tenant", sync.tenant, "tenant folder name")->required()->transform(tenant_name);
  sy->add_option("--flow", sync.flow, "only this flow (default: every enabled flow)");
  sy->add_option("--db", sync.db, "the store (default: <workspace>/.weft/weft.db)");

  ReplayOptions replay;
  auto* rp = app.add_subcommand("replay", "Send dead letters and rejections through the pipeline again, with the\n"
                                          "current script version, and deliver them. --list shows them instead.");
  rp->add_option("--workspace", replay.workspace, "workspace folder (default: .)");
  rp->add_option("--tenant", replay.tenant, "tenant folder name")->required()->transform(tenant_name);
  rp->add_option("--flow", replay.flow, "only this flow's records");
  rp->add_option("--db", replay.db, "the store (default: <workspace>/.weft/weft.db)");
  rp->add_option("--kind", replay.kind, "dead_letter, rejection or all (default)")
      ->check(CLI::IsMember({"dead_letter", "rejection", "all"}));
  rp->add_option("--id", replay.ids, "only these parked records (ids from --list)");
  rp->add_flag("--list", replay.list, "print the parked records as NDJSON; replay nothing");

  StatusOptions status;
  auto* st = app.add_subcommand("status", "Backlog, cursors, dead letters, rejections and conflicts per tenant and flow.");
  st->add_option("--workspace", status.workspace, "workspace folder, for the default --db (default: .)");
  st->add_option("--db", status.db, "the store (default: <workspace>/.weft/weft.db)");
  st->add_option("--tenant", status.tenant, "only this tenant")->transform(tenant_name);
  st->add_flag("--conflicts", status.conflicts, "list the open conflicts");
  st->add_flag("--pretty", status.pretty, "indent the output (the default on a terminal)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kConfigError;
  }

  auto logger = spdlog::stderr_color_mt("weft");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (*c) return run_check(check);
  if (*t) return run_test(test);
  if (*d) return run_dry_run(dry);
  if (*m) return run_map(map);
  if (*sy) return run_sync(sync);
  if (*sv) return run_serve(serve);
  if (*rp) return run_replay(replay);
  if (*st) return run_status(status);
  return kConfigError;
}
