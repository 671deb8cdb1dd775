#pragma once
// Timestamps as weft writes them: ISO 8601 UTC with milliseconds, "2024-01-01T00:00:00.000Z"
// (the commercetools form; ctx.now and stored times use it).
#include <cstdint>
#include <string>

namespace weft::util {

std::string iso8601_ms(int64_t epoch_ms);
int64_t now_ms();  // the system clock, epoch milliseconds
inline std::string now_iso() { return iso8601_ms(now_ms()); }

}  // namespace weft::util
