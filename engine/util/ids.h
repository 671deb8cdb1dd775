#pragma once
// Correlation ids weft makes when a record arrives without one: 32 lowercase hex digits, the
// W3C trace-id form, so they can be passed on as `traceparent`.
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

namespace weft::util {

inline std::string new_correlation_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

}  // namespace weft::util
