// The weft binary: exit codes and output of check, test, dry-run and map.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <regex>
#include <sstream>

#include "tests/test_util.h"

using weft::testing::run_weft;
using weft::testing::TempDir;
using weft::testing::write_basic_tenant;
namespace json = boost::json;

namespace {
std::string q(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

std::vector<json::value> ndjson(const std::string& text) {
  std::vector<json::value> out;
  std::istringstream in(text);
  std::string line;
  json::parse_options deep;  // dry-run output wraps payloads of up to 64 levels
  deep.max_depth = 100;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line, {}, deep));
  return out;
}
}  // namespace

TEST_CASE("weft --help, --version and usage errors", "[cli]") {
  auto help = run_weft("--help");
  CHECK(help.code == 0);
  CHECK_THAT(help.out, Catch::Contains("dry-run"));
  CHECK_THAT(help.out, Catch::Contains("map"));
  auto sub = run_weft("map --help");
  CHECK(sub.code == 0);
  CHECK_THAT(sub.out, Catch::Contains("--workers"));
  auto v = run_weft("--version");
  CHECK(v.code == 0);
  CHECK_THAT(v.out, Catch::StartsWith("weft "));
  CHECK(run_weft("").code == 2);
  CHECK(run_weft("frobnicate").code == 2);
  CHECK(run_weft("dry-run --tenant x").code == 2);  // missing --flow and --input
  CHECK(run_weft("map --tenant t --flow f --workers 0").code == 2);
}

TEST_CASE("weft check: 0 when valid, 2 with file:line errors", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  auto ok = run_weft("check --workspace " + q(ws.path()));
  CHECK(ok.code == 0);
  CHECK_THAT(ok.out, Catch::Contains("ok    t1"));

  ws.write("t1/c.lua", "local M = {}\nfunction M.map(rec)\n  return {\nend\nreturn M\n");
  auto bad = run_weft("check --workspace " + q(ws.path()));
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("t1/c.lua:4:"));

  ws.write("t1/c.lua", "return { nomap = true }\n");
  auto nomap = run_weft("check " + q(ws.path()));
  CHECK(nomap.code == 2);
  CHECK_THAT(nomap.err, Catch::Contains("no map function"));

  TempDir empty;
  CHECK(run_weft("check --workspace " + q(empty.path())).code == 2);
  CHECK(run_weft("check --workspace /nonexistent/weft").code == 2);
}

TEST_CASE("weft test: one line per case, diff, summary line, exit codes", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tests/a.json", R"({"name": "lowercases", "flow": "c", "input": {"email": "A@B.se"},
    "expect": {"identifiers": [{"type": "email", "id": "a@b.se"}]}})");
  auto pass = run_weft("test " + q(ws.path()));
  CHECK(pass.code == 0);
  CHECK_THAT(pass.out, Catch::Contains("PASS  t1/tests/a.json  lowercases"));
  CHECK_THAT(pass.out, Catch::EndsWith("1 passed, 0 failed\n"));

  // A tenant folder works as well as the workspace.
  CHECK(run_weft("test " + q(ws.path() / "t1")).code == 0);

  ws.write("t1/tests/b.json", R"({"name": "wrong", "flow": "c", "input": {"email": "A@B.se"},
    "expect": {"identifiers": [{"type": "email", "id": "A@B.se"}]}})");
  auto fail = run_weft("test " + q(ws.path()));
  CHECK(fail.code == 1);
  CHECK_THAT(fail.out, Catch::Contains("FAIL  t1/tests/b.json  wrong"));
  CHECK_THAT(fail.out, Catch::Contains("$.identifiers[0].id: expected \"A@B.se\", got \"a@b.se\""));
  CHECK_THAT(fail.out, Catch::EndsWith("1 passed, 1 failed\n"));

  ws.write("t1/c.lua", "syntax error here");
  auto broken = run_weft("test " + q(ws.path()));
  CHECK(broken.code == 2);
  CHECK_THAT(broken.out, Catch::Contains("t1/c.lua:1"));
}

