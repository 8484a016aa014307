// kcont/thread_dispatcher.hpp — level queues safe across threads, drained by
// runners chosen at compile time: the caller, a dedicated thread, or a pool.
//
// Defines `thread_dispatcher<Level, Plan, Policy>`, the threaded sibling of
// manual_dispatcher (dispatcher.hpp): a deferral target (run.hpp) with one
// queue per level, where any thread (and, with the signal-safe policies, a
// POSIX signal handler) may defer work, and each level is drained by the
// runner its `runner_plan` names (runner.hpp): a level with no runner falls
// back to the runner below; a shared runner runs the highest level first.
// Manual runners' levels are drained by the caller with drain / drain_all,
// whose meaning every dispatcher shares (kcont/drain_budget.hpp). Runners
// set the thread's current level (current_level.hpp) while they run a
// level's continuations. The policy's knobs (queue, wakeup, idle_spin,
// on_exception, on_stop, on_thread_start: a hook run first on each runner
// thread) are listed in kcont/dispatch_policy.hpp; how a
// runner thread sleeps and is woken is the state table in kcont/wakeup.hpp.
//
// Compared with a mutex + condition variable + deque<std::function>: no
// allocation per task (the continuation is the node), producers never lock
// (mpsc_queue), a sleeping runner costs the producer one futex wake and an
// awake one none, and priorities are levels fixed in the type.
//
// Usage:
//   using plan = kcont::plan_for<bsd_level, kcont::pool_runner<>, kcont::thread_runner>;
//   kcont::thread_dispatcher<bsd_level, plan> d;      // threads start here
//   kcont::defer(d, done, &req, 0);                   // any thread
//   d.stop();                                         // or let the destructor
//   // pin, name or set up each runner thread before its first continuation:
//   // Policy::on_thread_start(level, thread) (kcont/dispatch_policy.hpp)
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "kcont/contract.hpp"
#include "kcont/current_level.hpp"
#include "kcont/detail/level_runners.hpp"
#include "kcont/detail/run_slot.hpp"
#include "kcont/dispatch_policy.hpp"
#include "kcont/drain_budget.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"
#include "kcont/runner.hpp"
#include "kcont/wakeup.hpp"

namespace kcont {

// Level queues drained by compile-time runners (see the banner). The default
// plan is one thread for every level (level 0's thread_runner, the others
// falling back to it), highest level first.
//
// Lifetime contract: the runner threads start in the constructor and are
// joined by stop() or, at the latest, by the destructor. Each queued
// continuation's owner keeps it alive until it has run, or until cancel /
// stop(out) handed it back. A continuation kcont allocated (make_kc) is
// freed by the runner that ran it, at a moment the deferring thread cannot
// know: cancel one only with cancel_and_dispose, never cancel + dispose.
// One continuation never runs on two runner threads at once (the state
// table in kcont/detail/run_slot.hpp). The destructor stops the dispatcher
// under its on_stop policy; with hand_back_on_stop, call stop(out) first:
// work still pending in the destructor is a contract violation in a debug
// build (and is drained in a release build rather than dropped).
//
// Levels: every member taking a level expects a deferrable one; `immediate`
// (or a value outside the set) has no queue and no runner: a debug build
// aborts, and a release build gives the result each member documents.
//
// Thread-safety: push_deferred (so defer/run), has_work, cancel, cancel_sync
// and stop from any thread. With a signal-safe queue and wake-up
// (`signal_safe`, see defer_from_signal), push_deferred also from a POSIX
// signal handler; nothing else is signal-safe. drain(), drain_all(), wait()
// and wait_fd() are for the manual runners' levels, one draining thread per
// runner at a time. Producers must be done deferring before stop() is
// called: work deferred after stop() returned stays queued (and trips the
// queues' rule-9 check when the dispatcher is destroyed).
template <level_set Level = bsd_level,
          runner_plan_for<Level> Plan =
              plan_for<Level, thread_runner, no_runner>,
          class Policy = dispatch_defaults>
class thread_dispatcher : private detail::level_runners<Level, Plan, Policy> {
  using base = detail::level_runners<Level, Plan, Policy>;
  using typename base::knobs, typename base::kind, typename base::runner,
      typename base::slot, typename base::manual_claim;
  using base::all_slots_, base::any_work, base::drain_rest, base::manual_level,
      base::on_exception_, base::queues_, base::run_one, base::runner_for,
      base::runner_has_work, base::runners_, base::stop_threads,
      base::stopping_, base::wake;

 public:
  using level_type = Level;  // the level set (deferral_target)
  using plan_type = Plan;    // who drains each level
  // The policy's knobs, defaults applied (kcont/dispatch_policy.hpp).
  using queue_type = typename knobs::queue;
  using wakeup_type = typename knobs::wakeup;
  using idle_spin_type = typename knobs::idle_spin_type;
  using on_exception_type = typename knobs::on_exception;
  using on_stop_type = typename knobs::on_stop;

