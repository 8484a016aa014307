// kcont/thread_dispatcher.hpp — level queues safe across threads, drained by
// runners chosen at compile time: the caller, a dedicated thread, or a pool.
//
// Defines `thread_dispatcher<Level, Plan, Policy>`, the threaded sibling of
// manual_dispatcher (dispatcher.hpp): a deferral target (run.hpp) with one
// queue per level, where any thread (and, with the signal-safe policies, a
// POSIX signal handler) may defer work, and each level is drained by the
// runner its `runner_plan` names (runner.hpp): a level with no runner falls
// back to the runner below; a shared runner runs the highest level first.
// Runners set the thread's current level (current_level.hpp) while they run
// a level's continuations.
//
// The policy is one optional struct; each knob is a member type, detected
// with `requires`, with the default in brackets:
//
//   queue        — a level queue of kc_hook          [mpsc_queue<>]
//                  mpsc_queue<> (lock-free producers, signal-safe),
//                  kcqueue<kc_hook, std::mutex>, kcqueue<kc_hook, spin_lock>
//   wakeup       — how runners sleep (wakeup.hpp)     [default_wakeup]
//                  atomic_wakeup, condvar_wakeup, fd_wakeup (signal-safe,
//                  pollable: wait_fd(); kcont/posix/fd_wakeup.hpp)
//   idle_spin    — how long a runner thread spins     [default_idle_spin]
//                  before it sleeps (wakeup.hpp)       (2 us)
//                  no_spin, spin_for_ns<N>: back-to-back work finds the
//                  runner awake (no wake-up syscall, no scheduler delay) at
//                  the price of at most N ns of CPU each time it runs dry;
//                  paced by a learnt hold-off, so a stream of work is taken
//                  in batches (see spin_for_work)
//   on_exception — a continuation that throws         [terminate_on_exception]
//                  terminate_on_exception: std::terminate, as from a thread;
//                  rethrow_exceptions: out of drain()/stop() to their caller
//                    (only for plans without threads: enforced at compile
//                    time, a runner thread has no caller to rethrow to);
//                  any callable h(std::exception_ptr, Level): called on the
//                    runner's thread, then the runner goes on.
//                  Whichever: the continuation that threw has run (it is not
//                  re-queued) and every continuation not yet run stays queued.
//   on_stop      — what stop() does with pending work [drain_on_stop]
//                  drain_on_stop: runners finish their queues, then the
//                    caller of stop() runs whatever is left (work deferred
//                    across runners while they stopped, manual levels);
//                  hand_back_on_stop: runners stop after the continuation
//                    they are running; stop(out) moves the rest, unrun and
//                    with their saved obj/status, to the caller's kcqueue.
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
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <ratio>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "kcont/contract.hpp"
#include "kcont/current_level.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/mpsc_queue.hpp"
#include "kcont/run.hpp"
#include "kcont/runner.hpp"
#include "kcont/wakeup.hpp"

