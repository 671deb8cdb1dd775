#include "connectors/commercetools/notifications.h"
#include "engine/workspace/json_limits.h"

#include <boost/json.hpp>

namespace weft::connectors::commercetools {

namespace json = boost::json;

namespace {
std::string str(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
}  // namespace

Notification parse_notification(std::string_view text) {
  Notification n;
  std::error_code ec;
  json::value v = json::parse(text, ec, {}, workspace::json_parse_options(8));
  if (ec || !v.is_object()) {
    n.reason = "not a JSON object";
    return n;
  }
  const json::object& o = v.as_object();
  std::string type = str(o, "notificationType");
  if (type.empty()) {  // a resource itself
    n.kind = Notification::Kind::resource;
    n.id = str(o, "id");
    n.payload = std::string(text);
    n.what = "resource";
    return n;
  }
  const json::value* res = o.if_contains("resource");
  if (!res || !res->is_object() || str(res->as_object(), "id").empty()) {
    n.reason = type + " notification without resource.id";
    return n;
  }
  n.type_id = str(res->as_object(), "typeId");
  n.id = str(res->as_object(), "id");
  if (type == "ResourceDeleted") {
    n.kind = Notification::Kind::deleted;
    n.what = type;
    return n;
  }
  if (type == "ResourceCreated" || type == "ResourceUpdated") {
    n.kind = Notification::Kind::fetch;
    n.what = type;
    return n;
  }
  if (type != "Message") {
    n.reason = "unknown notificationType " + type;
    return n;
  }
  std::string message = str(o, "type");
  n.what = message.empty() ? "Message" : message;
  if (message.size() > 7 && message.compare(message.size() - 7, 7, "Deleted") == 0) {
    n.kind = Notification::Kind::deleted;
    return n;
  }
  if (!o.contains("payloadNotIncluded") && !n.type_id.empty())
    if (auto* full = o.if_contains(n.type_id); full && full->is_object()) {
      n.kind = Notification::Kind::resource;
      n.payload = json::serialize(*full);
      return n;
    }
  n.kind = Notification::Kind::fetch;  // partial message, or too large to carry it
  return n;
}

}  // namespace weft::connectors::commercetools
