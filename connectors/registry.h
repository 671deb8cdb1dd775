#pragma once
// The connectors weft has, by system name: destination models and destinations for the
// pipeline and delivery, sources for pulls. A connection is its tenant.json object; secrets
// (${ENV} references) are resolved here, through Secrets, so they can be redacted anywhere.
#include <boost/json/object.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "connectors/commercetools/client.h"
#include "connectors/omnisend/client.h"
#include "engine/delivery/destination.h"
#include "engine/workspace/secrets.h"

namespace weft::connectors {

// A connection that cannot be used as configured: names the connection and what is wrong
// (an unset environment variable, an unsupported system or entity, a bad URL).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The payload model for a system's entity; nullptr when weft cannot deliver it.
const delivery::Model* destination_model(const std::string& system, const std::string& entity);
// The entities weft can deliver to `system` (each has a destination_model); empty when it
// delivers nothing there yet.
std::vector<std::string> destination_entities(const std::string& system);

// How weft takes records of a source system's entity: `pull` (the delta pull, backfills,
// reconciliation, and a fetch for a notification that does not carry the record), or only
// from `webhooks` whose messages carry the record (commercetools subscription messages such
// as OrderCreated); `none` when it cannot take them at all.
enum class SourceSupport { none, webhooks, pull };
SourceSupport source_support(const std::string& system, const std::string& entity);
// The entities source_support knows for `system`, in a stable order; empty when weft takes
// nothing from it yet.
std::vector<std::string> source_entities(const std::string& system);
// Whether weft serve takes webhooks from `system` (http::parse_webhook reads its messages).
bool takes_webhooks(const std::string& system);
// Whether reconciliation can compare a flow's records with this destination (it looks
// contacts up in Omnisend).
bool can_reconcile(const std::string& destination_system, const std::string& destination_entity);

// With `display` (dry-run), settings whose ${ENV} is unset stay as the reference text
// instead of failing: the requests are shown, never sent.
std::unique_ptr<delivery::Destination> make_destination(const std::string& name, const boost::json::object& connection,
                                                        const std::string& entity, workspace::Secrets& secrets,
                                                        bool display = false);

// An Omnisend connection's settings (secrets resolved; ConfigError when one is unset).
omnisend::Settings omnisend_settings(const std::string& name, const boost::json::object& connection,
                                     workspace::Secrets& secrets, bool display = false);

std::unique_ptr<commercetools::Source> make_commercetools(const std::string& name,
                                                          const boost::json::object& connection,
                                                          workspace::Secrets& secrets);

// A connection's optional settings, with defaults per system.
int connection_timeout_ms(const boost::json::object& connection);   // "timeout_ms", default 10000
int connection_concurrency(const boost::json::object& connection);  // "concurrency", default 4
// "batch": operations per batch request where the API has batches (Omnisend contacts: up to
// 100, the default); 1 sends every operation on its own.
int connection_batch(const boost::json::object& connection);
// "rate_limit": {"requests","per_seconds"} or "off"; Omnisend defaults to 400 per 60 s.
// Returns requests <= 0 for no limit.
std::pair<int, int64_t> connection_rate_limit(const boost::json::object& connection);

}  // namespace weft::connectors
