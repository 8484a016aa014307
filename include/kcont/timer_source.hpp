// kcont/timer_source.hpp — the event source of timers: a d-ary heap of
// deadlines that fires the knotes whose deadline has come.
//
// Defines `basic_timer_source<Level, Lock, Clock>` (alias `timer_source`,
// steady clock) and `timer_mode`. A timer is a knote whose filter
// (kcont/timer_filter.hpp's timer_filter, EVFILT_TIMER) embeds an intrusive
// heap hook: arming links the hook into the source's 4-ary min-heap of
// deadlines, cancelling unlinks it; `tick()` fires every timer whose deadline
// is at or before Clock::now(). Timers arm from Clock::now() at the time of
// the arm (never from the last tick), so a timer never fires early.
//
// Timers due at the same time fire in the order they were armed (a periodic
// timer's next period counts as armed when the previous one expired).
// Costs: arm, re-arm and cancel O(log n); a tick with nothing due O(1) (one
// atomic load, no lock); a tick that fires k timers O(k log n). Memory: the
// heap is a std::vector of (deadline, hook) pairs, grown (doubling) by an arm
// that finds it full, the only allocation (std::bad_alloc), never shrunk:
// once it held n timers, arming, expiring and re-arming n allocate nothing
// (reserve(n) pre-sizes it).
//
// Unlike a std::priority_queue of callbacks: cancel is O(log n) in place,
// a timer is a caller-owned knote run at its level, a kqueue can watch it.
//
// Usage (standalone; with a kqueue see kcont/timer_filter.hpp):
//   kcont::timer_source timers;
//   kcont::kc on{[](kcont::timer_source::knote_type* kn, int& n, kcont::knote_cause) {
//                  n += static_cast<int>(kn->snapshot().data); },   // expirations
//                0, kcont::at<kcont::bsd_level::immediate>};
//   kcont::knote<kcont::timer_filter<>> t{
//       kcont::timer_filter<>{timers, std::chrono::milliseconds(250),
//                             kcont::timer_mode::periodic}, on};
//   t.attach();                                   // every 250 ms from now
//   timers.arm(t, std::chrono::seconds(1));       // or: once, 1 s from now
//   while (...) { sleep_until(*timers.next_deadline()); timers.tick(); }
//   t.detach();
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "kcont/contract.hpp"
#include "kcont/detail/timer_hook.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

// How a standalone timer repeats: once, or every period until cancelled.
enum class timer_mode : std::uint8_t { oneshot, periodic };

// The source of timers: a 4-ary min-heap of armed timers ordered by deadline.
//
// Clock is any clock-like type with a static now(), time_point and duration
// (std::chrono::steady_clock by default; tests use a manual clock).
// Lifetime contract: outlives every timer knote attached to it, and is empty
//   (every timer detached) when destroyed (debug builds abort otherwise).
// Thread-safety: with a real Lock (the default std::mutex) every member may
//   be called from any thread, ticks from several threads included; the lock
//   is never held while a continuation runs, so a continuation may arm,
//   re-arm or detach any timer (its own included). With no_lock, one thread.
template <level_set Level = bsd_level, lock_policy Lock = std::mutex,
          class Clock = std::chrono::steady_clock>
class basic_timer_source {
 public:
  using clock = Clock;
  using time_point = typename Clock::time_point;
  using duration = typename Clock::duration;
  using rep = typename duration::rep;
  using level_type = Level;
  using lock_type = Lock;
  // True with no_lock: one thread drives the source and its timers.
  static constexpr bool single_threaded = std::is_same_v<Lock, no_lock>;
  using knote_type = knote_base<time_point, Level>;
  using hook_type = detail::timer_hook<time_point, knote_type>;

  basic_timer_source() = default;
  basic_timer_source(const basic_timer_source&) = delete;
  basic_timer_source& operator=(const basic_timer_source&) = delete;
  ~basic_timer_source() {
    KCONT_EXPECTS(heap_.empty(), "timer_source: destroyed with armed timers (detach them)");
  }

  // Effects: fires every armed timer whose deadline is at or before
  //   Clock::now(): adds its expirations to its knote's data and activates
  //   the knote, whose continuation runs at once (kqueue timers, immediate
  //   continuations; nothing may need deferring).
  // Returns: how many timers fired. Complexity: O(1) when none is due, else
  //   O(k log n) for k expirations. No allocation.
  std::size_t tick() { return tick(Clock::now()); }

