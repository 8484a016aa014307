// kcont/kfilters.hpp — the filters kcont ships: the user event and the timer.
//
// Defines `user_filter` (EVFILT_USER: an event triggered by the program
// itself through a kqueue change with note::trigger, carrying 24 user flag
// bits combined by note::ffand / ffor / ffcopy), and `timer_filter` with its
// event source `basic_timer_source` (EVFILT_TIMER: one-shot with ev::oneshot,
// else periodic; `data` reports the expirations since the last scan), and
// (kcont/event_source.hpp, included: `counting_filter` with
// `basic_event_source`, a generic klist-driven source whose events a kqueue
// counts, and `object_filter`, one such source per object).
//
// How timers fire: deterministically, from `timer_source::tick(now)`, which
// the program calls (from its loop, a thread, or a test with made-up times);
// a timer is armed relative to the time of the latest tick (or the source's
// start time), so a test drives time by hand and a loop ticks as often as
// its resolution needs. A tick fans the time out over the source's klist;
// each due timer activates its knote.
//
// Both are ordinary filters (kcont/knote.hpp's filter_for): nothing in the
// kqueue knows them; a filter of your own plugs in the same way.
//
// Usage:
//   kcont::timer_source timers;                      // starts at steady_clock::now()
//   kcont::kqueue<kcont::filters<kcont::user_filter, kcont::timer_filter<>>> kq{timers};
//   kq.change({.ident = 1, .filter = kcont::filter_id::timer,
//              .flags = kcont::ev::add, .data = 250});            // every 250 ms
//   timers.tick(std::chrono::steady_clock::now());   // fires due timers
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <ratio>

#include "kcont/contract.hpp"
#include "kcont/event_source.hpp"
#include "kcont/kevent.hpp"
#include "kcont/klist.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"

namespace kcont {

// EVFILT_USER. Per-knote state: whether it is triggered. The saved user
// flags live in the knote's sfflags, its data in sdata; a report returns
// them (fflags holds the user's flags in its low 24 bits, as kqueue(2) says).
//
// Semantics are FreeBSD's filt_user* to the letter: the creating EV_ADD's
// fflags are saved raw (kqueue_register: kn_sfflags = kev->fflags, control
// bits and NOTE_TRIGGER included, reported as given until an FF operation
// changes them), and its NOTE_TRIGGER does not fire the event
// (filt_userattach tests kn_fflags, which kqueue_register has cleared); a
// later change with note::trigger fires it and applies its note::ff*
// operation to the saved flags with the user bits of its fflags (which it
// masks to those bits in place: filt_usertouch's `kev->fflags &=
// NOTE_FFLAGSMASK`, visible in a receipt); a change carrying ev::clear
// resets it; a report resets it when the knote was added with ev::clear
// (else it stays triggered and is reported by every scan).
// Thread-safety: its members run under the knote's field lock.
struct user_filter {
  static constexpr filter_id id = filter_id::user;
  using hint_type = long;

  bool triggered = false;

  // Effects: the user flag operation selected by `input`'s control bits.
  [[nodiscard]] static constexpr std::uint32_t apply(std::uint32_t saved,
                                                     std::uint32_t input) noexcept {
    const std::uint32_t value = input & note::fflagsmask;
    switch (input & note::ffctrlmask) {
      case note::ffand: return saved & value;
      case note::ffor: return saved | value;
      case note::ffcopy: return value;
      default: return saved;  // note::ffnop
    }
  }

