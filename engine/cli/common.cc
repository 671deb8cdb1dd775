#include "engine/cli/common.h"

#include <simdjson.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "engine/cli/commands.h"
#include "engine/workspace/json_limits.h"

namespace weft::cli {
namespace json = boost::json;
namespace ws = weft::workspace;
namespace fs = std::filesystem;

std::string normalize_tenant(std::string* tenant) {
  std::string typed = *tenant;
  while (!tenant->empty() && tenant->back() == '/') tenant->pop_back();
  if (tenant->empty()) return "\"" + typed + "\" is not a tenant: give the tenant's folder name, e.g. acme";
  if (*tenant == "." || tenant->find('/') != std::string::npos || tenant->find("..") != std::string::npos)
    return "\"" + typed + "\" is not a tenant folder name: a tenant is a folder directly inside the workspace, "
           "named without \"/\" or \"..\"";
  return "";
}

int load_flow(const std::string& workspace, const std::string& tenant, const std::string& flow,
              const std::string& context_json, Loaded* out) {
  if (!fs::is_directory(fs::path(workspace) / tenant)) {
    std::fprintf(stderr, "error: no tenant folder %s in workspace %s\n", tenant.c_str(), workspace.c_str());
    return kConfigError;
  }
  std::vector<ws::Problem> problems;
  out->version = ws::load_tenant(workspace, tenant, &problems);
  if (!out->version) {
    print_problems(problems);
    return kConfigError;
  }
  const ws::Flow* f = out->version->flow(flow);
  if (f == nullptr) {
    std::string names;
    for (const auto& kv : out->version->flows) names += (names.empty() ? "" : ", ") + kv.first;
    std::fprintf(stderr, "error: %s/tenant.json: no flow named '%s' (flows: %s)\n", tenant.c_str(), flow.c_str(),
                 names.c_str());
    return kConfigError;
  }
  std::string err;
  out->box = script::Sandbox::create(out->version->code, &err);
  if (!out->box) {
    print_problems(ws::problems_from_error(err, out->version->dir));
    return kConfigError;
  }
  out->context.fields = f->context;
  if (!context_json.empty()) {
    std::error_code ec;
    json::value v = json::parse(context_json, ec, {}, ws::json_parse_options());
    if (ec || !v.is_object()) {
      std::fprintf(stderr, "error: --context: must be a JSON object (%s)\n",
                   ec ? ec.message().c_str() : "got another JSON value");
      return kConfigError;
    }
    for (const auto& kv : v.get_object()) {
      if (std::string why = ws::reserved_ctx_key(kv.key()); !why.empty()) {
        std::fprintf(stderr, "error: --context: %s\n", why.c_str());
        return kConfigError;
      }
      out->context.fields[kv.key()] = kv.value();
    }
  }
  return kOk;
}

bool read_input(const std::string& path, std::string* out) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "error: --input %s: cannot open the file\n", path.c_str());
      return false;
    }
    ss << in.rdbuf();
  }
  *out = ss.str();
  return true;
}

namespace {

constexpr std::string_view kSpace = " \t\r\n";

// Where the JSON value starting at text[pos] ends: strings and brackets are matched (the
// bracket kinds are not checked), a scalar runs to the next delimiter. npos if a string or
// bracket is never closed. Only cuts text; validation is left to the record parser.
size_t value_end(std::string_view text, size_t pos) {
  char c = text[pos];
  if (c != '"' && c != '[' && c != '{') {
    size_t e = text.find_first_of(" \t\r\n,]}", pos);
    return e == std::string_view::npos ? text.size() : e;
  }
  int depth = 0;
  bool in_string = false;
  for (size_t i = pos; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      if (ch == '\\') ++i;
      else if (ch == '"') {
        in_string = false;
        if (depth == 0) return i + 1;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      ++depth;
    } else if (ch == ']' || ch == '}') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

// The element texts of the array text[pos, end); false if they cannot be cut cleanly.
bool array_elements(std::string_view text, size_t pos, size_t end, std::vector<std::string_view>* out) {
  pos = text.find_first_not_of(kSpace, pos + 1);  // after '['
  if (pos < end && text[pos] == ']') return true;
  while (pos < end) {
    size_t e = value_end(text, pos);
    if (e == std::string_view::npos || e == pos || e > end) return false;
    out->push_back(text.substr(pos, e - pos));
    pos = text.find_first_not_of(kSpace, e);
    if (pos >= end) return false;
    if (text[pos] == ']') return pos + 1 == end;
    if (text[pos] != ',') return false;
    pos = text.find_first_not_of(kSpace, pos + 1);
  }
  return false;
}

}  // namespace

std::vector<std::string_view> split_records(std::string_view text) {
  std::vector<std::string_view> out;
  size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return out;
  // A valid document is one record (or an array of them). One that simdjson refuses is still
  // a single document if its brackets span the whole text (say, a pretty-printed record with
  // a 24-digit number): then its records go to the map, which says what is wrong.
  simdjson::dom::parser parser;  // default depth limit (1024): the map enforces weft's 64
  simdjson::dom::element doc;
  bool valid = !parser.parse(text.data(), text.size()).get(doc);
  size_t end = value_end(text, begin);
  bool single = valid || (end != std::string_view::npos && text.find_first_not_of(kSpace, end) == std::string_view::npos);
  if (single) {
    end = text.find_last_not_of(kSpace) + 1;
    std::string_view whole = text.substr(begin, end - begin);
    if (text[begin] != '[') return {whole};
    if (array_elements(text, begin, end, &out) &&
        (!valid || out.size() == doc.get_array().value_unsafe().size()))
      return out;
    return {whole};  // a broken array: one record, rejected with the parser's reason
  }
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    size_t b = line.find_first_not_of(kSpace);
    if (b != std::string_view::npos) out.push_back(line.substr(b, line.find_last_not_of(kSpace) + 1 - b));
    pos = nl + 1;
  }
  return out;
}

namespace {
void pretty(const json::value& v, std::string& out, int indent) {
  std::string pad(indent + 2, ' ');
  if (v.is_object() && !v.get_object().empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& kv : v.get_object()) {
      if (!first) out += ",\n";
      first = false;
      out += pad + json::serialize(json::string(kv.key())) + ": ";
      pretty(kv.value(), out, indent + 2);
    }
    out += "\n" + std::string(indent, ' ') + "}";
  } else if (v.is_array() && !v.get_array().empty()) {
    out += "[\n";
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ",\n";
      first = false;
      out += pad;
      pretty(e, out, indent + 2);
    }
    out += "\n" + std::string(indent, ' ') + "]";
  } else {
    out += json::serialize(v);
  }
}
}  // namespace

std::string pretty_json(const json::value& v) {
  std::string out;
  pretty(v, out, 0);
  return out;
}

}  // namespace weft::cli
