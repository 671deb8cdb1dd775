#pragma once
// The scheduler of weft serve: per flow, the jobs tenant.json schedules and the admin API
// starts.
//   pull       the delta pull from the flow's cursor ("pull": {"every"|"cron"})
//   backfill   a full re-read of the source, checkpointed (resumes after a restart from its
//              own cursor), throttled (pauses between pages and while the inbox is full) so
//              live traffic keeps flowing; its records go through even at versions already
//              applied, so a changed mapping reaches every destination record
//   reconcile  reads the source records changed within a window ("reconcile": {"window"}),
//              looks each up at the destination, and re-queues the ones missing there or
//              different (what the destination holds is recorded first, so the merge decides
//              per field and records conflicts under "flag")
// One run per flow and job at a time; every run is recorded (engine/store JobRun). A schedule
// missed while weft was down runs once at start (engine/sched/schedule.h).
#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "engine/sched/schedule.h"
#include "engine/serve/engine.h"

namespace weft::serve {

boost::json::object job_run_json(const store::JobRun& r);

class Scheduler {
 public:
  explicit Scheduler(Engine& engine) : engine_(engine) {}
  ~Scheduler() { stop(); }
  void start();
  // Stops every running job at its next page and waits for them.
  void stop();
  // The tenant's version changed or it went away: schedules are read again.
  void tenant_changed(const std::string& tenant);
  // A reload, or a tenant taken up (`before` null): flows whose mapping differs from the
  // one the store last saw them run with get a backfill when they ask for it
  // ("refresh_on_change": true).
  void version_changed(const std::string& tenant, std::shared_ptr<const workspace::TenantVersion> before,
                       std::shared_ptr<const workspace::TenantVersion> after);
  bool start_job(const JobRequest& r, std::string* error, int64_t* run_id);
  // The flow's schedules and running jobs.
  boost::json::array flow_json(const std::string& tenant, const std::string& flow);

 private:
  struct Run {
    std::string tenant, flow, job;
    std::atomic<bool> stop{false}, done{false};
    int64_t run_id = 0;
    std::thread thread;
  };
  void loop();
  void execute(Run* run, std::shared_ptr<const workspace::TenantVersion> v, std::string trigger);
  // The run's counts; *incomplete says why the comparison is incomplete (lookups that
  // failed), and the run then ends "failed" with its counts.
  boost::json::object reconcile(Run* run, std::shared_ptr<const workspace::TenantVersion> v, const workspace::Flow& flow,
                                std::string* incomplete);
  // Starts a run unless one of this flow and job is going; lock held.
  // Starts a refresh (backfill) of each flow whose mapping differs from the one the store
  // last saw it run with, where refresh_on_change asks for one; remembers the mapping.
  // mu_ held.
  void check_mappings(const workspace::TenantVersion& v, const std::string& trigger);
  void check_mapping(const workspace::TenantVersion& v, const std::string& flow, const std::string& trigger);
  bool launch(const std::string& tenant, const std::string& flow, const std::string& job, const std::string& trigger,
              int64_t slot_ms, std::string* error, int64_t* run_id);
  void reap();  // lock held

  Engine& engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, started_ = false;
  std::thread thread_;
  std::map<std::string, std::unique_ptr<Run>> runs_;  // "tenant/flow/job"
  std::set<std::pair<std::string, std::string>> refresh_after_;  // (tenant, flow): a refresh waits for a backfill
  std::map<std::string, int64_t> last_slot_;          // "tenant/flow/job" -> the last run's slot
  std::map<std::string, std::string> schedule_errors_;
};

}  // namespace weft::serve