  // The filter_for members (kcont/knote.hpp). attach: FreeBSD's
  // filt_userattach, which looks for NOTE_TRIGGER in the knote's fflags
  // (not its saved sfflags); a kqueue clears them before the attach.
  template <class K>
  int attach(K& kn) {
    triggered = (kn.fflags & note::trigger) != 0;
    return 0;
  }
  template <class K>
  void detach(K&) {}
  template <class K>
  bool event(K&, long) {
    return triggered;
  }
  // filt_usertouch: EVENT_REGISTER (touch_op::change) and EVENT_PROCESS.
  template <class K>
  void touch(K& kn, knote_change& c, touch_op op) {
    const auto flags = static_cast<ev>(c.flags);
    if (op == touch_op::change) {
      if (c.fflags & note::trigger) triggered = true;
      kn.sfflags = apply(kn.sfflags, c.fflags);
      c.fflags &= note::fflagsmask;
      kn.sdata = c.data;
      if (has(flags, ev::clear)) {  // FreeBSD: a change with EV_CLEAR resets
        triggered = false;
        kn.fflags = 0;
        kn.data = 0;
      }
    } else {
      c.fflags = kn.sfflags;
      c.data = kn.sdata;
      if (has(flags, ev::clear)) {
        triggered = false;
        kn.fflags = 0;
        kn.data = 0;
      }
    }
  }
};

// The event source of timers: a klist whose hint is the time, and the time
// of the latest tick, which timers are armed from.
//
// Lifetime contract: outlives every timer knote attached to it.
// Thread-safety: tick and attach/detach of timers may race when Lock is a
// real lock (the default); now() is atomic.
template <level_set Level = bsd_level, lock_policy Lock = std::mutex>
class basic_timer_source {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  using duration = clock::duration;
  using list_type = klist<time_point, Level, Lock>;

  // Effects: the source's time starts at `start` (pass a fixed time in
  //   tests: everything after is driven by tick).
  explicit basic_timer_source(time_point start = clock::now()) noexcept
      : now_(start.time_since_epoch().count()) {}

  // The time of the latest tick (or the start): what new timers arm from.
  [[nodiscard]] time_point now() const noexcept {
    return time_point(duration(now_.load(std::memory_order_acquire)));
  }

  // Effects: advances the source's time to `now` (never backwards) and fires
  //   every due timer: its knote is activated at `current` through `d`.
  // Returns: how many timer knotes fired. Complexity: O(timers).
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t tick(D& d, time_point now, Level current) {
    auto seen = now_.load(std::memory_order_relaxed);
    while (seen < now.time_since_epoch().count() &&
           !now_.compare_exchange_weak(seen, now.time_since_epoch().count(),
                                       std::memory_order_acq_rel)) {
    }
    return list_.fire(d, now, current);
  }

  // Effects: tick for timers whose continuations all run at once (kqueue
  //   timers): nothing is deferred.
  std::size_t tick(time_point now) {
    immediate_target<Level> t;
    return tick(t, now, t.lowest);
  }

  // The klist the timers are linked on (their filter attaches them).
  [[nodiscard]] list_type& list() noexcept { return list_; }

 private:
  std::atomic<duration::rep> now_;
  list_type list_;
};

// The timer source with bsd_level and a std::mutex.
using timer_source = basic_timer_source<>;

// EVFILT_TIMER. The registration's data is the period (or the one-shot
// delay) in the unit its fflags name: note::seconds, mseconds (the default),
// useconds or nseconds. Periodic unless the knote has ev::oneshot. A report
// gives the expirations since the last report in data and resets it (timers
// always behave as EV_CLEAR, as FreeBSD's filt_timerattach forces).
// A negative period is refused with EINVAL; zero expires at the next tick.
// A period too long for the source's clock saturates at its longest duration
// (FreeBSD's timer2sbintime saturates at SBT_MAX the same way), and a
// deadline beyond the clock's last time point is never reached: such a timer
// is armed but never fires. No arithmetic on data or time overflows.
// A change re-arms the timer only when it carries ev::add (FreeBSD re-arms on
// any change; re-arming on a bare EV_ENABLE with data 0 would be surprising).
// Thread-safety: its members run under the knote's field lock.
template <class Source = timer_source>
class timer_filter {
 public:
  static constexpr filter_id id = filter_id::timer;
  using context_type = Source;
  using hint_type = typename Source::time_point;
  using duration = typename Source::duration;

