// kcont/dispatcher.hpp — the manual dispatcher: one deferral queue per level.
//
// Defines `manual_dispatcher<Level, Lock, Schedule>`: the NetBSD patch's softclock /
// softnet / softserial / process queues as an array indexed by level, each
// drained by the caller's own loop with `drain(level)` (rule 5: a level's
// runner drains its own queue, never another's). In the drain vocabulary
// every dispatcher shares (kcont/drain_budget.hpp) it is the all-manual plan
// with one runner per level: drain(level) runs that level's queue, and
// drain_all() every level, highest first. When a level's queue turns
// non-empty the `Schedule` policy is called with that level (the NetBSD patch's
// softintr_schedule): a no-op by default, a flag or a wake-up in real use.
//
// The threaded runners, worker pools and pollable descriptors build on the
// same `deferral_target` interface in their own headers.
//
// Usage:
//   kcont::manual_dispatcher<> d;                    // bsd_level, no locking
//   kcont::run(d, done, &req, 0, bsd_level::softserial);  // deferred to softnet
//   d.drain(bsd_level::softnet);                     // runs it, with &req and 0
#pragma once

#include <array>
#include <cstddef>
#include <chrono>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/current_level.hpp"
#include "kcont/drain_budget.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"

namespace kcont {

namespace detail {
// The pop of a no_lock level queue's drain, which resumes each node at once:
// pop_claimed without its reset of the node's link, a store per item that
// nothing needs (the link is not read before the node is linked again, and
// every push stores it; a user's pop and resume() do read it, so they keep
// pop_claimed). The node stays claimed (the state table in kc_hook.hpp).
struct kcqueue_drain {
  template <class T>
  static T* pop_to_run(kcqueue<T, no_lock>& q) noexcept {
    return static_cast<T*>(q.list_.pop_front_unreset());
  }
};
}  // namespace detail

// The default schedule policy: nothing to wake (the caller polls has_work).
struct no_schedule {
  template <level_set L>
  constexpr void operator()(L) const noexcept {}
};

// A dispatcher whose level queues are drained by hand.
//
// Lifetime contract: every queued continuation must run (drain) or be handed
// back (cancel) before the dispatcher is destroyed; a debug build aborts
// otherwise, and a release build runs what is left in its destructor (as
// drain_all, on the destroying thread) rather than drop it (rule 9).
// Levels: every member taking a level expects a deferrable one; `immediate`
// (or a value outside the set) has no queue: a debug build aborts, and a
// release build gives the result each member documents.
// Thread-safety: with Lock = no_lock, one thread at a time; with a real lock,
// push_deferred and drain may be called from any thread (drain of one level
// from one thread at a time keeps that level's FIFO order).
template <level_set Level = bsd_level, lock_policy Lock = no_lock,
          class Schedule = no_schedule>
  requires std::invocable<Schedule&, Level>
class manual_dispatcher {
 public:
  using level_type = Level;
  using lock_type = Lock;
  static constexpr bool concurrent = !std::is_same_v<Lock, no_lock>;
  static constexpr std::size_t levels = level_count<Level>;

  manual_dispatcher() = default;
  explicit manual_dispatcher(Schedule schedule) : schedule_(std::move(schedule)) {}
  manual_dispatcher(const manual_dispatcher&) = delete;
  manual_dispatcher& operator=(const manual_dispatcher&) = delete;

  // Effects: runs whatever is still queued (drain_all), after a debug build
  //   has aborted on it: work left here breaks the lifetime contract, and a
  //   release build runs it rather than leave it lost and marked queued.
  //   A continuation that throws here terminates the program.
  ~manual_dispatcher() {
    KCONT_EXPECTS(!has_any_work(),
                  "dispatcher: destroyed with work queued (rule 9: every "
                  "continuation runs or is handed back; drain or cancel it "
                  "first)");
    (void)drain_all();
  }

  // Effects: queues h on the queue of its own level (see deferral_target) and
  //   calls the schedule policy when that queue was empty.
  // Returns: already_queued, first or queued; already_queued (nothing
  //   queued) also when h's level has no queue (immediate).
  // Complexity: O(1).
  template <std::invocable<> BeforeLink>
  push_result push_deferred(kc_hook& h, BeforeLink&& before_link) {
    const auto level = static_cast<Level>(detail::hook_access::level(h));
    KCONT_EXPECTS(is_deferrable_level(level),
                  "dispatcher: only a deferrable level has a queue");
    if (!is_deferrable_level(level)) return push_result::already_queued;
    const push_result r = queues_[level_index(level)].push(
        h, std::forward<BeforeLink>(before_link));
    if (r == push_result::first) schedule_(level);
    return r;
  }

