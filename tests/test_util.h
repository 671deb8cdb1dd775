#pragma once
// Shared by the tests: temporary workspaces and running the weft binary.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace weft::testing {

namespace fs = std::filesystem;

// A fresh folder under /tmp, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "weft-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  // Writes `content` to path()/rel, creating folders.
  fs::path write(const std::string& rel, const std::string& content) const {
    fs::path p = path_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

 private:
  fs::path path_;
};

struct RunResult {
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `weft <args>` through the shell; stdout and stderr captured separately.
inline RunResult run_weft(const std::string& args, const std::string& stdin_file = "") {
  static int counter = 0;
  std::string errfile = (fs::temp_directory_path() / ("weft-test-err-" + std::to_string(getpid()) + "-" +
                                                        std::to_string(counter++)))
                            .string();
  std::string cmd = std::string(WEFT_BINARY) + " " + args + " 2>" + errfile;
  if (!stdin_file.empty()) cmd += " <" + stdin_file;
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(errfile);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  fs::remove(errfile);
  return r;
}

// A minimal valid tenant "t1" with one flow "c" (commercetools customer -> Omnisend contact).
// Its CPU limit is generous: the tests using it are not about limits, and the limit is wall
// time, which a busy test machine can eat (the limits have their own tests).
inline void write_basic_tenant(const TempDir& ws, const std::string& script) {
  ws.write("t1/tenant.json", R"({
  "tenant": "t1",
  "limits": { "cpu_ms": 2000 },
  "connections": {
    "ct": { "system": "commercetools", "project": "t1-shop", "client_id": "t1-client",
            "client_secret": "${T1_CT_SECRET}" },
    "om": { "system": "omnisend", "api_key": "${T1_OMNISEND_KEY}" }
  },
  "flows": {
    "c": { "source": { "connection": "ct", "entity": "customer" },
           "destination": { "connection": "om", "entity": "contact" },
           "script": "c.lua", "context": { "region": "SE" } }
  }
})");
  ws.write("t1/c.lua", script);
}

// A mapping that exercises the usual path: email required, phone normalized.
inline const char* kBasicScript = R"(local M = {}
function M.map(rec, ctx)
  if not rec.email then reject("customer has no email", { id = rec.id }) end
  local out = { identifiers = { { type = "email", id = norm.email(rec.email) } } }
  local phone = norm.phone(rec.phone, ctx.region)
  if phone then out.identifiers[2] = { type = "phone", id = phone } end
  if rec.skip then return nil end
  return out
end
return M
)";

}  // namespace weft::testing
