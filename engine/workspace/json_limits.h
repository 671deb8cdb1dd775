#pragma once
// One nesting limit for every JSON document weft reads (tenant.json, fixtures, dry-run
// input and payloads, --context), the same as the sandbox's record parser, so a document
// the sandbox accepts is never refused (or thrown on) elsewhere.
#include <boost/json/parse_options.hpp>

namespace weft::workspace {

constexpr int kMaxJsonDepth = 64;

inline boost::json::parse_options json_parse_options(int extra_levels = 0) {
  boost::json::parse_options o;
  o.max_depth = kMaxJsonDepth + extra_levels;
  return o;
}

}  // namespace weft::workspace
