#pragma once
// JSON Schema validation (valijson) against the schemas compiled into the binary.
#include <boost/json/value.hpp>
#include <memory>
#include <string>
#include <vector>

namespace weft::workspace {

struct SchemaIssue {
  std::string path;     // JSON path of the offending value, e.g. "$.flows.customers.script"
  std::string message;
};

namespace detail {
// For the "pattern" keyword: true when a match can only start at the string's first
// position (a leading '^' and no '|' outside groups and classes). Exposed for tests.
bool anchored_at_start(const std::string& pattern);
}  // namespace detail

class Schema {
 public:
  // `name` is a path under schemas/, e.g. "tenant.schema.json". Throws std::runtime_error
  // if there is no such embedded schema (a programming error, not user input).
  static const Schema& get(const std::string& name);
  // nullptr if no schema of that name exists (e.g. a destination without one yet).
  static const Schema* find(const std::string& name);
  std::vector<SchemaIssue> validate(const boost::json::value& doc) const;
  // Whether the schema declares the field at `path`, a field path as the merge sees it
  // ("firstName", "identifiers[email].channels.email.status", "customProperties.tier"):
  // each segment is a declared property (through "$ref"s to "#/definitions/..."; `name[key]`
  // an element of the array `name`), or lies under an object declared without properties of
  // its own (free-form, such as customProperties). Used to catch typos in M.owners.
  bool declares(const std::string& path) const;
  const std::string& name() const { return name_; }
  ~Schema();

 private:
  Schema() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

}  // namespace weft::workspace
