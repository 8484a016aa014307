// kcont/timer_filter.hpp — EVFILT_TIMER: a knote that expires on a timer
// source's clock.
//
// Defines `timer_filter<Source>` (Source: a basic_timer_source, from
// kcont/timer_source.hpp), FreeBSD's timer filter (sys/kern/kern_event.c:
// filt_timervalidate, filt_timerattach, filt_timerstart, filt_timerexpire,
// filt_timertouch, filt_timerdetach, filt_timer) on a kqueue, and a timer
// for a plain knote with any continuation (the standalone constructor and
// Source::arm).
//
// Usage (a kqueue; the source's tick() fires due timers, next_deadline()
// says when to tick next):
//   kcont::timer_source timers;
//   kcont::kqueue<kcont::filters<kcont::user_filter, kcont::timer_filter<>>> kq{timers};
//   kq.change({.ident = 1, .filter = kcont::filter_id::timer,
//              .flags = kcont::ev::add, .data = 250});           // every 250 ms
//   kq.change({.ident = 2, .filter = kcont::filter_id::timer,
//              .flags = kcont::ev::add | kcont::ev::oneshot,
//              .fflags = kcont::note::useconds, .data = 1500});   // once, in 1.5 ms
//   timers.tick();                                   // fires the due ones
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <ratio>

#include "kcont/filter.hpp"
#include "kcont/kevent.hpp"
#include "kcont/timer_source.hpp"

namespace kcont {

// EVFILT_TIMER on a kqueue (kcont/kevent.hpp's vocabulary):
// - data is the period, or the one-shot delay, in the unit fflags names:
//   note::seconds, mseconds (the default), useconds or nseconds; with
//   note::abstime it is the absolute expiry time since the Clock's epoch.
//   Another fflags bit, two units at once, or negative data: EINVAL
//   (filt_timervalidate). Zero: a one-shot timer expires at the next tick; a
//   periodic one gets a period of one unit (filt_timervalidate: kn_sdata = 1).
// - Armed from Clock::now() at the EV_ADD (filt_timerstart: to +
//   sbinuptime()), so it fires at or after its deadline, never early.
// - Periodic unless the knote has ev::oneshot; an abstime timer expires once
//   (filt_timerstart: kc->to = 0, so filt_timerexpire does not re-arm it).
// - A report's data is the expirations since the last report, every missed
//   period counted (see basic_timer_source's expire_top); the report resets
//   it, because filt_timerattach sets EV_CLEAR on every timer but an abstime
//   one (an abstime timer without ev::clear stays reported, data 1, by every
//   scan, as on FreeBSD).
// - A change with ev::add on an existing timer re-arms it from now with its
//   data and fflags, dropping unreported expirations (it is no longer active
//   nor pending: filt_timertouch acts only when `kev->flags & EV_ADD`, and
//   then dequeues it and clears KN_ACTIVE and kn_data); other changes (ev::enable, ev::disable,
//   ev::dispatch's disable) leave it running, as FreeBSD leaves the callout.
//   Such a re-add with invalid data stops the timer and reports the errno in
//   data with ev::error in the event's flags, from then on (filt_timertouch:
//   kn_flags |= EV_ERROR; kn_data = error).
// - A period too long for the clock saturates at its longest duration (as
//   timer2sbintime saturates at SBT_MAX), and a deadline beyond the clock's
//   last time point is never reached. No arithmetic on data or time overflows.
// Not modelled: FreeBSD's global cap on timers (kq_calloutmax, ENOMEM).
//
// Standalone (a plain knote, any continuation): construct the filter with a
// delay and a timer_mode; attach() arms it from Clock::now(); Source::arm
// re-arms it; detach() cancels it. Its continuation reads the expirations in
// the knote's data (snapshot().data), which the next expiry adds to.
//   kcont::knote<kcont::timer_filter<>> t{
//       kcont::timer_filter<>{timers, std::chrono::milliseconds(10)}, on};
//   t.attach();                                  // once, 10 ms from now
//
// Thread-safety: event and touch run under the knote's field lock, attach
// and detach without it (the knote's rules); the source's lock guards the
// heap, taken after the field lock, never before it.
template <class Source = timer_source>
class timer_filter {
 public:
  static constexpr filter_id id = filter_id::timer;
  using context_type = Source;
  using clock = typename Source::clock;
  using hint_type = typename Source::time_point;
  using time_point = typename Source::time_point;
  using duration = typename Source::duration;
  // A plain knote<timer_filter<>>'s policy: a field lock. A tick fires it
  // without a klist, so no list lock could guard its fields: list_guarded
  // is refused (kcont/knote.hpp).
  using knote_policy = spin_lock;

