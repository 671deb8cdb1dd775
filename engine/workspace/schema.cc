#include "engine/workspace/schema.h"

#include <boost/json.hpp>
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <valijson/adapters/boost_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "engine/util/embedded.h"

namespace weft::workspace {

struct Schema::Impl {
  boost::json::value doc;  // valijson keeps references into it
  valijson::Schema schema;
};

Schema::~Schema() = default;

namespace {
// valijson's context is {"<root>", "[flows]", "[customers]", "[0]"}: turn it into "$.flows.customers[0]".
std::string to_path(const std::vector<std::string>& ctx) {
  std::string p = "$";
  for (const auto& c : ctx) {
    if (c == "<root>") continue;
    std::string inner = (c.size() >= 2 && c.front() == '[' && c.back() == ']') ? c.substr(1, c.size() - 2) : c;
    bool index = !inner.empty() && inner.find_first_not_of("0123456789") == std::string::npos;
    p += index ? "[" + inner + "]" : "." + inner;
  }
  return p;
}
}  // namespace

const Schema* Schema::find(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Schema>> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(name); it != cache.end()) return it->second.get();
  for (const auto& f : embedded::schemas()) {
    if (f.path != name) continue;
    std::unique_ptr<Schema> s(new Schema());
    s->impl_ = std::make_unique<Impl>();
    s->name_ = name;
    s->impl_->doc = boost::json::parse(f.content);
    valijson::SchemaParser parser;
    valijson::adapters::BoostJsonAdapter adapter(s->impl_->doc);
    parser.populateSchema(adapter, s->impl_->schema);
    return (cache[name] = std::move(s)).get();
  }
  return nullptr;
}

const Schema& Schema::get(const std::string& name) {
  if (const Schema* s = find(name)) return *s;
  throw std::runtime_error("no embedded schema " + name);
}

std::vector<SchemaIssue> Schema::validate(const boost::json::value& doc) const {
  // One validator per thread: it caches the compiled "pattern" regexes, which cost far more
  // to build than a validation takes (a fresh validator per call was 30% of weft sync).
  thread_local valijson::Validator validator;
  valijson::adapters::BoostJsonAdapter target(doc);
  std::vector<SchemaIssue> issues;
  // Fast path without collecting errors; again with them only for a document that fails.
  if (validator.validate(impl_->schema, target, nullptr)) return issues;
  valijson::ValidationResults results;
  validator.validate(impl_->schema, target, &results);
  // valijson reports the failing node and then each enclosing one ("Failed to validate
  // against schema associated with property name 'x'"): keep the most specific messages.
  std::vector<SchemaIssue> all;
  valijson::ValidationResults::Error e;
  while (results.popError(e)) all.push_back({to_path(e.context), e.description});
  auto generic = [](const SchemaIssue& i) { return i.message.rfind("Failed to validate", 0) == 0; };
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& i : all) {
    bool covered = generic(i) && std::any_of(all.begin(), all.end(), [&](const SchemaIssue& o) {
      return &o != &i && !generic(o) && o.path.rfind(i.path, 0) == 0;
    });
    if (!covered && seen.insert({i.path, i.message}).second) issues.push_back(i);
  }
  return issues;
}

}  // namespace weft::workspace
