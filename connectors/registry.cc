#include "connectors/registry.h"

#include <boost/json.hpp>

#include "connectors/omnisend/client.h"
#include "engine/util/time.h"

namespace weft::connectors {

namespace json = boost::json;

namespace {

std::string text(const json::object& o, const char* key, const std::string& fallback = "") {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : fallback;
}

// A setting that may be a ${ENV} reference.
std::string setting(const std::string& connection, const json::object& o, const char* key, const std::string& fallback,
                    workspace::Secrets& secrets, bool required, bool display = false) {
  std::string raw = text(o, key, fallback);
  if (raw.empty()) {
    if (required) throw ConfigError("connection " + connection + ": \"" + key + "\" is required");
    return raw;
  }
  std::string missing;
  bool empty = false;
  auto v = secrets.resolve(raw, &missing, &empty);
  if (!v && display) return raw;
  if (!v)
    throw ConfigError("connection " + connection + ": \"" + key + "\" refers to environment variable " + missing +
                      (empty ? ", which is empty" : ", which is not set"));
  return *v;
}

const delivery::Model kOmnisendContact = [] {
  delivery::Model m;
  m.kind = "contact.upsert";
  m.merge = true;
  m.atomic = {"identifiers[*].channels.*", "tags"};
  m.aliases = {{"email", "identifiers[email].id"},
               {"phone", "identifiers[phone].id"},
               {"consent.email", "identifiers[email].channels.email"},
               {"consent.sms", "identifiers[phone].channels.sms"}};
  m.match_paths = {{"email", "identifiers[email].id"}, {"phone", "identifiers[phone].id"}};
  m.identify_by = {"identifiers[email].id", "identifiers[phone].id"};
  return m;
}();

const delivery::Model kOmnisendEvent = [] {
  delivery::Model m;
  m.kind = "event.send";
  m.merge = false;
  return m;
}();

class OmnisendDestination final : public delivery::Destination {
 public:
  OmnisendDestination(omnisend::Settings s, size_t batch) : settings_(s), client_(std::move(s)), batch_(batch) {}

  size_t max_batch(const std::string& kind) const override { return kind == "contact.upsert" ? batch_ : 1; }
  int batch_requests() const override { return 3; }  // create, poll (at least once), results

  std::vector<delivery::Answer> send_batch(const std::vector<const store::Operation*>& ops) override {
    std::vector<std::string_view> bodies;
    for (const auto* op : ops) bodies.push_back(op->body);
    std::vector<delivery::Answer> out;
    bool refused = false;
    auto results = client_.upsert_contacts(bodies, 600000, &refused);
    if (refused) {  // the batch as a whole was refused: each contact gets its own answer
      for (const auto* op : ops) out.push_back(send(*op, ""));
      return out;
    }
    for (auto& b : results)  // constructed, so the answer keeps its arena (client.cc)
      out.push_back(delivery::Answer{std::move(b.result), std::move(b.contact_id), "", std::move(b.answer)});
    return out;
  }

  // Looked up by the contact's email, else its phone: Omnisend updates the contact that
  // holds any identifier of a write, so a phone-only contact (an SMS signup) would take the
  // write of a new email and its guarded SMS consent with it. The phone is asked only when
  // the email finds nothing and a guarded field is the phone's.
  bool held_record(const store::Operation& op, std::string* record_json, delivery::SendResult* error) override {
    record_json->clear();
    auto ids = omnisend::lookup_identifiers(op.body);
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto& [type, id] = ids[i];
      if (i > 0 && (type != "phone" || op.guard.find("identifiers[phone]") == std::string::npos)) break;
      if (!client_.find_contact(type, id, record_json, error)) return false;
      if (record_json->empty()) continue;
      // Found by the phone only: the contact may be another person's (a shared phone).
      // Only what belongs to the phone counts as held for this record.
      if (i > 0) *record_json = omnisend::only_identifier(*record_json, type);
      return true;
    }
    return true;  // nothing holds them: Omnisend will create it
  }

  // A second lookup, by phone, when the phone's fields are guarded (held_record).
  int lookup_requests(const store::Operation& op) const override {
    return op.guard.find("identifiers[phone]") == std::string::npos ? 1 : 2;
  }

  const delivery::Model* model_for(const std::string& kind) const override {
    if (kind == kOmnisendContact.kind) return &kOmnisendContact;
    if (kind == kOmnisendEvent.kind) return &kOmnisendEvent;
    return nullptr;
  }

  delivery::Request request(const store::Operation& op, const std::string&, bool redact) const override {
    delivery::Request r;
    r.method = "POST";
    r.url = settings_.api_url + (op.kind == "event.send" ? "/events" : "/contacts");
    r.headers = {{"Content-Type", "application/json"}, {"X-API-KEY", redact ? "***" : settings_.api_key}};
    r.body = op.body;
    return r;
  }

