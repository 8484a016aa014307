// kcont/detail/run_slot.hpp — what each runner thread of a thread_dispatcher
// is running: the run slots, the pool's hand-over of a re-deferral, and the
// waits of cancel_sync. Internal to kcont/thread_dispatcher.hpp.
//
// A slot's word `running`, one per runner thread (and one per manual runner,
// one for stop()), is the protocol's only state: 0 (runs nothing), h (runs
// the continuation at address h) or h|1 (runs h, and a re-deferral of h was
// handed over to this run; kc_hook's alignment leaves bit 0 free). Its
// state table:
//
//   from -> to  | who                              | how
//   ------------+----------------------------------+--------------------------
//   0 -> h      | its thread, popping h            | store (release) inside
//               |                                  |   pop_claimed's lock
//               |                                  |   (claim_run)
//   h -> h|1    | a pool sibling popping h again   | CAS (acq_rel), claim_run;
//               |                                  |   h stays claimed: on no
//               |                                  |   queue, queued bit set
//   h|1 -> h    | h's run itself (cancel_sync)     | CAS (acq_rel), then ends
//               |                                  |   h's claim
//               |                                  |   (withdraw_handed_over)
//   h|1 -> h    | its thread, the run returned     | run_again: CAS h -> 0
//               |                                  |   fails; runs h again
//   h -> 0      | its thread, the run returned     | run_again's CAS (a pool
//               |                                  |   of 2+) or a store
//               |                                  |   (release, running_scope)
//
// Why one continuation never runs on two threads at once: a pool thread
// publishes h in its slot under the queue's lock as it pops h; a sibling
// that pops a re-deferral of h finds h in that slot and tags it instead of
// running h. The tagging CAS fails only when the word no longer shows h: the
// run has returned, and h runs on the sibling. Why cancel_sync sees every
// run: cancel's erase takes the same queue lock, so a popped h shows either
// as queued (erased) or in a slot (waited for).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <thread>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"