  // Effects: as tick(), with deadlines at or before `now` (a loop that has
  //   just read the clock, or a test's made-up time). A later tick with an
  //   earlier `now` fires nothing that is not due by then.
  std::size_t tick(time_point now) {
    immediate_target<Level> t;
    return tick(t, now, t.lowest);
  }

  // Effects: as tick(), activating each due timer's knote at `current`
  //   through `d` (its continuation runs at once or is deferred to its level).
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t tick(D& d, Level current) {
    return tick(d, Clock::now(), current);
  }

  // Effects: as tick(d, current), with deadlines at or before `now`.
  // Reentrancy: a continuation may arm or detach timers; a timer armed while
  //   a tick runs, due at or before that tick's `now`, is pushed one clock
  //   tick past it (it fires at the next tick, never in a loop inside this one).
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t tick(D& d, time_point now, Level current) {
    // The O(1) tick: the earliest deadline, published by every change of the
    // heap, read without the lock (an arm racing this tick: seen by it or the next).
    if (earliest_.load(std::memory_order_acquire) > now.time_since_epoch().count()) return 0;
    std::size_t fired = 0;
    std::unique_lock<Lock> g(lock_);
    if (heap_.empty() || heap_[0].deadline > now) return 0;
    if (ticking_++ == 0 || now > ticking_until_) ticking_until_ = now;
    if constexpr (single_threaded) {
      // One thread (no_lock): no detach runs meanwhile, so no firing count,
      // no pin and no activation frame (as a klist<no_lock> fan-out).
      while (!heap_.empty() && heap_[0].deadline <= now) {
        hook_type& h = *heap_[0].hook;
        expire_top(h, now);
        publish_top();
        knote_type& kn = *h.kn;
        if (detail::knote_access::fires_under_lock(kn)) {
          fire_under_owner_lock(d, kn, now, current);
          ++fired;  // expired: a disabled knote counts, as below
          continue;
        }
        if (!kn.filter_event(now)) continue;
        ++fired;
        if (kn.single_threaded() ? detail::knote_access::begin_fire_activation<true>(kn)
                                 : detail::knote_access::begin_fire_activation<false>(kn))
          (void)kcont::run(d, kn.continuation(), &kn, knote_cause::event, current);
      }
    }
    while (!single_threaded && !heap_.empty() && heap_[0].deadline <= now) {
      hook_type& h = *heap_[0].hook;
      expire_top(h, now);
      publish_top();
      ++h.firing;  // cancel waits for it: h and its knote stay alive
      knote_type& kn = *h.kn;
      g.unlock();
      if (detail::knote_access::fires_under_lock(kn)) {  // unlocked, as below
        fire_under_owner_lock(d, kn, now, current);
        g.lock();
        --h.firing;
        ++fired;  // expired: a disabled knote counts, as below
        continue;
      }
      // Not under the source's lock: the filter's touch holds the field lock
      // and re-arms (takes this lock); one order, field lock then source.
      const bool event = kn.filter_event(now);
      const bool run = event && detail::knote_access::begin_activation(kn);
      g.lock();
      --h.firing;
      if (!event) continue;
      ++fired;
      if (run) {
        g.unlock();
        {
          detail::activation_frame frame(&kn);  // the pin begin_activation took
          (void)kcont::run(d, kn.continuation(), &kn, knote_cause::event, current);
        }
        g.lock();
      }
    }
    --ticking_;
    return fired;
  }

  // Returns: the earliest deadline of the armed timers (when a loop should
  //   tick next), or nothing when none is armed. Complexity: O(1), no lock.
  [[nodiscard]] std::optional<time_point> next_deadline() const noexcept {
    const rep t = earliest_.load(std::memory_order_acquire);
    if (t == std::numeric_limits<rep>::max()) return std::nullopt;
    return time_point(duration(t));
  }

  // Returns: how many timers are armed, whether none is (snapshots).
  [[nodiscard]] std::size_t size() const {
    std::lock_guard<Lock> g(lock_);
    return heap_.size();
  }
  [[nodiscard]] bool empty() const { return size() == 0; }

  // Effects: makes room for `n` armed timers, so that arming up to n
  //   allocates nothing. Throws: std::bad_alloc.
  void reserve(std::size_t n) {
    std::lock_guard<Lock> g(lock_);
    heap_.reserve(n);
  }

