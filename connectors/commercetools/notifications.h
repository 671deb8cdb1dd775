#pragma once
// commercetools subscription notifications (shared/reference/apis.md): what a delivered
// message means for the pipeline. Message notifications that carry the whole resource
// (CustomerCreated's `customer`) are used as they are; partial messages (CustomerLastNameSet,
// ...), change notifications (ResourceCreated / ResourceUpdated) and messages marked
// `payloadNotIncluded` name a resource that must be fetched; deletions stop the record.
// A bare resource (what a delta pull returns) passes through unchanged.
#include <string>
#include <string_view>

namespace weft::connectors::commercetools {

struct Notification {
  enum class Kind { resource, fetch, deleted, invalid };
  Kind kind = Kind::invalid;
  std::string type_id;   // "customer", "order", ...
  std::string id;        // the resource's id
  std::string payload;   // Kind::resource: the resource as JSON text
  std::string what;      // the message or notification type, for the audit trail
  std::string reason;    // Kind::invalid: what is wrong
};

Notification parse_notification(std::string_view json_text);

}  // namespace weft::connectors::commercetools
