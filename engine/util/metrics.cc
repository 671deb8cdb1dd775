#include "engine/util/metrics.h"

#include <cmath>
#include <cstdio>

namespace weft::util {

namespace {
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
// Inserts `extra` (already formatted: le="0.5") into a label text.
std::string with_label(const std::string& text, const std::string& extra) {
  if (text.empty()) return "{" + extra + "}";
  return text.substr(0, text.size() - 1) + "," + extra + "}";
}
}  // namespace

std::string label_text(const Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ',';
    s += labels[i].first;
    s += "=\"";
    for (char c : labels[i].second) {
      if (c == '\\') s += "\\\\";
      else if (c == '"') s += "\\\"";
      else if (c == '\n') s += "\\n";
      else s += c;
    }
    s += '"';
  }
  return s + "}";
}

const std::vector<double>& Metrics::buckets() {
  static const std::vector<double> b = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,      2.5,   5,    10,    30,   60,  300};
  return b;
}

Metrics::Family& Metrics::family(const std::string& name, const char* type, const char* help) {
  Family& f = families_[name];
  if (f.type.empty()) {
    f.type = type;
    f.help = help;
  }
  return f;
}

void Metrics::add(const std::string& name, const Labels& labels, double v, const char* help) {
  std::lock_guard<std::mutex> lock(mu_);
  family(name, "counter", help).values[label_text(labels)] += v;
}

void Metrics::set(const std::string& name, const Labels& labels, double v, const char* help) {
  std::lock_guard<std::mutex> lock(mu_);
  family(name, "gauge", help).values[label_text(labels)] = v;
}

void Metrics::clear_gauge(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = families_.find(name); it != families_.end()) it->second.values.clear();
}

void Metrics::observe(const std::string& name, const Labels& labels, double seconds, const char* help) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name, "histogram", help);
  std::string key = label_text(labels);
  auto& counts = f.histo[key];
  const auto& b = buckets();
  if (counts.empty()) counts.assign(b.size() + 1, 0);
  size_t i = 0;
  while (i < b.size() && seconds > b[i]) ++i;
  ++counts[i];
  auto& [sum, n] = f.sums[key];
  sum += seconds;
  ++n;
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto v = it->second.values.find(label_text(labels));
  return v == it->second.values.end() ? 0 : v->second;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    if (!f.help.empty()) out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    if (f.type != "histogram") {
      for (const auto& [labels, v] : f.values) out += name + labels + " " + number(v) + "\n";
      continue;
    }
    const auto& b = buckets();
    for (const auto& [labels, counts] : f.histo) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i <= b.size(); ++i) {
        cumulative += counts[i];
        std::string le = i < b.size() ? number(b[i]) : "+Inf";
        out += name + "_bucket" + with_label(labels, "le=\"" + le + "\"") + " " + std::to_string(cumulative) + "\n";
      }
      const auto& [sum, n] = f.sums.at(labels);
      out += name + "_sum" + labels + " " + number(sum) + "\n";
      out += name + "_count" + labels + " " + std::to_string(n) + "\n";
    }
  }
  return out;
}

}  // namespace weft::util