  // Effects: a kqueue timer on `source` (the kqueue passes its context):
  //   attach arms it from the knote's sdata, sfflags and flags.
  explicit timer_filter(Source& source) noexcept : source_(&source) {}

  // Effects: a standalone timer: attach arms it to expire `after` from
  //   Clock::now(), once or every `after` (the knote's sdata and flags are
  //   not read).
  timer_filter(Source& source, duration after, timer_mode mode = timer_mode::oneshot) noexcept
      : source_(&source), after_(after), standalone_(true), periodic_(mode == timer_mode::periodic) {}

  // The period (or delay) a registration's fflags and data give, saturated
  // at duration::max() (and, for negative data, duration::min()) when it
  // does not fit the clock's duration: INT64_MAX ms is "as long as the clock
  // can say", never a wrapped negative or tiny period.
  [[nodiscard]] static duration period_of(std::uint32_t fflags, std::int64_t data) noexcept {
    using namespace std::chrono;
    if (fflags & note::seconds) return saturating<seconds>(data);
    if (fflags & note::useconds) return saturating<microseconds>(data);
    if (fflags & note::nseconds) return saturating<nanoseconds>(data);
    return saturating<milliseconds>(data);
  }

  // The filter_for members (kcont/filter.hpp).
  // attach: filt_timerattach: validates and arms; EV_CLEAR unless abstime.
  template <class K>
  int attach(K& kn) {
    if (standalone_) {
      rearm_locked(kn, after_, periodic_);
      return 0;
    }
    const int err = start(kn);
    if (err != 0) return err;
    if ((kn.sfflags & note::abstime) == 0)
      kn.flags = static_cast<std::uint16_t>(kn.flags | static_cast<std::uint16_t>(ev::clear));
    return 0;
  }
  // detach: filt_timerdetach (callout_drain: waits for a tick counting it).
  template <class K>
  void detach(K&) {
    source_->cancel(hook_);
  }
  // A tick's event adds the expirations it counted; Hint{} (a scan's
  // re-check, filt_timer) adds any the tick has not yet and asks whether
  // unreported ones remain.
  template <class K>
  bool event(K& kn, const hint_type& now) {
    // One thread (a no_lock source) needs no read-modify-write; otherwise a
    // tick may add between a load and a store, so swap, but only when there
    // is something to take (a scan's re-check usually finds nothing).
    std::int64_t n = hook_.pending.load(std::memory_order_relaxed);
    if (n != 0) {
      if constexpr (Source::single_threaded)
        hook_.pending.store(0, std::memory_order_relaxed);
      else
        n = hook_.pending.exchange(0, std::memory_order_relaxed);
    }
    if (n != 0) kn.data = kn.data > max_data - n ? max_data : kn.data + n;
    return now == hint_type{} ? kn.data != 0 : n != 0;
  }
  // filt_timertouch.
  template <class K>
  void touch(K& kn, knote_change& c, touch_op op) {
    if (op == touch_op::change) {
      // EV_FORCEONESHOT made the knote one-shot (kn_flags |= EV_ONESHOT):
      // filt_timerexpire reads kn_flags at each expiry, so a running
      // periodic timer expires once more (data + 1) and is not re-armed.
      if (has(static_cast<ev>(c.flags), ev::forceoneshot)) source_->make_oneshot(hook_);
      if (!has(static_cast<ev>(c.flags), ev::add)) return;
      // "Throw away any existing undelivered record of the timer
      // expiration": not active (a kqueue then dequeues it), no data.
      (void)kn.clear_active();
      kn.data = 0;
      kn.sfflags = c.fflags;
      kn.sdata = c.data;
      const int err = start(kn);
      if (err != 0) {  // kn_flags |= EV_ERROR; kn_data = error
        source_->cancel(hook_);
        kn.flags = static_cast<std::uint16_t>(kn.flags | static_cast<std::uint16_t>(ev::error));
        kn.data = err;
      }
    } else {
      c.fflags = kn.fflags;
      c.data = kn.data;
      if (has(static_cast<ev>(kn.flags), ev::clear)) {
        kn.fflags = 0;
        kn.data = 0;
      }
    }
  }

