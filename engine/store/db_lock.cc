#include "engine/store/db_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace weft::store {

DbLock::~DbLock() {
  if (fd_ >= 0) close(fd_);  // closing releases the lock
}

std::unique_ptr<DbLock> DbLock::take(const std::string& db_path, const std::string& command, std::string* error) {
  std::string path = db_path + ".lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = path + ": cannot open the database's lock file: " + std::strerror(errno);
    return nullptr;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::string holder;
    if (err == EWOULDBLOCK) {
      char buf[256];
      ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
      if (n > 0) {
        holder.assign(buf, static_cast<size_t>(n));
        while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
      }
    }
    close(fd);
    if (err != EWOULDBLOCK) {
      *error = path + ": cannot lock the database: " + std::strerror(err);
    } else {
      *error = "another weft is running on " + db_path + (holder.empty() ? "" : " (" + holder + ")") +
               ": one engine per database (a second would send what the first is sending)";
    }
    return nullptr;
  }
  // Who holds it, for the next one's error message.
  std::string who = command + ", pid " + std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, who.data(), who.size(), 0) < 0) {
    // Only the message of a refused second process loses its detail.
  }
  return std::unique_ptr<DbLock>(new DbLock(fd));
}

}  // namespace weft::store
