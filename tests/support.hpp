// Test support: allocation counting and contract-violation (death) checks.
#pragma once

#include <cstddef>
#include <functional>
#include <memory_resource>
#include <new>
#include <string>

namespace kcont_test {

// A memory resource that counts the blocks it has out: 0 after a test means
// nothing the library allocated was left behind.
struct counting_resource : std::pmr::memory_resource {
  int live = 0;
  void* do_allocate(std::size_t n, std::size_t a) override {
    ++live;
    return ::operator new(n, std::align_val_t(a));
  }
  void do_deallocate(void* p, std::size_t, std::size_t a) override {
    --live;
    ::operator delete(p, std::align_val_t(a));
  }
  bool do_is_equal(const memory_resource& o) const noexcept override {
    return this == &o;
  }
};

// True in a ThreadSanitizer build: fork() from a process with threads (what a
// death test of a multi-threaded contract needs) is not supported there.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool under_tsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool under_tsan = true;
#else
inline constexpr bool under_tsan = false;
#endif
#else
inline constexpr bool under_tsan = false;
#endif

// Heap allocations made through operator new since the program started, on
// every thread (the replacement operator new lives in main.cpp).
std::size_t allocations() noexcept;

// While `on`, every operator new (plain, aligned, nothrow) of this process
// fails: the throwing forms throw std::bad_alloc (without exceptions: abort),
// the nothrow forms return null. Returns: false when this build cannot
// inject failures (clang's ThreadSanitizer owns operator new), true otherwise.
bool fail_allocations(bool on) noexcept;

// Counts allocations made while it is alive.
class allocation_scope {
 public:
  allocation_scope() noexcept : start_(allocations()) {}
  [[nodiscard]] std::size_t count() const noexcept {
    return allocations() - start_;
  }

 private:
  std::size_t start_;
};

// Runs `body` in a forked child and reports whether the child aborted with
// `expected` in what it wrote to stderr: a debug contract check firing.
bool dies_with(const std::function<void()>& body, const std::string& expected);

}  // namespace kcont_test
