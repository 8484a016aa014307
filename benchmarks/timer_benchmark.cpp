// Case H: timers (kcont/timer_source.hpp, timer_filter.hpp) next to a
// hand-written std::priority_queue timer heap, in the same binary.
//
// Every case has N = 10^3 or 10^6 background timers armed far in the future
// (->Arg(N)), so the heap has that size; time is a manual clock advanced by
// hand (no clock read in the loop).
//
// H1, one tick with nothing due (one item = one tick): O(1), the same cost
// at 10^3 and 10^6.
//   BM_TimerTickNoneDue_PriorityQueue  compare now with the queue's top
//   BM_TimerTickNoneDue_Kcont          basic_timer_source<bsd_level, no_lock>
//                                      ::tick(now)
//   BM_TimerTickNoneDue_KcontMutex     the default timer_source (std::mutex)
//
// H2, arm + cancel, K = 64 timers per iteration (one item = one timer armed
// and cancelled before its deadline), then a tick past their deadlines.
//   BM_TimerArmCancel_PriorityQueue    push (deadline, generation, timer);
//                                      cancel bumps the timer's generation
//                                      (lazy deletion: the stale entry is
//                                      popped and skipped by the tick, the
//                                      usual way to cancel in a binary heap)
//   BM_TimerArmCancel_Kcont            knote<timer_filter, ..., no_lock>
//                                      standalone: attach (arms, O(log n)),
//                                      detach (unlinks, O(log n)), tick
//
// H3, arm + expire, K = 64 one-shot timers per iteration (one item = one
// timer armed, expired and its handler run: record(request, 1)).
//   BM_TimerArmExpire_PriorityQueue    push K; tick pops the due entries and
//                                      calls each handler
//   BM_TimerArmExpire_Kcont            source.arm(kn, delay) on K attached
//                                      one-shot knotes (no_lock); tick fires
//                                      them: filter event + activation +
//                                      the continuation, immediate
//   BM_TimerArmExpire_KcontMutex       the same with the default locks
//                                      (std::mutex source, spin_lock knotes)
#include <kcont/timer_filter.hpp>
#include <kcont/timer_source.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <queue>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont_bench::record;
using kcont_bench::request;
using kcont_bench::tally;

// A clock the benchmark advances by hand.
struct bench_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<bench_clock>;
  static inline time_point now_{};
  static time_point now() noexcept { return now_; }
};
using ns = std::chrono::nanoseconds;
constexpr ns far_away{std::int64_t{1} << 60};
constexpr std::size_t k_timers = 64;

template <class Lock>
using source_t = kcont::basic_timer_source<bsd_level, Lock, bench_clock>;
template <class Lock>
using knote_lock_t = std::conditional_t<std::is_same_v<Lock, kcont::no_lock>, kcont::no_lock,
                                        kcont::spin_lock>;
template <class Lock>
using timer_t = kcont::knote<kcont::timer_filter<source_t<Lock>>, bsd_level, knote_lock_t<Lock>>;
template <class Lock>
using tkn_t = typename source_t<Lock>::knote_type;

// The background: n timers armed far in the future, never due.
template <class Lock>
struct background {
  struct never_fn {
    void operator()(tkn_t<Lock>*, int&, kcont::knote_cause) const noexcept {}
  };
  using kc_t = kcont::kc<never_fn, int, kcont::static_level<bsd_level::immediate>>;
  kc_t never{never_fn{}, 0, kcont::at<bsd_level::immediate>};
  std::deque<timer_t<Lock>> timers;
  background(source_t<Lock>& src, std::size_t n) {
    src.reserve(n + k_timers);
    for (std::size_t i = 0; i < n; ++i) {
      timers.emplace_back(kcont::timer_filter<source_t<Lock>>{src, far_away + ns(i)}, never);
      (void)timers.back().attach();
    }
  }
  ~background() {
    for (auto& t : timers) (void)t.detach();
  }
};