TEST_CASE("weft dry-run: payload, notes, validation, rejections with script line, exit 1", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  auto in = ws.write("in.ndjson",
                     "{\"id\":\"1\",\"email\":\" Anna@Example.COM \",\"phone\":\"070-123 45 67\"}\n"
                     "{\"id\":\"2\"}\n"
                     "not json\n");
  auto r = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in));
  CHECK(r.code == 1);
  auto recs = ndjson(r.out);
  REQUIRE(recs.size() == 3);
  const auto& ok = recs[0].as_object();
  CHECK(ok.at("status") == "ok");
  CHECK(ok.at("payload").at("identifiers").at(0).at("id") == "anna@example.com");
  CHECK(ok.at("payload").at("identifiers").at(1).at("id") == "+46701234567");
  CHECK(ok.at("validation").at("valid") == true);
  CHECK(ok.at("validation").at("schema") == "destinations/omnisend.contact.schema.json");
  CHECK(ok.at("notes").as_array().size() == 2);  // email and phone were changed
  CHECK(ok.at("script_version").as_string().size() == 12);
  const auto& rej = recs[1].as_object();
  CHECK(rej.at("status") == "rejected");
  CHECK(rej.at("reason") == "customer has no email");
  CHECK(rej.at("where") == "t1/c.lua:3");
  CHECK(rej.at("fields").at("id") == "2");
  CHECK(recs[2].at("error") == "invalid_json");  // the map's own reason, as weft map gives it
  CHECK_THAT(std::string(recs[2].at("reason").as_string()), Catch::StartsWith("invalid JSON: "));

  // One pretty-printed JSON document as input, all good: exit 0.
  auto one = ws.write("one.json", "{\n  \"email\": \"a@b.se\"\n}\n");
  auto r1 = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(one));
  CHECK(r1.code == 0);

  // Payloads that break the destination schema are rejected, with the first issue as the
  // reason, and still show the payload and every issue.
  ws.write("t1/c.lua", "return { map = function(rec) return { identifiers = json.array(), birthdate = 'soon' } end }");
  auto bad = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(one));
  CHECK(bad.code == 1);
  auto v = ndjson(bad.out);
  REQUIRE(v.size() == 1);
  CHECK(v[0].at("status") == "rejected");
  CHECK(v[0].at("error") == "schema");
  CHECK_THAT(std::string(v[0].at("reason").as_string()),
             Catch::StartsWith("payload does not match destinations/omnisend.contact.schema.json: $."));
  CHECK(v[0].at("payload").at("birthdate") == "soon");
  CHECK(v[0].at("validation").at("valid") == false);
  CHECK_THAT(bad.err, Catch::Contains("0 ok, 1 rejected"));
  CHECK_THAT(json::serialize(v[0].at("validation").at("errors")), Catch::Contains("$.birthdate"));
  CHECK_THAT(json::serialize(v[0].at("validation").at("errors")), Catch::Contains("$.identifiers"));

  // Configuration errors: 2.
  CHECK(run_weft("dry-run --workspace " + q(ws.path()) + " --tenant nope --flow c --input " + q(one)).code == 2);
  CHECK(run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow nope --input " + q(one)).code == 2);
  CHECK(run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input /nonexistent").code == 2);
}

TEST_CASE("weft map: order kept, rejects to their file, workers agree, exit codes", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::string input;
  for (int i = 0; i < 3000; ++i) {
    if (i % 100 == 7) input += "{\"id\":\"" + std::to_string(i) + "\"}\n";  // rejected: no email
    else if (i % 100 == 8) input += "{broken\n";
    else if (i % 100 == 9) input += "\n";  // blank lines are ignored
    else input += "{\"id\":\"" + std::to_string(i) + "\",\"email\":\"U" + std::to_string(i) + "@X.se\"}\n";
  }
  auto in = ws.write("in.ndjson", input);
  for (int workers : {1, 2, 4}) {
    auto out = ws.path() / ("out" + std::to_string(workers));
    auto rej = ws.path() / ("rej" + std::to_string(workers));
    auto r = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in) +
                      " --output " + q(out) + " --rejects " + q(rej) + " --workers " + std::to_string(workers));
    CHECK(r.code == 1);
    std::ifstream o(out);
    std::string all((std::istreambuf_iterator<char>(o)), {});
    auto recs = ndjson(all);
    REQUIRE(recs.size() == 2910);
    // Input order is kept: ids ascend.
    int prev = -1, bad_order = 0;
    for (const auto& rec : recs) {
      std::string id(rec.at("identifiers").at(0).at("id").as_string());
      int n = std::stoi(id.substr(1, id.find('@') - 1));
      if (n <= prev) ++bad_order;
      prev = n;
    }
    CHECK(bad_order == 0);
    std::ifstream rj(rej);
    std::string rall((std::istreambuf_iterator<char>(rj)), {});
    auto rejects = ndjson(rall);
    REQUIRE(rejects.size() == 60);
    CHECK(rejects[0].at("line") == 8);
    CHECK(rejects[0].at("reason") == "customer has no email");
    CHECK(rejects[0].at("record").at("id") == "7");
    CHECK(rejects[1].at("line") == 9);
    CHECK(rejects[1].at("error") == "invalid_json");
    CHECK(rejects[1].at("raw") == "{broken");
  }
  // All good input from stdin to stdout: exit 0.
  auto good = ws.write("good.ndjson", "{\"email\":\"a@b.se\"}\n{\"email\":\"c@d.se\"}");  // no final newline
  auto r = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c", good.string());
  CHECK(r.code == 0);
  CHECK(ndjson(r.out).size() == 2);
  CHECK_THAT(r.err, Catch::Contains("2 records: 2 mapped, 0 skipped, 0 rejected"));
  // Unknown flow, unreadable input: 2.
  CHECK(run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow zz --input " + q(good)).code == 2);
  CHECK(run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input /nonexistent").code == 2);
}

namespace {
// A tenant "t1" whose destination (voyado contact) has no schema, so any payload is valid.
// weft cannot deliver to voyado yet: the flow is for map and dry-run only.
void write_schemaless_tenant(const TempDir& ws, const std::string& script, const std::string& limits = "") {
  ws.write("t1/tenant.json", R"({"tenant": "t1", )" + limits + R"(
    "connections": {"ct": {"system": "commercetools", "project": "p", "client_id": "id",
                           "client_secret": "${CT_SECRET}"}, "vo": {"system": "voyado"}},
    "flows": {"c": {"enabled": false, "source": {"connection": "ct", "entity": "customer"},
                    "destination": {"connection": "vo", "entity": "contact"}, "script": "c.lua"}}})");
  ws.write("t1/c.lua", script);
}

std::string nested(int levels) {  // {"deep":[[...]]}: `levels` objects and arrays in all
  return "{\"deep\":" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs the test body in `dir` (for `weft check .`), then returns to where it was.
class InDir {
 public:
  explicit InDir(const std::filesystem::path& dir) : old_(std::filesystem::current_path()) {
    std::filesystem::current_path(dir);
  }
  ~InDir() { std::filesystem::current_path(old_); }

 private:
  std::filesystem::path old_;
};
}  // namespace

TEST_CASE("weft dry-run: records and payloads nested up to 64 levels map, deeper is invalid_json", "[cli]") {
  TempDir ws;
  write_schemaless_tenant(ws, "return { map = function(rec) return { deep = rec.deep } end }");
  std::string dry = "dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input ";
  for (int levels : {33, 40, 64}) {
    INFO("levels " << levels);
    auto r = run_weft(dry + q(ws.write("in.json", nested(levels))));
    CHECK(r.code == 0);
    auto v = ndjson(r.out);
    REQUIRE(v.size() == 1);
    CHECK(v[0].at("status") == "ok");
    CHECK(json::serialize(v[0].at("payload")) == nested(levels));
  }
  // Inside a top-level array the element is still 64 levels deep: it maps.
  auto arr = run_weft(dry + q(ws.write("arr.json", "[" + nested(64) + "]")));
  CHECK(arr.code == 0);
  auto r = run_weft(dry + q(ws.write("in.json", nested(65))));
  CHECK(r.code == 1);
  auto v = ndjson(r.out);
  REQUIRE(v.size() == 1);
  CHECK(v[0].at("error") == "invalid_json");
  CHECK(v[0].at("reason") == "invalid JSON: nested deeper than 64 levels");
}

TEST_CASE("weft dry-run cuts records as text and rejects them exactly as weft map does", "[cli]") {
  TempDir ws;
  write_schemaless_tenant(ws, "return { map = function(rec) return { id = rec.id } end }");
  std::string big = "{\"id\":123456789012345678901234}";  // beyond 64 bits
  auto in = ws.write("big.ndjson", big + "\n");
  auto m = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in) +
                    " --output /dev/null --rejects " + q(ws.path() / "rej"));
  CHECK(m.code == 1);
  auto mrej = ndjson(read_all(ws.path() / "rej"));
  REQUIRE(mrej.size() == 1);
  CHECK(mrej[0].at("error") == "invalid_json");
  std::string dry = "dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input ";

  auto d = run_weft(dry + q(in));
  CHECK(d.code == 1);
  auto v = ndjson(d.out);
  REQUIRE(v.size() == 1);
  CHECK(v[0].at("error") == "invalid_json");
  CHECK(v[0].at("reason") == mrej[0].at("reason"));

  // A pretty-printed document with such a number is one record, not one per line.
  auto pretty = run_weft(dry + q(ws.write("big.json", "{\n  \"id\": 123456789012345678901234\n}\n")));
  v = ndjson(pretty.out);
  REQUIRE(v.size() == 1);
  CHECK(v[0].at("reason") == mrej[0].at("reason"));

  // An array: each element is its own record; only the bad one is rejected.
  auto arr = run_weft(dry + q(ws.write("arr.json", "[ {\"id\": \"a\"},\n " + big + " , {\"id\": 2.50} ]")));
  CHECK(arr.code == 1);
  v = ndjson(arr.out);
  REQUIRE(v.size() == 3);
  CHECK(v[0].at("payload").at("id") == "a");
  CHECK(v[1].at("reason") == mrej[0].at("reason"));
  CHECK(v[2].at("payload").at("id") == 2.5);
  // Integers beyond 2^53 (within 64 bits) arrive as their digits, as in map.
  auto exact = run_weft(dry + q(ws.write("exact.json", "[{\"id\": 12345678901234567890}]")));
  CHECK(exact.code == 0);
  CHECK(ndjson(exact.out).at(0).at("payload").at("id") == "12345678901234567890");
  // An empty array, and empty input: no records.
  CHECK(ndjson(run_weft(dry + q(ws.write("empty.json", " [ ] "))).out).empty());
  CHECK(ndjson(run_weft(dry + q(ws.write("blank.json", "\n"))).out).empty());
}

