#pragma once
// Counters, gauges and histograms for `GET /metrics`, in the Prometheus text format
// (version 0.0.4). Written by hand: Debian 12 packages no Prometheus client library for
// C++, and the format is a few lines of text. Thread-safe; one lock per registry (the hot
// paths add once per committed batch, not per record).
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace weft::util {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  // `help` is taken from the first call per name.
  void add(const std::string& name, const Labels& labels, double v, const char* help = "");
  void set(const std::string& name, const Labels& labels, double v, const char* help = "");
  // Histogram of seconds (buckets from 0.25 ms to 5 min).
  void observe(const std::string& name, const Labels& labels, double seconds, const char* help = "");
  // Drops every gauge series of `name` (before setting the current ones again).
  void clear_gauge(const std::string& name);
  std::string render() const;
  // A counter's value (0 when absent), for tests and the admin API.
  double value(const std::string& name, const Labels& labels) const;

  static const std::vector<double>& buckets();

 private:
  struct Family {
    std::string type, help;
    std::map<std::string, double> values;                      // label text -> value
    std::map<std::string, std::vector<uint64_t>> histo;        // label text -> bucket counts (+Inf last)
    std::map<std::string, std::pair<double, uint64_t>> sums;   // label text -> sum, count
  };
  Family& family(const std::string& name, const char* type, const char* help);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// {a="x",b="y"} with values escaped as the format says.
std::string label_text(const Labels& labels);

}  // namespace weft::util
