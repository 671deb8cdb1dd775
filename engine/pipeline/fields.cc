#include "engine/pipeline/fields.h"
#include "engine/workspace/json_limits.h"

#include <date/date.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <stdexcept>

namespace weft::pipeline {

namespace json = boost::json;

namespace {

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '.') {
      out.push_back(path.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// An array whose elements are all objects with a string "type" (and at least one element).
bool keyed_array(const json::array& a) {
  if (a.empty()) return false;
  for (const auto& e : a) {
    if (!e.is_object()) return false;
    auto* t = e.as_object().if_contains("type");
    if (!t || !t->is_string()) return false;
  }
  return true;
}

bool is_atomic(const std::vector<std::string>& atomic, const std::string& path) {
  for (const auto& p : atomic) {
    // Quick reject (most paths match no pattern): the pattern's literal start, up to its
    // first '*' or '[', must begin the path for path_matches to hold.
    size_t i = 0;
    while (i < p.size() && p[i] != '*' && p[i] != '[' && i < path.size() && p[i] == path[i]) ++i;
    if (i < p.size() && p[i] != '*' && p[i] != '[') continue;
    if (path_matches(p, path)) return true;
  }
  return false;
}

// `path` holds the object's own path on entry and again on return (one buffer for the whole
// walk: this runs for every record, on its mapped payload, its answer and what was sent).
// `skip_type`: the object is an element of a keyed array, whose "type" is in the path already.
void flatten_into(Flat& out, const json::object& o, std::string& path, const std::vector<std::string>& atomic,
                  bool skip_type = false) {
  const size_t base = path.size();
  for (const auto& kv : o) {
    if (skip_type && kv.key() == "type") continue;
    if (base) path += '.';
    path.append(kv.key().data(), kv.key().size());
    const json::value& v = kv.value();
    if (is_atomic(atomic, path)) {
      out.insert_or_assign(path, v);
    } else if (v.is_object() && !v.as_object().empty()) {
      flatten_into(out, v.as_object(), path, atomic);
    } else if (v.is_array() && keyed_array(v.as_array())) {
      const size_t at = path.size();
      for (const auto& e : v.as_array()) {
        const json::object& eo = e.as_object();
        const json::value& type = eo.at("type");
        path += '[';
        path.append(type.as_string().data(), type.as_string().size());
        path += ']';
        if (eo.size() == 1) {  // nothing but its type
          const size_t n = path.size();
          path += ".type";
          out.insert_or_assign(path, type);
          path.resize(n);
        }
        flatten_into(out, eo, path, atomic, true);
        path.resize(at);
      }
    } else {
      out.insert_or_assign(path, v);
    }
    path.resize(base);
  }
}

// Splits "identifiers[email]" into name "identifiers" and key "email" (key empty if none).
void split_key(std::string_view seg, std::string_view* name, std::string_view* key) {
  size_t b = seg.find('[');
  if (b == std::string_view::npos || seg.back() != ']') {
    *name = seg;
    *key = {};
    return;
  }
  *name = seg.substr(0, b);
  *key = seg.substr(b + 1, seg.size() - b - 2);
}

json::object& keyed_element(json::object& parent, std::string_view name, std::string_view key) {
  json::value& arr = parent[name];
  if (!arr.is_array()) arr = json::array();
  for (auto& e : arr.as_array())
    if (e.is_object() && e.as_object().at("type").as_string() == key) return e.as_object();
  json::object fresh;
  fresh["type"] = key;
  arr.as_array().push_back(std::move(fresh));
  return arr.as_array().back().as_object();
}

bool same(const json::value* a, const json::value& b) { return a != nullptr && *a == b; }

}  // namespace

bool path_matches(const std::string& pattern, const std::string& path) {
  // Segment by segment, without allocating: this runs for every field of every record.
  size_t p = 0, x = 0;
  while (true) {
    size_t pe = pattern.find('.', p), xe = path.find('.', x);
    std::string_view ps(pattern.data() + p, (pe == std::string::npos ? pattern.size() : pe) - p);
    std::string_view xs(path.data() + x, (xe == std::string::npos ? path.size() : xe) - x);
    if (ps == "*") {
      // any one segment
    } else if (ps.size() > 3 && ps.substr(ps.size() - 3) == "[*]") {
      std::string_view xname, xkey;
      split_key(xs, &xname, &xkey);
      if (ps.substr(0, ps.size() - 3) != xname || xkey.empty()) return false;
    } else if (ps != xs) {
      return false;
    }
    if (pe == std::string::npos || xe == std::string::npos) return pe == xe;
    p = pe + 1;
    x = xe + 1;
  }
}

Flat flatten(const json::object& payload, const std::vector<std::string>& atomic) {
  Flat out;
  std::string path;
  path.reserve(128);
  flatten_into(out, payload, path, atomic);
  return out;
}

json::object unflatten(const Flat& fields) {
  json::object root;
  for (const auto& [path, value] : fields) {
    auto segs = segments(path);
    json::object* cur = &root;
    for (size_t i = 0; i + 1 < segs.size(); ++i) {
      std::string_view name, key;
      split_key(segs[i], &name, &key);
      if (!key.empty()) {
        cur = &keyed_element(*cur, name, key);
      } else {
        json::value& next = (*cur)[name];
        if (!next.is_object()) next = json::object();
        cur = &next.as_object();
      }
    }
    std::string_view name, key;
    split_key(segs.back(), &name, &key);
    if (!key.empty()) {
      keyed_element(*cur, name, key);  // a keyed element with nothing but its type
    } else {
      (*cur)[name] = value;
    }
  }
  return root;
}

std::string owner_of(const std::map<std::string, std::string>& owners, const std::string& path) {
  const std::string* best = nullptr;
  size_t best_len = 0;
  for (const auto& [prefix, owner] : owners) {
    bool match = path == prefix || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                                    (path[prefix.size()] == '.' || path[prefix.size()] == '['));
    if (match && prefix.size() >= best_len) {
      best = &owner;
      best_len = prefix.size();
    }
  }
  return best ? *best : "source";
}

const char* action_name(FieldDecision::Action a) {
  switch (a) {
    case FieldDecision::Action::send: return "send";
    case FieldDecision::Action::unchanged: return "unchanged";
    case FieldDecision::Action::keep_destination: return "keep destination";
    case FieldDecision::Action::conflict: return "conflict";
  }
  return "?";
}

bool MergeResult::has_conflict() const {
  for (const auto& d : decisions)
    if (d.action == FieldDecision::Action::conflict) return true;
  return false;
}

MergeResult merge(const Flat& next, const json::object& shadow, const std::map<std::string, std::string>& owners,
                  int64_t record_ms) {
  using A = FieldDecision::Action;
  MergeResult r;
  for (const auto& [path, n] : next) {
    FieldDecision d;
    d.path = path;
    d.owner = owner_of(owners, path);
    d.next = n;
    // Absent: never sent / never seen. Present, even as null: a known value.
    ShadowField sf = shadow_field(shadow, path);
    const json::value* sent = sf.sent;
    const json::value* held = sf.held;
    int64_t held_at = sf.at;
    if (sent) d.sent = *sent;
    if (held) d.held = *held;

    if (same(held, n)) {
      d.action = A::unchanged;
      d.why = "the destination already holds this value";
    } else if (held == nullptr || held->is_null()) {
      d.action = A::send;
      d.why = "the destination holds no value";
    } else if (d.owner == "destination") {
      d.action = A::keep_destination;
      d.why = "owned by the destination, which holds a value";
    } else if (d.owner == "latest") {
      if (same(sent, *held)) {
        d.action = A::send;
        d.why = "unchanged at the destination since the last sync";
      } else if (record_ms > held_at) {
        d.action = A::send;
        d.why = "the source record is newer than the destination's change";
      } else {
        d.action = A::keep_destination;
        d.why = "the destination's change is newer than the source record";
      }
    } else if (d.owner == "flag") {
      bool source_changed = !same(sent, n);
      bool destination_changed = !same(sent, *held);
      if (source_changed && destination_changed) {
        d.action = A::conflict;
        d.why = "changed on both sides since the last sync";
      } else if (source_changed) {
        d.action = A::send;
        d.why = "changed at the source only";
      } else {
        d.action = A::keep_destination;
        d.why = "changed at the destination only";
      }
    } else {
      d.action = A::send;
      d.why = "owned by the source";
    }
    if (d.action == A::send) r.changes[path] = n;
    r.decisions.push_back(std::move(d));
  }
  return r;
}

ShadowField shadow_field(const json::object& shadow, const std::string& path) {
  ShadowField f;
  auto* e = shadow.if_contains(path);
  if (!e || !e->is_object()) return f;
  const auto& o = e->as_object();
  if (auto* v = o.if_contains("v")) {
    f.sent = f.held = v;
  } else {
    f.sent = o.if_contains("s");
    if (!f.sent) f.sent = o.if_contains("sent");
    f.held = o.if_contains("h");
    if (!f.held) f.held = o.if_contains("held");
  }
  const json::value* at = o.if_contains("t");
  if (!at) at = o.if_contains("at");
  if (at && at->is_int64()) f.at = at->as_int64();
  const json::value* by = o.if_contains("b");
  if (!by) by = o.if_contains("by");
  if (by && by->is_string()) f.by = std::string(by->as_string());
  return f;
}

namespace {
json::object encode_field(const json::value* sent, const json::value* held, int64_t at, const std::string& by) {
  json::object e;
  e.reserve(4);  // at most four members: no rehash while they go in
  if (sent && held && *sent == *held) {
    e["v"] = *sent;
  } else {
    if (sent) e["s"] = *sent;
    if (held) e["h"] = *held;
  }
  e["t"] = at;
  e["b"] = by;
  return e;
}
}  // namespace

void record_delivery(json::object& shadow, const Flat& sent, const Flat& answered, int64_t at_ms,
                     const std::string& script_version) {
  for (const auto& [path, v] : sent) {
    auto a = answered.find(path);
    shadow[path] = encode_field(&v, a != answered.end() ? &a->second : &v, at_ms, script_version);
  }
  for (const auto& [path, v] : answered) {
    if (sent.count(path)) continue;
    ShadowField f = shadow_field(shadow, path);
    if (f.held && *f.held == v) continue;  // unchanged at the destination: keep when and by whom
    json::value old_sent = f.sent ? *f.sent : json::value();
    bool had_sent = f.sent != nullptr;
    shadow[path] = encode_field(had_sent ? &old_sent : nullptr, &v, at_ms, "destination");
  }
}

namespace {
// JSON text appended to a string, with one serializer for all the values and keys.
class TextWriter {
 public:
  explicit TextWriter(std::string& out) : out_(out) {}
  void value(const json::value& v) {
    sr_.reset(&v);
    drain();
  }
  void string(std::string_view s) {
    sr_.reset(s);
    drain();
  }