  // Effects: drain (kcont/drain_budget.hpp): runs the continuations queued
  //   at `level` (its runner's only level), oldest first, each with the
  //   obj/status its deferral saved, until the queue is empty or `budget` is
  //   spent, with the calling thread's current level set to `level`
  //   (restored on return). Work queued while draining runs in the same call.
  // Returns: how many ran (0 for a level with no queue: immediate).
  // Throws: what a function throws; the rest stays queued.
  // Reentrancy: a continuation may defer more work, to any level.
  std::size_t drain(Level level, drain_budget budget = {}) {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "dispatcher: drain needs a deferrable level");
    if (!is_deferrable_level(level)) return 0;
    // The continuations run at their level (curipl), so a no-level run()
    // from inside one defers work below it instead of nesting it.
    const level_guard<Level> at_level(level);
    auto& q = queues_[level_index(level)];
    if (budget.timed()) return drain_queue<true>(q, budget);
    if (budget.count == drain_budget{}.count) return drain_queue<false, false>(q, budget);
    return drain_queue<false>(q, budget);
  }

  // Effects: drain_all (kcont/drain_budget.hpp): runs everything queued,
  //   always from the highest non-empty level first (work deferred to a
  //   higher level while a lower one drains runs before the lower one goes
  //   on), until every queue is empty or `budget` is spent.
  // Returns: how many ran. Throws: as drain.
  std::size_t drain_all(drain_budget budget = {}) {
    const bool timed = budget.timed();
    std::size_t n = 0;
    while (n < budget.count) {
      if (timed && std::chrono::steady_clock::now() >= budget.deadline) break;
      std::size_t i = levels;
      while (i > 0 && queues_[i - 1].empty()) --i;
      if (i == 0) break;
      const level_guard<Level> at_level(level_at<Level>(i - 1));
      // One batch of level i - 1, until a higher level has work (deferred
      // by what runs) or the budget is spent: then the scan starts again.
      const drain_budget rest{budget.count - n, budget.deadline};
      auto& q = queues_[i - 1];
      const std::size_t ran =
          timed ? drain_queue<true>(q, rest, i) : drain_queue<false>(q, rest, i);
      if (ran == 0) break;
      n += ran;
    }
    return n;
  }

  // Effects: removes h from its level queue if it is there; the caller then
  //   owns it again (dispose() it if it was allocated by kcont).
  // Returns: true when h was removed before running.
  bool cancel(kc_hook& h) noexcept {
    const auto level = static_cast<Level>(detail::hook_access::level(h));
    if (!is_deferrable_level(level)) return false;
    return queues_[level_index(level)].erase_slow(h);
  }

  // True when `level`'s queue holds work (a snapshot with a real lock);
  // false for a level with no queue (immediate).
  [[nodiscard]] bool has_work(Level level) const noexcept {
    KCONT_EXPECTS(is_deferrable_level(level),
                  "dispatcher: has_work needs a deferrable level");
    if (!is_deferrable_level(level)) return false;
    return !queues_[level_index(level)].empty();
  }

  // The schedule policy, for inspection.
  [[nodiscard]] Schedule& schedule() noexcept { return schedule_; }

 private:
  // Runs q's continuations until it is empty or the budget is spent (the
  // deadline is read only when Timed, the count only when Counted), or,
  // from drain_all, until a level at
  // or above index `above` has work. The caller set the level. Takes the
  // queue, not its index: g++ 12 -O3 folds the identical bodies of two
  // dispatchers with different level counts and then warns (-Warray-bounds)
  // about an index into the smaller array. Each node is popped claimed (the
  // trampoline's take_saved ends the claim in one store; a deferral racing
  // with the run is absorbed, not lost); with a real lock one lock
  // acquisition takes everything pending and later pops take it without
  // the lock (the batch table in kcont/kcqueue.hpp).
  template <bool Timed, bool Counted = true>
  std::size_t drain_queue(kcqueue<kc_hook, Lock>& q, const drain_budget& budget,
                          std::size_t above = levels) {
    constexpr auto how = concurrent ? detail::kc_op::resume_shared : detail::kc_op::resume;
    std::size_t n = 0;
    while (!Counted || n < budget.count) {
      if constexpr (Timed)
        if (std::chrono::steady_clock::now() >= budget.deadline) break;
      if (above < levels && higher_work(above)) break;
      kc_hook* h;
      if constexpr (concurrent)
        h = q.pop_claimed([](kc_hook&) noexcept {});
      else
        h = detail::kcqueue_drain::pop_to_run(q);  // resumed right below
      if (h == nullptr) break;
      ++n;
      detail::hook_access::op(*h, how);
      // *h may be gone: the function may have destroyed it.
    }
    return n;
  }

  // True when a level at or above index `from` has work.
  bool higher_work(std::size_t from) const noexcept {
    for (std::size_t j = from; j < levels; ++j)
      if (!queues_[j].empty()) return true;
    return false;
  }

  bool has_any_work() const noexcept {
    for (const auto& q : queues_)
      if (!q.empty()) return true;
    return false;
  }

  std::array<kcqueue<kc_hook, Lock>, levels> queues_;
  [[no_unique_address]] Schedule schedule_;
};

}  // namespace kcont
