#include "engine/workspace/registry.h"

#include <algorithm>

#include "engine/workspace/fixtures.h"

namespace weft::workspace {

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
