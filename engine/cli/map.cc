// weft map: NDJSON in, NDJSON out, in input order, with N worker threads.
//
// The reader cuts the input into batches of lines; workers (each with its own Lua state)
// map whole batches; the writer emits results strictly in batch order. At most
// `max_in_flight` batches exist at once, so memory is bounded by batch size x that number,
// whatever the input size.
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "engine/cli/commands.h"
#include "engine/cli/common.h"

namespace weft::cli {
namespace json = boost::json;

namespace {

struct Batch {
  uint64_t seq = 0;
  std::string data;              // the raw lines, '\n'-separated
  struct Line { size_t offset, length; uint64_t number; };  // number: 1-based input line
  std::vector<Line> lines;
  std::string out, rejects;      // results
  size_t mapped = 0, skipped = 0, rejected = 0;
};

class Pipeline {
 public:
  explicit Pipeline(size_t max_in_flight) : max_in_flight_(max_in_flight) {}

  // Reader side: blocks while too many batches are in flight.
  void submit(std::unique_ptr<Batch> b) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return in_flight_ < max_in_flight_; });
    ++in_flight_;
    todo_.push_back(std::move(b));
    work_.notify_one();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    work_.notify_all();
  }
  // Worker side: nullptr when the input is exhausted.
  std::unique_ptr<Batch> take() {
    std::unique_lock<std::mutex> lock(mu_);
    work_.wait(lock, [&] { return !todo_.empty() || closed_; });
    if (todo_.empty()) return nullptr;
    auto b = std::move(todo_.front());
    todo_.pop_front();
    return b;
  }
  void done(std::unique_ptr<Batch> b) {
    std::lock_guard<std::mutex> lock(mu_);
    finished_[b->seq] = std::move(b);
    ready_.notify_one();
  }
  // Writer side: the next batch in order, or nullptr once `total` batches were written.
  std::unique_ptr<Batch> next_in_order(uint64_t seq, const std::atomic<uint64_t>& total, const std::atomic<bool>& all_read) {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return finished_.count(seq) || (all_read && seq >= total); });
    auto it = finished_.find(seq);
    if (it == finished_.end()) return nullptr;
    auto b = std::move(it->second);
    finished_.erase(it);
    return b;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    space_.notify_one();
  }
  void wake_writer() {
    std::lock_guard<std::mutex> lock(mu_);
    ready_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable work_, space_, ready_;
  std::deque<std::unique_ptr<Batch>> todo_;
  std::map<uint64_t, std::unique_ptr<Batch>> finished_;
  size_t in_flight_ = 0;
  size_t max_in_flight_;
  bool closed_ = false;
};

// What every worker needs to know about the run.
struct Job {
  const MapOptions& options;
  script::CallContext ctx;
  std::string version;  // the script version, stamped on every rejection
};

void append_reject(Batch& b, uint64_t line_no, std::string_view raw, const script::Outcome& o, const Job& job) {
  json::object r{{"line", line_no}, {"error", o.error}, {"reason", o.reason}};
  if (o.error != "invalid_json") {
    if (!o.where.file.empty()) r["where"] = o.where.str();
    if (!o.fields.empty()) r["fields"] = o.fields;
    r["message"] = o.describe(job.options.tenant, job.options.flow);
  }
  r["script_version"] = job.version;
  std::error_code ec;
  json::value rec = json::parse(raw, ec);
  if (ec) r["raw"] = std::string(raw);
  else r["record"] = std::move(rec);
  b.rejects += json::serialize(r);
  b.rejects.push_back('\n');
}

void map_batch(Batch& b, script::Sandbox& box, const Job& job) {
  for (const auto& line : b.lines) {
    std::string_view raw(b.data.data() + line.offset, line.length);
    script::Outcome res = box.map(job.options.flow, raw, job.ctx);
    switch (res.kind) {
      case script::Outcome::Kind::ok:
        ++b.mapped;
        b.out += res.payload;
        b.out.push_back('\n');
        break;
      case script::Outcome::Kind::skipped:
        ++b.skipped;
        break;
      case script::Outcome::Kind::rejected:
        ++b.rejected;
        append_reject(b, line.number, raw, res, job);
        break;
    }
  }
}

FILE* open_out(const std::string& path) {
  if (path == "-") return stdout;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::fprintf(stderr, "error: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
  return f;
}

}  // namespace

