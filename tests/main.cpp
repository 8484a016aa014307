// The allocation counter, the skip listener, and the second translation unit
// of the two-TU link test (every header is included here and in its own test
// file, so a missing `inline` fails the link). doctest's runner is
// doctest_main.cpp.
#include <doctest/doctest.h>

#include <kcont/kcont.hpp>

#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <new>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "support.hpp"

namespace {

// Lists, after a run, the test cases its skip decorator left out (death
// tests in a build without contract checks, fork-based ones under a
// sanitizer): doctest's own "skipped" count also holds the cases a -sf/-tc
// filter left out, so it cannot say which were skipped for the build. Only
// the files this run entered are listed (meson runs one file per test).
// Reserved up front: allocations in the listener, between test cases, must
// not show in a test's allocation count.
class decorator_skip_listener : public doctest::IReporter {
 public:
  explicit decorator_skip_listener(const doctest::ContextOptions& o) : out_(*o.cout) {
    entered_.reserve(64);
    skipped_.reserve(512);
  }
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {
    for (const doctest::TestCaseData* tc : skipped_) {
      bool entered = false;
      for (const char* f : entered_) entered = entered || std::strcmp(f, tc->m_file.c_str()) == 0;
      if (entered)
        out_ << "[doctest] skipped in this build: " << tc->m_name << " ("
             << tc->m_file.c_str() << ":" << tc->m_line << ")\n";
    }
  }
  void test_case_start(const doctest::TestCaseData& tc) override {
    if (entered_.empty() || std::strcmp(entered_.back(), tc.m_file.c_str()) != 0)
      if (entered_.size() < entered_.capacity()) entered_.push_back(tc.m_file.c_str());
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData& tc) override {
    if (tc.m_skip && skipped_.size() < skipped_.capacity()) skipped_.push_back(&tc);
  }

 private:
  std::ostream& out_;
  std::vector<const char*> entered_;
  std::vector<const doctest::TestCaseData*> skipped_;
};

}  // namespace

REGISTER_LISTENER("decorator_skips", 1, decorator_skip_listener);

namespace {
std::atomic<std::size_t> allocation_count{0};
// kcont_test::fail_allocations; unused where the sanitizer owns operator new.
[[maybe_unused]] std::atomic<bool> failing{false};
}

// clang's ThreadSanitizer runtime defines operator new itself (statically
// linked), so there the count comes from the sanitizer's malloc hook instead
// of a replacement; everywhere else operator new is replaced.
#if defined(__clang__) && defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KCONT_TEST_COUNT_WITH_SANITIZER_HOOK 1
#endif
#endif

#ifdef KCONT_TEST_COUNT_WITH_SANITIZER_HOOK
#include <sanitizer/allocator_interface.h>
namespace {
void count_malloc(const volatile void*, std::size_t) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
}
void ignore_free(const volatile void*) {}
const int hooks_installed =
    __sanitizer_install_malloc_and_free_hooks(count_malloc, ignore_free);
}  // namespace
#else
// The replacements below pair malloc with free by design; g++ cannot see that
// every operator new here is ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
// Out of memory: std::bad_alloc, or without exceptions the end (as the
// standard library's own operator new ends then).
[[noreturn]] void out_of_memory() {
#if defined(__cpp_exceptions)
  throw std::bad_alloc();
#else
  std::abort();
#endif
}
void* counted_malloc(std::size_t n) noexcept {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (failing.load(std::memory_order_relaxed)) return nullptr;
  return std::malloc(n == 0 ? 1 : n);
}
void* counted_aligned_alloc(std::size_t n, std::align_val_t a) noexcept {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (failing.load(std::memory_order_relaxed)) return nullptr;
  const std::size_t al = static_cast<std::size_t>(a);
  return std::aligned_alloc(al, (n + al - 1) / al * al);
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  out_of_memory();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  out_of_memory();
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned_alloc(n, a)) return p;
  out_of_memory();
}
// The nothrow forms too: the library's own would call the forms above and
// catch, which a build without exceptions cannot do.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return counted_malloc(n);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_aligned_alloc(n, a);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

#endif  // KCONT_TEST_COUNT_WITH_SANITIZER_HOOK

namespace kcont_test {

std::size_t allocations() noexcept {
  return allocation_count.load(std::memory_order_relaxed);
}

bool fail_allocations(bool on) noexcept {
#ifdef KCONT_TEST_COUNT_WITH_SANITIZER_HOOK
  (void)on;
  return false;  // operator new is the sanitizer's: it cannot be made to fail
#else
  failing.store(on, std::memory_order_relaxed);
  return true;
#endif
}

bool dies_with(const std::function<void()>& body, const std::string& expected) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    // The child must die of the abort itself, not of doctest's crash handler.
    std::signal(SIGABRT, SIG_DFL);
    close(fds[0]);
    dup2(fds[1], 2);
    const int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1);
    body();
    _exit(0);  // the body returned: no contract check fired
  }
  close(fds[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;)
    err.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
  if (!aborted || err.find(expected) == std::string::npos) {
    std::fprintf(stderr, "dies_with: aborted=%d, stderr was:\n%s\n",
                 static_cast<int>(aborted), err.c_str());
    return false;
  }
  return true;
}

}  // namespace kcont_test
