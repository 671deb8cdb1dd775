#pragma once
// The active version of each tenant, and reload: a new version is loaded, compiled in a
// fresh sandbox and its fixtures run; only then is it swapped in, atomically. A version that
// fails any step is refused and the previous one stays active (weft serve builds on this).
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/workspace/tenant.h"

namespace weft::workspace {

struct ReloadResult {
  bool ok = false;
  std::string version;            // the new version when ok; the one still active otherwise
  std::vector<Problem> problems;  // why it was refused (file:line or file: $.path)
};

class Registry {
 public:
  explicit Registry(fs::path workspace) : workspace_(std::move(workspace)) {}
  // Loads, checks and tests the tenant from disk; swaps it in if all pass.
  ReloadResult reload(const std::string& tenant);
  // Reloads every tenant folder present; tenants whose folder is gone are dropped.
  std::map<std::string, ReloadResult> reload_all();
  // The active version (nullptr if the tenant never loaded successfully). The returned
  // pointer stays valid for as long as the caller holds it, across later reloads.
  std::shared_ptr<const TenantVersion> active(const std::string& tenant) const;
  std::vector<std::string> tenants() const;
  // The last refusal for a tenant (empty if its last reload succeeded).
  std::vector<Problem> last_error(const std::string& tenant) const;

 private:
  fs::path workspace_;
  std::mutex reload_mu_;  // serializes reloads (held while building, unlike mu_)
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const TenantVersion>> active_;
  std::map<std::string, std::vector<Problem>> last_error_;
};

// Everything `reload` checks, without swapping: load, compile, fixtures. Returns the
// version (or nullptr) and the problems. Shared by Registry, `weft check` and `weft test`.
std::shared_ptr<const TenantVersion> build_version(const fs::path& workspace, const std::string& tenant,
                                                   bool run_fixtures, std::vector<Problem>* problems);

}  // namespace weft::workspace
