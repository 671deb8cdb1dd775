#include "engine/pipeline/pipeline.h"

#include <boost/json.hpp>
#include <algorithm>
#include <optional>
#include <stdexcept>

#include "connectors/registry.h"
#include "engine/util/ids.h"
#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"
#include "engine/workspace/schema.h"

namespace weft::pipeline {

namespace json = boost::json;
using Status = RecordResult::Status;

const char* status_name(Status s) {
  switch (s) {
    case Status::planned: return "planned";
    case Status::unchanged: return "unchanged";
    case Status::stale: return "stale";
    case Status::skipped: return "skipped";
    case Status::rejected: return "rejected";
    case Status::conflict: return "conflict";
  }
  return "?";
}

Pipeline::Pipeline(std::shared_ptr<const workspace::TenantVersion> tenant, store::Store& store)
    : tenant_(std::move(tenant)), store_(store) {
  std::string error;
  sandbox_ = script::Sandbox::create(tenant_->code, &error);
  if (!sandbox_) throw std::runtime_error("tenant " + tenant_->tenant + ": " + error);
}

Pipeline::~Pipeline() = default;

std::vector<const workspace::Flow*> Pipeline::flows_for(const store::InboxRecord& rec) const {
  std::vector<const workspace::Flow*> out;
  for (const auto& [name, f] : tenant_->flows) {
    if (!rec.flow.empty()) {
      if (name == rec.flow) out.push_back(&f);
      continue;
    }
    if (f.enabled && f.source_connection == rec.connection && (rec.entity.empty() || f.source_entity == rec.entity))
      out.push_back(&f);
  }
  return out;
}

namespace {

void park(store::Store& store, RecordResult& r, const std::string& tenant, const store::InboxRecord& rec,
          const std::string& stage, const std::string& error, const std::string& reason, const std::string& location,
          const std::string& detail) {
  store::Parked& p = r.parked;
  p.kind = "rejection";
  p.tenant = tenant;
  p.flow = r.flow;
  p.stage = stage;
  p.record_key = r.key;
  p.correlation_id = rec.correlation_id;
  p.script_version = r.script_version;
  p.error = error;
  p.reason = reason;
  p.location = location;
  p.detail = detail;
  p.source = rec.payload;
  p.received_ms = rec.received_ms;
  p.version = r.version;
  store.park(p);
  r.status = Status::rejected;
  r.reason = reason;
}

std::string resolve_alias(const delivery::Model& model, const std::string& name) {
  auto it = model.aliases.find(name);
  return it == model.aliases.end() ? name : it->second;
}

// Whether version v goes on after `applied`: newer, or equal for a replay (the order of
// SqliteStore::apply_version).
bool newer(const store::Version& v, const store::Version& applied, bool allow_equal) {
  return v.newer_than(applied) || (allow_equal && v.number == applied.number && v.text == applied.text);
}

RecordResult& stale(RecordResult& r, const store::Version& applied) {
  r.status = Status::stale;
  r.reason = "version " + std::to_string(r.version.number) + (r.version.text.empty() ? "" : " " + r.version.text) +
             " is not newer than the applied " + std::to_string(applied.number) +
             (applied.text.empty() ? "" : " " + applied.text);
  return r;
}

}  // namespace

RecordResult Pipeline::process(const workspace::Flow& flow, const store::InboxRecord& rec, const Options& opts) {
  Prepared p = prepare(flow, rec, opts);
  return commit(p, opts);
}

Prepared Pipeline::prepare(const workspace::Flow& flow, const store::InboxRecord& rec, const Options& opts) {
  Prepared p;
  p.flow = &flow;
  p.rec = rec;
  p.now_ms = opts.now_ms ? opts.now_ms : util::now_ms();
  const script::FlowSpec* spec = sandbox_->flow_spec(flow.name);
  script::CallContext ctx;
  ctx.fields = opts.context ? *opts.context : flow.context;
  ctx.correlation_id = rec.correlation_id;
  ctx.now = util::iso8601_ms(p.now_ms);

  p.keyed = spec && spec->has_key;
  if (p.keyed) {
    p.kv = sandbox_->key_version(flow.name, rec.payload, ctx);
    if (!p.kv.ok) return p;
  }
  script::CallOptions call;
  call.collect_notes = opts.collect_notes;
  p.out = sandbox_->map(flow.name, rec.payload, ctx, call);
  if (p.out.kind != script::Outcome::Kind::ok) return p;
  // With weft's one nesting limit: Boost.JSON's default (32) threw on a payload of 33
  // levels, which the sandbox writes, and that record then failed its batch at every try.
  std::error_code ec;
  p.mapped = json::parse(p.out.payload, ec, {}, workspace::json_parse_options());
  if (ec || !p.mapped.is_object()) {
    p.out.kind = script::Outcome::Kind::rejected;
    p.out.error = "output";
    p.out.reason = ec ? "the payload could not be read back as JSON (" + ec.message() + ")"
                      : "the payload is not a JSON object";
    p.out.payload.clear();
    return p;
  }
  if (const auto* schema = workspace::Schema::find(tenant_->destination_schema(flow))) {
    p.schema = schema->name();
    p.issues = schema->validate(p.mapped);
    if (!p.issues.empty()) return p;
  }
  p.model = connectors::destination_model(flow.destination_system, flow.destination_entity);
  if (p.model && p.model->merge) p.flat = flatten(p.mapped.as_object(), p.model->atomic);
  return p;
}

RecordResult Pipeline::commit(Prepared& p, const Options& opts) {
  const workspace::Flow& flow = *p.flow;
  const store::InboxRecord& rec = p.rec;
  const std::string& tenant = tenant_->tenant;
  int64_t now = p.now_ms;
  RecordResult r;
  r.flow = flow.name;
  r.correlation_id = rec.correlation_id;
  r.script_version = tenant_->code.version;

  // 1 order: per record key, only a newer version goes on (an equal one for a replay).
  if (p.keyed) {
    const script::KeyVersion& kv = p.kv;
    if (!kv.ok) {
      r.key = rec.message_id;
      park(store_, r, tenant, rec, "order", "key", kv.error, kv.where.str(), "{}");
      return r;
    }
    r.key = kv.key;
    r.version = {kv.version_number, kv.version_text};
    if (auto applied = store_.applied_version(tenant, flow.name, r.key); applied && !newer(r.version, *applied, opts.replay))
      return stale(r, *applied);
  } else {
    // No M.key: every message is its own record (events), its key the message id; a
    // replay's keeps the key of the message it replays, so an event's eventID is the same.
    r.key = std::string(util::replayed_key(rec.message_id));
  }

  // 2 map (done in prepare)
  script::Outcome& out = p.out;
  r.notes = std::move(out.notes);
  // The version counts as applied once the record is taken (skipped by the script, or
  // past its checks), not when it is refused: a record rejected for its payload, or for a
  // version from a broken clock, does not make the key's next versions stale.
  auto take_version = [&] {
    if (!p.keyed || store_.apply_version(tenant, flow.name, r.key, r.version, opts.replay, rec.seq)) return true;
    stale(r, store_.applied_version(tenant, flow.name, r.key).value_or(store::Version{}));  // (one writer: not expected)
    return false;
  };
  if (out.kind == script::Outcome::Kind::skipped) {
    if (!take_version()) return r;
    r.status = Status::skipped;
    r.reason = out.reason.empty() ? "the script skipped it" : out.reason;
    return r;
  }
  if (out.kind == script::Outcome::Kind::rejected) {
    park(store_, r, tenant, rec, "map", out.error, out.reason, out.where.str(), json::serialize(out.fields));
    return r;
  }
  r.payload = std::move(out.payload);

  // 3 check: the destination's schema (validated in prepare)
  if (!p.issues.empty()) {
    json::array detail;
    for (const auto& i : p.issues) detail.push_back(json::object{{"path", i.path}, {"message", i.message}});
    park(store_, r, tenant, rec, "check", "schema", p.issues.front().path + ": " + p.issues.front().message, p.schema,
         json::serialize(detail));
    return r;
  }

  const delivery::Model* model = p.model;
  if (!model) {
    park(store_, r, tenant, rec, "plan", "destination",
         "weft cannot deliver " + flow.destination_entity + " to " + flow.destination_system + " yet", "", "{}");
    return r;
  }

  store::Operation& op = r.op;
  op.tenant = tenant;
  op.flow = flow.name;
  op.connection = flow.destination_connection;
  op.record_key = r.key;
  op.kind = model->kind;
  op.correlation_id = rec.correlation_id;
  op.script_version = r.script_version;
  op.version = r.version;
  op.inbox_seq = rec.seq;
  op.next_attempt_ms = now;
  op.idempotency_key = tenant + "/" + flow.name + "/" + r.key + "/" + std::to_string(r.version.number) +
                       (r.version.text.empty() ? "" : "/" + r.version.text);

  if (!model->merge) {  // append-only: the whole payload, once per message
    if (!take_version()) return r;
    // Omnisend deduplicates events that carry both eventID and eventTime: a resend after a
    // timeout or a crash must not count twice, so weft fills them in when the script did not.
    json::value event = json::parse(r.payload, {}, workspace::json_parse_options());
    if (op.kind == "event.send" && event.is_object()) {
      json::object& e = event.as_object();
      if (!e.contains("eventID")) e["eventID"] = op.idempotency_key;
      if (!e.contains("eventTime")) {
        int64_t at = parse_time_ms(r.version.text);
        e["eventTime"] = util::iso8601_ms(at >= 0 ? at : rec.received_ms ? rec.received_ms : now);
      }
      op.body = json::serialize(event);
    } else {
      op.body = r.payload;
    }
    op.fields_json = "{}";
    r.identity = "none (append-only)";
    r.superseded = 0;
    store_.plan(op, opts.in_flight);
    r.status = Status::planned;
    return r;
  }

  // 4 identify
  const Flat& flat = p.flat;
  // (The version is taken after it: a record identify refuses, having none of the match
  // keys, is a rejection like any other; an identity conflict is a record taken.)
  if (!identify(flow, *model, flat, rec, p.keyed, r)) {
    if (r.status == Status::conflict) take_version();
    return r;
  }
  if (!take_version()) return r;
  op.entity_id = r.entity_id;

  // 5 merge, against the shadow of what the destination holds
  // The flow's owners with the destination's aliases resolved: fixed for this sandbox, so
  // built once per flow (commit runs on one thread at a time).
  auto owners_it = owners_.find(flow.name);
  if (owners_it == owners_.end()) owners_it = owners_.emplace(flow.name, owners_of(flow, *model)).first;
  const std::map<std::string, std::string>& owners = owners_it->second;
  // (A record identify just created has neither a shadow nor operations: not looked up.)
  json::value shadow_v = r.new_entity ? json::value(json::object()) : json::value(decode_shadow(store_.shadow(r.entity_id).fields_json));
  const json::object held_shadow = shadow_v.as_object();  // before the overlay below
  // The entity's operations that will still be sent (being sent now, or another record's)
  // count as done: a change back to what the shadow holds must still be sent after them.
  // The newest one, if it is this record's and waiting, is replaced by this plan instead.
  std::vector<store::Operation> pending;
  if (!r.new_entity) pending = store_.entity_ops(r.entity_id);
  int64_t replaceable = 0;
  if (!pending.empty()) {
    const store::Operation& last = pending.back();
    if (last.flow == flow.name && last.record_key == r.key &&
        std::find(opts.in_flight.begin(), opts.in_flight.end(), last.id) == opts.in_flight.end())
      replaceable = last.id;
  }
  for (const auto& op2 : pending) {
    if (op2.id == replaceable) continue;
    std::error_code ec;
    json::value body = json::parse(op2.body, ec, {}, workspace::json_parse_options());
    if (ec || !body.is_object()) continue;
    for (const auto& [path, v] : flatten(body.as_object(), model->atomic))
      shadow_v.as_object()[path] = json::object{{"v", v}, {"t", now}, {"b", "pending " + std::to_string(op2.id)}};
  }
  int64_t record_ms = parse_time_ms(r.version.text);
  // The record's time for `latest`: its version's timestamp, else when it was received.
  if (record_ms < 0) record_ms = rec.received_ms > 0 ? rec.received_ms : now;
  MergeResult m = merge(flat, shadow_v.as_object(), owners, record_ms);

  // The destination finds the record by its identifier (Omnisend: the email). A change of
  // that identifier cannot go in the same request: it would create a second contact. It is
  // recorded as a conflict, and the rest is sent to the record the destination holds.
  std::string identify_path;
  const json::value* identify_value = nullptr;
  for (const auto& path : model->identify_by) {
    auto it = flat.find(path);
    if (it == flat.end()) continue;
    identify_path = path;
    identify_value = &it->second;
    ShadowField held = shadow_field(held_shadow, path);
    if (held.held && !held.held->is_null() && *held.held != it->second) {
      identify_value = held.held;
      m.changes.erase(path);
      for (auto& d : m.decisions) {
        if (d.path != path) continue;
        d.action = FieldDecision::Action::conflict;
        d.why = "the destination finds the record by this identifier: change it there (or merge the records), "
                "then replay";
      }
    }
    break;
  }
  for (const auto& d : m.decisions) {
    if (d.action != FieldDecision::Action::conflict) continue;
    store::Conflict c;
    c.tenant = tenant;
    c.flow = flow.name;
    c.kind = "field";
    c.record_key = r.key;
    c.entity_id = r.entity_id;
    c.field = d.path;
    c.detail = json::serialize(json::object{{"source", d.next}, {"destination", d.held}, {"last_synced", d.sent}});
    c.correlation_id = rec.correlation_id;
    store_.add_conflict(c);
    r.conflicts.push_back(std::move(c));
  }
  r.decisions = std::move(m.decisions);

  // 6 plan: only what changed, plus what the destination finds the record by
  if (m.changes.empty()) {
    r.status = r.conflicts.empty() ? Status::unchanged : Status::conflict;
    r.reason = r.conflicts.empty() ? "nothing changed at the destination" : "only conflicting fields changed";
    if (replaceable) {  // this record's waiting operation would now write something stale
      store_.delivered(replaceable);
      r.superseded = replaceable;
      r.reason += "; its waiting operation " + std::to_string(replaceable) + " is dropped";
    }
    return r;
  }
  Flat body_fields = m.changes;
  if (identify_value) body_fields[identify_path] = *identify_value;
  // A keyed element that changes carries its key: a change to the phone's SMS channel
  // alone must name the phone ({"type":"phone","id":...,"channels":...}), or Omnisend
  // refuses the identifier. The key is the one the destination holds, when it holds one
  // (the channel belongs to that identifier), else the record's.
  for (const auto& path : model->identify_by) {
    if (body_fields.count(path)) continue;
    auto bracket = path.find(']');
    if (bracket == std::string::npos) continue;
    std::string element = path.substr(0, bracket + 1) + ".";
    auto changed = body_fields.lower_bound(element);
    if (changed == body_fields.end() || changed->first.compare(0, element.size(), element) != 0) continue;
    ShadowField held = shadow_field(held_shadow, path);
    if (held.held && !held.held->is_null()) {
      body_fields[path] = *held.held;
    } else if (auto it = flat.find(path); it != flat.end()) {
      body_fields[path] = it->second;
    }
  }
  op.body = json::serialize(unflatten(body_fields));
  op.fields_json = "";  // what it changes is the body flattened (see delivery::Worker)
  // Destination-owned fields weft has never seen at the destination (a record it has not
  // synced yet, which the destination may well hold already: a subscriber who
  // unsubscribed there before weft came) are "written only when empty there": the worker
  // asks the destination first (Flow::lookup_first_write). Flagged fields likewise: a
  // different value there is a conflict, not overwritten (an object {"flag": path}).
  if (flow.lookup_first_write) {
    json::array guard;
    for (auto& d : r.decisions) {
      if (d.action != FieldDecision::Action::send || !body_fields.count(d.path) || held_shadow.contains(d.path))
        continue;
      if (d.owner == "destination") {
        guard.push_back(json::string(d.path));
        d.why = "not synced before: sent if the destination holds no value (asked before the first write)";
      } else if (d.owner == "flag") {
        guard.push_back(json::object{{"flag", d.path}});
        d.why = "not synced before: sent if the destination holds no value or this one; another value there is a "
                "conflict (asked before the first write)";
      }
    }
    if (!guard.empty()) op.guard = json::serialize(guard);
  }
  r.superseded = store_.plan(op, opts.in_flight);
  r.status = Status::planned;
  return r;
}

// Resolves the destination record by the flow's match keys, in order. A key already linked
// to another record, or a record of another source key holding this one's identifier, is a
// conflict (recorded, nothing planned): two source records are never merged silently.
bool Pipeline::identify(const workspace::Flow& flow, const delivery::Model& model, const Flat& flat,
                        const store::InboxRecord& rec, bool keyed, RecordResult& r) {
  const std::string& key = r.key;
  const std::string& tenant = tenant_->tenant;
  const std::string& conn = flow.destination_connection;
  const script::FlowSpec* spec = sandbox_->flow_spec(flow.name);
  static const std::vector<std::string> kDefaultMatch{"externalId", "email", "phone"};
  const std::vector<std::string>& match = spec && !spec->match.empty() ? spec->match : kDefaultMatch;
  const std::string external_kind = "externalId:" + flow.source_connection;

  struct Claim {
    std::string name, kind, value;
    std::optional<int64_t> entity;
  };
  std::vector<Claim> claims;
  for (const auto& name : match) {
    Claim c;
    c.name = name;
    if (name == "externalId") {
      if (!keyed) continue;
      c.kind = external_kind;
      c.value = key;
    } else {
      auto mp = model.match_paths.find(name);
      std::string path = mp != model.match_paths.end() ? mp->second : name;
      auto it = flat.find(path);
      if (it == flat.end() || !it->second.is_string() || it->second.as_string().empty()) continue;
      c.kind = name;
      c.value = std::string(it->second.as_string());
    }
    c.entity = store_.find_identity(tenant, conn, c.kind, c.value);
    claims.push_back(std::move(c));
  }
  if (claims.empty()) {
    std::string names;
    for (const auto& m : match) names += (names.empty() ? "" : ", ") + m;
    park(store_, r, tenant, rec, "identify", "identity", "the record has none of the match keys (" + names + ")", "",
         "{}");
    return false;
  }

  auto conflict = [&](const std::string& why, json::object detail) {
    store::Conflict c;
    c.tenant = tenant;
    c.flow = flow.name;
    c.kind = "identity";
    c.record_key = key;
    c.field = "";
    detail["reason"] = why;
    c.detail = json::serialize(detail);
    c.correlation_id = r.correlation_id;
    store_.add_conflict(c);
    r.conflicts.push_back(std::move(c));
    r.status = Status::conflict;
    r.reason = why;
    r.identity = "conflict: " + why;
  };

  std::optional<int64_t> found;
  std::string found_by;
  for (const auto& c : claims) {
    if (!c.entity) continue;
    if (!found) {
      found = c.entity;
      found_by = c.name;
    } else if (*found != *c.entity) {
      conflict(c.name + " " + c.value + " belongs to another destination record than " + found_by,
               json::object{{"claim", c.name}, {"value", c.value}});
      return false;
    }
  }
  std::string linked;
  if (found) {
    // The record found by an identifier may belong to another source record of this source
    // (when the flow's key is that record's id: it matches by externalId; a guest order's
    // key is an order id, and its email finds the registered customer's record).
    bool by_external = std::any_of(claims.begin(), claims.end(), [](const Claim& c) { return c.name == "externalId"; });
    if (keyed && by_external) {
      for (const auto& [kind, value] : store_.identity_keys(*found)) {
        if (kind == external_kind && value != key) {
          std::string ident = found_by;
          for (const auto& c : claims)
            if (c.name == found_by) ident += " " + c.value;
          conflict(ident + " is already held by source record " + value,
                   json::object{{"claim", found_by}, {"held_by", value}});
          r.entity_id = *found;
          return false;
        }
      }
    }
    r.entity_id = *found;
    for (const auto& c : claims) {
      if (c.entity) continue;
      store_.link_identity(tenant, conn, c.kind, c.value, *found);
      linked += (linked.empty() ? "" : ", ") + c.name;
    }
    store::Entity e = store_.entity(*found);
    r.identity = "found by " + found_by + " (record " + std::to_string(*found) +
                 (e.remote_id.empty() ? "" : ", destination id " + e.remote_id) + ")";
    if (!linked.empty()) {
      bool guest = found_by != "externalId" && keyed &&
                   std::any_of(claims.begin(), claims.end(), [](const Claim& c) { return c.name == "externalId"; });
      r.identity += "; linked " + linked + (guest ? " (a guest became a registered customer)" : "");
    }
    return true;
  }
  r.entity_id = store_.create_entity(tenant, conn);
  r.new_entity = true;
  for (const auto& c : claims) store_.link_identity(tenant, conn, c.kind, c.value, r.entity_id);
  r.identity = "new destination record (record " + std::to_string(r.entity_id) + ")";
  return true;
}

}  // namespace weft::pipeline

namespace weft::pipeline {

std::map<std::string, std::string> Pipeline::owners_of(const workspace::Flow& flow, const delivery::Model& model) const {
  std::map<std::string, std::string> owners;
  if (const script::FlowSpec* spec = sandbox_->flow_spec(flow.name))
    for (const auto& [field, policy] : spec->owners) owners[resolve_alias(model, field)] = policy;
  return owners;
}

}  // namespace weft::pipeline