TEST_CASE("weft map: a worker whose sandbox cannot be built stops the run with exit 2", "[cli]") {
  TempDir ws;
  // The top level fails once the process has used 0.2 s of CPU: never in the first
  // sandbox (built at once, then it spins to 0.25 s), always in the second.
  write_schemaless_tenant(ws, R"(if os.clock() > 0.2 then error("too late to load") end
while os.clock() < 0.25 do end
return { map = function(rec) return { id = rec.id } end })",
                          R"("limits": {"cpu_ms": 5000},)");
  auto in = ws.write("in.ndjson", "{\"id\":1}\n");
  auto one = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in));
  CHECK(one.code == 0);
  auto two = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --workers 2 --input " + q(in));
  CHECK(two.code == 2);
  CHECK_THAT(two.err, Catch::Contains("worker 2"));
  CHECK_THAT(two.err, Catch::Contains("t1/c.lua:1: too late to load"));
}

TEST_CASE("weft map: an output that is the input (or the other output) is refused, the file kept", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  const std::string text = "{\"id\": \"1\", \"email\": \"a@b.se\"}\n";
  auto in = ws.write("in.ndjson", text);
  std::string base = "map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in);
  auto r = run_weft(base + " --output " + q(in));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("is the --input file"));
  // Through another name of the same file, too.
  std::filesystem::create_hard_link(in, ws.path() / "link.ndjson");
  r = run_weft(base + " --output /dev/null --rejects " + q(ws.path() / "link.ndjson"));
  CHECK(r.code == 2);
  CHECK(read_all(in) == text);
  r = run_weft(base + " --output " + q(ws.path() / "o") + " --rejects " + q(ws.path() / "o"));
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("is the --output file"));
  CHECK(run_weft(base + " --output /dev/null --rejects /dev/null").code == 0);
  r = run_weft(base + " --output /dev/null --context '{\"tenant\": \"x\"}'");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--context: ctx.tenant is set by weft"));
  // Standard input read from the output file.
  r = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --output " + q(in), in.string());
  CHECK(r.code == 2);
  CHECK(read_all(in) == text);
}