  // Effects: (re)arms an attached timer knote outside a kqueue: it expires
  //   `after` from Clock::now() (negative: now), once or every `after`
  //   (periodic; a zero period is one clock tick), until re-armed or
  //   detached. Expirations not yet reported (in its data) are dropped.
  // Precondition: kn is attached (debug builds abort; release builds leave
  //   a detached knote alone: arming it would leave it on the heap).
  // Complexity: O(log n). Thread-safety: any thread; takes the knote's field
  //   lock, then the source's lock.
  template <class Filter, lock_policy KnoteLock>
  void arm(knote<Filter, Level, KnoteLock>& kn, duration after,
           timer_mode mode = timer_mode::oneshot) {
    const bool attached = kn.is_attached();
    KCONT_EXPECTS(attached, "timer_source::arm: the timer knote is not attached");
    if (!attached) return;
    std::unique_lock<spin_lock> fg(detail::knote_access::fields_lock(kn), std::defer_lock);
    if (!kn.single_threaded()) fg.lock();
    kn.filter().rearm(kn, after, mode);
  }

  // --- For timer filters (kcont/timer_filter.hpp) --------------------------

  // Effects: arms (or moves) `h` to expire at `deadline`, then every
  //   `period` (zero: once), firing `kn`; clears its uncounted expirations.
  //   A deadline of time_point::max() is never reached: the timer is left
  //   unarmed. Complexity: O(log n); allocates only when the heap is full.
  void schedule(hook_type& h, knote_type& kn, time_point deadline, duration period) {
    std::lock_guard<Lock> g(lock_);
    h.kn = &kn;
    h.period = period;
    h.pending.store(0, std::memory_order_relaxed);
    if (ticking_ != 0 && deadline <= ticking_until_) deadline = ticking_until_ + duration(1);
    h.deadline = deadline;
    h.seq = ++seq_;
    if (deadline == time_point::max()) {
      if (h.index != hook_type::npos) remove_at(h.index);
    } else if (h.index == hook_type::npos) {
      h.index = heap_.size();
      heap_.push_back(entry{deadline, &h});
      sift_up(h.index);
    } else {
      heap_[h.index].deadline = deadline;
      restore(h.index);
    }
    publish_top();
  }

  // Effects: `h` expires once more at its deadline, then stops (a periodic
  //   timer made one-shot). Complexity: O(1).
  void make_oneshot(hook_type& h) {
    std::lock_guard<Lock> g(lock_);
    h.period = duration::zero();
  }

  // Effects: disarms `h` (if armed) and clears its uncounted expirations;
  //   waits for a tick on another thread that is counting its expirations.
  // Complexity: O(log n). Thread-safety: not under the knote's field lock.
  void cancel(hook_type& h) {
    std::unique_lock<Lock> g(lock_);
    while (h.firing != 0) {
      g.unlock();
      std::this_thread::yield();
      g.lock();
    }
    if (h.index != hook_type::npos) {
      remove_at(h.index);
      publish_top();
    }
    h.pending.store(0, std::memory_order_relaxed);
  }

 private:
  // A kqueue's timer knote (fields under the kqueue's lock): its fused fire
  // does event, activation and queueing under that lock.
  template <class D>
  static void fire_under_owner_lock(D& d, knote_type& kn, time_point now,
                                           Level current) {
    using door = detail::knote_fire_access;
    const detail::fire_outcome r = door::fire_unpinned(kn, now, current);
    if (r == detail::fire_outcome::needs_run) [[unlikely]]
      door::run_unpinned(kn, d, current, knote_cause::event);
  }

  static constexpr std::size_t arity = 4;
  struct entry {
    time_point deadline;
    hook_type* hook;
  };

