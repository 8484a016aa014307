// kcont/detail/timer_hook.hpp — a timer's place in its source's heap.
//
// Defines `detail::timer_hook<TimePoint, Knote>`, the intrusive heap hook a
// timer filter (kcont/timer_filter.hpp) embeds and its source
// (kcont/timer_source.hpp) links into its heap, with the state table of
// arming, firing and cancelling. Users never name it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "kcont/contract.hpp"

namespace kcont::detail {

// A timer's place in its source's heap, embedded in its filter. Every field
// but `pending` is guarded by the source's lock; `pending` (expirations a
// tick counted and the filter's event has not yet added to the knote's data)
// is atomic because the filter reads it under the knote's field lock only.
//
// The state table (under the source's lock unless said otherwise):
//   state    | event                                  | action -> next state
//   ---------+----------------------------------------+------------------------------
//   any      | schedule (attach, touch with EV_ADD,   | pending = 0, seq, heap push or
//            |   Source::arm)                         |   move -> armed
//   armed    | tick, deadline <= now                  | pending += expirations; heap
//            |                                        |   move (periodic) or pop; ++firing
//   firing   | tick, its lock dropped: the filter's   | pending -> kn.data (swap); pin
//            |   event (field lock), begin_activation |   the knote when it runs
//   firing   | tick, its lock retaken                 | --firing; the continuation runs
//            |                                        |   unlocked, pinned (knote state)
//   any      | cancel (the filter's detach)           | wait for firing == 0 (unlocked,
//            |                                        |   yielding); heap erase; pending
//            |                                        |   = 0 -> unarmed
// A re-arm while firing zeroes pending: that tick's event then finds nothing
// and does not fire. Lock order: the knote's field lock, then the source's
// (touch re-arms under the field lock); a tick never holds both.
template <class TimePoint, class Knote>
struct timer_hook {
  using time_point = TimePoint;
  using duration = typename TimePoint::duration;
  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();

  timer_hook() = default;
  // Copied or moved only while not armed (a filter moves into its knote):
  // the heap points at the hook's address.
  timer_hook(const timer_hook& o) noexcept : deadline(o.deadline), period(o.period) {
    KCONT_EXPECTS(o.index == npos && o.firing == 0, "timer: moved while armed");
  }
  timer_hook& operator=(const timer_hook&) = delete;

  Knote* kn = nullptr;
  time_point deadline{};      // the next expiry (meaningful while armed)
  duration period{};          // zero: fires once
  std::size_t index = npos;   // in the heap; npos when not armed
  std::uint64_t seq = 0;      // when it was scheduled (orders equal deadlines)
  std::uint32_t firing = 0;   // ticks between popping it and its event
  std::atomic<std::int64_t> pending{0};
};

}  // namespace kcont::detail