// The hand-written heap: (deadline, generation, timer).
struct pq_timer {
  std::uint64_t generation = 0;
  request* r = nullptr;
};
struct pq_entry {
  std::int64_t deadline;
  std::uint64_t generation;
  pq_timer* timer;
  bool operator>(const pq_entry& o) const noexcept { return deadline > o.deadline; }
};
using pq_t = std::priority_queue<pq_entry, std::vector<pq_entry>, std::greater<pq_entry>>;

pq_t make_pq(std::size_t n, std::vector<pq_timer>& owners) {
  std::vector<pq_entry> v;
  v.reserve(n + 2 * k_timers);
  owners.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    v.push_back(pq_entry{far_away.count() + static_cast<std::int64_t>(i), 0, &owners[i]});
  return pq_t(std::greater<pq_entry>{}, std::move(v));
}

// Pops every due entry; runs the handler of the live ones. Returns: how many ran.
std::size_t pq_tick(pq_t& pq, std::int64_t now, tally& t) {
  std::size_t n = 0;
  while (!pq.empty() && pq.top().deadline <= now) {
    const pq_entry e = pq.top();
    pq.pop();
    if (e.generation != e.timer->generation) continue;  // cancelled
    ++e.timer->generation;
    record(t, e.timer->r, 1);
    ++n;
  }
  return n;
}

// The end of an idle-tick case: one item per tick, none may fire.
void idle_done(benchmark::State& state, std::size_t fired, std::size_t allocs_at_start) {
  if (fired != 0) {
    state.SkipWithError("a timer fired");
    return;
  }
  const auto items = static_cast<double>(state.iterations());
  state.counters["allocs_per_item"] =
      items == 0 ? 0.0 : static_cast<double>(kcont_bench::allocations() - allocs_at_start) / items;
  state.counters["items_per_iteration"] = 1.0;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_TimerTickNoneDue_PriorityQueue(benchmark::State& state) {
  std::vector<pq_timer> owners;
  pq_t pq = make_pq(static_cast<std::size_t>(state.range(0)), owners);
  tally t;
  std::int64_t now = 0;
  std::size_t fired = 0;
  const std::size_t allocs = kcont_bench::allocations();
  for (auto _ : state) fired += pq_tick(pq, kcont_bench::opaque(now), t);
  idle_done(state, fired, allocs);
}

template <class Lock>
void tick_none_due(benchmark::State& state) {
  bench_clock::now_ = {};
  source_t<Lock> src;
  background<Lock> bg(src, static_cast<std::size_t>(state.range(0)));
  std::size_t fired = 0;
  const bench_clock::time_point now{};
  const std::size_t allocs = kcont_bench::allocations();
  for (auto _ : state) fired += src.tick(now);
  idle_done(state, fired, allocs);
}
void BM_TimerTickNoneDue_Kcont(benchmark::State& state) { tick_none_due<kcont::no_lock>(state); }
void BM_TimerTickNoneDue_KcontMutex(benchmark::State& state) { tick_none_due<std::mutex>(state); }

void BM_TimerArmCancel_PriorityQueue(benchmark::State& state) {
  std::vector<pq_timer> owners;
  pq_t pq = make_pq(static_cast<std::size_t>(state.range(0)), owners);
  std::vector<pq_timer> mine(k_timers);
  tally t;
  std::int64_t now = 0;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    for (std::size_t i = 0; i < k_timers; ++i)
      pq.push(pq_entry{now + 1 + static_cast<std::int64_t>(i), mine[i].generation, &mine[i]});
    for (std::size_t i = 0; i < k_timers; ++i) ++mine[i].generation;  // cancel
    now += 100;
    if (pq_tick(pq, kcont_bench::opaque(now), t) != 0) state.SkipWithError("a cancelled timer ran");
    t.count += k_timers;  // the items: timers armed and cancelled
  }
  check.finish(state.iterations() * k_timers, t, 0);
}

