#include "engine/workspace/registry.h"

#include <algorithm>

#include "connectors/registry.h"
#include "engine/workspace/fixtures.h"
#include "engine/workspace/schema.h"

namespace weft::workspace {

namespace {

// M.owners and M.match name fields of the destination record: a name that is none (a typo,
// "consent.emial") would leave the field to its default owner, the source, so a consent
// changed at the destination would be overwritten. Each name must be an alias of the
// destination's model or a field its schema declares.
void check_declarations(const TenantVersion& t, const script::Sandbox& box, std::vector<Problem>* problems) {
  for (const auto& [name, flow] : t.flows) {
    const script::FlowSpec* spec = box.flow_spec(name);
    const delivery::Model* model = connectors::destination_model(flow.destination_system, flow.destination_entity);
    const Schema* schema = Schema::find(t.destination_schema(flow));
    if (!spec || !model || !model->merge || !schema) continue;
    std::string shown = t.dir.filename().string() + "/" + flow.script;
    // Without a version every update of a key equals the first one applied and is dropped as
    // stale: a contact would stop at its first version, silently. (For events, M.key alone
    // means once per key.)
    if (spec->has_key && !spec->has_version)
      problems->push_back({shown, 0, "",
                           "M.key needs M.version for a " + flow.destination_entity +
                               " flow: without it every update after the first is dropped as stale "
                               "(M.version = function(rec) return rec.version, rec.lastModifiedAt end)"});
    std::string aliases;
    for (const auto& a : model->aliases) aliases += (aliases.empty() ? "" : ", ") + a.first;
    std::string what = flow.destination_system + " " + flow.destination_entity;
    for (const auto& [field, policy] : spec->owners) {
      auto alias = model->aliases.find(field);
      if (schema->declares(alias == model->aliases.end() ? field : alias->second)) continue;
      problems->push_back({shown, 0, "",
                           "M.owners[\"" + field + "\"]: not a field of " + what + " (a field of " + schema->name() +
                               ", or one of: " + aliases + ")"});
    }
    for (const auto& key : spec->match) {
      if (key == "externalId" || model->match_paths.count(key) || schema->declares(key)) continue;
      std::string keys = "externalId";
      for (const auto& m : model->match_paths) keys += ", " + m.first;
      problems->push_back({shown, 0, "",
                           "M.match: \"" + key + "\" is not a field of " + what + " (one of: " + keys +
                               ", or a field of " + schema->name() + ")"});
    }
  }
}

}  // namespace

std::shared_ptr<const TenantVersion> build_version(const fs::path& workspace, const std::string& tenant,
                                                   bool with_fixtures, std::vector<Problem>* problems) {
  auto t = load_tenant(workspace, tenant, problems);
  if (!t) return nullptr;
  std::string err;
  auto box = script::Sandbox::create(t->code, &err);
  if (!box) {
    auto more = problems_from_error(err, t->dir);
    problems->insert(problems->end(), more.begin(), more.end());
    return nullptr;
  }
  check_declarations(*t, *box, problems);
  if (!problems->empty()) return nullptr;
  if (with_fixtures) {
    for (const auto& r : run_fixtures(*t, *box)) {
      if (!r.passed)
        problems->push_back({r.c->file, 0, "", "fixture \"" + r.c->name + "\" failed: " + r.detail});
    }
    if (!problems->empty()) return nullptr;
  }
  return t;
}

ReloadResult Registry::reload(const std::string& tenant) {
  // One reload at a time: two overlapping reloads of a tenant could otherwise finish out of
  // order and leave the older files' version active.
  std::lock_guard<std::mutex> serial(reload_mu_);
  ReloadResult r;
  auto t = build_version(workspace_, tenant, true, &r.problems);
  std::lock_guard<std::mutex> lock(mu_);
  if (t) {
    active_[tenant] = t;
    last_error_.erase(tenant);
    r.ok = true;
    r.version = t->version;
  } else {
    last_error_[tenant] = r.problems;
    if (auto it = active_.find(tenant); it != active_.end()) r.version = it->second->version;
  }
  return r;
}

std::map<std::string, ReloadResult> Registry::reload_all() {
  std::map<std::string, ReloadResult> out;
  auto present = list_tenants(workspace_);
  for (const auto& t : present) out[t] = reload(t);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = active_.begin(); it != active_.end();) {
    if (std::find(present.begin(), present.end(), it->first) == present.end()) it = active_.erase(it);
    else ++it;
  }
  return out;
}

std::shared_ptr<const TenantVersion> Registry::active(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = active_.find(tenant);
  return it == active_.end() ? nullptr : it->second;
}

std::vector<std::string> Registry::tenants() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& kv : active_) out.push_back(kv.first);
  return out;
}

std::vector<Problem> Registry::last_error(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = last_error_.find(tenant);
  return it == last_error_.end() ? std::vector<Problem>{} : it->second;
}

}  // namespace weft::workspace
