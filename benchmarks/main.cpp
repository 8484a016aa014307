// The benchmark binary's main: the allocation counter (a replacement global
// operator new counting into one atomic; read by item_check) and the run
// context the report prints (compiler, CPU model, whether kcont's contract
// checks are compiled in, the sizes of benchmarks/sizes.hpp), added to
// Google Benchmark's own JSON context.
#include <benchmark/benchmark.h>

#include <kcont/contract.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <new>
#include <string>
#include <thread>

#include "sizes.hpp"
#include "support.hpp"

namespace {
std::atomic<std::size_t> allocation_count{0};

void* counted_alloc(std::size_t n) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* counted_aligned_alloc(std::size_t n, std::align_val_t a) {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  const auto al = static_cast<std::size_t>(a);
  return std::aligned_alloc(al, (n + al - 1) / al * al);
}

// The CPU model line of /proc/cpuinfo (Google Benchmark's context has the
// core count, frequency and caches, not the model).
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(' '));
        return v;
      }
    }
  }
  return "unknown";
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang++ ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("g++ ") + __VERSION__;
#else
  return "unknown";
#endif
}
}  // namespace

// The replacements pair malloc with free by design; g++ cannot see that every
// operator new here is ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned_alloc(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned_alloc(n, a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace kcont_bench {
std::size_t allocations() noexcept {
  return allocation_count.load(std::memory_order_relaxed);
}
}  // namespace kcont_bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kcont_compiler", compiler());
  benchmark::AddCustomContext("kcont_cpu_model", cpu_model());
  benchmark::AddCustomContext("kcont_contract_checks",
                              kcont::contract_checks ? "on" : "off (NDEBUG)");
#if defined(__OPTIMIZE__)
  benchmark::AddCustomContext("kcont_optimized", "yes");
#else
  benchmark::AddCustomContext("kcont_optimized", "no (not a release build)");
#endif
  kcont_bench::add_sizes_context();
  // glibc's std::mutex (and anything else that tests "is this process
  // single-threaded?") skips its atomic operations until the process starts
  // its first thread. Every locked row is measured as a threaded program
  // runs it, which is why it takes a lock at all: start one thread before
  // the first case, so a row's condition does not depend on whether a
  // threaded case happened to run before it (the filter, the interleaving).
  std::thread([] {}).join();
  benchmark::AddCustomContext("kcont_threaded", "yes (one thread started and joined before the first case)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
