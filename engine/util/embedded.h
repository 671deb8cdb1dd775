#pragma once
// Files compiled into the binary (JSON Schemas), so validation never depends on the cwd.
#include <string_view>
#include <vector>

namespace weft::embedded {
struct File {
  std::string_view path;     // relative to schemas/, e.g. "tenant.schema.json"
  std::string_view content;
};
const std::vector<File>& schemas();
}  // namespace weft::embedded
