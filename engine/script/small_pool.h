#pragma once
// A size-class allocator for one Lua state (single-threaded, like the state).
//
// Why: lua_newstate with our own allocator (needed to cap memory) replaces LuaJIT's
// internal allocator with plain malloc/free, and mapping a record creates and frees a few
// dozen small objects (tables, strings, record views). Profiling `weft map` showed malloc
// and free at ~12% of the time; free lists per 16-byte class take that to near zero.
// Blocks above kMaxSmall go to malloc. Memory is returned when the state is closed.
//
// A freed block stays in its class's free list, so without a bound a script could make the
// slabs grow past the state's memory cap: each record holding megabytes of strings of
// another size, freed and never reused (a review measured 750 MB under a 32 MB cap). The
// slabs are bounded by a budget (the cap): past it, small blocks come from malloc and go
// back to it, so what the pool holds is at most the budget beside what the cap counts.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace weft::script {

class SmallPool {
 public:
  static constexpr std::size_t kGranule = 16;
  static constexpr std::size_t kMaxSmall = 512;
  static constexpr std::size_t kSlab = 64 * 1024;

  SmallPool() = default;
  SmallPool(const SmallPool&) = delete;
  SmallPool& operator=(const SmallPool&) = delete;
  ~SmallPool() {
    for (void* s : slabs_) std::free(s);
  }

  // Bytes of slabs the pool may hold (0: no bound).
  void set_slab_budget(std::size_t bytes) { budget_ = bytes; }
  std::size_t slab_bytes() const { return slabs_.size() * kSlab; }

  // The lua_Alloc contract: nsize == 0 frees; otherwise (re)allocates, nullptr on failure.
  void* realloc(void* ptr, std::size_t osize, std::size_t nsize) {
    if (nsize == 0) {
      release(ptr, osize);
      return nullptr;
    }
    if (ptr == nullptr) return get(nsize);
    if (osize <= kMaxSmall && nsize <= kMaxSmall && cls(osize) == cls(nsize)) return ptr;
    if (osize > kMaxSmall && nsize > kMaxSmall) return std::realloc(ptr, nsize);
    void* p = get(nsize);
    if (p == nullptr) return nullptr;
    std::memcpy(p, ptr, osize < nsize ? osize : nsize);
    release(ptr, osize);
    return p;
  }

 private:
  static std::size_t cls(std::size_t n) { return (n + kGranule - 1) / kGranule; }

  void* get(std::size_t n) {
    if (n > kMaxSmall) return std::malloc(n);
    std::size_t c = cls(n);
    if (void* p = free_[c]) {
      free_[c] = *static_cast<void**>(p);
      return p;
    }
    std::size_t bytes = c * kGranule;
    if (static_cast<std::size_t>(end_ - bump_) < bytes) {
      if (budget_ != 0 && slab_bytes() + kSlab > budget_) {
        overflowed_ = true;
        return std::malloc(bytes);
      }
      void* slab = std::malloc(kSlab);
      if (slab == nullptr) return nullptr;
      // Kept in address order, to tell a slab's block from malloc's once there are both.
      slabs_.insert(std::upper_bound(slabs_.begin(), slabs_.end(), slab, std::less<void*>()), slab);
      bump_ = static_cast<char*>(slab);
      end_ = bump_ + kSlab;  // the tail of the previous slab is abandoned (< kMaxSmall)
    }
    void* p = bump_;
    bump_ += bytes;
    return p;
  }

  void release(void* ptr, std::size_t osize) {
    if (ptr == nullptr) return;
    if (osize > kMaxSmall) {
      std::free(ptr);
      return;
    }
    if (overflowed_ && !in_slab(ptr)) {
      std::free(ptr);
      return;
    }
    std::size_t c = cls(osize);
    *static_cast<void**>(ptr) = free_[c];
    free_[c] = ptr;
  }

  bool in_slab(void* ptr) const {
    auto it = std::upper_bound(slabs_.begin(), slabs_.end(), ptr, std::less<void*>());
    if (it == slabs_.begin()) return false;
    auto* start = static_cast<char*>(*std::prev(it));
    return std::less_equal<char*>()(start, static_cast<char*>(ptr)) &&
           std::less<char*>()(static_cast<char*>(ptr), start + kSlab);
  }

  void* free_[kMaxSmall / kGranule + 1] = {};
  std::vector<void*> slabs_;
  char* bump_ = nullptr;
  char* end_ = nullptr;
  std::size_t budget_ = 0;
  bool overflowed_ = false;  // some small blocks came from malloc
};

}  // namespace weft::script
