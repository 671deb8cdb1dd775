#pragma once
// Names the calling thread (Linux keeps 15 characters), so `top -H`, `perf top`, gdb and
// /proc/PID/task/*/comm show which part of weft a thread is: the puller, the mapper, a
// destination's sender, the checkpointer.
#include <pthread.h>

#include <string>

namespace weft::util {

inline void name_thread(const std::string& name) {
  std::string n = name.substr(0, 15);
  pthread_setname_np(pthread_self(), n.c_str());
}

}  // namespace weft::util
