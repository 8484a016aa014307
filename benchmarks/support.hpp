// benchmarks/support.hpp — what every kcont benchmark file shares.
//
// - `tally` / `request` / `record`: the work every case does per item (count
//   one call, add the request id and the status to a checksum), so a case and
//   its baseline do exactly the same useful work;
// - `item_check`: brackets a benchmark loop; afterwards it verifies that each
//   item ran exactly once (count and checksum; a mismatch is reported with
//   state.SkipWithError, never as a time) and reports heap allocations per
//   item as the `allocs_per_item` counter (operator new is replaced in main.cpp
//   and counts into a global atomic);
// - `register_case`: the repetition statistics each case reports besides
//   Google Benchmark's mean/median/stddev/cv: `min` and `max`, so the report
//   can show the spread across repetitions without computing statistics
//   itself.
//
// A new benchmark file (knote_benchmark.cpp, dispatch_benchmark.cpp) includes
// this header, registers its cases with `kcont_bench::register_case`, and is
// added to the list in benchmarks/meson.build. Nothing else changes.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace kcont_bench {

// Heap allocations made by this process so far (main.cpp counts them).
std::size_t allocations() noexcept;

// Returns v, hidden from the optimizer: afterwards the compiler must assume
// it may hold anything (and that memory may have changed), so a laundered
// function pointer cannot be devirtualized and a laundered status cannot be
// folded into a closed form. Used instead of benchmark::DoNotOptimize on an
// lvalue: with Google Benchmark 1.7.1 and g++ 12.2, DoNotOptimize's "+m,r"
// constraint on a small local is miscompiled at -O2 (the asm is dropped, the
// local's store too, and the value read later is garbage); the item checks of
// this suite caught it. A plain "+r" has no such problem.
template <class T>
  requires std::is_integral_v<T> || std::is_pointer_v<T>
[[nodiscard]] inline T opaque(T v) noexcept {
  asm volatile("" : "+r"(v) : : "memory");
  return v;
}

// What the handlers of a case accumulate: one count and one checksum.
// Not adjacent on purpose: g++'s SLP vectorizer turns two adjacent 8-byte
// read-modify-writes into one 16-byte load/add/store in some functions and not
// in others (it did so in a free function and in kc's trampoline, not in
// std::function's invoker), which made the same handler cost more behind one
// mechanism than behind another. With a gap every mechanism runs the same
// two scalar adds.
struct tally {
  std::uint64_t count = 0;
  std::uint64_t gap = 0;
  std::uint64_t sum = 0;
};

// The object a continuation completes: a request with an id. `owner` lets a
// handler with no environment of its own (a 16-byte std::function capture)
// reach the tally, so std::function stays in its small buffer.
struct request {
  std::uint64_t id = 0;
  tally* owner = nullptr;
};

// The per-item work of every case: count the call, checksum (id + status).
inline void record(tally& t, const request* r, int status) noexcept {
  ++t.count;
  t.sum += r->id + static_cast<std::uint64_t>(status);
}

// The checksum after `rounds` rounds over requests with ids 0..n-1, each
// recorded once per round with `status`.
[[nodiscard]] constexpr std::uint64_t expected_sum(std::uint64_t rounds,
                                                   std::uint64_t n,
                                                   int status) noexcept {
  return rounds * (n * (n - 1) / 2 + n * static_cast<std::uint64_t>(status));
}

// Brackets a benchmark loop: construct it right before `for (auto _ : state)`,
// call finish() right after.
class item_check {
 public:
  explicit item_check(benchmark::State& state)
      : state_(state), allocs_at_start_(allocations()) {}

  // Effects: when t shows exactly `items` calls with checksum `sum`, sets the
  //   counters `allocs_per_item` and `items_per_iteration` and the items
  //   processed; otherwise marks the run failed with SkipWithError (the report
  //   then shows ERROR instead of a time).
  void finish(std::uint64_t items, const tally& t, std::uint64_t sum) {
    const std::size_t allocs = allocations() - allocs_at_start_;
    if (t.count != items || t.sum != sum) {
      const std::string msg =
          "item check failed: expected " + std::to_string(items) +
          " calls with checksum " + std::to_string(sum) + ", got " +
          std::to_string(t.count) + " calls with checksum " +
          std::to_string(t.sum);
      state_.SkipWithError(msg.c_str());
      return;
    }
    const double per_iteration =
        state_.iterations() == 0
            ? 0.0
            : static_cast<double>(items) / static_cast<double>(state_.iterations());
    state_.counters["allocs_per_item"] =
        items == 0 ? 0.0 : static_cast<double>(allocs) / static_cast<double>(items);
    state_.counters["items_per_iteration"] = per_iteration;
    state_.SetItemsProcessed(static_cast<std::int64_t>(items));
  }

 private:
  benchmark::State& state_;
  std::size_t allocs_at_start_;
};

inline double stat_min(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}
inline double stat_max(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}

// Adds the min and max repetition statistics (Google Benchmark computes them
// with the other aggregates). Use as BENCHMARK(f)->Apply(register_case).
inline void register_case(benchmark::internal::Benchmark* b) {
  b->ComputeStatistics("min", stat_min)->ComputeStatistics("max", stat_max);
}

}  // namespace kcont_bench
