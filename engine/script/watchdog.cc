// The CPU-limit watchdog: one thread for the whole process that, every 2 ms, looks at the
// sandboxes with a call in progress and, in those past their wall deadline whose thread has
// used up its CPU time, installs an every-instruction count hook. The hook then raises the
// limit error in the VM's own thread. (A thread's CPU clock is read only once the wall
// deadline has passed: before that the limit cannot have been reached.)
//
// Why not a permanent count hook: with any count hook set, LuaJIT's interpreter runs every
// instruction through its hook check, which cost ~10% of `weft map` (measured with
// callgrind on the benchmark flow). Installing the hook from another thread is the same
// thing LuaJIT's own profiler does from a signal handler (an asynchronous dispatch-table
// update); the JIT is off, so there are no compiled traces that could miss it. Calls into
// lua_sethook are serialized by the sandbox's hook_mu, and a call that has ended clears
// its deadline under that lock, so a late watchdog can never hook the next call.
#include <ctime>
#include <thread>
#include <vector>

#include "engine/script/lua_glue.h"

namespace weft::script {
namespace {

class Watchdog {
 public:
  void add(Sandbox::Impl* I) {
    std::lock_guard<std::mutex> lock(mu_);
    watched_.push_back(I);
    if (!started_) {
      started_ = true;
      std::thread([this] { run(); }).detach();  // lives as long as the process
    }
  }
  void remove(Sandbox::Impl* I) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = watched_.begin(); it != watched_.end(); ++it) {
      if (*it == I) {
        watched_.erase(it);
        return;
      }
    }
  }

 private:
  void run() {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      int64_t now = Clock::now().time_since_epoch().count();
      std::lock_guard<std::mutex> lock(mu_);
      for (Sandbox::Impl* I : watched_) {
        int64_t d = I->watch_deadline.load(std::memory_order_acquire);
        if (d == 0 || now < d) continue;
        std::lock_guard<std::mutex> hook_lock(I->hook_mu);
        if (I->watch_deadline.load(std::memory_order_relaxed) != d) continue;  // that call ended
        // The wall deadline passed; the limit is on CPU time. If the call's thread has time
        // left (it was waiting for a core), look again when it could have run out.
        // (cpu_clock and cpu_start_ns were written before the deadline was published.)
        int64_t left = int64_t{I->code.limits.cpu_ms} * 1000000 - (cpu_now_ns(I->cpu_clock) - I->cpu_start_ns);
        if (left > 0)
          I->watch_deadline.store(now + left, std::memory_order_relaxed);
        else
          hook_now(I);
      }
    }
  }

  std::mutex mu_;
  std::vector<Sandbox::Impl*> watched_;
  bool started_ = false;
};

// Never destroyed: the detached thread may be mid-scan while the process exits.
Watchdog& instance() {
  static Watchdog* w = new Watchdog();
  return *w;
}

}  // namespace

void watch(Sandbox::Impl* I) { instance().add(I); }
void unwatch(Sandbox::Impl* I) { instance().remove(I); }

}  // namespace weft::script
