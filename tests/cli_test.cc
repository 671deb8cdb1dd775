// The weft binary: exit codes and output of check, test, dry-run and map.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
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
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
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

TEST_CASE("weft dry-run: payload, notes, validation; rejections with script line; exit 1", "[cli]") {
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
  CHECK(recs[2].at("error") == "invalid_input");

  // One pretty-printed JSON document as input, all good: exit 0.
  auto one = ws.write("one.json", "{\n  \"email\": \"a@b.se\"\n}\n");
  auto r1 = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(one));
  CHECK(r1.code == 0);

  // Payloads that break the destination schema are reported and count as failures.
  ws.write("t1/c.lua", "return { map = function(rec) return { identifiers = json.array(), birthdate = 'soon' } end }");
  auto bad = run_weft("dry-run --workspace " + q(ws.path()) + " --tenant t1 --flow c --input " + q(one));
  CHECK(bad.code == 1);
  auto v = ndjson(bad.out);
  REQUIRE(v.size() == 1);
  CHECK(v[0].at("validation").at("valid") == false);
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
