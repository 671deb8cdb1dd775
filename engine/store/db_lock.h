#pragma once
// One engine per database. `weft serve`, `weft sync` and `weft replay` each run a whole
// pipeline with delivery workers, and a worker's claim on an operation it is sending lives
// in its own memory: a second engine on the same database would see the operation as
// unclaimed, send it again, and could send the record's next version before the first
// answer came (an older version written after a newer one). So each holds an exclusive
// lock on `<db>.lock` while it runs; a second one is refused, with who holds it.
// Read-only commands (status, replay --list, dry-run) take no lock.
#include <memory>
#include <string>

namespace weft::store {

class DbLock {
 public:
  ~DbLock();
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;
  // Takes the lock of the database at `db_path` for `command` (e.g. "weft serve"), creating
  // the lock file beside it. nullptr, with *error saying who holds it, when another process
  // does; the lock goes with the process (a kill -9 leaves no stale lock).
  static std::unique_ptr<DbLock> take(const std::string& db_path, const std::string& command, std::string* error);

 private:
  explicit DbLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace weft::store