  delivery::Answer send(const store::Operation& op, const std::string&) override {
    delivery::Answer a;
    if (op.kind == "event.send") {
      a.result = client_.send_event(op.body, util::now_ms());
    } else {
      a.result = client_.upsert_contact(op.body, util::now_ms(), &a.remote_id, &a.record_json);
    }
    return a;
  }

 private:
  omnisend::Settings settings_;
  omnisend::Destination client_;
  size_t batch_;
};

}  // namespace

const delivery::Model* destination_model(const std::string& system, const std::string& entity) {
  if (system == "omnisend" && entity == "contact") return &kOmnisendContact;
  if (system == "omnisend" && entity == "event") return &kOmnisendEvent;
  return nullptr;
}

std::vector<std::string> destination_entities(const std::string& system) {
  if (system == "omnisend") return {"contact", "event"};
  return {};
}

// commercetools customers are pulled (commercetools::Source reads customers only); orders
// come only by subscription messages that carry the order (pipeline::Runner::resolve passes
// them on as they are, and can fetch nothing but customers for the others).
SourceSupport source_support(const std::string& system, const std::string& entity) {
  if (system != "commercetools") return SourceSupport::none;
  if (entity == "customer") return SourceSupport::pull;
  if (entity == "order") return SourceSupport::webhooks;
  return SourceSupport::none;
}

std::vector<std::string> source_entities(const std::string& system) {
  if (system == "commercetools") return {"customer", "order"};
  return {};
}

bool takes_webhooks(const std::string& system) { return system == "commercetools"; }

bool can_reconcile(const std::string& system, const std::string& entity) {
  return system == "omnisend" && entity == "contact";
}

int connection_timeout_ms(const json::object& c) {
  auto* v = c.if_contains("timeout_ms");
  return v && v->is_int64() ? static_cast<int>(v->as_int64()) : 10000;
}

int connection_batch(const json::object& c) {
  auto* v = c.if_contains("batch");
  return v && v->is_int64() ? static_cast<int>(v->as_int64()) : 100;
}

int connection_concurrency(const json::object& c) {
  auto* v = c.if_contains("concurrency");
  return v && v->is_int64() ? static_cast<int>(v->as_int64()) : 4;
}

std::pair<int, int64_t> connection_rate_limit(const json::object& c) {
  auto* v = c.if_contains("rate_limit");
  if (v && v->is_string() && v->as_string() == "off") return {0, 0};
  if (v && v->is_object()) {
    const auto& o = v->as_object();
    int requests = static_cast<int>(o.at("requests").to_number<int64_t>());
    auto per_ms = static_cast<int64_t>(o.at("per_seconds").to_number<double>() * 1000);
    return {requests, per_ms};
  }
  if (text(c, "system") == "omnisend") return {400, 60000};
  return {0, 0};
}

omnisend::Settings omnisend_settings(const std::string& name, const json::object& c, workspace::Secrets& secrets,
                                     bool display) {
  omnisend::Settings s;
  s.api_url = setting(name, c, "api_url", "https://api.omnisend.com/v3", secrets, true, display);
  while (!s.api_url.empty() && s.api_url.back() == '/') s.api_url.pop_back();
  s.api_key = setting(name, c, "api_key", "", secrets, true, display);
  s.timeout_ms = connection_timeout_ms(c);
  return s;
}

std::unique_ptr<delivery::Destination> make_destination(const std::string& name, const json::object& c,
                                                        const std::string& entity, workspace::Secrets& secrets,
                                                        bool display) {
  std::string system = text(c, "system");
  const delivery::Model* model = destination_model(system, entity);
  if (!model) throw ConfigError("connection " + name + ": weft cannot deliver " + entity + " to " + system + " yet");
  omnisend::Settings s = omnisend_settings(name, c, secrets, display);
  try {
    return std::make_unique<OmnisendDestination>(s, static_cast<size_t>(connection_batch(c)));
  } catch (const std::invalid_argument& e) {
    throw ConfigError("connection " + name + ": " + e.what());
  }
}

std::unique_ptr<commercetools::Source> make_commercetools(const std::string& name, const json::object& c,
                                                          workspace::Secrets& secrets) {
  if (text(c, "system") != "commercetools")
    throw ConfigError("connection " + name + ": weft can pull only from commercetools yet, not " + text(c, "system"));
  commercetools::Settings s;
  s.auth_url = setting(name, c, "auth_url", "https://auth.europe-west1.gcp.commercetools.com", secrets, true);
  s.api_url = setting(name, c, "api_url", "https://api.europe-west1.gcp.commercetools.com", secrets, true);
  s.project = setting(name, c, "project", "", secrets, true);
  s.client_id = setting(name, c, "client_id", "", secrets, true);
  s.client_secret = setting(name, c, "client_secret", "", secrets, true);
  s.timeout_ms = connection_timeout_ms(c);
  try {
    return std::make_unique<commercetools::Source>(s);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("connection " + name + ": " + e.what());
  }
}

}  // namespace weft::connectors