TEST_CASE("weft map: a rejected record is copied into the rejects file verbatim", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  auto in = ws.write("in.ndjson", "{\"id\": \"1\", \"price\": 1.10, \"n\": 1e2}\n{bad\n");
  auto r = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in) +
                    " --output /dev/null --rejects " + q(ws.path() / "rej"));
  CHECK(r.code == 1);
  std::string rej = read_all(ws.path() / "rej");
  CHECK_THAT(rej, Catch::Contains(",\"record\":{\"id\": \"1\", \"price\": 1.10, \"n\": 1e2}}\n"));
  auto lines = ndjson(rej);  // still NDJSON
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].at("reason") == "customer has no email");
  CHECK(lines[0].at("record").at("id") == "1");
  CHECK(lines[1].at("error") == "invalid_json");
  CHECK(lines[1].at("raw") == "{bad");
  CHECK_FALSE(lines[1].as_object().contains("record"));
}

TEST_CASE("weft map: lines longer than --max-line-bytes are rejected unread and mapping goes on", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  auto rec = [](int i) { return "{\"id\":\"" + std::to_string(i) + "\",\"email\":\"u" + std::to_string(i) + "@x.se\"}\n"; };
  std::string big_small = "{\"email\":\"a@b.se\",\"pad\":\"" + std::string(5000, 'x') + "\"}\n";
  std::string big_chunks = "{\"email\":\"a@b.se\",\"pad\":\"" + std::string(700000, 'y') + "\"}\n";  // > 2 reads
  std::string input = rec(1) + big_small + rec(3) + big_chunks + rec(5) + "\n" + rec(7) +
                      "{\"pad\":\"" + std::string(3000, 'z') + "\"}";  // too long, and no final newline
  auto in = ws.write("in.ndjson", input);
  auto r = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --max-line-bytes 1000 --input " +
                    q(in) + " --output " + q(ws.path() / "out") + " --rejects " + q(ws.path() / "rej"));
  CHECK(r.code == 1);
  auto out = ndjson(read_all(ws.path() / "out"));
  REQUIRE(out.size() == 4);
  CHECK(out[0].at("identifiers").at(0).at("id") == "u1@x.se");
  CHECK(out[1].at("identifiers").at(0).at("id") == "u3@x.se");
  CHECK(out[2].at("identifiers").at(0).at("id") == "u5@x.se");
  CHECK(out[3].at("identifiers").at(0).at("id") == "u7@x.se");
  std::string rej = read_all(ws.path() / "rej");
  auto rejects = ndjson(rej);
  REQUIRE(rejects.size() == 3);
  std::vector<int> lines;
  for (const auto& x : rejects) {
    lines.push_back(static_cast<int>(x.at("line").as_int64()));
    CHECK(x.at("error") == "line_too_long");
    CHECK(x.at("reason") == "line longer than 1000 bytes");
    CHECK_FALSE(x.as_object().contains("record"));
    CHECK_FALSE(x.as_object().contains("raw"));
  }
  CHECK(lines == std::vector<int>{2, 4, 8});
  CHECK(rej.size() < 1000);  // no text of the long lines
  CHECK_THAT(r.err, Catch::Contains("7 records: 4 mapped, 0 skipped, 3 rejected"));

  // Under the default cap the same long line maps, whole, across several reads.
  auto ok = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c", ws.write("b.ndjson", big_chunks + rec(2)).string());
  CHECK(ok.code == 0);
  CHECK(ndjson(ok.out).size() == 2);
  CHECK_THAT(run_weft("map --help").out, Catch::Contains("--max-line-bytes"));
}