namespace kcont {

// ---- policies --------------------------------------------------------------

// on_exception: a throwing continuation ends the program (the default, and
// what an exception leaving a std::thread does anyway).
struct terminate_on_exception {};
// on_exception: the exception leaves drain() (or stop()) in the caller's
// thread; only for plans without runner threads.
struct rethrow_exceptions {};
// on_stop: pending work runs before stop() returns.
struct drain_on_stop {};
// on_stop: pending work is handed back to the caller of stop(out).
struct hand_back_on_stop {};

// The default policy: every knob at its default.
struct dispatch_defaults {};

// What a level queue must offer a thread_dispatcher (mpsc_queue<> and
// kcqueue<kc_hook, Lock> do).
template <class Q>
concept level_queue =
    std::default_initializable<Q> &&
    requires(Q& q, kc_hook& h, detail::nothing before_link,
             void (*under_lock)(kc_hook&) noexcept) {
      { q.push(h, before_link) } -> std::same_as<push_result>;
      { q.pop() } -> std::same_as<kc_hook*>;
      { q.pop_claimed(under_lock) } -> std::same_as<kc_hook*>;
      { q.erase_slow(h) } -> std::same_as<bool>;
      { q.empty() } -> std::same_as<bool>;
    };

namespace detail {

template <class P>
struct policy_queue {
  using type = mpsc_queue<kc_hook>;
};
template <class P>
  requires requires { typename P::queue; }
struct policy_queue<P> {
  using type = typename P::queue;
};
template <class P>
struct policy_wakeup {
  using type = default_wakeup;
};
template <class P>
  requires requires { typename P::wakeup; }
struct policy_wakeup<P> {
  using type = typename P::wakeup;
};
template <class P>
struct policy_idle_spin {
  using type = default_idle_spin;
};
template <class P>
  requires requires { typename P::idle_spin; }
struct policy_idle_spin<P> {
  using type = typename P::idle_spin;
};
template <class P>
struct policy_on_exception {
  using type = terminate_on_exception;
};
template <class P>
  requires requires { typename P::on_exception; }
struct policy_on_exception<P> {
  using type = typename P::on_exception;
};
template <class P>
struct policy_on_stop {
  using type = drain_on_stop;
};
template <class P>
  requires requires { typename P::on_stop; }
struct policy_on_stop<P> {
  using type = typename P::on_stop;
};

template <class Q>
inline constexpr bool signal_safe_queue = false;
template <class Q>
  requires requires { Q::signal_safe_push; }
inline constexpr bool signal_safe_queue<Q> = Q::signal_safe_push;

// The continuation the calling thread is running for a thread_dispatcher
// (cancel_sync from inside it must not wait for itself).
inline thread_local const kc_hook* running_here = nullptr;

// What one runner thread (or manual runner, or stop()) is running, so that
// cancel_sync can wait for it, a sibling can hand it a re-deferral, and a
// wait cycle can be seen. Own cache line.
//  running:     the continuation's address, low bit set when a sibling of
//               the same pool popped a re-deferral of it during this run and
//               handed it over (the claim protocol at kc_hook: it stays
//               claimed, off every queue, until this thread runs it again).
//  waiting_for: the continuation whose run this thread's cancel_sync waits
//               for (set only while contract checks are on).
struct alignas(64) run_slot {
  std::atomic<std::uintptr_t> running{0};
  std::atomic<const kc_hook*> waiting_for{nullptr};
};

// The slot of the run the calling thread is in, if any.
inline thread_local run_slot* running_slot = nullptr;

// The address alone: the continuation behind it may be gone.
inline std::uintptr_t slot_word(const kc_hook* h) noexcept {
  return reinterpret_cast<std::uintptr_t>(h);
}
// kc_hook holds pointers, so its address leaves the low bit free for the tag.
inline constexpr std::uintptr_t handed_over = 1;
static_assert(alignof(kc_hook) >= 2);

}  // namespace detail

// How much one drain may do: at most `count` continuations and, when a
// deadline is set, until that time point (checked before each one). The rest
// stays queued and the runner is rescheduled (its descriptor stays readable).
struct drain_budget {
  std::size_t count = std::numeric_limits<std::size_t>::max();
  std::chrono::steady_clock::time_point deadline =
      std::chrono::steady_clock::time_point::max();

