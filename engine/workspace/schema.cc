#include "engine/workspace/schema.h"

#include <boost/json.hpp>
#include <algorithm>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <stdexcept>
#include <valijson/adapters/boost_json_adapter.hpp>
#include <valijson/constraint_builder.hpp>
#include <valijson/constraints/concrete_constraints.hpp>
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
// The "pattern" keyword, checked by weft instead of valijson: so that an error names the
// pattern (valijson says only "Failed to match regex"), a value too long for std::regex's
// recursion is refused, and the compiled regex is held by its constraint instead of looked
// up by its text at each check. A pattern that opens with a top-level '^' can only match at
// the first position: it is tried there alone (match_continuous) instead of at every one.
// The engine and the semantics stay std::regex's (ECMAScript). (Saving: ~2,000 instructions
// a record; valijson's own walk is most of the check's cost.)
constexpr const char* kPatternKeyword = "x-weft-pattern";
constexpr size_t kMaxPatternText = 2048;
}  // namespace

// True when a match can only start at position 0: the pattern opens with '^' and has no
// '|' outside groups and character classes ("^a|b" matches "xb").
bool detail::anchored_at_start(const std::string& p) {
  if (p.empty() || p[0] != '^') return false;
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\') {
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (c == '|' && depth == 0) {
      return false;
    }
  }
  return true;
}

namespace {
using detail::anchored_at_start;

class PatternConstraint : public valijson::constraints::PolyConstraint {
 public:
  explicit PatternConstraint(const std::string& pattern)
      : pattern_(std::make_shared<const std::string>(pattern)),
        re_(std::make_shared<const std::regex>(pattern, std::regex::ECMAScript)),
        flags_(anchored_at_start(pattern) ? std::regex_constants::match_continuous
                                          : std::regex_constants::match_default) {}

  bool validate(const valijson::adapters::Adapter& target, const std::vector<std::string>& context,
                valijson::ValidationResults* results) const override {
    if (!target.isString()) return true;  // "pattern" applies to strings only
    std::string text = target.asString();
    // std::regex recurses once per character a repetition takes: tens of thousands of
    // characters would overflow the stack. No value a pattern describes is that long.
    if (text.size() > kMaxPatternText) {
      if (results)
        results->pushError(context, "is " + std::to_string(text.size()) + " characters long, more than the " +
                                        std::to_string(kMaxPatternText) + " a value checked against the pattern " +
                                        *pattern_ + " may have");
      return false;
    }
    if (std::regex_search(text, *re_, flags_)) return true;
    if (results) results->pushError(context, "does not match the pattern " + *pattern_);
    return false;
  }

 private:
  valijson::constraints::Constraint* cloneInto(void* where) const override {
    return new (where) PatternConstraint(*this);
  }
  size_t sizeOf() const override { return sizeof(PatternConstraint); }