int run_map(const MapOptions& o) {
  Loaded first;
  if (int rc = load_flow(o.workspace, o.tenant, o.flow, o.context, &first); rc != kOk) return rc;
  FILE* in = o.input == "-" ? stdin : std::fopen(o.input.c_str(), "rb");
  if (!in) {
    std::fprintf(stderr, "error: --input %s: %s\n", o.input.c_str(), std::strerror(errno));
    return kConfigError;
  }
  FILE* out = open_out(o.output);
  if (!out) return kConfigError;
  FILE* rej = o.rejects.empty() ? nullptr : open_out(o.rejects);
  if (!o.rejects.empty() && !rej) return kConfigError;
  static char outbuf[1 << 20];
  std::setvbuf(out, outbuf, _IOFBF, sizeof outbuf);

  // One sandbox per worker: a lua_State is single-threaded.
  std::vector<std::unique_ptr<script::Sandbox>> boxes;
  boxes.push_back(std::move(first.box));
  for (int i = 1; i < o.workers; ++i) {
    std::string err;
    boxes.push_back(script::Sandbox::create(first.version->code, &err));
  }
  Job job{o, first.context, first.version->version};
  job.ctx.reuse_id = 1;  // one context for the whole run: the Lua ctx table is built once
  {
    // One timestamp for the whole run, so ctx.now is the same for every record.
    std::time_t secs = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    job.ctx.now = buf;
  }

  Pipeline pipe(static_cast<size_t>(o.workers) * 2 + 2);
  std::atomic<uint64_t> total{0};
  std::atomic<bool> all_read{false};
  std::vector<std::thread> workers;
  for (int i = 0; i < o.workers; ++i) {
    workers.emplace_back([&, i] {
      while (auto b = pipe.take()) {
        map_batch(*b, *boxes[i], job);
        pipe.done(std::move(b));
      }
    });
  }

  size_t mapped = 0, skipped = 0, rejected = 0, lines_total = 0;
  bool progress = isatty(STDERR_FILENO);
  auto started = std::chrono::steady_clock::now();
  bool write_failed = false;
  std::thread writer([&] {
    auto last = started;
    for (uint64_t seq = 0;; ++seq) {
      auto b = pipe.next_in_order(seq, total, all_read);
      if (!b) break;
      if (!write_failed && std::fwrite(b->out.data(), 1, b->out.size(), out) != b->out.size()) write_failed = true;
      if (rej && !b->rejects.empty()) std::fwrite(b->rejects.data(), 1, b->rejects.size(), rej);
      mapped += b->mapped;
      skipped += b->skipped;
      rejected += b->rejected;
      lines_total += b->lines.size();
      pipe.release();
      if (progress) {
        auto now = std::chrono::steady_clock::now();
        if (now - last > std::chrono::milliseconds(500)) {
          double secs = std::chrono::duration<double>(now - started).count();
          std::fprintf(stderr, "\r%zu records (%.0f/s), %zu rejected", lines_total, lines_total / secs, rejected);
          last = now;
        }
      }
    }
  });

  // Reader: each batch is one big read, cut after its last newline; the partial line at
  // the end moves to the next batch. Lines are referenced in place, never copied.
  const size_t chunk = static_cast<size_t>(o.batch_bytes);
  uint64_t seq = 0, line_no = 1;
  std::string pending;
  for (bool eof = false; !eof;) {
    auto b = std::make_unique<Batch>();
    b->data = std::move(pending);
    pending = std::string();
    size_t have = b->data.size();
    b->data.resize(have + chunk);
    size_t got = std::fread(b->data.data() + have, 1, chunk, in);
    b->data.resize(have + got);
    eof = got == 0;
    if (!eof) {
      size_t cut = b->data.rfind('\n');
      if (cut == std::string::npos) {  // one line longer than a chunk: read on
        pending = std::move(b->data);
        continue;
      }
      pending.assign(b->data, cut + 1, std::string::npos);
      b->data.resize(cut + 1);
    }
    for (size_t pos = 0; pos < b->data.size();) {
      size_t nl = b->data.find('\n', pos);
      size_t end = nl == std::string::npos ? b->data.size() : nl;
      size_t n = end - pos;
      if (n && b->data[pos + n - 1] == '\r') --n;
      if (b->data.find_first_not_of(" \t", pos) < pos + n) b->lines.push_back({pos, n, line_no});
      ++line_no;
      pos = end + 1;
    }
    if (b->lines.empty()) continue;
    b->seq = seq++;
    pipe.submit(std::move(b));
    total = seq;
  }
  bool read_failed = std::ferror(in);
  all_read = true;
  pipe.close();
  pipe.wake_writer();
  for (auto& w : workers) w.join();
  pipe.wake_writer();
  writer.join();
  if (std::fflush(out) != 0) write_failed = true;
  if (out != stdout) std::fclose(out);
  if (rej) std::fclose(rej);
  if (in != stdin) std::fclose(in);

  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (progress) std::fputc('\n', stderr);
  std::fprintf(stderr, "%zu records: %zu mapped, %zu skipped, %zu rejected in %.2f s (%.0f records/s, %d worker%s, script version %s)\n",
               lines_total, mapped, skipped, rejected, secs, secs > 0 ? lines_total / secs : 0.0, o.workers,
               o.workers == 1 ? "" : "s", first.version->version.c_str());
  if (read_failed) {
    std::fprintf(stderr, "error: reading the input failed\n");
    return kConfigError;
  }
  if (write_failed) {
    std::fprintf(stderr, "error: writing the output failed (disk full?)\n");
    return kConfigError;
  }
  return rejected ? kRejected : kOk;
}

}  // namespace weft::cli