void BM_TimerArmCancel_Kcont(benchmark::State& state) {
  bench_clock::now_ = {};
  source_t<kcont::no_lock> src;
  background<kcont::no_lock> bg(src, static_cast<std::size_t>(state.range(0)));
  std::deque<timer_t<kcont::no_lock>> mine;
  for (std::size_t i = 0; i < k_timers; ++i)
    mine.emplace_back(kcont::timer_filter<source_t<kcont::no_lock>>{src, ns(1 + i)}, bg.never);
  tally t;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    for (auto& m : mine) (void)m.attach();
    for (auto& m : mine) (void)m.detach();
    bench_clock::now_ += ns(100);
    if (src.tick(bench_clock::now_) != 0) state.SkipWithError("a cancelled timer ran");
    t.count += k_timers;
  }
  check.finish(state.iterations() * k_timers, t, 0);
}

void BM_TimerArmExpire_PriorityQueue(benchmark::State& state) {
  std::vector<pq_timer> owners;
  pq_t pq = make_pq(static_cast<std::size_t>(state.range(0)), owners);
  tally t;
  std::vector<request> reqs(k_timers);
  std::vector<pq_timer> mine(k_timers);
  for (std::size_t i = 0; i < k_timers; ++i) {
    reqs[i] = request{i, &t};
    mine[i].r = &reqs[i];
  }
  std::int64_t now = 0;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    for (std::size_t i = 0; i < k_timers; ++i)
      pq.push(pq_entry{now + 1 + static_cast<std::int64_t>(i), mine[i].generation, &mine[i]});
    now += 100;
    (void)pq_tick(pq, kcont_bench::opaque(now), t);
  }
  const auto rounds = static_cast<std::uint64_t>(state.iterations());
  check.finish(rounds * k_timers, t, kcont_bench::expected_sum(rounds, k_timers, 1));
}

template <class Lock>
void arm_expire(benchmark::State& state) {
  bench_clock::now_ = {};
  source_t<Lock> src;
  background<Lock> bg(src, static_cast<std::size_t>(state.range(0)));
  tally t;
  std::vector<request> reqs(k_timers);
  for (std::size_t i = 0; i < k_timers; ++i) reqs[i] = request{i, &t};
  struct fn {
    void operator()(tkn_t<Lock>*, request*& r, kcont::knote_cause) const noexcept {
      record(*r->owner, r, 1);
    }
  };
  using kc_t = kcont::kc<fn, request*, kcont::static_level<bsd_level::immediate>>;
  std::deque<kc_t> ks;
  std::deque<timer_t<Lock>> mine;
  for (std::size_t i = 0; i < k_timers; ++i) {
    ks.emplace_back(fn{}, &reqs[i], kcont::at<bsd_level::immediate>);
    mine.emplace_back(kcont::timer_filter<source_t<Lock>>{src, far_away}, ks.back());
    (void)mine.back().attach();
  }
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    for (std::size_t i = 0; i < k_timers; ++i) src.arm(mine[i], ns(1 + i));
    bench_clock::now_ += ns(100);
    (void)src.tick(bench_clock::now_);
  }
  const auto rounds = static_cast<std::uint64_t>(state.iterations());
  check.finish(rounds * k_timers, t, kcont_bench::expected_sum(rounds, k_timers, 1));
  for (auto& m : mine) (void)m.detach();
}
void BM_TimerArmExpire_Kcont(benchmark::State& state) { arm_expire<kcont::no_lock>(state); }
void BM_TimerArmExpire_KcontMutex(benchmark::State& state) { arm_expire<std::mutex>(state); }

}  // namespace

#define KCONT_TIMER_CASE(f) \
  BENCHMARK(f)->Arg(1000)->Arg(1000000)->Apply(kcont_bench::register_case)
KCONT_TIMER_CASE(BM_TimerTickNoneDue_PriorityQueue);
KCONT_TIMER_CASE(BM_TimerTickNoneDue_Kcont);
KCONT_TIMER_CASE(BM_TimerTickNoneDue_KcontMutex);
KCONT_TIMER_CASE(BM_TimerArmCancel_PriorityQueue);
KCONT_TIMER_CASE(BM_TimerArmCancel_Kcont);
KCONT_TIMER_CASE(BM_TimerArmExpire_PriorityQueue);
KCONT_TIMER_CASE(BM_TimerArmExpire_Kcont);
KCONT_TIMER_CASE(BM_TimerArmExpire_KcontMutex);