  std::shared_ptr<const std::string> pattern_;
  std::shared_ptr<const std::regex> re_;
  std::regex_constants::match_flag_type flags_;
};

class PatternBuilder : public valijson::ConstraintBuilder {
 public:
  valijson::constraints::Constraint* make(const valijson::adapters::Adapter& node) const override {
    if (!node.isString()) throw std::runtime_error("\"pattern\" must be a string");
    return new PatternConstraint(node.asString());
  }
};

// Renames every "pattern" keyword of a schema to kPatternKeyword. Keys of "properties" and
// the like are names, not keywords: a property called "pattern" stays as it is.
void take_patterns(boost::json::value& v) {
  if (auto* a = v.if_array()) {
    for (auto& e : *a) take_patterns(e);
    return;
  }
  auto* o = v.if_object();
  if (!o) return;
  static const std::set<std::string, std::less<>> name_maps = {"properties", "patternProperties", "definitions",
                                                              "$defs", "dependencies", "dependentSchemas"};
  for (auto& [k, child] : *o) {
    if (name_maps.count(std::string_view(k)) && child.is_object()) {
      for (auto& [name, sub] : child.as_object()) take_patterns(sub);
    } else if (k != "enum" && k != "const" && k != "default" && k != "examples") {
      take_patterns(child);
    }
  }
  if (auto* p = o->if_contains("pattern"); p && p->is_string()) {
    boost::json::value moved = std::move(*p);
    o->erase("pattern");
    (*o)[kPatternKeyword] = std::move(moved);
  }
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
    take_patterns(s->impl_->doc);
    valijson::SchemaParser parser;
    parser.addConstraintBuilder(kPatternKeyword, new PatternBuilder());
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

namespace {
namespace json = boost::json;

// A schema node with its local "$ref"s followed (a bounded number: a schema may refer in a
// loop); nullptr for anything else.
const json::object* resolve_ref(const json::object& root, const json::value* node) {
  for (int hops = 0; node && node->is_object() && hops < 16; ++hops) {
    const json::value* ref = node->as_object().if_contains("$ref");
    if (!ref || !ref->is_string()) return &node->as_object();
    std::string_view r = ref->as_string();
    constexpr std::string_view kPrefix = "#/definitions/";
    if (r.substr(0, kPrefix.size()) != kPrefix) return nullptr;
    const json::value* defs = root.if_contains("definitions");
    node = defs && defs->is_object() ? defs->as_object().if_contains(r.substr(kPrefix.size())) : nullptr;
  }
  return nullptr;
}

// The document's value and the schema node for valijson's context ({"<root>", "[flows]",
// "[customers]", "[0]"}), followed through properties, patternProperties,
// additionalProperties, items and "$ref"s; a null node where the schema branches (anyOf and
// the like) or ends.
std::pair<const json::value*, const json::object*> locate(const json::object& root, const json::value& doc,
                                                          const std::vector<std::string>& ctx) {
  const json::value* v = &doc;
  const json::object* node = &root;
  for (const auto& c : ctx) {
    if (c == "<root>") continue;
    if (!v) break;
    std::string key = (c.size() >= 2 && c.front() == '[' && c.back() == ']') ? c.substr(1, c.size() - 2) : c;
    const json::value* next_node = nullptr;
    if (const auto* o = v->if_object()) {
      v = o->if_contains(key);
      if (node) {
        auto* props = node->if_contains("properties");
        if (props && props->is_object()) next_node = props->as_object().if_contains(key);
        if (auto* pp = node->if_contains("patternProperties"); !next_node && pp && pp->is_object()) {
          for (const auto& [re, sub] : pp->as_object()) {
            try {
              if (std::regex_search(key, std::regex(std::string(re), std::regex::ECMAScript))) {
                next_node = &sub;
                break;
              }
            } catch (const std::regex_error&) {
            }
          }
        }
        if (auto* ap = node->if_contains("additionalProperties"); !next_node && ap && ap->is_object()) next_node = ap;
      }
    } else if (const auto* a = v->if_array()) {
      size_t i = key.find_first_not_of("0123456789") == std::string::npos && !key.empty() && key.size() < 10
                     ? std::stoul(key) : a->size();
      v = i < a->size() ? &(*a)[i] : nullptr;
      if (node) {
        auto* items = node->if_contains("items");
        if (items && items->is_object()) next_node = items;
        else if (items && items->is_array() && i < items->as_array().size()) next_node = &items->as_array()[i];
      }
    } else {
      v = nullptr;
    }
    node = node ? resolve_ref(root, next_node) : nullptr;
  }
  return {v, node};
}

// Text cut to about 60 bytes, at a character boundary (never half a UTF-8 sequence).
std::string cut(std::string s) {
  if (s.size() <= 60) return s;
  size_t at = 57;
  while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
  return s.substr(0, at) + "...";
}

std::string kind_of(const json::value& v);

// A value as a message shows it: a string, number or boolean as JSON, cut; an object or
// array by its kind only (it may hold a secret written in place of its ${ENV_VAR}).
std::string shown(const json::value& v) {
  if (v.is_object() || v.is_array()) return kind_of(v);
  return cut(json::serialize(v));
}

std::string kind_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::string: return "a string";
    case json::kind::bool_: return "a boolean";
    case json::kind::null: return "null";
    case json::kind::object: return "an object";
    case json::kind::array: return "an array";
    case json::kind::double_: return "a number with a fraction";
    default: return "a whole number";
  }
}

std::string type_name(std::string_view t) {
  if (t == "integer") return "a whole number";
  if (t == "number") return "a number";
  if (t == "string") return "a string";
  if (t == "boolean") return "true or false";
  if (t == "object") return "an object";
  if (t == "array") return "an array";
  return std::string(t);
}

// valijson's terse messages ("Failed to match against any enum values.") said with what was
// found and what is allowed, where the schema node is known; the message as it was otherwise.
// A value is shown only for enum misses (a type error may be a secret written in place of
// its ${ENV_VAR} reference: only its kind is named).
std::string explain(const std::string& message, const json::value* v, const json::object* node) {
  if (!v || !node) return message;
  if (message.rfind("Failed to match against any enum values", 0) == 0) {
    auto* e = node->if_contains("enum");
    if (!e || !e->is_array()) return message;
    std::string allowed;
    size_t n = 0;
    for (const auto& a : e->as_array()) {
      if (++n > 20) {
        allowed += ", ... (" + std::to_string(e->as_array().size()) + " values)";
        break;
      }
      allowed += (allowed.empty() ? "" : ", ") + json::serialize(a);
    }
    return shown(*v) + " is not one of " + allowed;
  }
  if (message.rfind("Value type not permitted by 'type' constraint", 0) == 0) {
    auto* t = node->if_contains("type");
    std::string expected;
    if (t && t->is_string()) {
      expected = type_name(t->as_string());
    } else if (t && t->is_array()) {
      for (const auto& x : t->as_array())
        if (x.is_string()) expected += (expected.empty() ? "" : " or ") + type_name(x.as_string());
    }
    if (expected.empty()) return message;
    return "must be " + expected + ", not " + kind_of(*v);
  }
  static const std::string kExtra =
      "Object contains a property that could not be validated using 'properties' or 'additionalProperties' "
      "constraints: '";
  if (message.rfind(kExtra, 0) == 0 && v->is_object()) {
    std::string name = message.substr(kExtra.size());
    if (name.size() >= 2 && name.compare(name.size() - 2, 2, "'.") == 0) name.resize(name.size() - 2);
    std::string known;
    if (auto* props = node->if_contains("properties"); props && props->is_object())
      for (const auto& kv : props->as_object()) known += (known.empty() ? "" : ", ") + std::string(kv.key());
    return "unknown property " + cut(json::serialize(json::string(name))) +
           (known.empty() ? "" : " (known: " + known + ")");
  }
  return message;
}
}  // namespace