  // Returns: a budget of n continuations.
  [[nodiscard]] static drain_budget items(std::size_t n) noexcept {
    return {n, std::chrono::steady_clock::time_point::max()};
  }
  // Returns: a budget of `d` from now. A `d` whose deadline the clock cannot
  //   hold (hours::max()) saturates to no deadline at all; a `d` of zero or
  //   less (or NaN) is already spent: drain() then runs nothing.
  template <class Rep, class Period>
  [[nodiscard]] static drain_budget for_time(
      std::chrono::duration<Rep, Period> d) noexcept {
    using clock = std::chrono::steady_clock;
    using in = std::chrono::duration<Rep, Period>;
    const auto now = clock::now();
    drain_budget b = items(std::numeric_limits<std::size_t>::max());
    if (!(d > in::zero())) {  // zero, negative or NaN
      b.deadline = now;
      return b;
    }
    // What is left of the clock. d is compared with it in the coarser of
    // the two units, so that the conversion only divides: converting d
    // itself to the clock's unit could overflow (hours::max()).
    const clock::duration room =
        now.time_since_epoch() < clock::duration::zero()
            ? clock::duration::max()
            : clock::time_point::max() - now;
    clock::duration span;
    if constexpr (std::chrono::treat_as_floating_point_v<Rep>) {
      const long double want =
          std::chrono::duration<long double, clock::period>(d).count();
      if (!(want < static_cast<long double>(room.count()))) return b;
      span = clock::duration(static_cast<clock::rep>(want));
    } else if constexpr (std::ratio_less_equal_v<Period, clock::period>) {
      span = std::chrono::duration_cast<clock::duration>(d);
      if (span >= room) return b;
    } else {
      if (d >= std::chrono::duration_cast<in>(room)) return b;
      span = std::chrono::duration_cast<clock::duration>(d);
    }
    b.deadline = now + span;
    return b;
  }
};

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
// One continuation never runs on two runner threads at once (see kc_hook).
// The destructor stops the dispatcher under its on_stop policy; with
// hand_back_on_stop, call stop(out) first: work still pending in the
// destructor is a contract violation in a debug build (and is drained in a
// release build rather than dropped).
//
// Levels: every member taking a level expects a deferrable one; `immediate`
// (or a value outside the set) has no queue and no runner: a debug build
// aborts, and a release build gives the result each member documents.
//
// Thread-safety: push_deferred (so defer/run), has_work, cancel, cancel_sync
// and stop from any thread. With a signal-safe queue and wake-up
// (`signal_safe`, see defer_from_signal), push_deferred also from a POSIX
// signal handler; nothing else is signal-safe. drain(), wait() and
// wait_fd() are for the manual runners' levels, one draining thread per
// runner at a time. Producers must be done deferring before stop() is
// called: work deferred after stop() returned stays queued (and trips the
// queues' rule-9 check when the dispatcher is destroyed).
template <level_set Level = bsd_level,
          runner_plan_for<Level> Plan =
              plan_for<Level, thread_runner, no_runner>,
          class Policy = dispatch_defaults>
class thread_dispatcher {
 public:
  using level_type = Level;  // the level set (deferral_target)
  using plan_type = Plan;    // who drains each level
  // The policy's knobs, defaults applied (see the banner).
  using queue_type = typename detail::policy_queue<Policy>::type;
  using wakeup_type = typename detail::policy_wakeup<Policy>::type;
  using idle_spin_type = typename detail::policy_idle_spin<Policy>::type;
  using on_exception_type = typename detail::policy_on_exception<Policy>::type;
  using on_stop_type = typename detail::policy_on_stop<Policy>::type;

  // Number of level queues.
  static constexpr std::size_t levels = level_count<Level>;
  // Other threads touch the queues: deferral uses atomic state updates.
  static constexpr bool concurrent = true;
  // True when push_deferred (defer, defer_from_signal) is async-signal-safe:
  // a lock-free queue and a write(2) wake-up.
  static constexpr bool signal_safe =
      detail::signal_safe_queue<queue_type> && wakeup_type::signal_safe;

 private:
  static constexpr bool rethrows =
      std::is_same_v<on_exception_type, rethrow_exceptions>;
  static constexpr bool terminates =
      std::is_same_v<on_exception_type, terminate_on_exception>;
  static constexpr bool hands_back =
      std::is_same_v<on_stop_type, hand_back_on_stop>;

  static_assert(level_queue<queue_type>,
                "kcont::thread_dispatcher: Policy::queue must be a level queue "
                "of kc_hook (mpsc_queue<>, kcqueue<kc_hook, std::mutex>, "
                "kcqueue<kc_hook, spin_lock>)");
  static_assert(!std::is_same_v<queue_type, kcqueue<kc_hook, no_lock>>,
                "kcont::thread_dispatcher: a queue without a lock is not safe "
                "across threads; use mpsc_queue<> or a real lock");
  static_assert(wakeup_policy<wakeup_type>,
                "kcont::thread_dispatcher: Policy::wakeup must be a wake-up "
                "policy (atomic_wakeup, condvar_wakeup, fd_wakeup)");
  static_assert(idle_spin_policy<idle_spin_type>,
                "kcont::thread_dispatcher: Policy::idle_spin must be no_spin, "
                "spin_for_ns<N> or a type with a constexpr duration");
  static constexpr std::chrono::nanoseconds idle_spin =
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          idle_spin_type::duration);
  static_assert(std::same_as<on_stop_type, drain_on_stop> || hands_back,
                "kcont::thread_dispatcher: Policy::on_stop must be "
                "drain_on_stop or hand_back_on_stop");
  static_assert(rethrows || terminates ||
                    std::invocable<on_exception_type&, std::exception_ptr, Level>,
                "kcont::thread_dispatcher: Policy::on_exception must be "
                "terminate_on_exception, rethrow_exceptions or a callable "
                "h(std::exception_ptr, Level)");
  static_assert(!(rethrows && Plan::has_threads),
                "kcont::thread_dispatcher: rethrow_exceptions needs a caller to "
                "rethrow to, and a runner thread has none: use a handler "
                "h(std::exception_ptr, Level) or terminate_on_exception");