  // Effects: a timer on `source` (the kqueue passes its context).
  explicit timer_filter(Source& source) noexcept : source_(&source) {}

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

  // The filter_for members (kcont/knote.hpp). attach arms the timer from
  // the source's current time and links the knote on the source's klist.
  template <class K>
  int attach(K& kn) {
    if (kn.sdata < 0) return EINVAL;
    arm(kn);
    source_->list().insert(kn);
    return 0;
  }
  template <class K>
  void detach(K& kn) {
    (void)source_->list().erase(kn);
  }
  // A tick at `now`: counts the expirations due by then. Hint{} (the scan's
  // re-check) asks whether unreported expirations remain.
  // A deadline of hint_type::max() (a period that reaches past the clock's
  // end) never expires.
  template <class K>
  bool event(K& kn, const hint_type& now) {
    if (now == hint_type{} || !armed_ || deadline_ == hint_type::max() ||
        now < deadline_) {
      return now == hint_type{} && kn.data != 0;
    }
    std::int64_t n = 1;
    if (oneshot_) {
      armed_ = false;
    } else {
      // The expirations in [deadline_, now], and the next deadline after
      // them, in unsigned arithmetic: now - deadline_ and the step past it
      // may not fit the signed duration (a 1 ns timer ticked at the end of
      // the clock), and signed overflow is undefined.
      using u64 = std::uint64_t;
      const u64 from = static_cast<u64>(deadline_.time_since_epoch().count());
      const u64 gap = static_cast<u64>(now.time_since_epoch().count()) - from;
      const u64 per = static_cast<u64>(period_.count());  // > 0: see arm
      const u64 later = gap / per;  // expirations after the first
      const u64 room =
          static_cast<u64>(hint_type::max().time_since_epoch().count()) - from;
      constexpr u64 most = static_cast<u64>(max_data);
      n = later >= most ? max_data : static_cast<std::int64_t>(later + 1);
      // The next deadline, from + (later + 1) * per, is past the clock's
      // end exactly when later + 1 > room / per.
      if (later >= room / per) {
        deadline_ = hint_type::max();  // never again
      } else {
        deadline_ = hint_type(duration(
            static_cast<typename duration::rep>(from + (later + 1) * per)));
      }
    }
    kn.data = kn.data > max_data - n ? max_data : kn.data + n;
    return true;
  }
  template <class K>
  void touch(K& kn, knote_change& c, touch_op op) {
    if (op == touch_op::change) {
      if (!has(static_cast<ev>(c.flags), ev::add) || c.data < 0) return;
      kn.sfflags = c.fflags;
      kn.sdata = c.data;
      kn.data = 0;
      arm(kn);
    } else {
      c.fflags = 0;
      c.data = kn.data;
      kn.data = 0;
    }
  }

  // When the timer next expires (meaningful while armed()).
  [[nodiscard]] hint_type deadline() const noexcept { return deadline_; }
  [[nodiscard]] bool armed() const noexcept { return armed_; }

 private:
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

  // Arms the timer from the source's time; a deadline past the clock's end
  // saturates at hint_type::max() (never reached, see event).
  template <class K>
  void arm(K& kn) {
    period_ = period_of(kn.sfflags, kn.sdata);
    if (period_ <= duration::zero()) period_ = duration(1);
    oneshot_ = has(static_cast<ev>(kn.flags), ev::oneshot);
    const hint_type now = source_->now();
    deadline_ = now > hint_type::max() - period_ ? hint_type::max() : now + period_;
    armed_ = true;
  }

  static constexpr std::int64_t max_data = std::numeric_limits<std::int64_t>::max();

  Source* source_;
  hint_type deadline_{};
  duration period_{1};
  bool oneshot_ = false;
  bool armed_ = false;
};

}  // namespace kcont