namespace kcont::detail {

// The continuation the calling thread is running for a thread_dispatcher
// (cancel_sync from inside it must not wait for itself).
inline thread_local const kc_hook* running_here = nullptr;

// What one runner thread (or manual runner, or stop()) is running. Own
// cache line.
//  running:     the word of the state table above.
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

// Called under the queue's lock as n is popped claimed into slot s, whose
// pool's slots are [pool, pool + threads): when a sibling is running n (n
// was deferred again during that run), hands n over to it (tags its slot)
// instead of running it here at the same time. Else publishes n in s.
// Returns: true when handed over: n stays claimed, and this thread must not
//   touch it again.
inline bool claim_run(run_slot& s, kc_hook& n, run_slot* pool,
                      unsigned threads) noexcept {
  const std::uintptr_t w = slot_word(&n);
  if (threads > 1) {
    for (unsigned t = 0; t < threads; ++t) {
      run_slot& sib = pool[t];
      if (&sib == &s) continue;
      std::uintptr_t expected = w;
      // Fails when the sibling's run has just returned (its slot no longer
      // shows n): then n runs here.
      if (sib.running.load(std::memory_order_relaxed) == w &&
          sib.running.compare_exchange_strong(expected, w | handed_over,
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed))
        return true;
    }
  }
  s.running.store(w, std::memory_order_release);
  return false;
}

// After a run of the continuation at address w returned in slot s: ends the
// publication, unless a sibling handed it over meanwhile. Touches the slot
// only, never the continuation. Only a pool of two threads or more hands
// over: otherwise running_scope's plain store ends the publication, and no
// locked instruction is spent.
// Returns: true when it was handed over: it is claimed, so its owner keeps
//   it alive, and the caller runs it again (the slot still shows it).
inline bool run_again(run_slot& s, std::uintptr_t w, unsigned threads) noexcept {
  if (threads < 2) return false;
  std::uintptr_t expected = w;
  if (s.running.compare_exchange_strong(expected, 0, std::memory_order_release,
                                        std::memory_order_acquire))
    return false;
  s.running.store(w, std::memory_order_relaxed);
  return true;
}

// From inside h's run (cancel_sync): takes back a re-deferral of h that a
// sibling handed over to this run, ending its claim as cancel would.
inline bool withdraw_handed_over(kc_hook& h) noexcept {
  run_slot* const s = running_slot;
  if (s == nullptr) return false;
  std::uintptr_t expected = slot_word(&h) | handed_over;
  if (!s->running.compare_exchange_strong(expected, slot_word(&h),
                                          std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
    return false;
  hook_access::clear<true>(h, hook_access::queued_bit);
  return true;
}

// Publishes "running h" on the calling thread (running_here, running_slot)
// and withdraws both, and the slot's publication, when the runs end or
// throw (only the slot is touched: h itself may be gone by then).
class running_scope {
 public:
  running_scope(run_slot& s, const kc_hook* h) noexcept
      : s_(s), saved_here_(running_here), saved_slot_(running_slot) {
    running_here = h;
    running_slot = &s;
  }
  running_scope(const running_scope&) = delete;
  running_scope& operator=(const running_scope&) = delete;
  ~running_scope() {
    running_here = saved_here_;
    running_slot = saved_slot_;
    s_.running.store(0, std::memory_order_release);
  }

 private:
  run_slot& s_;
  const kc_hook* saved_here_;
  run_slot* saved_slot_;
};

// True when slot s shows h running, handed over or not.
inline bool shows(const run_slot& s, std::uintptr_t w) noexcept {
  return (s.running.load(std::memory_order_acquire) & ~handed_over) == w;
}

// The slot of `all` that runs h, or null.
inline const run_slot* slot_running(std::span<const run_slot> all,
                                    const kc_hook* h) noexcept {
  const std::uintptr_t w = slot_word(h);
  for (const run_slot& s : all)
    if (shows(s, w)) return &s;
  return nullptr;
}

// True when the thread of slot `from` waits, directly or through a chain of
// waits over the slots `all`, for the run of slot `me`.
inline bool waits_for(std::span<const run_slot> all, const run_slot& from,
                      const run_slot& me) noexcept {
  const std::uintptr_t mine = me.running.load(std::memory_order_relaxed) & ~handed_over;
  const run_slot* cur = &from;
  for (std::size_t hops = 0; hops <= all.size(); ++hops) {
    const kc_hook* w = cur->waiting_for.load(std::memory_order_seq_cst);
    if (w == nullptr) return false;
    if (slot_word(w) == mine) return true;
    cur = slot_running(all, w);
    if (cur == nullptr) return false;
  }
  return false;
}

// Waits (yielding) while slot s of `all` shows h running. With contract
// checks on, publishes what this thread waits for in its own slot first, and
// aborts when the run it waits for is itself waiting, directly or through a
// chain of runs over `all`, for the run this thread is in.
inline void wait_not_running(std::span<const run_slot> all, const run_slot& s,
                             const kc_hook& h) noexcept {
  const std::uintptr_t w = slot_word(&h);
  if (!shows(s, w)) return;
  run_slot* const me = running_slot;
  if constexpr (contract_checks) {
    if (me != nullptr) {
      // seq_cst, with the loads in waits_for: of two threads that begin
      // waiting for each other at the same time, at least one sees the
      // other's store.
      me->waiting_for.store(&h, std::memory_order_seq_cst);
      [[maybe_unused]] const bool cycle = waits_for(all, s, *me);
      KCONT_EXPECTS(!cycle,
                    "thread_dispatcher: cancel_sync (or knote::detach) from a "
                    "continuation waits for a run that waits for it: two "
                    "continuations cancel or detach each other (a deadlock)");
    }
  }
  while (shows(s, w)) std::this_thread::yield();
  if constexpr (contract_checks) {
    if (me != nullptr) me->waiting_for.store(nullptr, std::memory_order_release);
  }
}

}  // namespace kcont::detail
