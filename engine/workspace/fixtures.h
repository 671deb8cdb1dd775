#pragma once
// Runs a tenant's fixture cases against its scripts and explains any mismatch.
#include <string>
#include <vector>

#include "engine/script/sandbox.h"
#include "engine/workspace/tenant.h"

namespace weft::workspace {

struct CaseResult {
  const FixtureCase* c = nullptr;
  bool passed = false;
  std::string detail;  // why it failed: a readable diff, or the unexpected rejection
};

// The context a case runs with: the flow's context, overlaid by the case's context.
script::CallContext case_context(const TenantVersion& t, const FixtureCase& c);

// Runs every case (or only those of `flow` when not empty) in `box`, which must have been
// built from `t.code`.
std::vector<CaseResult> run_fixtures(const TenantVersion& t, script::Sandbox& box,
                                     const std::string& flow = "");

// Line-per-difference explanation of how `actual` differs from `expected`, with JSON paths:
//   $.identifiers[0].id: expected "anna@example.com", got "Anna@example.com"
//   $.tags: missing (expected ["a"])
// Empty if they are equal (numbers compare by value: 1 equals 1.0).
std::string json_diff(const boost::json::value& expected, const boost::json::value& actual);

}  // namespace weft::workspace
