#pragma once
// How Omnisend's answers are classified (shared/reference/apis.md, Omnisend): 2xx done;
// 429 (problem JSON, a `retryAfter` in some bodies, no header as a rule), 408 and 5xx
// transient; 401/403/410 (bad key, retired API version) transient too, so records wait in
// the outbox and then the dead letters until the configuration is fixed and they are
// replayed, rather than being rejected one by one; other 4xx permanent, with the API's
// detail and field errors as the message.
#include <string>

#include "engine/delivery/send_result.h"

namespace weft::connectors::omnisend {

// `status` 0 means no answer (timeout, connection reset): transient.
delivery::SendResult classify(int status, const std::string& retry_after_header, const std::string& body,
                              int64_t now_ms);

}  // namespace weft::connectors::omnisend