TEST_CASE("weft map: ctx.now is ISO 8601 UTC with milliseconds, as in dry-run", "[cli]") {
  TempDir ws;
  write_schemaless_tenant(ws, "return { map = function(rec, ctx) return { now = ctx.now } end }");
  auto in = ws.write("in.ndjson", "{}\n{}\n");
  auto m = run_weft("map --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in));
  CHECK(m.code == 0);
  auto d = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in));
  CHECK(d.code == 0);
  std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  auto recs = ndjson(m.out);
  REQUIRE(recs.size() == 2);
  CHECK(std::regex_match(std::string(recs[0].at("now").as_string()), iso));
  CHECK(recs[0].at("now") == recs[1].at("now"));  // one timestamp for the whole run
  CHECK(std::regex_match(std::string(ndjson(d.out).at(0).at("payload").at("now").as_string()), iso));
}

TEST_CASE("weft check takes a tenant folder, with a trailing slash or as '.'", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t2/tenant.json", "{\"tenant\": \"t2\"}");  // broken: only `check` of the workspace sees it
  auto slash = run_weft("check " + q(ws.path() / "t1") + "/");
  CHECK(slash.code == 0);
  CHECK_THAT(slash.out, Catch::Contains("ok    t1"));
  CHECK_THAT(slash.out, Catch::Contains("1 tenants checked, 0 with errors"));
  {
    InDir cd(ws.path() / "t1");
    auto dot = run_weft("check .");
    CHECK(dot.code == 0);
    CHECK_THAT(dot.out, Catch::Contains("ok    t1"));
    CHECK(run_weft("check").code == 0);
    CHECK(run_weft("test").code == 0);
  }
  {
    InDir cd(ws.path());
    auto all = run_weft("check .");
    CHECK(all.code == 2);
    CHECK_THAT(all.out, Catch::Contains("FAIL  t2"));
  }
}

