#pragma once
// Connection secrets: tenant.json holds "${ENV_VAR}" references, resolved from the
// environment at run time; every resolved value is registered so output can be redacted.
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace weft::workspace {

class Secrets {
 public:
  // Replaces each ${NAME} in `value` with the environment variable NAME. Returns nullopt and
  // sets *missing to the variable's name if one is unset, or set but empty (then *empty, if
  // given, is true): an empty key, token or URL is never what was meant, and requests made
  // with it would only be refused. Resolved values are remembered.
  std::optional<std::string> resolve(const std::string& value, std::string* missing, bool* empty = nullptr);
  // `text` with every remembered secret value replaced by "***".
  std::string redact(std::string text) const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> values_;
};

// True if the string is (or contains) a ${VAR} reference.
bool is_secret_ref(const std::string& value);

}  // namespace weft::workspace
