// kcont/detail/level_runners.hpp — the machinery under a thread_dispatcher:
// its level queues, its runners (the plan's threads, and the manual runners
// the caller drains), their loop and their stop. Internal to
// kcont/thread_dispatcher.hpp, which adds the public members on top.
//
// How a runner thread sleeps and is woken is the state table in
// kcont/wakeup.hpp; what its run slot says is the state table in
// kcont/detail/run_slot.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "kcont/contract.hpp"
#include "kcont/current_level.hpp"
#include "kcont/detail/run_slot.hpp"
#include "kcont/detail/spin_hold_off.hpp"
#include "kcont/dispatch_policy.hpp"
#include "kcont/kc.hpp"
#include "kcont/level.hpp"
#include "kcont/runner.hpp"

namespace kcont::detail {

// A per-thread address: which thread drains a manual runner (drained_by).
inline thread_local const char thread_tag = 0;
inline const void* this_thread_tag() noexcept { return &thread_tag; }

// The queues and runners of a thread_dispatcher<Level, Plan, Policy> (its
// private base: no virtual function, no indirection on the push path).
template <level_set Level, class Plan, class Policy>
class level_runners {
 protected:
  using knobs = dispatch_knobs<Policy, Level, Plan::has_threads>;
  using queue_type = typename knobs::queue;
  using wakeup_type = typename knobs::wakeup;
  using on_exception_type = typename knobs::on_exception;
  static constexpr std::size_t levels = level_count<Level>;
  using slot = run_slot;
  using kind = runner_kind;

  // A runner: the levels [lo, hi] it drains, how it sleeps, its threads.
  struct runner {
    std::size_t lo = 0;
    std::size_t hi = 0;
    kind k = kind::manual;
    unsigned nthreads = 0;
    slot* slots = nullptr;  // max(nthreads, 1) of slots_
    std::vector<std::thread> threads;
    std::atomic<bool> draining{false};  // a manual drain is in progress
    // The thread draining it (detail::this_thread_tag()), or null: a push
    // from that thread needs no wake-up (see wake).
    std::atomic<const void*> drained_by{nullptr};
    // Its own cache line: producers read it on every push that fills an
    // empty queue, and the spinning runner reads lo/hi above all the time.
    alignas(64) wakeup_type wake;
  };

  // Per level: drained by a manual runner (drain_all's levels).
  static constexpr std::array<bool, levels> manual_level = [] {
    std::array<bool, levels> m{};
    for (std::size_t i = 0; i < levels; ++i)
      m[i] = Plan::kinds[Plan::runner_of(i)] == kind::manual;
    return m;
  }();

  // Effects: creates the queues and runners and starts the plan's threads.
  // Throws: std::system_error (thread or descriptor creation) or
  //   std::bad_alloc; threads already started are stopped and joined first.
  explicit level_runners(on_exception_type on_exception)
      : on_exception_(std::move(on_exception)) {
    std::size_t nslots = 1;  // the last one is stop()'s
    for (std::size_t i = 0; i < levels; ++i) {
      if (Plan::runner_of(i) != i) continue;
      auto r = std::make_unique<runner>();
      r->lo = i;
      r->hi = Plan::top_of(i);
      r->k = Plan::kinds[i];
      r->nthreads = Plan::threads[i];
      if (r->k == kind::pool && r->nthreads == 0)
        r->nthreads = std::max(1u, std::thread::hardware_concurrency());
      if (r->k == kind::manual) r->nthreads = 0;
      r->threads.reserve(r->nthreads);
      nslots += std::max(r->nthreads, 1u);
      runners_[i] = std::move(r);
    }
    slots_ = std::make_unique<slot[]>(nslots);
    all_slots_ = {slots_.get(), nslots};
    std::size_t next = 0;
    for (auto& r : runners_) {
      if (!r) continue;
      r->slots = &slots_[next];
      next += std::max(r->nthreads, 1u);
    }
    const auto start_threads = [this] {
      for (auto& r : runners_) {
        if (!r) continue;
        for (unsigned t = 0; t < r->nthreads; ++t)
          r->threads.emplace_back([this, rp = r.get(), t] {
            knobs::thread_start(level_at<Level>(rp->lo), t);  // the policy's hook
            thread_main(*rp, rp->slots[t]);
          });
      }
    };
#if defined(__cpp_exceptions)
    try {
      start_threads();
    } catch (...) {
      stop_threads();
      throw;
    }
#else
    start_threads();  // a thread that cannot start ends the program
#endif
  }