TEST_CASE("weft check refuses a flow weft sync would refuse, naming the file and the path", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  std::string cfg = read_all(ws.path() / "t1/tenant.json");
  const std::string contact = "\"entity\": \"contact\"";
  cfg.replace(cfg.find(contact), contact.size(), "\"entity\": \"contacts\"");
  ws.write("t1/tenant.json", cfg);
  auto r = run_weft("check --workspace " + q(ws.path()));
  CHECK(r.code == 2);
  CHECK_THAT(r.out, Catch::Contains("FAIL  t1"));
  CHECK_THAT(r.err, Catch::Contains("error: t1/tenant.json: $.flows.c.destination.entity: omnisend has no entity "
                                    "\"contacts\" (known: contact, event)"));
  // dry-run loads the tenant the same way: no "valid" payload for a destination weft has no model of.
  auto in = ws.write("in.json", "{\"email\": \"a@b.se\"}");
  auto dry = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(in));
  CHECK(dry.code == 2);
  CHECK(dry.out.empty());
  CHECK_THAT(dry.err, Catch::Contains("$.flows.c.destination.entity: omnisend has no entity"));
}

TEST_CASE("weft commands take the --tenant folder name as shell completion types it, and refuse a path", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  auto in = ws.write("in.json", "{\"email\": \"a@b.se\"}");
  std::string dry = "dry-run --workspace " + q(ws.path()) + " --flow c --input " + q(in) + " --tenant ";
  for (const char* typed : {"t1", "t1/", "t1//"}) {
    INFO(typed);
    auto r = run_weft(dry + typed);
    CHECK(r.code == 0);
    CHECK(r.err.find("but the folder is") == std::string::npos);
    CHECK(ndjson(r.out).at(0).at("tenant") == "t1");
  }
  CHECK(run_weft("map --workspace " + q(ws.path()) + " --tenant t1/ --flow c --input " + q(in)).code == 0);
  // A name that leads elsewhere is refused before anything is read, by every command.
  ws.write("t1/sub/tenant.json", read_all(ws.path() / "t1/tenant.json"));
  for (const char* typed : {"t1/sub", "../t1", "..", "."}) {
    INFO(typed);
    auto r = run_weft(dry + "'" + typed + "'");
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(std::string("\"") + typed + "\" is not a tenant folder name: a tenant is a "
                                      "folder directly inside the workspace, named without \"/\" or \"..\""));
  }
  auto slash = run_weft(dry + "/");
  CHECK(slash.code == 2);
  CHECK_THAT(slash.err, Catch::Contains("\"/\" is not a tenant: give the tenant's folder name"));
  for (const char* cmd : {"sync", "replay --list", "status"}) {
    INFO(cmd);
    auto r = run_weft(std::string(cmd) + " --workspace " + q(ws.path()) + " --tenant ../t1");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("\"../t1\" is not a tenant folder name"));
  }
}