  // Number of level queues.
  static constexpr std::size_t levels = level_count<Level>;
  // Other threads touch the queues: deferral uses atomic state updates.
  static constexpr bool concurrent = true;
  // True when push_deferred (defer, defer_from_signal) is async-signal-safe:
  // a lock-free queue and a write(2) wake-up.
  static constexpr bool signal_safe = knobs::signal_safe;

  // Effects: creates the queues and runners and starts the plan's threads.
  // Throws: std::system_error (thread or descriptor creation) or
  //   std::bad_alloc; threads already started are stopped and joined first.
  // Thread-safety: the threads may run continuations before it returns.
  explicit thread_dispatcher(on_exception_type on_exception = {})
      : base(std::move(on_exception)) {}
  thread_dispatcher(const thread_dispatcher&) = delete;
  thread_dispatcher& operator=(const thread_dispatcher&) = delete;

  // Effects: stops the dispatcher if stop() was not called (see on_stop),
  //   joining every runner thread. A continuation that throws here under
  //   rethrow_exceptions terminates the program (a destructor does not
  //   throw): call stop() first to see the exception.
  ~thread_dispatcher() {
    if constexpr (knobs::hands_back) {
      stop_threads();
      KCONT_EXPECTS(!any_work(),
                    "thread_dispatcher: destroyed with work pending under "
                    "hand_back_on_stop; call stop(out) first (rule 9: every "
                    "continuation runs or is handed back)");
      drain_rest();  // release build: run it rather than drop it
    } else {
      stop();
    }
  }

  // Effects: queues h on its level's queue (see deferral_target), calling
  //   before_link after claiming it, and wakes the level's runner when the
  //   queue turned non-empty.
  // Returns: already_queued, first or queued; already_queued (nothing
  //   queued) also when h's level has no queue (immediate).
  // Complexity: O(1); no allocation; lock-free with mpsc_queue.
  // Thread-safety: any thread; from a signal handler when `signal_safe`.
  template <std::invocable<> BeforeLink>
  push_result push_deferred(kc_hook& h, BeforeLink&& before_link) {
    const auto level = static_cast<Level>(detail::hook_access::level(h));
    KCONT_EXPECTS(is_deferrable_level(level),
                  "dispatcher: only a deferrable level has a queue");
    if (!is_deferrable_level(level)) return push_result::already_queued;
    const std::size_t i = level_index(level);
    const push_result r =
        queues_[i].push(h, std::forward<BeforeLink>(before_link));
    if (r == push_result::first) wake(*runners_[Plan::runner_of(i)]);
    return r;
  }

  // Effects: drain (kcont/drain_budget.hpp): runs the work of the manual
  //   runner that drains `level`, every level of it, the highest non-empty
  //   one first. The runner's wake-up is reset first and re-armed when work
  //   is left, so a descriptor stays readable while the runner has work.
  // Returns: how many ran; 0, running nothing, when `level` has no queue
  //   (immediate) or the runner is being drained already (a nested drain
  //   from one of its continuations, or a second thread).
  // Throws: with rethrow_exceptions, what a continuation throws (it has run;
  //   the rest stays queued and the runner is re-armed).
  // Precondition: level's runner is a manual_runner; no other thread drains
  //   that runner at the same time, and no continuation it runs drains it
  //   (debug builds abort on both; release builds refuse as above).
  // Reentrancy: a continuation may defer more work, to any level.
  std::size_t drain(Level level, drain_budget budget = {}) {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: drain() needs a deferrable level");
    if (!is_deferrable_level(level)) return 0;
    runner& r = runner_for(level);
    KCONT_EXPECTS(r.k == kind::manual,
                  "thread_dispatcher: drain() is for manual runners' levels");
    manual_claim claim{this, {}, 0};
    if (!claim.take(r)) return 0;  // the drain in progress keeps its claim
    const bool timed = budget.timed();
    std::size_t n = 0;
    while (n < budget.count) {
      if (timed && std::chrono::steady_clock::now() >= budget.deadline) break;
      if (!run_one(r, r.slots[0])) break;
      ++n;
    }
    return n;
  }

  // Effects: drain_all (kcont/drain_budget.hpp): drain over every manual
  //   runner's levels at once, the highest non-empty level first across
  //   them. Levels that runner threads drain are not touched.
  // Returns, Throws, Precondition, Reentrancy: as drain, for every manual
  //   runner (0, running nothing, when one of them is being drained).
  std::size_t drain_all(drain_budget budget = {}) {
    manual_claim claim{this, {}, 0};
    for (auto& r : runners_)
      if (r && r->k == kind::manual && !claim.take(*r)) return 0;
    const bool timed = budget.timed();
    std::size_t n = 0;
    while (n < budget.count) {
      if (timed && std::chrono::steady_clock::now() >= budget.deadline) break;
      std::size_t i = levels;
      while (i > 0 && !(manual_level[i - 1] && !queues_[i - 1].empty())) --i;
      if (i == 0) break;
      runner& r = *runners_[Plan::runner_of(i - 1)];
      if (run_one(i - 1, i - 1, r.slots[0], &r)) ++n;
    }
    return n;
  }