  // One per runner thread (and one per manual runner, one for stop()).
  using slot = detail::run_slot;

  // A runner: the levels [lo, hi] it drains, how it sleeps, its threads.
  struct runner {
    std::size_t lo = 0;
    std::size_t hi = 0;
    runner_kind kind = runner_kind::manual;
    unsigned nthreads = 0;
    std::unique_ptr<slot[]> slots;  // max(nthreads, 1)
    std::vector<std::thread> threads;
    std::atomic<bool> draining{false};  // a manual drain is in progress
    // Its own cache line: producers read it on every push that fills an
    // empty queue, the spinning runner reads lo/hi above all the time, and
    // a ticket moved on a shared line cost each such push a transfer.
    alignas(64) wakeup_type wake;
  };

 public:
  // Effects: creates the queues and runners and starts the plan's threads.
  // Throws: std::system_error (thread or descriptor creation) or
  //   std::bad_alloc; threads already started are stopped and joined first.
  // Thread-safety: the threads may run continuations before it returns.
  explicit thread_dispatcher(on_exception_type on_exception = {})
      : on_exception_(std::move(on_exception)) {
    for (std::size_t i = 0; i < levels; ++i) {
      if (Plan::runner_of(i) != i) continue;
      auto r = std::make_unique<runner>();
      r->lo = i;
      r->hi = Plan::top_of(i);
      r->kind = Plan::kinds[i];
      r->nthreads = Plan::threads[i];
      if (r->kind == runner_kind::pool && r->nthreads == 0)
        r->nthreads = std::max(1u, std::thread::hardware_concurrency());
      if (r->kind == runner_kind::manual) r->nthreads = 0;
      r->slots = std::make_unique<slot[]>(std::max(r->nthreads, 1u));
      r->threads.reserve(r->nthreads);
      runners_[i] = std::move(r);
    }
    const auto start_threads = [this] {
      for (auto& r : runners_) {
        if (!r) continue;
        for (unsigned t = 0; t < r->nthreads; ++t)
          r->threads.emplace_back([this, rp = r.get(), t] {
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

  thread_dispatcher(const thread_dispatcher&) = delete;
  thread_dispatcher& operator=(const thread_dispatcher&) = delete;

  // Effects: stops the dispatcher if stop() was not called (see on_stop),
  //   joining every runner thread. A continuation that throws here under
  //   rethrow_exceptions terminates the program (a destructor does not
  //   throw): call stop() first to see the exception.
  ~thread_dispatcher() {
    if constexpr (hands_back) {
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

  // Effects: runs continuations of the manual runner that drains `level` —
  //   all of its levels, the highest non-empty one first — each at its level,
  //   until they are empty or the budget is spent. The runner's wake-up is
  //   reset first and re-armed when work is left, so a descriptor stays
  //   readable while the runner has work.
  // Returns: how many ran; 0, running nothing, when `level` has no queue
  //   (immediate) or the runner is being drained already (a nested drain()
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
    KCONT_EXPECTS(r.kind == runner_kind::manual,
                  "thread_dispatcher: drain() is for manual runners' levels");
    // The claim is taken outside the check: a side effect inside
    // KCONT_EXPECTS would vanish from release builds with the check.
    const bool busy = r.draining.exchange(true, std::memory_order_acquire);
    KCONT_EXPECTS(!busy,
                  "thread_dispatcher: one thread drains a manual runner at a "
                  "time");
    if (busy) return 0;  // the drain in progress keeps its claim
    struct finish {
      thread_dispatcher* self;
      runner* r;
      ~finish() {
        r->draining.store(false, std::memory_order_release);
        if (self->runner_has_work(*r)) r->wake.notify();
      }
    } fin{this, &r};
    if constexpr (requires { r.wake.reset(); }) r.wake.reset();
    const bool timed =
        budget.deadline != std::chrono::steady_clock::time_point::max();
    std::size_t n = 0;
    while (n < budget.count) {
      if (timed && std::chrono::steady_clock::now() >= budget.deadline) break;
      if (!run_one(r, r.slots[0])) break;
      ++n;
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
    KCONT_EXPECTS(r.kind == runner_kind::manual,
                  "thread_dispatcher: wait() is for manual runners' levels");
    r.wake.wait([&] {
      return runner_has_work(r) ||
             stopping_.load(std::memory_order_seq_cst);
    });
  }

  // Returns: a descriptor that is readable whenever the manual runner
  //   draining `level` has work and no drain() of it is in progress (it may
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
    KCONT_EXPECTS(r.kind == runner_kind::manual,
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
  //   sibling handed over to this run (see kc_hook).
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
      if (!removed) removed = withdraw_handed_over(h);
      return removed;
    }
    // A runner publishes the node it pops in its slot under the queue's lock
    // (pop_claimed) and keeps the queued bit set until the run starts
    // (take_saved): a popped h shows either as queued, and cancel's erase
    // takes that lock after the publication, or as not queued, and then the
    // run that cleared the bit published its slot before. Either way, if h
    // is running now, a slot shows it.
    for (auto& r : runners_) {
      if (!r) continue;
      for (unsigned t = 0; t < std::max(r->nthreads, 1u); ++t)
        wait_not_running(r->slots[t], h);
    }
    wait_not_running(stop_slot_, h);
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
    requires(!hands_back)
  {
    stop_threads();
    drain_rest();
  }

  // Effects: stops the runners after the continuation each is running, joins
  //   them, and moves every continuation still queued to `out` (unrun, still
  //   carrying its saved obj/status, queued bit cleared then set by out),
  //   highest level first, FIFO within a level. The caller then runs them
  //   elsewhere (push_deferred on another dispatcher) or dispose()s them.
  // Returns: how many were handed back.
  // Thread-safety: any thread but a runner thread of this dispatcher.
  template <lock_policy Lock>
  std::size_t stop(kcqueue<kc_hook, Lock>& out)
    requires hands_back
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

  // Returns: the runner kind draining `level` (after no_runner fallback);
  //   runner_kind::none for a level with no queue (immediate).
  [[nodiscard]] static constexpr runner_kind runner_kind_of(Level level) noexcept {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "thread_dispatcher: runner_kind_of() needs a deferrable level");
    if (!is_deferrable_level(level)) return runner_kind::none;
    return Plan::kinds[Plan::runner_of(level_index(level))];
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

 private:
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

  // Wakes runner r after its queue turned non-empty. A manual runner's
  // waiter may be a poll loop, which only notify() reaches; a runner
  // thread sleeps in wait(), so a policy that can skip the wake-up while
  // nobody sleeps (fd_wakeup::wake_sleeper) does. Signal-safe when the
  // policy is.
  static void wake(runner& r) noexcept(noexcept(r.wake.notify())) {
    if constexpr (requires { r.wake.wake_sleeper(); }) {
      if (r.kind != runner_kind::manual) {
        r.wake.wake_sleeper();
        return;
      }
    }
    r.wake.notify();
  }

  // Waits while slot s shows h running (handed over or not). With contract
  // checks on, publishes what this thread waits for in its own slot first,
  // and aborts when the run it waits for is itself waiting, directly or
  // through a chain of this dispatcher's runs, for the run this thread is in.
  void wait_not_running(const slot& s, const kc_hook& h) noexcept {
    const std::uintptr_t w = detail::slot_word(&h);
    auto shows_h = [&] {
      return (s.running.load(std::memory_order_acquire) & ~detail::handed_over) == w;
    };
    if (!shows_h()) return;
    slot* const me = detail::running_slot;
    if constexpr (contract_checks) {
      if (me != nullptr) {
        // seq_cst, with the loads in waits_for: of two threads that begin
        // waiting for each other at the same time, at least one sees the
        // other's store.
        me->waiting_for.store(&h, std::memory_order_seq_cst);
        [[maybe_unused]] const bool cycle = waits_for(s, *me);
        KCONT_EXPECTS(!cycle,
                      "thread_dispatcher: cancel_sync (or knote::detach) from a "
                      "continuation waits for a run that waits for it: two "
                      "continuations cancel or detach each other (a deadlock)");
      }
    }
    while (shows_h()) std::this_thread::yield();
    if constexpr (contract_checks) {
      if (me != nullptr) me->waiting_for.store(nullptr, std::memory_order_release);
    }
  }

  // True when the thread of slot `from` waits, directly or through a chain
  // of waits over this dispatcher's slots, for the run of slot `me`.
  bool waits_for(const slot& from, const slot& me) const noexcept {
    const std::uintptr_t mine =
        me.running.load(std::memory_order_relaxed) & ~detail::handed_over;
    const slot* cur = &from;
    for (std::size_t hops = 0; hops <= slot_count(); ++hops) {
      const kc_hook* w = cur->waiting_for.load(std::memory_order_seq_cst);
      if (w == nullptr) return false;
      if (detail::slot_word(w) == mine) return true;
      cur = slot_running(w);
      if (cur == nullptr) return false;
    }
    return false;
  }
  std::size_t slot_count() const noexcept {
    std::size_t n = 1;  // stop_slot_
    for (const auto& r : runners_)
      if (r) n += std::max(r->nthreads, 1u);
    return n;
  }
  const slot* slot_running(const kc_hook* h) const noexcept {
    const std::uintptr_t w = detail::slot_word(h);
    auto shows = [w](const slot& s) {
      return (s.running.load(std::memory_order_acquire) & ~detail::handed_over) == w;
    };
    for (const auto& r : runners_) {
      if (!r) continue;
      for (unsigned t = 0; t < std::max(r->nthreads, 1u); ++t)
        if (shows(r->slots[t])) return &r->slots[t];
    }
    return shows(stop_slot_) ? &stop_slot_ : nullptr;
  }

  // Called under the queue's lock as n is popped claimed into slot s: when
  // a sibling thread of the same pool is running n (n was deferred again
  // during that run), hands n over to it (tags its slot) instead of running
  // it here at the same time (see kc_hook). Else publishes n in s.
  // Returns: true when handed over: n stays claimed, and this thread must
  //   not touch it again.
  static bool claim_run(slot& s, kc_hook& n, runner* pool) noexcept {
    const std::uintptr_t w = detail::slot_word(&n);
    if (pool != nullptr && pool->nthreads > 1) {
      for (unsigned t = 0; t < pool->nthreads; ++t) {
        slot& sib = pool->slots[t];
        if (&sib == &s) continue;
        std::uintptr_t expected = w;
        // Fails when the sibling's run has just returned (its slot no longer
        // shows n): then n runs here.
        if (sib.running.load(std::memory_order_relaxed) == w &&
            sib.running.compare_exchange_strong(expected, w | detail::handed_over,
                                                std::memory_order_acq_rel,
                                                std::memory_order_relaxed))
          return true;
      }
    }
    s.running.store(w, std::memory_order_release);
    return false;
  }

  // After a run of the continuation at address w returned in slot s: ends
  // the publication, unless a sibling handed it over meanwhile. Touches the
  // slot only, never the continuation.
  // Returns: true when h was handed over: it is claimed, so its owner keeps
  //   it alive, and the caller runs it again (the slot still shows it).
  // Only a pool of two threads or more hands over: otherwise running_scope's
  // plain store ends the publication, and no locked instruction is spent.
  static bool run_again(slot& s, std::uintptr_t w, const runner* pool) noexcept {
    if (pool == nullptr || pool->nthreads < 2) return false;
    std::uintptr_t expected = w;
    if (s.running.compare_exchange_strong(expected, 0, std::memory_order_release,
                                          std::memory_order_acquire))
      return false;
    s.running.store(w, std::memory_order_relaxed);
    return true;
  }

  // From inside h's run (cancel_sync): takes back a re-deferral of h that a
  // sibling handed over to this run, ending its claim as cancel would.
  static bool withdraw_handed_over(kc_hook& h) noexcept {
    slot* const s = detail::running_slot;
    if (s == nullptr) return false;
    std::uintptr_t expected = detail::slot_word(&h) | detail::handed_over;
    if (!s->running.compare_exchange_strong(expected, detail::slot_word(&h),
                                            std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
      return false;
    detail::hook_access::clear<true>(h, detail::hook_access::queued_bit);
    return true;
  }

  // Publishes "running" on the thread (running_here, running_slot) and
  // withdraws both, and the slot's publication, when the runs end or throw
  // (only the slot is touched: h itself may be gone by then).
  struct running_scope {
    slot& s;
    const kc_hook* saved_here;
    slot* saved_slot;
    ~running_scope() {
      detail::running_here = saved_here;
      detail::running_slot = saved_slot;
      s.running.store(0, std::memory_order_release);
    }
  };

  // Runs one continuation from runner r's highest non-empty level.
  // Returns: false when all of r's queues were empty.
  // Throws: what the continuation throws, unless handled by the policy.
  bool run_one(runner& r, slot& s) { return run_one(r.lo, r.hi, s, &r); }

  // The same over the levels [lo, hi], publishing in slot s; `pool` (when
  // not null) is the runner whose idle siblings may need waking and whose
  // siblings' slots a re-deferral may be handed over to.
  bool run_one(std::size_t lo, std::size_t hi, slot& s, runner* pool) {
    for (std::size_t i = hi + 1; i-- > lo;) {
      bool handed = false;
      kc_hook* h = queues_[i].pop_claimed([&](kc_hook& n) noexcept {
        handed = claim_run(s, n, pool);
      });
      if (h == nullptr) continue;
      if (handed) return true;  // the sibling running it runs it again
      // A pool: wake a sibling when more is waiting, so one wake-up per
      // empty->non-empty transition still keeps every worker busy.
      if (pool != nullptr && pool->nthreads > 1 && runner_has_work(*pool))
        wake(*pool);
      const level_guard<Level> at_level(level_at<Level>(i));
      running_scope scope{s, detail::running_here, detail::running_slot};
      detail::running_here = h;
      detail::running_slot = &s;
      const std::uintptr_t w = detail::slot_word(h);
      do {
        if constexpr (rethrows) {
          detail::hook_access::op(*h, kc_op::resume_shared);
        } else if constexpr (terminates) {
          resume_or_terminate(*h);
        } else {
#if defined(__cpp_exceptions)
          try {
            detail::hook_access::op(*h, kc_op::resume_shared);
          } catch (...) {
            on_exception_(std::current_exception(), level_at<Level>(i));
          }
#else
          detail::hook_access::op(*h, kc_op::resume_shared);  // cannot throw
#endif
        }
        // *h may be gone: the function may have destroyed it; only a
        // hand-over (h claimed again, so alive) makes it run again.
      } while (run_again(s, w, pool));
      return true;
    }
    return false;
  }

  // An exception reaching this noexcept frame calls std::terminate.
  static void resume_or_terminate(kc_hook& h) noexcept {
    detail::hook_access::op(h, kc_op::resume_shared);
  }

  // A runner thread: run while there is work; sleep without losing a
  // wake-up; exit on stop (after its queues are empty under drain_on_stop,
  // at once under hand_back_on_stop).
  void thread_main(runner& r, slot& s) {
    hold_off pace;  // this thread's, see spin_for_work
    for (;;) {
      if (hands_back && stopping_.load(std::memory_order_acquire)) break;
      if (run_one(r, s)) {
        ++pace.ran;
        continue;
      }
      if (stopping_.load(std::memory_order_seq_cst)) break;
      if (spin_for_work(r, pace)) continue;
      r.wake.wait([&] {
        return stopping_.load(std::memory_order_seq_cst) || runner_has_work(r);
      });
    }
    // A sibling may have lost its wake-up to us (a shared descriptor): pass
    // the stop on.
    r.wake.notify_all();
  }

  // How long a runner thread that ran dry waits before its first look
  // (per runner thread), learnt from the gaps it sees:
  //  - work found after some looks: wait half the gap next time (counted
  //    in looks, a pause each: no clock read on the way to the work).
  //    Back-to-back requests arrive a round trip apart, so the wait stays
  //    well inside the gap and costs them no latency.
  //  - work found at the first look: the wait may be too long (a request
  //    waited for it) or work is streaming. The run that follows tells: more
  //    than one continuation before running dry again means a stream, and
  //    the wait doubles (up to max_hold_off_looks, and never longer than
  //    max_hold_off) so that batches gather; one continuation means the
  //    wait overshot, and it halves.
  struct hold_off {
    unsigned looks = 0;     // pauses before the first look
    unsigned ran = 0;       // continuations run since the spin found work
    bool at_first = false;  // ... and it found it at its first look

    void found(unsigned look) noexcept {
      ran = 0;
      at_first = look == 1;
      if (!at_first) looks = std::min((looks + look) / 2, max_hold_off_looks);
    }
    void judge_last_wait() noexcept {
      if (at_first)
        looks = ran > 1 ? std::clamp(2 * looks, 2u, max_hold_off_looks) : looks / 2;
      at_first = false;
    }
  };
  // The hold-off's bounds: at most 64 pauses and, whatever a pause costs on
  // this CPU (about 19 ns on the EPYC of benchmarks/results, 3 to 40 ns
  // elsewhere), at most half a microsecond: a request arriving during a
  // hold-off waits no longer than that.
  static constexpr unsigned max_hold_off_looks = 64;
  static constexpr std::chrono::nanoseconds max_hold_off{512};

  // The idle spin (Policy::idle_spin): looks at r's queues and the stop
  // flag until one of them says go on, or idle_spin has passed. Loads only;
  // the clock is read every 16 looks.
  //
  // The first look comes after a hold-off (hold_off above). Every look
  // takes the queues' shared lines from the producers (their next push must
  // fetch them back), so looking as often as possible is right only when
  // work comes one item at a time: a request and, a round trip later, the
  // next. When work streams in, a runner looking all the time catches each
  // item alone, and every push and every pop pays a cache-line transfer or
  // two: such a spinning runner was slower than a sleeping one, which wakes
  // late and takes one big batch (case F: 216 against 64 ns per item).
  // Returns: true when there is work (or a stop) to look at again.
  bool spin_for_work(const runner& r, hold_off& pace) const noexcept {
    if constexpr (idle_spin.count() <= 0) {
      (void)pace;
      return false;
    } else {
      if (!spin_allowed_) return false;
      using clock = std::chrono::steady_clock;
      pace.judge_last_wait();
      const auto dry = clock::now();
      for (unsigned k = 1; k <= pace.looks; ++k) {
        detail::cpu_relax();
        if (k % 8 == 0 && clock::now() >= dry + max_hold_off) break;
      }
      const auto deadline = dry + idle_spin;
      for (unsigned i = 1;; ++i) {
        if (runner_has_work(r)) {
          prefetch_newest(r);
          pace.found(i);
          return true;
        }
        if (stopping_.load(std::memory_order_relaxed)) return true;
        detail::cpu_relax();
        if (i % 16 == 0 && clock::now() >= deadline) {
          pace = hold_off{};
          return false;
        }
      }
    }
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
      (void)run_one(i - 1, i - 1, stop_slot_, nullptr);
    }
  }

  std::array<queue_type, levels> queues_;
  std::array<std::unique_ptr<runner>, levels> runners_;
  slot stop_slot_;
  // Own cache line: idle runners poll it while they spin (Policy::idle_spin),
  // and what lies next to the dispatcher (a caller's locals) must not share it.
  alignas(64) std::atomic<bool> stopping_{false};
  // Spinning for work another thread must produce needs a second CPU.
  bool spin_allowed_ = std::thread::hardware_concurrency() != 1;
  std::mutex stop_mutex_;
  [[no_unique_address]] on_exception_type on_exception_;
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
