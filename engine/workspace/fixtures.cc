#include "engine/workspace/fixtures.h"

#include <set>

#include "engine/workspace/json_limits.h"

namespace weft::workspace {
namespace json = boost::json;

namespace {

std::string shown(const json::value& v) {
  std::string s = script::to_json_text(v);
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

bool same_number(const json::value& a, const json::value& b) {
  if (!a.is_number() || !b.is_number()) return false;
  if (a.is_double() || b.is_double()) return a.to_number<double>() == b.to_number<double>();
  if (a.is_int64() && b.is_int64()) return a.get_int64() == b.get_int64();
  if (a.is_uint64() && b.is_uint64()) return a.get_uint64() == b.get_uint64();
  // int64 vs uint64: equal only when both are non-negative and the same
  int64_t i = a.is_int64() ? a.get_int64() : b.get_int64();
  uint64_t u = a.is_uint64() ? a.get_uint64() : b.get_uint64();
  return i >= 0 && static_cast<uint64_t>(i) == u;
}

void diff(const json::value& e, const json::value& a, const std::string& path, std::string& out) {
  if (e.is_number() && a.is_number()) {
    if (!same_number(e, a)) out += path + ": expected " + shown(e) + ", got " + shown(a) + "\n";
    return;
  }
  if (e.kind() != a.kind()) {
    out += path + ": expected " + shown(e) + ", got " + shown(a) + "\n";
    return;
  }
  if (e.is_object()) {
    const auto& eo = e.get_object();
    const auto& ao = a.get_object();
    std::set<std::string> keys;
    for (const auto& kv : eo) keys.insert(std::string(kv.key()));
    for (const auto& kv : ao) keys.insert(std::string(kv.key()));
    for (const auto& k : keys) {
      std::string p = path + "." + k;
      auto* ev = eo.if_contains(k);
      auto* av = ao.if_contains(k);
      if (!av) out += p + ": missing (expected " + shown(*ev) + ")\n";
      else if (!ev) out += p + ": unexpected " + shown(*av) + "\n";
      else diff(*ev, *av, p, out);
    }
    return;
  }
  if (e.is_array()) {
    const auto& ea = e.get_array();
    const auto& aa = a.get_array();
    size_t n = std::max(ea.size(), aa.size());
    for (size_t i = 0; i < n; ++i) {
      std::string p = path + "[" + std::to_string(i) + "]";
      if (i >= aa.size()) out += p + ": missing (expected " + shown(ea[i]) + ")\n";
      else if (i >= ea.size()) out += p + ": unexpected " + shown(aa[i]) + "\n";
      else diff(ea[i], aa[i], p, out);
    }
    return;
  }
  if (e != a) out += path + ": expected " + shown(e) + ", got " + shown(a) + "\n";
}

std::string outcome_text(const script::Outcome& o, const TenantVersion& t, const FixtureCase& c) {
  switch (o.kind) {
    case script::Outcome::Kind::ok: return "it mapped to " + o.payload;
    case script::Outcome::Kind::skipped: return "it was skipped";
    case script::Outcome::Kind::rejected: return "it was rejected: " + o.describe(t.tenant, c.flow);
  }
  return "";
}

}  // namespace

std::string json_diff(const json::value& expected, const json::value& actual) {
  std::string out;
  diff(expected, actual, "$", out);
  return out;
}

script::CallContext case_context(const TenantVersion& t, const FixtureCase& c) {
  script::CallContext ctx;
  if (const Flow* f = t.flow(c.flow)) ctx.fields = f->context;
  for (const auto& kv : c.context) ctx.fields[kv.key()] = kv.value();
  ctx.correlation_id = "fixture:" + c.file;
  // Fixed, so a mapping that stamps ctx.now gives the same output on every run.
  ctx.now = c.now.empty() ? "2024-01-01T00:00:00Z" : c.now;
  return ctx;
}

std::vector<CaseResult> run_fixtures(const TenantVersion& t, script::Sandbox& box, const std::string& flow) {
  std::vector<CaseResult> results;
  for (const auto& c : t.fixtures) {
    if (!flow.empty() && c.flow != flow) continue;
    CaseResult r;
    r.c = &c;
    script::Outcome o = box.map(c.flow, c.input, case_context(t, c));
    switch (c.expect) {
      case FixtureCase::Expect::output:
        if (!o.ok()) {
          r.detail = "expected a payload, but " + outcome_text(o, t, c);
        } else {
          std::error_code ec;
          json::value actual = json::parse(o.payload, ec, {}, json_parse_options());
          if (ec) {  // say so, rather than diffing against null
            r.detail = "the payload could not be read back as JSON (" + ec.message() + ")";
            break;
          }
          r.detail = json_diff(c.expected, actual);
          if (!r.detail.empty()) r.detail.pop_back();
        }
        break;
      case FixtureCase::Expect::reject:
        if (o.kind != script::Outcome::Kind::rejected)
          r.detail = "expected a rejection containing \"" + c.reject_substring + "\", but " + outcome_text(o, t, c);
        else if (o.reason.find(c.reject_substring) == std::string::npos)
          r.detail = "rejected, but the reason \"" + o.reason + "\" does not contain \"" + c.reject_substring + "\"";
        break;
      case FixtureCase::Expect::skip:
        if (o.kind != script::Outcome::Kind::skipped) r.detail = "expected a skip, but " + outcome_text(o, t, c);
        break;
    }
    r.passed = r.detail.empty();
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace weft::workspace