  // When the timer next expires (meaningful while armed(); time_point::max()
  //   for one whose deadline is past the clock's end). Under the field lock
  //   or from the thread that owns the source (it is the source's field).
  [[nodiscard]] time_point deadline() const noexcept { return hook_.deadline; }
  [[nodiscard]] bool armed() const noexcept { return hook_.index != hook_type::npos; }

  // For Source::arm: re-arms a standalone (or kqueue) timer under the
  // knote's field lock.
  template <class K>
  void rearm(K& kn, duration after, timer_mode mode) {
    kn.data = 0;
    rearm_locked(kn, after, mode == timer_mode::periodic);
  }

 private:
  using hook_type = typename Source::hook_type;
  static constexpr std::int64_t max_data = std::numeric_limits<std::int64_t>::max();
  static constexpr std::uint32_t units =
      note::seconds | note::mseconds | note::useconds | note::nseconds;

  template <class K>
  void rearm_locked(K& kn, duration after, bool periodic) {
    if (after < duration::zero()) after = duration::zero();
    const time_point now = clock::now();
    const duration period = periodic ? (after > duration::zero() ? after : duration(1)) : duration::zero();
    source_->schedule(hook_, kn, later(now, after), period);
  }

  // A duration of n units, saturated at the clock duration's bounds instead
  // of overflowing (FreeBSD's timer2sbintime: "data > SBT_MAX / modifier").
  template <class Unit>
  static duration saturating(std::int64_t n) noexcept {
    using ticks = std::ratio_divide<typename Unit::period, typename duration::period>;
    if constexpr (ticks::den == 1) {
      using rep = typename duration::rep;
      constexpr rep k = static_cast<rep>(ticks::num);  // clock ticks per unit
      if (n > duration::max().count() / k) return duration::max();
      if (n < duration::min().count() / k) return duration::min();
      return duration(static_cast<rep>(n) * k);
    } else {
      // A clock coarser than the unit: the conversion divides.
      return std::chrono::duration_cast<duration>(Unit(n));
    }
  }

  // `from` + `d` (d >= 0), saturated at time_point::max() (never reached).
  static time_point later(time_point from, duration d) noexcept {
    return from > time_point::max() - d ? time_point::max() : from + d;
  }

  // filt_timervalidate then filt_timerstart, from the knote's saved
  // parameters. Returns: 0 or EINVAL (nothing armed then).
  template <class K>
  int start(K& kn) {
    const bool oneshot = has(static_cast<ev>(kn.flags), ev::oneshot);
    if (kn.sdata < 0) return EINVAL;
    if (kn.sdata == 0 && !oneshot) kn.sdata = 1;
    if ((kn.sfflags & ~(units | note::abstime)) != 0) return EINVAL;
    const std::uint32_t unit = kn.sfflags & units;
    // timer2sbintime's switch: no unit or one unit; two at once is -1.
    if ((unit & (unit - 1)) != 0) return EINVAL;
    const duration to = period_of(kn.sfflags, kn.sdata);
    if ((kn.sfflags & note::abstime) != 0) {
      // Absolute: a time since the clock's epoch; one already past expires
      // at the next tick. Fires once (kc->to = 0).
      source_->schedule(hook_, kn, time_point(to), duration::zero());
      return 0;
    }
    const duration period = oneshot ? duration::zero() : (to > duration::zero() ? to : duration(1));
    source_->schedule(hook_, kn, later(clock::now(), to), period);
    return 0;
  }

  Source* source_;
  hook_type hook_;
  duration after_{};
  bool standalone_ = false;
  bool periodic_ = false;
};

}  // namespace kcont
