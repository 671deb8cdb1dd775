// libFuzzer target: the JSON <-> Lua record bridge (engine/script/lua_json.cc) through
// Sandbox::map with a flow that returns its record unchanged. See README "Fuzzing".
//
// Input: the record's JSON text. One sandbox per process, reused across inputs (as a weft
// map worker reuses its state across records).
// Checks, besides ASan/UBSan:
//  - text that is not JSON (Boost.JSON refuses it) is rejected with error "invalid_json";
//  - JSON is either mapped, or rejected as "invalid_json" for a documented reason (an
//    integer beyond 64 bits, a number beyond a double, nesting deeper than 64);
//  - an object or array record is mapped, and the payload is JSON that holds the same data
//    as the record, under the documented conversions: object keys sorted, numbers compared
//    by value (1.10 is 1.1, 1e2 is 100, -0 is 0). Duplicate keys are kept, in any order;
//  - a bare scalar record (which map receives as itself) is skipped when null and otherwise
//    refused as "output" (map must return a table or the record).
#include <simdjson.h>

#include <boost/json.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/script/sandbox.h"

namespace ws = weft::script;
namespace bj = boost::json;
using simdjson::dom::element;
using simdjson::dom::element_type;

namespace {

[[noreturn]] void die(const char* what, std::string_view input, const std::string& detail = "") {
  std::fprintf(stderr, "bridge_fuzz: %s\n  detail: %s\n  input (%zu bytes): %.*s\n", what, detail.c_str(),
               input.size(), static_cast<int>(std::min<size_t>(input.size(), 2000)), input.data());
  std::abort();
}

// Numbers by value: a whole number within 64 bits as its exact integer digits (whether it
// was read as an integer or a double), any other as %.17g.
std::string number(double d) {
  if (d == 0) return "0";  // -0 is 0
  if (std::floor(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
    return std::to_string(static_cast<int64_t>(d));
  if (std::floor(d) == d && d > 0 && d < 18446744073709551616.0) return std::to_string(static_cast<uint64_t>(d));
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

std::string canon_key(std::string_view k) {
  std::string out = "\"";
  for (char c : k) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A canonical text of a simdjson element: objects as their (key, value) pairs sorted,
// numbers by value.
std::string canon(element e) {
  switch (e.type()) {
    case element_type::NULL_VALUE: return "null";
    case element_type::BOOL: return e.get_bool().value_unsafe() ? "true" : "false";
    case element_type::INT64: return std::to_string(e.get_int64().value_unsafe());
    case element_type::UINT64: return std::to_string(e.get_uint64().value_unsafe());
    case element_type::DOUBLE: return number(e.get_double().value_unsafe());
    case element_type::STRING: return canon_key(e.get_string().value_unsafe());
    case element_type::ARRAY: {
      std::string out = "[";
      simdjson::dom::array a = e.get_array().value_unsafe();  // named: a temporary would dangle
      for (element x : a) out += canon(x) + ",";
      return out + "]";
    }
    case element_type::OBJECT: {
      std::vector<std::string> kv;
      simdjson::dom::object o = e.get_object().value_unsafe();
      for (auto [k, v] : o) kv.push_back(canon_key(k) + ":" + canon(v));
      std::sort(kv.begin(), kv.end());
      std::string out = "{";
      for (auto& s : kv) out += s + ",";
      return out + "}";
    }
  }
  return "?";
}

ws::Sandbox* sandbox() {
  static std::unique_ptr<ws::Sandbox> box = [] {
    ws::TenantCode code;
    code.tenant = "fuzz";
    code.limits.cpu_ms = 10000;  // ASan is slow and the machine is shared: no cpu_limit flakes
    code.limits.memory_mb = 256;
    code.flows["f"] = {"f.lua", "return { map = function(r) return r end }"};
    code.version = "fuzz";
    std::string error;
    auto b = ws::Sandbox::create(code, &error);
    if (!b) {
      std::fprintf(stderr, "bridge_fuzz: cannot build the sandbox: %s\n", error.c_str());
      std::abort();
    }
    return b;
  }();
  return box.get();
}
}  // namespace


extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  ws::Outcome o = sandbox()->map("f", input, ws::CallContext{});

  bj::parse_options opt;
  opt.max_depth = 100000;
  bj::error_code ec;
  bj::value ref = bj::parse(input, ec, {}, opt);
  // Boost.JSON 1.81 refuses an exponent beyond its range (1e-99999999999), which RFC 8259
  // allows and simdjson reads (as 0 or as out of range): no reference verdict on those.
  if (ec == bj::error::exponent_overflow) return 0;
  if (ec) {
    if (o.ok() || o.error != "invalid_json") die("text that is not JSON was not refused as invalid_json", input,
                                                   o.error + ": " + o.reason + " payload=" + o.payload);
    return 0;
  }
  if (o.kind == ws::Outcome::Kind::rejected && o.error == "invalid_json") {
    // documented refusals only: big numbers, deep nesting
    if (o.reason.find("integers must fit in 64 bits") == std::string::npos &&
        o.reason.find("deeper than 64") == std::string::npos)
      die("valid JSON refused as invalid_json", input, o.reason);
    return 0;
  }

  simdjson::dom::parser in_parser, out_parser;
  element in;
  if (in_parser.parse(input.data(), input.size()).get(in)) die("the bridge took JSON simdjson refuses", input);

  bool container = in.type() == element_type::OBJECT || in.type() == element_type::ARRAY;
  if (!container) {
    // A bare scalar arrives as itself, and returning it is not a payload: null skips, the
    // rest is refused as output ("map must return a table (or the record) or nil").
    bool expected = in.type() == element_type::NULL_VALUE
                        ? o.kind == ws::Outcome::Kind::skipped
                        : o.kind == ws::Outcome::Kind::rejected && o.error == "output" &&
                              o.reason.find("map must return a table") != std::string::npos;
    if (!expected) die("unexpected outcome for a scalar record", input, o.error + ": " + o.reason + " " + o.payload);
    return 0;
  }
  if (!o.ok()) die("valid JSON not mapped", input, o.error + ": " + o.reason);

  element out;
  // Every payload must be JSON the bridge itself reads back (fuzz/crashes/ keeps the input
  // that once broke this: a whole double beyond 64 bits written as a 20-digit integer).
  if (out_parser.parse(o.payload.data(), o.payload.size()).get(out))
    die("payload is not JSON the bridge can read", input, o.payload);
  std::string a = canon(in), b = canon(out);
  if (a == b) return 0;
  die("payload differs from the record", input, "record: " + a + "\n  payload: " + b + "\n  raw payload: " + o.payload);
}