  // Counts the top timer's expirations at `now` (top deadline <= now) into
  // its pending count and moves it to its next deadline, or off the heap.
  // The count is every period boundary in [deadline, now], as FreeBSD 12's
  // filt_timerexpire gave it (kn_data++, then callout_reset at next += to,
  // already past: one callout per missed period). Later FreeBSD counts
  // "delta = (now - kc->next) / kc->to" (at least 1), one short when late
  // by a whole period or more: kcont keeps counting every boundary.
  // In unsigned arithmetic: now - deadline and the step past it may not fit
  // the signed duration (a 1 ns timer ticked at the end of the clock).
  void expire_top(hook_type& h, time_point now) {
    using u64 = std::uint64_t;
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    if (h.period <= duration::zero()) {
      add_pending(h, 1);
      remove_at(0);
      return;
    }
    const u64 from = static_cast<u64>(h.deadline.time_since_epoch().count());
    const u64 gap = static_cast<u64>(now.time_since_epoch().count()) - from;
    const u64 per = static_cast<u64>(h.period.count());
    const u64 later = gap / per;  // expirations after the first
    add_pending(h, later >= static_cast<u64>(most) ? most : static_cast<std::int64_t>(later + 1));
    // The next deadline, from + (later + 1) * per, is past the clock's end
    // (or is its end, never reached) exactly when later + 1 >= room / per.
    const u64 room = static_cast<u64>(time_point::max().time_since_epoch().count()) - from;
    if (later + 1 >= room / per + (room % per != 0 ? 1 : 0)) {
      h.deadline = time_point::max();
      remove_at(0);
      return;
    }
    h.deadline = time_point(duration(static_cast<typename duration::rep>(from + (later + 1) * per)));
    heap_[0].deadline = h.deadline;
    h.seq = ++seq_;
    sift_down(0);
  }

  static void add_pending(hook_type& h, std::int64_t n) noexcept {
    constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
    const std::int64_t old = h.pending.load(std::memory_order_relaxed);
    h.pending.store(old > most - n ? most : old + n, std::memory_order_relaxed);
  }

  void publish_top() noexcept {
    earliest_.store(heap_.empty() ? std::numeric_limits<rep>::max()
                                  : heap_[0].deadline.time_since_epoch().count(),
                    std::memory_order_release);
  }

  // Heap order: the earlier deadline first; equal deadlines in the order
  // they were scheduled (the hook's sequence number, read only on a tie).
  static bool before(const entry& a, const entry& b) noexcept {
    return a.deadline < b.deadline || (a.deadline == b.deadline && a.hook->seq < b.hook->seq);
  }
  void place(std::size_t i, const entry& e) noexcept {
    heap_[i] = e;
    e.hook->index = i;
  }
  void sift_up(std::size_t i) noexcept {
    const entry e = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / arity;
      if (!before(e, heap_[parent])) break;
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, e);
  }
  void sift_down(std::size_t i) noexcept {
    const entry e = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
      const std::size_t first = i * arity + 1;
      if (first >= n) break;
      const std::size_t best = min_child(first);
      if (!before(heap_[best], e)) break;
      place(i, heap_[best]);
      i = best;
    }
    place(i, e);
  }
  void restore(std::size_t i) noexcept {
    if (i > 0 && before(heap_[i], heap_[(i - 1) / arity]))
      sift_up(i);
    else
      sift_down(i);
  }
  // The smallest of i's children (i has at least one).
  std::size_t min_child(std::size_t first) const noexcept {
    const std::size_t n = heap_.size();
    const std::size_t last = first + arity < n ? first + arity : n;
    std::size_t best = first;
    for (std::size_t c = first + 1; c < last; ++c)
      if (before(heap_[c], heap_[best])) best = c;
    return best;
  }
  // Removes entry i. The last entry fills the gap; it is usually among the
  // latest deadlines, so (Floyd's trick) the hole first sinks to a leaf
  // along the smallest children, one comparison per level fewer than a
  // sift-down, and the last entry then rises from there (rarely far).
  void remove_at(std::size_t i) noexcept {
    hook_type* gone = heap_[i].hook;
    const entry last = heap_.back();
    heap_.pop_back();
    if (i < heap_.size()) {
      if (i > 0 && before(last, heap_[(i - 1) / arity])) {
        place(i, last);
        sift_up(i);
      } else {
        std::size_t hole = i;
        for (std::size_t first = hole * arity + 1; first < heap_.size();
             first = hole * arity + 1) {
          const std::size_t best = min_child(first);
          place(hole, heap_[best]);
          hole = best;
        }
        place(hole, last);
        sift_up(hole);
      }
    }
    gone->index = hook_type::npos;
  }

  std::vector<entry> heap_;
  std::atomic<rep> earliest_{std::numeric_limits<rep>::max()};  // heap_[0]'s deadline
  std::uint64_t seq_ = 0;        // schedules so far: the order of equal deadlines
  std::size_t ticking_ = 0;      // ticks in progress (their loops)
  time_point ticking_until_{};   // the latest `now` among them
  [[no_unique_address]] mutable Lock lock_;
};

// The timer source with bsd_level, a std::mutex and the steady clock.
using timer_source = basic_timer_source<>;

}  // namespace kcont