bool Schema::declares(const std::string& path) const {
  const json::object& root = impl_->doc.as_object();
  auto resolve = [&](const json::value* node) { return resolve_ref(root, node); };
  const json::object* node = &root;
  size_t at = 0;
  while (at <= path.size()) {
    size_t dot = path.find('.', at);
    std::string seg = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    at = dot == std::string::npos ? path.size() + 1 : dot + 1;
    bool element = false;
    if (auto bracket = seg.find('['); bracket != std::string::npos && seg.back() == ']') {
      seg.resize(bracket);
      element = true;
    }
    if (seg.empty()) return false;
    const json::value* props = node->if_contains("properties");
    if (!props || !props->is_object()) {
      const json::value* type = node->if_contains("type");
      return type && type->is_string() && type->as_string() == "object";  // free-form: anything below
    }
    node = resolve(props->as_object().if_contains(seg));
    if (!node) return false;
    if (element) {
      node = resolve(node->if_contains("items"));
      if (!node) return false;
    }
  }
  return true;
}

std::vector<SchemaIssue> Schema::validate(const boost::json::value& doc) const {
  // One validator per thread (it would cache compiled regexes, were any left to valijson).
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
  while (results.popError(e)) {
    auto [value, node] = locate(impl_->doc.as_object(), doc, e.context);
    all.push_back({to_path(e.context), explain(e.description, value, node)});
  }
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
