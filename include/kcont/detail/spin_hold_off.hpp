// kcont/detail/spin_hold_off.hpp — a runner thread's idle spin and its
// learnt hold-off: the "hold-off" and "spinning" states of the runner's
// sleep/wake state table (kcont/wakeup.hpp). Internal to
// kcont/thread_dispatcher.hpp; the knob users set is `idle_spin`
// (no_spin, spin_for_ns<N>, default_idle_spin in kcont/wakeup.hpp).
//
// Why a hold-off: every look at the queues takes their shared cache lines
// from the producers (their next push must fetch them back), so looking as
// often as possible is right only when work comes one item at a time: a
// request and, a round trip later, the next. When work streams in, a runner
// looking all the time catches each item alone, and every push and every
// pop pays a cache-line transfer or two: such a spinning runner was slower
// than a sleeping one, which wakes late and takes one big batch
// (benchmarks/README.md has the measurements).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>

#include "kcont/wakeup.hpp"

namespace kcont::detail {

// The hold-off's bounds: at most 64 pauses and, whatever a pause costs on
// the CPU at hand, at most half a microsecond: a request arriving during a
// hold-off waits no longer than that.
inline constexpr unsigned max_hold_off_looks = 64;
inline constexpr std::chrono::nanoseconds max_hold_off{512};

// How long a runner thread that ran dry waits before its first look (one
// per runner thread), learnt from the gaps it sees:
//  - work found after some looks: wait half the gap next time (counted in
//    looks, a pause each: no clock read on the way to the work).
//    Back-to-back requests arrive a round trip apart, so the wait stays
//    well inside the gap and costs them no latency.
//  - work found at the first look: the wait may be too long (a request
//    waited for it) or work is streaming. The run that follows tells: more
//    than one continuation before running dry again means a stream, and the
//    wait doubles (up to max_hold_off_looks, and never longer than
//    max_hold_off) so that batches gather; one continuation means the wait
//    overshot, and it halves.
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

// The idle spin: after the hold-off, looks at has_work() and `stopping`
// until one of them says go on, or IdleSpinNs nanoseconds have passed.
// Loads only; a pause between looks; the clock every 16 looks. On finding
// work, calls prefetch() so that the transfer of the newest node overlaps
// the pop.
// Returns: true when there is work (or a stop) to look at again; false when
//   the spin is over and the runner should sleep.
template <long long IdleSpinNs, class HasWork, class Prefetch>
bool spin_for_work(hold_off& pace, HasWork&& has_work,
                   const std::atomic<bool>& stopping, Prefetch&& prefetch) noexcept {
  using clock = std::chrono::steady_clock;
  constexpr std::chrono::nanoseconds idle_spin{IdleSpinNs};
  pace.judge_last_wait();
  const auto dry = clock::now();
  for (unsigned k = 1; k <= pace.looks; ++k) {
    cpu_relax();
    if (k % 8 == 0 && clock::now() >= dry + max_hold_off) break;
  }
  const auto deadline = dry + idle_spin;
  for (unsigned i = 1;; ++i) {
    if (has_work()) {
      prefetch();
      pace.found(i);
      return true;
    }
    if (stopping.load(std::memory_order_relaxed)) return true;
    cpu_relax();
    if (i % 16 == 0 && clock::now() >= deadline) {
      pace = hold_off{};
      return false;
    }
  }
}

}  // namespace kcont::detail