TEST_CASE("weft test --flow with a flow no selected tenant has is a usage error", "[cli]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  ws.write("t1/tests/a.json", R"({"name": "lowercases", "flow": "c", "input": {"email": "A@B.se"},
    "expect": {"identifiers": [{"type": "email", "id": "a@b.se"}]}})");
  auto typo = run_weft("test " + q(ws.path()) + " --flow typo");
  CHECK(typo.code == 2);
  CHECK_THAT(typo.err, Catch::Contains("no flow named 'typo'"));
  CHECK_THAT(typo.err, Catch::Contains("(flows: c)"));
  auto good = run_weft("test " + q(ws.path()) + " --flow c");
  CHECK(good.code == 0);
  CHECK_THAT(good.out, Catch::EndsWith("1 passed, 0 failed\n"));
}

TEST_CASE("the example workspace passes its own fixtures and checks clean", "[cli][example]") {
  std::string scripts = std::string(WEFT_SOURCE_DIR) + "/scripts";
  auto t = run_weft("test " + q(scripts));
  INFO(t.out);
  CHECK(t.code == 0);
  CHECK_THAT(t.out, Catch::Contains(" 0 failed"));
  CHECK(run_weft("check --workspace " + q(scripts)).code == 0);
}

namespace {
// A weft process whose stdout is read with a deadline (for `weft test --watch`).
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      std::vector<char*> argv;
      static std::string bin = WEFT_BINARY;
      argv.push_back(bin.data());
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    close(fd_);
  }
  // Reads until `text` appears in what was read since the last call; false on timeout.
  bool wait_for(const std::string& text, int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (seen_.find(text) == std::string::npos) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return false;
      seen_.append(buf, n);
    }
    last_ = seen_;
    seen_.clear();
    return true;
  }
  const std::string& last() const { return last_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string seen_, last_;
};
}  // namespace

TEST_CASE("weft test --watch reruns the affected cases when files change", "[cli][watch]") {
  TempDir ws;
  write_basic_tenant(ws, weft::testing::kBasicScript);
  const std::string good_a = R"({"name": "a", "flow": "c", "input": {"email": "A@B.se"},
    "expect": {"identifiers": [{"type": "email", "id": "a@b.se"}]}})";
  const std::string good_b = R"({"name": "b", "flow": "c", "input": {"email": "C@D.se"},
    "expect": {"identifiers": [{"type": "email", "id": "c@d.se"}]}})";
  ws.write("t1/tests/a.json", good_a);
  ws.write("t1/tests/b.json", good_b);
  Child w({"test", "--watch", ws.path().string()});
  REQUIRE(w.wait_for("watching"));
  CHECK_THAT(w.last(), Catch::Contains("2 passed, 0 failed"));

  // A fixture change reruns that case only.
  ws.write("t1/tests/b.json", R"({"name": "b", "flow": "c", "input": {"email": "C@D.se"},
    "expect": {"identifiers": [{"type": "email", "id": "WRONG"}]}})");
  REQUIRE(w.wait_for("failed\n"));
  CHECK_THAT(w.last(), Catch::Contains("FAIL  t1/tests/b.json"));
  CHECK_THAT(w.last(), Catch::Contains("0 passed, 1 failed"));
  CHECK_THAT(w.last(), !Catch::Contains("a.json"));

  // A script change reruns every case of the tenant.
  ws.write("t1/tests/b.json", good_b);
  REQUIRE(w.wait_for("failed\n"));
  ws.write("t1/c.lua", std::string(weft::testing::kBasicScript) + "-- edited\n");
  REQUIRE(w.wait_for("failed\n"));
  CHECK_THAT(w.last(), Catch::Contains("2 passed, 0 failed"));

  // A lib module change reruns every tenant; a broken script is reported, not fatal.
  ws.write("lib/util.lua", "return {}");
  REQUIRE(w.wait_for("failed\n"));
  CHECK_THAT(w.last(), Catch::Contains("2 passed, 0 failed"));
  ws.write("t1/c.lua", "this is not lua");
  REQUIRE(w.wait_for("failed\n"));
  CHECK_THAT(w.last(), Catch::Contains("ERROR t1"));
  CHECK_THAT(w.last(), Catch::Contains("t1/c.lua:1"));
}