 private:
  void drain() {
    while (!sr_.done()) out_.append(sr_.read(buf_));
  }
  std::string& out_;
  json::serializer sr_;
  char buf_[1024];
};
}  // namespace

std::string encode_shadow(const json::object& shadow) {
  // The most common (t, b) pair becomes the default.
  struct Pair {
    int64_t t;
    std::string_view b;
    size_t n;
  };
  std::vector<Pair> pairs;
  for (const auto& kv : shadow) {
    const json::object* e = kv.value().if_object();
    if (!e) continue;
    const json::value* t = e->if_contains("t");
    const json::value* b = e->if_contains("b");
    if (!t || !t->is_int64() || !b || !b->is_string()) continue;
    auto it = std::find_if(pairs.begin(), pairs.end(),
                           [&](const Pair& p) { return p.t == t->get_int64() && p.b == b->get_string(); });
    if (it == pairs.end()) pairs.push_back({t->get_int64(), b->get_string(), 1});
    else ++it->n;
  }
  if (pairs.empty()) return json::serialize(shadow);
  const Pair& most = *std::max_element(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) { return a.n < b.n; });
  // Written as text, leaving out each entry's "t" and "b" where they are the default
  // (callgrind: a quarter of the instructions of erasing them from a copy and serializing).
  std::string out;
  out.reserve(64 + shadow.size() * 48);
  TextWriter w(out);
  out += "{\"~\":2,\"t\":";
  out += std::to_string(most.t);
  out += ",\"b\":";
  w.string(most.b);
  out += ",\"f\":{";
  bool first = true;
  for (const auto& kv : shadow) {
    if (!first) out += ',';
    first = false;
    w.string(kv.key());
    out += ':';
    const json::object* e = kv.value().if_object();
    if (!e) {
      w.value(kv.value());
      continue;
    }
    out += '{';
    bool first_member = true;
    for (const auto& m : *e) {
      const json::value& v = m.value();
      if (m.key() == "t" && v.is_int64() && v.get_int64() == most.t) continue;
      if (m.key() == "b" && v.is_string() && v.get_string() == most.b) continue;
      if (!first_member) out += ',';
      first_member = false;
      w.string(m.key());
      out += ':';
      w.value(v);
    }
    out += '}';
  }
  out += "}}";
  return out;
}