  // Effects: blocks until the manual runner draining `level` has work, or
  //   the dispatcher is stopping; returns at once for a level with no queue
  //   (immediate). Never allocates.
  // Precondition: level's runner is a manual_runner.
  void wait(Level level) {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: wait() needs a deferrable level");
    if (!is_deferrable_level(level)) return;
    runner& r = runner_for(level);
    KCONT_EXPECTS(r.k == kind::manual,
                  "thread_dispatcher: wait() is for manual runners' levels");
    r.wake.wait([&] {
      return runner_has_work(r) || stopping_.load(std::memory_order_seq_cst);
    });
  }

  // Returns: a descriptor that is readable whenever the manual runner
  //   draining `level` has work and no drain of it is in progress (it may
  //   also be readable with nothing to do: drain() then returns 0). Poll it
  //   for POLLIN, then call drain(level). Owned by the dispatcher: do not
  //   read or close it. -1 for a level with no queue (immediate), and -1
  //   when the descriptor could not be created (only without exceptions:
  //   with them the constructor throws).
  // Precondition: level's runner is a manual_runner.
  // Available with a wake-up that has a descriptor (fd_wakeup, from
  //   kcont/posix/fd_wakeup.hpp).
  [[nodiscard]] int wait_fd(Level level) const
    requires requires(const wakeup_type& w) { { w.native_handle() } -> std::same_as<int>; }
  {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: wait_fd() needs a deferrable level");
    if (!is_deferrable_level(level)) return -1;
    const runner& r = runner_for(level);
    KCONT_EXPECTS(r.k == kind::manual,
                  "thread_dispatcher: wait_fd() is for manual runners' levels");
    return r.wake.native_handle();
  }

  // True when `level`'s queue holds work. A snapshot. False for a level
  // with no queue (immediate).
  [[nodiscard]] bool has_work(Level level) const noexcept {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: has_work() needs a deferrable level");
    if (!is_deferrable_level(level)) return false;
    return !queues_[level_index(level)].empty();
  }

  // Effects: removes h from its level's queue if it is still waiting there;
  //   the caller owns it again. As with manual_dispatcher::cancel, it is
  //   handed back still carrying the saved obj/status of its deferral: run()
  //   gives it those, and deferring it again keeps them (rule 2).
  //   Reads h: for a continuation kcont allocated (make_kc, allocate_kc),
  //   which a runner frees as soon as it has run, use cancel_and_dispose.
  // Returns: true when h was removed before it ran; false when it was not
  //   queued here, or is running or has run.
  // Complexity: O(1) when h is not queued (one load); O(length of h's level
  //   queue) when it is (also just after a runner popped it, until it
  //   starts), a walk under the queue's consumer lock.
  // Thread-safety: any thread, not from a signal handler; does not wait for
  //   a running continuation (see cancel_sync).
  bool cancel(kc_hook& h) noexcept {
    if (!h.is_queued()) return false;
    const auto level = static_cast<Level>(detail::hook_access::level(h));
    if (!is_deferrable_level(level)) return false;
    return queues_[level_index(level)].erase_slow(h);
  }

  // Effects: cancel(h), then waits (yielding) until no runner is running h,
  //   whether or not a queued deferral was removed: a run in progress is
  //   waited for in both cases. Called from inside h's own run, it does not
  //   wait for itself, and it also withdraws a re-deferral of h that a pool
  //   sibling handed over to this run (kcont/detail/run_slot.hpp).
  // Returns: true when a deferral of h was removed before it ran (h is then
  //   handed back as by cancel); false otherwise. Either way h is neither
  //   queued here nor running on another thread of this dispatcher when it
  //   returns (unless deferred again meanwhile by another thread).
  // Complexity: as cancel, plus a look at each runner thread's slot (a
  //   constant of the plan), plus the wait.
  // Contract: two runs that cancel_sync each other (directly, or through a
  //   chain of runs of this dispatcher, e.g. two continuations detaching
  //   each other's knote) would wait forever; debug builds abort instead,
  //   naming the cycle. Calling it from a continuation nested inside h's run
  //   (a nested drain) deadlocks.
  // Thread-safety: any thread, not a signal handler.
  bool cancel_sync(kc_hook& h) {
    bool removed = cancel(h);
    if (detail::running_here == &h) {
      if (!removed) removed = detail::withdraw_handed_over(h);
      return removed;
    }
    // If h is running now, a slot shows it (why: kcont/detail/run_slot.hpp).
    for (const slot& s : all_slots_) detail::wait_not_running(all_slots_, s, h);
    return removed;
  }