  level_runners(const level_runners&) = delete;
  level_runners& operator=(const level_runners&) = delete;
  // The owner stopped the runners (stop_threads) before.
  ~level_runners() = default;

  runner& runner_for(Level level) noexcept {
    return *runners_[Plan::runner_of(level_index(level))];
  }
  const runner& runner_for(Level level) const noexcept {
    return *runners_[Plan::runner_of(level_index(level))];
  }

  bool runner_has_work(const runner& r) const noexcept {
    for (std::size_t i = r.hi + 1; i-- > r.lo;)
      if (!queues_[i].empty()) return true;
    return false;
  }
  bool any_work() const noexcept {
    for (const auto& q : queues_)
      if (!q.empty()) return true;
    return false;
  }

  // The manual runners one drain holds: each is claimed for this thread
  // (`draining`) and its wake-up reset; when the drain ends, each is
  // released and re-armed if work is left.
  struct manual_claim {
    level_runners* self;
    std::array<runner*, levels> held{};
    std::size_t n = 0;

    // Returns: false when r is being drained already (that drain keeps it).
    bool take(runner& r) {
      // The claim is taken outside the check: a side effect inside
      // KCONT_EXPECTS would vanish from release builds with the check.
      const bool busy = r.draining.exchange(true, std::memory_order_acquire);
      KCONT_EXPECTS(!busy,
                    "thread_dispatcher: one thread drains a manual runner at a "
                    "time");
      if (busy) return false;
      held[n++] = &r;
      if constexpr (requires { r.wake.reset(); }) r.wake.reset();
      r.drained_by.store(this_thread_tag(), std::memory_order_relaxed);
      return true;
    }
    ~manual_claim() {
      for (std::size_t i = 0; i < n; ++i) {
        held[i]->drained_by.store(nullptr, std::memory_order_relaxed);
        held[i]->draining.store(false, std::memory_order_release);
        if (self->runner_has_work(*held[i])) held[i]->wake.notify();
      }
    }
  };

  // Wakes runner r after its queue turned non-empty. A manual runner's
  // waiter may be a poll loop, which only notify() reaches; a runner
  // thread sleeps in wait(), so a policy that can skip the wake-up while
  // nobody sleeps (fd_wakeup::wake_sleeper) does. A push from the thread
  // draining r (a continuation it runs defers to it) wakes nothing: that
  // drain finds the work before it returns, or, stopped by its budget,
  // re-arms the wake-up as it releases r (manual_claim). Signal-safe when
  // the policy is.
  static void wake(runner& r) noexcept(noexcept(r.wake.notify())) {
    if (r.k == kind::manual &&
        r.drained_by.load(std::memory_order_relaxed) == this_thread_tag())
      return;
    if constexpr (requires { r.wake.wake_sleeper(); }) {
      if (r.k != kind::manual) {
        r.wake.wake_sleeper();
        return;
      }
    }
    r.wake.notify();
  }

  // Runs one continuation from runner r's highest non-empty level.
  // Returns: false when all of r's queues were empty.
  // Throws: what the continuation throws, unless handled by the policy.
  bool run_one(runner& r, slot& s) { return run_one(r.lo, r.hi, s, &r); }

