#include "connectors/omnisend/client.h"

#include <boost/json.hpp>
#include <simdjson.h>
#include <cctype>
#include <chrono>
#include <map>
#include <stdexcept>
#include <thread>

#include "connectors/omnisend/errors.h"
#include "engine/util/time.h"
#include "engine/workspace/json_limits.h"

namespace weft::connectors::omnisend {

namespace {
http::Url checked_url(const std::string& url) {
  auto u = http::Url::parse(url);
  if (!u) throw std::invalid_argument("omnisend: api_url must be an http(s) URL: " + url);
  return *u;
}
}  // namespace

Destination::Destination(const Settings& s) : settings_(s), client_(checked_url(s.api_url), s.timeout_ms) {}

delivery::SendResult Destination::upsert_contact(const std::string& contact_json, int64_t now_ms,
                                                 std::string* contact_id, std::string* answer) {
  auto r = client_.post("/contacts", contact_json, "application/json", {{"X-API-KEY", settings_.api_key}});
  auto result = classify(r.status, r.header("Retry-After"), r.body, now_ms);
  if (result.kind == delivery::SendResult::Kind::ok && contact_id) {
    std::error_code ec;
    auto v = boost::json::parse(r.body, ec, {}, workspace::json_parse_options(8));
    if (!ec && v.is_object())
      if (auto* id = v.as_object().if_contains("contactID"); id && id->is_string()) *contact_id = std::string(id->as_string());
  }
  if (result.kind == delivery::SendResult::Kind::ok && answer) *answer = std::move(r.body);
  if (r.status == 0) result.message = "no answer from Omnisend: " + r.error;
  return result;
}

delivery::SendResult Destination::send_event(const std::string& event_json, int64_t now_ms) {
  auto r = client_.post("/events", event_json, "application/json", {{"X-API-KEY", settings_.api_key}});
  auto result = classify(r.status, r.header("Retry-After"), r.body, now_ms);
  if (r.status == 0) result.message = "no answer from Omnisend: " + r.error;
  return result;
}

namespace {

namespace json = boost::json;

// The identifier a contact is matched by in batch results: its first one, as "type:id"
// ("" when it has none).
std::string identity_of(simdjson::dom::element contact) {
  std::string_view type, id;
  if (contact["identifiers"].at(0)["type"].get(type) != simdjson::SUCCESS ||
      contact["identifiers"].at(0)["id"].get(id) != simdjson::SUCCESS)
    return "";
  std::string out;
  out.reserve(type.size() + 1 + id.size());
  out.append(type).append(1, ':').append(id);
  return out;
}

// A simdjson element as a Boost.JSON value in `sp` (the batch's arena).
json::value to_value(simdjson::dom::element e, const json::storage_ptr& sp) {
  using T = simdjson::dom::element_type;
  switch (e.type()) {
    case T::OBJECT: {
      json::object o(sp);
      simdjson::dom::object obj = e.get_object().value_unsafe();
      o.reserve(obj.size());
      for (auto field : obj) o.emplace(field.key, to_value(field.value, sp));
      return o;
    }
    case T::ARRAY: {
      json::array a(sp);
      simdjson::dom::array arr = e.get_array().value_unsafe();
      a.reserve(arr.size());
      for (auto item : arr) a.push_back(to_value(item, sp));
      return a;
    }
    case T::STRING: return json::string(e.get_string().value_unsafe(), sp);
    case T::INT64: return json::value(e.get_int64().value_unsafe(), sp);
    case T::UINT64: return json::value(e.get_uint64().value_unsafe(), sp);
    case T::DOUBLE: return json::value(e.get_double().value_unsafe(), sp);
    case T::BOOL: return json::value(e.get_bool().value_unsafe(), sp);
    case T::NULL_VALUE: break;
  }
  return json::value(nullptr, sp);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> lookup_identifiers(std::string_view contact_json) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element contact;
  simdjson::dom::array ids;
  std::vector<std::pair<std::string, std::string>> out;
  if (parser.parse(contact_json.data(), contact_json.size()).get(contact) != simdjson::SUCCESS ||
      contact["identifiers"].get(ids) != simdjson::SUCCESS)
    return out;
  for (const char* want : {"email", "phone"}) {
    for (simdjson::dom::element i : ids) {
      std::string_view type, id;
      if (i["type"].get(type) == simdjson::SUCCESS && type == want && i["id"].get(id) == simdjson::SUCCESS) {
        out.emplace_back(want, std::string(id));
        break;
      }
    }
  }
  return out;
}

std::string only_identifier(std::string_view contact_json, const std::string& type) {
  std::error_code ec;
  json::value c = json::parse(contact_json, ec, {}, workspace::json_parse_options(8));
  if (ec || !c.is_object()) return "";
  json::array kept;
  if (auto* ids = c.as_object().if_contains("identifiers"); ids && ids->is_array())
    for (const auto& i : ids->as_array())
      if (i.is_object() && i.as_object().if_contains("type") && i.as_object().at("type") == type.c_str()) kept.push_back(i);
  return json::serialize(json::object{{"identifiers", std::move(kept)}});
}

std::pair<std::string, std::string> lookup_identifier(std::string_view contact_json) {
  auto all = lookup_identifiers(contact_json);
  return all.empty() ? std::pair<std::string, std::string>{} : all.front();
}

std::vector<Destination::BatchResult> Destination::upsert_contacts(const std::vector<std::string_view>& contacts,
                                                                   int64_t wait_ms, bool* refused) {
  if (refused) *refused = false;
  std::vector<BatchResult> out(contacts.size());
  auto fail_all = [&](const delivery::SendResult& r) {
    for (auto& b : out) b.result = r;
    return out;
  };
  http::Headers auth{{"X-API-KEY", settings_.api_key}};
  // The contacts are JSON text already: the batch is written around them, and each is
  // read (simdjson) only for the identifier its result is matched by. A contact that is not
  // JSON makes the batch invalid: Omnisend refuses it and the contacts go one by one, each
  // with its own answer.
  std::string body = R"({"method":"POST","endpoint":"contacts","origin":"api","items":[)";
  // Contacts by first identifier. Two with the same one (which identity resolution should
  // prevent) are told apart by the request each result echoes; a result that matches
  // neither exactly is given to neither (they are sent again), never to the wrong one.
  std::map<std::string, std::vector<size_t>> index;
  thread_local simdjson::dom::parser parser;
  for (size_t i = 0; i < contacts.size(); ++i) {
    simdjson::dom::element c;
    if (parser.parse(contacts[i].data(), contacts[i].size()).get(c) == simdjson::SUCCESS) index[identity_of(c)].push_back(i);
    if (i) body += ',';
    body.append(contacts[i]);
  }
  body += "]}";
  auto created = client_.post("/batches", body, "application/json", auth);
  auto r = classify(created.status, created.header("Retry-After"), created.body, util::now_ms());
  if (created.status == 0) r.message = "no answer from Omnisend: " + created.error;
  if (r.kind == delivery::SendResult::Kind::permanent && refused) *refused = true;
  if (r.kind != delivery::SendResult::Kind::ok) return fail_all(r);
  std::error_code ec;
  json::value made = json::parse(created.body, ec);
  std::string batch_id;
  if (!ec && made.is_object())
    if (auto* id = made.as_object().if_contains("batchID"); id && id->is_string()) batch_id = std::string(id->as_string());
  if (batch_id.empty())
    return fail_all({delivery::SendResult::Kind::transient, created.status, std::nullopt,
                     "Omnisend created a batch without a batchID: " + created.body.substr(0, 200)});

  // Batches are asynchronous: wait for it to finish, backing off from 20 ms to 1 s.
  int64_t deadline = util::now_ms() + wait_ms;
  for (int64_t pause = 20;; pause = std::min<int64_t>(pause * 2, 1000)) {
    auto st = client_.get("/batches/" + batch_id, auth);
    auto sr = classify(st.status, st.header("Retry-After"), st.body, util::now_ms());
    if (sr.kind == delivery::SendResult::Kind::ok) {
      json::value b = json::parse(st.body, ec);
      std::string status;
      if (!ec && b.is_object())
        if (auto* s = b.as_object().if_contains("status"); s && s->is_string()) status = std::string(s->as_string());
      if (status == "finished" || status == "stopped") break;
    }
    // A poll that was refused (429, 5xx) waits at least as long as Omnisend asked.
    int64_t wait = std::max<int64_t>(pause, sr.retry_after_ms.value_or(0));
    if (util::now_ms() + wait > deadline)
      return fail_all({delivery::SendResult::Kind::transient, 0, std::nullopt,
                       "Omnisend batch " + batch_id + " did not finish within " + std::to_string(wait_ms) + " ms"});
    std::this_thread::sleep_for(std::chrono::milliseconds(wait));
  }

  // The results, read again (after any wait asked for) if the read is refused.
  http::Response got;
  delivery::SendResult gr;
  for (int attempt = 0;; ++attempt) {
    got = client_.get("/batches/" + batch_id + "/items", auth);
    gr = classify(got.status, got.header("Retry-After"), got.body, util::now_ms());
    if (gr.kind != delivery::SendResult::Kind::transient || attempt == 4) break;
    int64_t wait = std::max<int64_t>(100 << attempt, gr.retry_after_ms.value_or(0));
    if (util::now_ms() + wait > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(wait));
  }
  if (gr.kind != delivery::SendResult::Kind::ok) {
    gr.kind = delivery::SendResult::Kind::transient;  // the batch ran; only its results are missing
    gr.message = "reading the results of Omnisend batch " + batch_id + ": " + gr.message;
    return fail_all(gr);
  }
  // Read with simdjson (each item repeats the request, which is only matched by its first
  // identifier); each answer (the contact as Omnisend now holds it) is built into one arena
  // that goes with the last of them.
  json::storage_ptr arena = json::make_shared_resource<json::monotonic_resource>();
  std::vector<bool> seen(contacts.size(), false);
  std::vector<std::optional<json::value>> answers(contacts.size());  // emplaced: see below
  simdjson::dom::element res;
  if (parser.parse(got.body).get(res) == simdjson::SUCCESS && res.is_object()) {
    for (const char* list : {"responses", "errors"}) {
      simdjson::dom::array arr;
      if (res[list].get(arr) != simdjson::SUCCESS) continue;
      for (simdjson::dom::element item : arr) {
        simdjson::dom::element req;
        if (!item.is_object() || item["request"].get(req) != simdjson::SUCCESS) continue;
        auto it = index.find(identity_of(req));
        if (it == index.end() || it->second.empty()) continue;
        std::vector<size_t>& waiting = it->second;
        size_t pick = 0;
        if (waiting.size() > 1) {
          std::string echoed = simdjson::minify(req);
          pick = waiting.size();
          for (size_t k = 0; k < waiting.size() && pick == waiting.size(); ++k)
            if (contacts[waiting[k]] == echoed) pick = k;
          if (pick == waiting.size()) continue;
        }
        size_t at = waiting[pick];
        waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(pick));
        BatchResult& b = out[at];
        int64_t code = 0;
        if (item["responseCode"].get(code) != simdjson::SUCCESS) code = 0;
        simdjson::dom::element resp;
        bool has_resp = item["response"].get(resp) == simdjson::SUCCESS;
        if (code >= 200 && code < 300) {
          b.result = {delivery::SendResult::Kind::ok, static_cast<int>(code), std::nullopt, ""};
          if (has_resp && resp.is_object()) {
            std::string_view id;
            if (resp["contactID"].get(id) == simdjson::SUCCESS) b.contact_id = std::string(id);
            answers[at].emplace(to_value(resp, arena));
          }
        } else {
          b.result = classify(static_cast<int>(code), "", has_resp ? simdjson::minify(resp) : std::string("{}"),
                              util::now_ms());
        }
        seen[at] = true;
      }
    }
  }
  for (size_t i = 0; i < out.size(); ++i)
    if (!seen[i])
      out[i].result = {delivery::SendResult::Kind::transient, 0, std::nullopt,
                       "Omnisend batch " + batch_id + " has no result for this contact"};
  // Constructed, not assigned: a json::value assigned into keeps its own (default) storage
  // and so copies; one move-constructed takes the arena along.
  std::vector<BatchResult> done;
  done.reserve(out.size());
  for (size_t i = 0; i < out.size(); ++i)
    done.push_back(BatchResult{std::move(out[i].result), std::move(out[i].contact_id),
                               answers[i] ? json::value(std::move(*answers[i])) : json::value()});
  return done;
}

bool Destination::find_contact(const std::string& type, const std::string& id, std::string* contact,
                               delivery::SendResult* error) {
  contact->clear();
  auto fail = [&](delivery::SendResult r) {
    if (error) *error = std::move(r);
    return false;
  };
  if (type != "email" && type != "phone")
    return fail({delivery::SendResult::Kind::permanent, 0, std::nullopt,
                 "Omnisend looks contacts up by email or phone, not by '" + type + "'"});
  auto r = client_.get("/contacts?" + type + "=" + http::url_encode(id), {{"X-API-KEY", settings_.api_key}});
  auto result = classify(r.status, r.header("Retry-After"), r.body, util::now_ms());
  if (r.status == 0) result.message = "no answer from Omnisend: " + r.error;
  if (result.kind != delivery::SendResult::Kind::ok) return fail(std::move(result));
  // {"contacts":[...],"paging":{...}}: the contact holding the identifier, if any. The
  // identifier is checked (emails case-insensitively) so that a list that is not an answer
  // to this filter is never taken for one.
  std::error_code ec;
  json::value page = json::parse(r.body, ec, {}, workspace::json_parse_options(8));
  const json::array* list = nullptr;
  if (!ec && page.is_object())
    if (auto* c = page.as_object().if_contains("contacts")) list = c->if_array();
  if (!list)
    return fail({delivery::SendResult::Kind::transient, r.status, std::nullopt,
                 "Omnisend answered a contact lookup without a contacts list: " + r.body.substr(0, 200)});
  auto lower = [](std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  std::string want = type == "email" ? lower(id) : id;
  for (const auto& c : *list) {
    const json::object* co = c.if_object();
    const json::value* ids = co ? co->if_contains("identifiers") : nullptr;
    if (!ids || !ids->is_array()) continue;
    for (const auto& i : ids->as_array()) {
      const json::object* io = i.if_object();
      if (!io) continue;
      auto* t = io->if_contains("type");
      auto* v = io->if_contains("id");
      if (!t || !v || !t->is_string() || !v->is_string() || t->as_string() != type) continue;
      std::string have(v->as_string());
      if ((type == "email" ? lower(have) : have) == want) {
        *contact = json::serialize(c);
        return true;
      }
    }
  }
  return true;
}

}  // namespace weft::connectors::omnisend