  // Effects: when h is still waiting on one of this dispatcher's level
  //   queues, removes it and hands it back through dispose(), which frees a
  //   continuation kcont allocated (make_kc, allocate_kc). One operation, so
  //   safe where `if (cancel(h)) dispose(h)` is not: h is found by its
  //   address alone and read only once found on a queue, so it may be an
  //   allocated continuation that a runner has already run and freed.
  // Returns: true when h was removed (and disposed); false when it was not
  //   queued here: it is running, has run (and, allocated, is freed), or was
  //   never deferred here.
  // Precondition: h's address was not reused, after it was freed, by another
  //   continuation deferred here (a new make_kc may get the same memory):
  //   cancel an allocated continuation before it can have run, or keep an
  //   allocated one that must be cancellable in a list of your own.
  // Complexity: O(everything queued on this dispatcher), walks under each
  //   level queue's consumer lock. Thread-safety: as cancel.
  bool cancel_and_dispose(kc_hook& h) {
    for (auto& q : queues_) {
      if (q.erase_slow(h)) {
        dispose(h);
        return true;
      }
    }
    return false;
  }

  // Effects: stops the runners. Their threads finish their queues and
  //   exit; then the calling thread runs everything left (manual levels,
  //   work deferred across runners while they stopped), highest level
  //   first, at each continuation's level. Idempotent. A continuation that
  //   re-defers itself on every run keeps its runner, and so stop(), busy.
  // Throws: with rethrow_exceptions, what a continuation throws (the rest
  //   stays queued; call stop() again to go on).
  // Thread-safety: any thread but a runner thread of this dispatcher.
  void stop()
    requires(!knobs::hands_back)
  {
    stop_threads();
    drain_rest();
  }

  // Effects: stops the runners after the continuation each is running, joins
  //   them, and moves every continuation still queued to `out` (unrun, still
  //   carrying its saved obj/status), highest level first, FIFO within a
  //   level. The caller owns them again: it pops them from `out` and runs
  //   each with kcont::resume (resume.hpp), hands it to another dispatcher
  //   (push_deferred), or dispose()s it.
  // Returns: how many were handed back.
  // Thread-safety: any thread but a runner thread of this dispatcher.
  template <lock_policy Lock>
  std::size_t stop(kcqueue<kc_hook, Lock>& out)
    requires knobs::hands_back
  {
    stop_threads();
    std::size_t n = 0;
    for (std::size_t i = levels; i-- > 0;) {
      while (kc_hook* h = queues_[i].pop()) {
        (void)out.push(*h);
        ++n;
      }
    }
    return n;
  }

  // True once stop() began.
  [[nodiscard]] bool stopping() const noexcept {
    return stopping_.load(std::memory_order_acquire);
  }

  // Returns: true when `level` is drained by a manual runner (after
  //   no_runner fallback): the caller drains it (drain, drain_all, wait_fd);
  //   false when threads drain it, and for a level with no queue (immediate).
  [[nodiscard]] static constexpr bool is_manual(Level level) noexcept {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: is_manual() needs a deferrable level");
    if (!is_deferrable_level(level)) return false;
    return manual_level[level_index(level)];
  }

  // Returns: how many threads drain `level` (0 for a manual runner, and for
  //   a level with no queue: immediate).
  [[nodiscard]] unsigned thread_count(Level level) const noexcept {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: thread_count() needs a deferrable level");
    if (!is_deferrable_level(level)) return 0;
    return runner_for(level).nthreads;
  }

  // The exception handler (when on_exception is a callable), for inspection.
  [[nodiscard]] on_exception_type& exception_handler() noexcept {
    return on_exception_;
  }
};

// Effects: defer (run.hpp) from a POSIX signal handler: lock-free push, no
//   allocation, and an async-signal-safe wake-up (a write(2)).
// Returns: deferred, or refused when k is already queued (the pending run
//   absorbs this one) or immediate (no queue: see defer).
// Compile-time check: the dispatcher's queue and wake-up are signal-safe
//   (mpsc_queue<> and fd_wakeup).
template <deferral_target D, class Obj, class Status>
run_result defer_from_signal(D& d,
                             kc_base<Obj, Status, typename D::level_type>& k,
                             std::type_identity_t<Obj> obj,
                             std::type_identity_t<Status> status) {
  static_assert(requires { requires D::signal_safe; },
                "kcont::defer_from_signal: the dispatcher is not "
                "async-signal-safe; use Policy::queue = mpsc_queue<> and "
                "Policy::wakeup = fd_wakeup");
  return defer(d, k, obj, status);
}

}  // namespace kcont