json::object decode_shadow(std::string_view text) {
  std::error_code ec;
  json::value v = json::parse(text, ec, {}, workspace::json_parse_options(8));
  if (ec || !v.is_object()) throw std::runtime_error("shadow state is not a JSON object: " + std::string(text.substr(0, 80)));
  json::object& top = v.as_object();
  const json::value* form = top.if_contains("~");
  if (!form || !form->is_int64() || form->get_int64() != 2) return std::move(top);  // the older form
  json::value* f = top.if_contains("f");
  const json::value* t = top.if_contains("t");
  const json::value* b = top.if_contains("b");
  if (!f || !f->is_object() || !t || !b) throw std::runtime_error("shadow state: \"~\": 2 without \"f\", \"t\" and \"b\"");
  json::object fields = std::move(f->as_object());
  for (auto& kv : fields) {
    json::object* e = kv.value().if_object();
    if (!e) continue;
    // (An entry still in the long form written before keeps its own "at" and "by".)
    if (!e->contains("t") && !e->contains("at")) e->emplace("t", *t);
    if (!e->contains("b") && !e->contains("by")) e->emplace("b", *b);
  }
  return fields;
}

int64_t parse_time_ms(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|+HHMM|+HH) (or '-'), nothing after; the
  // fraction may have any number of digits (milliseconds are kept). +HHMM is Salesforce's.
  int y, mo, d, h, mi, sec, used = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%*1[Tt]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 || used != 19)
    return -1;
  size_t i = 19;
  int64_t ms = 0;
  if (i < text.size() && text[i] == '.') {
    size_t digits = 0;
    for (++i; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i, ++digits)
      if (digits < 3) ms = ms * 10 + (text[i] - '0');
    if (digits == 0) return -1;
    for (; digits < 3; ++digits) ms *= 10;
  }
  int64_t offset_min = 0;
  if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
    ++i;
  } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    // The offset's digits: HH:MM, HHMM or HH.
    std::string digits;
    size_t rest = text.size() - i - 1;
    if (rest == 5 && text[i + 3] == ':') digits = text.substr(i + 1, 2) + text.substr(i + 4, 2);
    else if (rest == 4 || rest == 2) digits = text.substr(i + 1);
    else return -1;
    for (char c : digits)
      if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
    int oh = (digits[0] - '0') * 10 + (digits[1] - '0');
    int om = digits.size() == 4 ? (digits[2] - '0') * 10 + (digits[3] - '0') : 0;
    if (oh > 23 || om > 59) return -1;
    offset_min = (text[i] == '-' ? -1 : 1) * (oh * 60 + om);
    i = text.size();
  } else {
    return -1;
  }
  if (i != text.size()) return -1;
  date::year_month_day ymd{date::year{y}, date::month{static_cast<unsigned>(mo)}, date::day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return -1;
  int64_t days = date::sys_days(ymd).time_since_epoch().count();
  return ((days * 24 + h) * 60 + mi - offset_min) * 60000 + sec * 1000 + ms;
}

}  // namespace weft::pipeline
