#include "engine/cli/common.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "engine/cli/commands.h"

namespace weft::cli {
namespace json = boost::json;
namespace ws = weft::workspace;
namespace fs = std::filesystem;

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
    print_problems(ws::compile_check(*out->version));
    return kConfigError;
  }
  out->context.fields = f->context;
  if (!context_json.empty()) {
    std::error_code ec;
    json::value v = json::parse(context_json, ec);
    if (ec || !v.is_object()) {
      std::fprintf(stderr, "error: --context: must be a JSON object (%s)\n",
                   ec ? ec.message().c_str() : "got another JSON value");
      return kConfigError;
    }
    for (const auto& kv : v.get_object()) out->context.fields[kv.key()] = kv.value();
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

std::vector<InputRecord> split_records(const std::string& text) {
  std::vector<InputRecord> out;
  std::error_code ec;
  json::value whole = json::parse(text, ec);
  if (!ec) {
    if (whole.is_array()) {
      for (auto& v : whole.get_array()) out.push_back({v, {}});
    } else {
      out.push_back({std::move(whole), {}});
    }
    return out;
  }
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::error_code lec;
    json::value v = json::parse(line, lec);
    if (lec) out.push_back({nullptr, "line " + std::to_string(n) + ": invalid JSON: " + lec.message()});
    else out.push_back({std::move(v), {}});
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
