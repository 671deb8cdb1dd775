#include "engine/workspace/secrets.h"

#include <algorithm>
#include <cstdlib>

namespace weft::workspace {

bool is_secret_ref(const std::string& value) { return value.find("${") != std::string::npos; }

std::optional<std::string> Secrets::resolve(const std::string& value, std::string* missing, bool* empty) {
  if (empty) *empty = false;
  std::string out;
  size_t i = 0;
  while (i < value.size()) {
    size_t start = value.find("${", i);
    if (start == std::string::npos) { out += value.substr(i); break; }
    size_t end = value.find('}', start);
    if (end == std::string::npos) { out += value.substr(i); break; }
    out += value.substr(i, start - i);
    std::string name = value.substr(start + 2, end - start - 2);
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') {
      if (missing) *missing = name;
      if (empty) *empty = v != nullptr;
      return std::nullopt;
    }
    std::string secret = v;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (std::find(values_.begin(), values_.end(), secret) == values_.end()) values_.push_back(secret);
    }
    out += secret;
    i = end + 1;
  }
  return out;
}

std::string Secrets::redact(std::string text) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : values_) {
    for (size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos + 3))
      text.replace(pos, s.size(), "***");
  }
  return text;
}

}  // namespace weft::workspace
