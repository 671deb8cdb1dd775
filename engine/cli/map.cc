// weft map: NDJSON in, NDJSON out, in input order, with N worker threads.
//
// The reader cuts the input into batches of lines; workers (each with its own Lua state)
// map whole batches; the writer emits results strictly in batch order. At most
// `max_in_flight` batches exist at once, so memory is bounded by batch size x that number,
// whatever the input size.
#include <string.h>  // memrchr (GNU)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <boost/json.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include "engine/cli/commands.h"
#include "engine/cli/common.h"
#include "engine/util/time.h"
#include "engine/workspace/tenant.h"

namespace weft::cli {
namespace json = boost::json;

namespace {

struct Batch {
  uint64_t seq = 0;
  std::string data;              // the raw lines, '\n'-separated
  // number: 1-based input line; too_long: longer than --max-line-bytes, its text dropped
  struct Line { size_t offset, length; uint64_t number; bool too_long = false; };
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
  bool invalid = o.error == "invalid_json" || o.error == "no_flow";  // no_flow: never parsed
  if (!invalid) {
    if (!o.where.file.empty()) r["where"] = o.where.str();
    if (!o.fields.empty()) r["fields"] = o.fields;
    r["message"] = o.describe(job.options.tenant, job.options.flow);
  }
  r["script_version"] = job.version;
  if (invalid) r["raw"] = std::string(raw);
  b.rejects += json::serialize(r);
  if (!invalid) {
    // The record exactly as it came (the sandbox parsed it, so it is JSON); a round trip
    // through a DOM would rewrite numbers such as 1.10.
    b.rejects.pop_back();  // the closing '}'
    b.rejects += ",\"record\":";
    b.rejects += raw;
    b.rejects.push_back('}');
  }
  b.rejects.push_back('\n');
}

void append_too_long(Batch& b, uint64_t line_no, const Job& job) {
  json::object r{{"line", line_no},
                 {"error", "line_too_long"},
                 {"reason", "line longer than " + std::to_string(job.options.max_line_bytes) + " bytes"},
                 {"script_version", job.version}};
  b.rejects += json::serialize(r);
  b.rejects.push_back('\n');
}

void map_batch(Batch& b, script::Sandbox& box, const Job& job) {
  b.out.reserve(b.data.size());  // a payload is usually smaller than its record
  for (const auto& line : b.lines) {
    if (line.too_long) {
      ++b.rejected;
      append_too_long(b, line.number, job);
      continue;
    }
    std::string_view raw(b.data.data() + line.offset, line.length);
    script::CallOptions opts;
    opts.append_to = &b.out;  // payloads land directly in the batch's output
    script::Outcome res = box.map(job.options.flow, raw, job.ctx, opts);
    switch (res.kind) {
      case script::Outcome::Kind::ok:
        ++b.mapped;
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


bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

FILE* open_out(const std::string& path) {
  if (path == "-") return stdout;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::fprintf(stderr, "error: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
  return f;
}

// Whether an output path and an input path name one regular file (same device and inode;
// /dev/null twice is fine). "-" is standard output for the first and standard input for
// the second (`weft map --output f < f` would erase f too).
bool same_file(const std::string& out, const std::string& in) {
  if (out.empty() || in.empty()) return false;
  struct stat so, si;
  bool ok_out = out == "-" ? fstat(1, &so) == 0 : stat(out.c_str(), &so) == 0;
  bool ok_in = in == "-" ? fstat(0, &si) == 0 : stat(in.c_str(), &si) == 0;
  return ok_out && ok_in && S_ISREG(so.st_mode) && so.st_dev == si.st_dev && so.st_ino == si.st_ino;
}

}  // namespace

int run_map(const MapOptions& o) {
  Loaded first;
  if (int rc = load_flow(o.workspace, o.tenant, o.flow, o.context, &first); rc != kOk) return rc;
  // Opening an output truncates it: one that is the input (or the other output) would be
  // erased before a line is read.
  for (const auto& [flag, path, other_flag, other] :
       {std::tuple{"--output", o.output, "--input", o.input}, std::tuple{"--rejects", o.rejects, "--input", o.input},
        std::tuple{"--rejects", o.rejects, "--output", o.output}}) {
    if (std::string_view(other_flag) == "--output" && other == "-") continue;  // (stdout, not stdin)
    if (!same_file(path, other)) continue;
    std::fprintf(stderr, "error: %s %s is the %s file: weft map would erase it\n", flag, path.c_str(), other_flag);
    return kConfigError;
  }
  struct stat st;
  if (!o.rejects.empty() && o.rejects != "-" && o.rejects == o.output && stat(o.output.c_str(), &st) != 0) {  // not yet made
    std::fprintf(stderr, "error: --rejects %s is the --output file\n", o.rejects.c_str());
    return kConfigError;
  }
  FILE* in = o.input == "-" ? stdin : std::fopen(o.input.c_str(), "rb");
  if (!in) {
    std::fprintf(stderr, "error: --input %s: %s\n", o.input.c_str(), std::strerror(errno));
    return kConfigError;
  }

  // One sandbox per worker: a lua_State is single-threaded. A module's top level may fail
  // in a later state even though it ran in the first (it can read the clock). Built before
  // the outputs are opened, so a run that cannot start leaves them as they were.
  std::vector<std::unique_ptr<script::Sandbox>> boxes;
  boxes.push_back(std::move(first.box));
  for (int i = 1; i < o.workers; ++i) {
    std::string err;
    auto box = script::Sandbox::create(first.version->code, &err);
    if (!box) {
      std::fprintf(stderr, "error: the sandbox of worker %d could not be built\n", i + 1);
      print_problems(workspace::problems_from_error(err, first.version->dir));
      return kConfigError;
    }
    boxes.push_back(std::move(box));
  }
  FILE* out = open_out(o.output);
  if (!out) return kConfigError;
  FILE* rej = o.rejects.empty() ? nullptr : open_out(o.rejects);
  if (!o.rejects.empty() && !rej) return kConfigError;
  Job job{o, first.context, first.version->version};
  job.ctx.reuse_id = 1;  // one context for the whole run: the Lua ctx table is built once
  job.ctx.now = util::now_iso();  // one timestamp for the whole run, so ctx.now is the same for every record

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
      // A batch's output is already one large buffer: write it straight to the file
      // descriptor rather than copying it through stdio's buffer first.
      if (!write_failed && !write_all(fileno(out), b->out)) write_failed = true;
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
  // the end moves to the next batch. Lines are referenced in place, never copied. Only the
  // newly read bytes are searched for newlines (the carried part has none), so a long line
  // costs linear time. A line longer than max_line is rejected without its text: the part
  // read so far is dropped and the rest skipped up to its newline, so memory stays bounded.
  const size_t chunk = static_cast<size_t>(o.batch_bytes);
  const size_t max_line = o.max_line_bytes;
  uint64_t seq = 0, line_no = 1;
  std::string pending;    // the start of an unfinished line: no '\n', at most max_line bytes
  bool skipping = false;  // inside a too-long line, dropping bytes up to its newline
  for (bool eof = false; !eof;) {
    auto b = std::make_unique<Batch>();
    b->data = std::move(pending);
    pending = std::string();
    size_t have = b->data.size();
    b->data.resize(have + chunk);
    size_t got = std::fread(b->data.data() + have, 1, chunk, in);
    b->data.resize(have + got);
    eof = got == 0;
    size_t begin = 0;  // where this batch's first line starts
    if (skipping) {    // have == 0: nothing is carried while skipping
      const void* nl = std::memchr(b->data.data(), '\n', got);
      if (!nl) continue;  // still inside the long line: the chunk is dropped
      begin = static_cast<const char*>(nl) - b->data.data() + 1;
      skipping = false;
    }
    size_t end = b->data.size();  // lines are cut in [begin, end)
    bool tail_too_long = false;
    if (!eof) {
      size_t from = std::max(have, begin);
      const void* nl = ::memrchr(b->data.data() + from, '\n', b->data.size() - from);
      size_t cut = nl ? static_cast<const char*>(nl) - b->data.data() + 1 : begin;
      if (b->data.size() - cut > max_line) {
        tail_too_long = true;  // the unfinished line is already too long
        skipping = true;
      } else if (!nl) {        // no complete line yet: read on
        if (begin) b->data.erase(0, begin);
        pending = std::move(b->data);
        continue;
      } else {
        pending.assign(b->data, cut, std::string::npos);
      }
      end = cut;
    }
    for (size_t pos = begin; pos < end;) {
      size_t nl = b->data.find('\n', pos);
      size_t stop = nl == std::string::npos || nl > end ? end : nl;
      size_t n = stop - pos;
      if (n > max_line) b->lines.push_back({pos, 0, line_no, true});
      else {
        if (n && b->data[pos + n - 1] == '\r') --n;
        if (b->data.find_first_not_of(" \t", pos) < pos + n) b->lines.push_back({pos, n, line_no});
      }
      ++line_no;
      pos = stop + 1;
    }
    if (tail_too_long) b->lines.push_back({end, 0, line_no++, true});
    b->data.resize(end);  // drops the bytes of a too-long tail
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