  // The same over the levels [lo, hi], publishing in slot s; `pool` (when
  // not null) is the runner whose idle siblings may need waking and whose
  // siblings' slots a re-deferral may be handed over to.
  bool run_one(std::size_t lo, std::size_t hi, slot& s, runner* pool) {
    const unsigned threads = pool != nullptr ? pool->nthreads : 0;
    for (std::size_t i = hi + 1; i-- > lo;) {
      bool handed = false;
      kc_hook* h = queues_[i].pop_claimed([&](kc_hook& n) noexcept {
        handed = detail::claim_run(s, n, threads > 1 ? pool->slots : nullptr,
                                   threads);
      });
      if (h == nullptr) continue;
      if (handed) return true;  // the sibling running it runs it again
      // A pool: wake a sibling when more is waiting, so one wake-up per
      // empty->non-empty transition still keeps every worker busy.
      if (threads > 1 && runner_has_work(*pool)) wake(*pool);
      const level_guard<Level> at_level(level_at<Level>(i));
      const detail::running_scope scope{s, h};
      const std::uintptr_t w = detail::slot_word(h);
      do {
        knobs::resume(*h, on_exception_, level_at<Level>(i));
        // *h may be gone: the function may have destroyed it; only a
        // hand-over (h claimed again, so alive) makes it run again.
      } while (detail::run_again(s, w, threads));
      return true;
    }
    return false;
  }

  // A runner thread: the "running", "hold-off", "spinning", "asleep" and
  // "stopped" states of the sleep/wake state table in kcont/wakeup.hpp.
  void thread_main(runner& r, slot& s) {
    detail::hold_off pace;  // this thread's
    for (;;) {
      if (knobs::hands_back && stopping_.load(std::memory_order_acquire)) break;
      if (run_one(r, s)) {
        ++pace.ran;
        continue;
      }
      if (stopping_.load(std::memory_order_seq_cst)) break;
      if constexpr (knobs::idle_spin.count() > 0) {
        if (spin_allowed_ &&
            detail::spin_for_work<knobs::idle_spin.count()>(
                pace, [&] { return runner_has_work(r); }, stopping_,
                [&] { prefetch_newest(r); }))
          continue;
      }
      r.wake.wait([&] {
        return stopping_.load(std::memory_order_seq_cst) || runner_has_work(r);
      });
    }
    // A sibling may have lost its wake-up to us (a shared descriptor): pass
    // the stop on.
    r.wake.notify_all();
  }

  // Starts fetching the newest node of each of r's non-empty queues (the
  // queue policy permitting), so its transfer overlaps the pop.
  void prefetch_newest(const runner& r) const noexcept {
    if constexpr (requires(const queue_type& q) { q.prefetch_newest(); }) {
      for (std::size_t i = r.hi + 1; i-- > r.lo;) queues_[i].prefetch_newest();
    }
  }

  // Sets the stop flag, wakes every runner and joins its threads (which
  // finish their queues first under drain_on_stop, see thread_main).
  void stop_threads() noexcept {
    if constexpr (contract_checks) {
      for (auto& r : runners_)
        if (r)
          for (auto& t : r->threads)
            KCONT_EXPECTS(t.get_id() != std::this_thread::get_id(),
                          "thread_dispatcher: stop() called from one of its "
                          "own runner threads (it would join itself)");
    }
    std::lock_guard<std::mutex> g(stop_mutex_);
    stopping_.store(true, std::memory_order_seq_cst);
    for (auto& r : runners_)
      if (r) r->wake.notify_all();
    for (auto& r : runners_) {
      if (!r) continue;
      for (auto& t : r->threads)
        if (t.joinable()) t.join();
    }
  }

  // Runs everything left, highest level first, on the calling thread.
  void drain_rest() {
    for (;;) {
      std::size_t i = levels;
      while (i > 0 && queues_[i - 1].empty()) --i;
      if (i == 0) return;
      (void)run_one(i - 1, i - 1, all_slots_.back(), nullptr);
    }
  }

  std::array<queue_type, levels> queues_;
  std::array<std::unique_ptr<runner>, levels> runners_;
  std::unique_ptr<slot[]> slots_;  // every runner's, then stop()'s
  std::span<slot> all_slots_;
  // Own cache line: idle runners poll it while they spin (Policy::idle_spin),
  // and what lies next to the dispatcher (a caller's locals) must not share it.
  alignas(64) std::atomic<bool> stopping_{false};
  // Spinning for work another thread must produce needs a second CPU.
  bool spin_allowed_ = std::thread::hardware_concurrency() != 1;
  std::mutex stop_mutex_;
  [[no_unique_address]] on_exception_type on_exception_;
};

}  // namespace kcont::detail
