// timer_reference.hpp: an independent reference model of FreeBSD kqueue(2)
// for EVFILT_TIMER, with a manual clock, used as a test oracle beside kcont's
// timer filter.
//
// What it models
//   One kqueue and kevent() with a zero timeout (a poll that never blocks),
//   single-threaded, for the EVFILT_TIMER filter only: the change loop
//   (kqueue_kevent), kqueue_register, the timer filter (filt_timervalidate,
//   timer2sbintime, filt_timerattach, filt_timerstart, filt_timerexpire,
//   filt_timertouch, filt_timerdetach, filt_timer) and kqueue_scan. Time is
//   the model's own: `now()` in nanoseconds since the clock's epoch, moved by
//   set_time() and tick(); the model never reads a clock. A callout is a
//   (deadline, period) pair per knote, fired by tick().
//
// Sources (every rule below cites its function)
//   FreeBSD sys/kern/kern_event.c, main branch as held in kostikbel/freebsd-src
//   at efedda13b52cf93df98deab4cacfe560ba24a1fe (the tree kqueue_reference.hpp
//   was written from): timer2sbintime, kqtimer_sched_callout,
//   filt_timerexpire_l, filt_timervalidate, filt_timerattach, filt_timerstart,
//   filt_timerdetach, filt_timertouch, filt_timer, kqueue_register,
//   kqueue_scan, kern_kevent_fp/kqueue_kevent, KNOTE_ACTIVATE, knote_enqueue.
//   FreeBSD sys/sys/event.h: EVFILT_TIMER = -7, NOTE_SECONDS 0x1,
//   NOTE_MSECONDS 0x2, NOTE_USECONDS 0x4, NOTE_NSECONDS 0x8, NOTE_ABSTIME 0x10.
//   FreeBSD lib/libc/sys/kqueue.2 (14.x, as in sobomax/freebsd14_vendor
//   0f7ff342), EVFILT_TIMER: "The timer will be periodic unless EV_ONESHOT or
//   NOTE_ABSTIME is specified. On return, data contains the number of times
//   the timeout has expired since the last call to kevent(). For
//   non-monotonic timers, this filter automatically sets the EV_CLEAR flag
//   internally."; "If fflags is not set, the default is milliseconds."; "If
//   an existing timer is re-added, the existing timer will be effectively
//   canceled (throwing away any undelivered record of previous timer
//   expiration) and re-started using the new parameters contained in data
//   and fflags."
//   The kevent() change loop, kqueue_register and the scan are the same code
//   as for EVFILT_USER; kern_event_reference.hpp models them once, citing
//   them line by line, and this model gives it the timer filter.
//
// Where the model departs from FreeBSD (on purpose, each marked "MODEL:")
//   - Units: FreeBSD converts data to sbintime (32.32 fixed-point seconds,
//     rounded by the *_TO_SBT macros, saturated at SBT_MAX when the seconds
//     exceed SBT_MAX / SBT_1S, about 68 years). The model works in exact
//     nanoseconds and saturates at INT64_MAX ns (about 292 years): no
//     arithmetic ever overflows; a saturated deadline (INT64_MAX) is one no
//     tick before INT64_MAX reaches.
//   - NOTE_ABSTIME: FreeBSD takes data as wall-clock time since the Epoch and
//     subtracts the boot time (getboottimebin) to get an uptime deadline. The
//     model's clock has one epoch: the deadline is data in the unit, on the
//     model's own clock.
//   - Missed periods: filt_timerexpire_l undercounts them (see fire()); the
//     model counts every period boundary at or before the tick's time, as
//     issue 13 requires, and keeps the timer's phase.
//   - Firing order: FreeBSD's callwheel fires the callouts due in one
//     softclock pass bucket by bucket (LIFO inside a bucket:
//     callout_cc_add inserts at the head), so the order of callouts due at
//     the same pass is not specified. The model fires them in deadline order,
//     equal deadlines in the order they were scheduled.
//
// What it leaves out
//   Every other filter (EINVAL, as an unknown filter would be), blocking and
//   timeouts, threads, process stop/continue (kqtimer_proc_continue), fork
//   (filt_timercopy), the kq_calloutmax limit (ENOMEM), copyin/copyout faults.
//
// Independence
//   Written from the FreeBSD sources above only, without reading kcont's timer
//   filter, timer source or their tests. Standard headers only.
#ifndef KCONT_TESTS_TIMER_REFERENCE_HPP
#define KCONT_TESTS_TIMER_REFERENCE_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kern_event_reference.hpp"  // kev, kevent_outcome, EV_* values, kern_event

namespace kqref {

// sys/sys/event.h
inline constexpr std::int16_t EVFILT_TIMER = -7;
inline constexpr std::uint32_t NOTE_SECONDS = 0x00000001;   // data is seconds
inline constexpr std::uint32_t NOTE_MSECONDS = 0x00000002;  // data is milliseconds
inline constexpr std::uint32_t NOTE_USECONDS = 0x00000004;  // data is microseconds
inline constexpr std::uint32_t NOTE_NSECONDS = 0x00000008;  // data is nanoseconds
inline constexpr std::uint32_t NOTE_ABSTIME = 0x00000010;   // timeout is absolute
// kern_event.c: "#define NOTE_TIMER_PRECMASK (NOTE_SECONDS | NOTE_MSECONDS |
// NOTE_USECONDS | NOTE_NSECONDS)"
inline constexpr std::uint32_t NOTE_TIMER_PRECMASK =
    NOTE_SECONDS | NOTE_MSECONDS | NOTE_USECONDS | NOTE_NSECONDS;

inline constexpr std::int64_t time_max = std::numeric_limits<std::int64_t>::max();

// a + b for a, b >= 0, saturated at INT64_MAX (MODEL: never overflows).
constexpr std::int64_t sat_add(std::int64_t a, std::int64_t b) {
  return a > time_max - b ? time_max : a + b;
}
// a * b for a, b >= 0, saturated at INT64_MAX.
constexpr std::int64_t sat_mul(std::int64_t a, std::int64_t b) {
  return b != 0 && a > time_max / b ? time_max : a * b;
}

// timer2sbintime(data, flags), in nanoseconds: "switch (flags &
// NOTE_TIMER_PRECMASK) { case NOTE_SECONDS: ... case NOTE_MSECONDS: /*
// FALLTHROUGH */ case 0: ... case NOTE_USECONDS: ... case NOTE_NSECONDS: ...
// default: break; } return (-1);": no unit means milliseconds; two or more
// unit bits are no case and give -1 (filt_timervalidate turns it into
// EINVAL). MODEL: exact nanoseconds, saturated at INT64_MAX (FreeBSD:
// "if (secs > (SBT_MAX / SBT_1S)) return (SBT_MAX);").
constexpr std::int64_t timer2ns(std::int64_t data, std::uint32_t flags) {
  switch (flags & NOTE_TIMER_PRECMASK) {
    case NOTE_SECONDS:
      return sat_mul(data, 1000000000);
    case NOTE_MSECONDS:
    case 0:
      return sat_mul(data, 1000000);
    case NOTE_USECONDS:
      return sat_mul(data, 1000);
    case NOTE_NSECONDS:
      return data;
    default:
      return -1;
  }
}

// What a timer knote adds to kern_event.c's: kn_data (kn_kevent.data) holds
// the expirations, kn_sfflags the units | NOTE_ABSTIME as given, kn_sdata
// the timeout as given (0 -> 1, see filt_timervalidate).
struct timer_knote : knote_base {
  // struct kq_timer_cb_data: "sbintime_t next; /* next timer event fires
  // at */ sbintime_t to; /* precalculated timer period, 0 for abs */" and
  // whether its callout is pending (callout_reset .. callout_drain).
  bool armed = false;
  std::int64_t next = 0;
  std::int64_t to = 0;
  std::uint64_t sched_seq = 0;  // MODEL: the tie order of equal deadlines
};

// The EVFILT_TIMER filter on kern_event.c's skeleton (kern_event_reference.hpp).
class timer_model : public kern_event<timer_model, timer_knote> {
 public:
  // true: filt_timerexpire_l's own count of missed periods (which undercounts,
  // see fire()) instead of the model's; for comparing with FreeBSD and for
  // the differential driver's self-test. Default false.
  bool freebsd_missed_periods = false;

  // The model's clock, nanoseconds since its epoch.
  std::int64_t now() const { return now_; }

  // Moves the clock to t (t >= now()) without running the callouts: a
  // kevent() in between arms from t, and timers due by t are late until the
  // next tick() (as callouts waiting for the softclock).
  void set_time(std::int64_t t) {
    if (t > now_) now_ = t;
  }

  // tick(): every callout whose deadline is at or before now() fires, in
  // deadline order (equal deadlines in the order they were scheduled), each
  // once: one firing counts every period boundary <= now() (fire() below),
  // so a periodic callout's next deadline is after now() and it does not
  // fire again in this tick. Never early: a deadline one nanosecond after
  // now() does not fire. Returns the number of callouts fired.
  std::size_t tick() {
    std::vector<timer_knote*> due;
    for (auto& [key, kn] : knotes_)
      if (kn.armed && kn.next <= now_) due.push_back(&kn);
    std::sort(due.begin(), due.end(), [](const timer_knote* a, const timer_knote* b) {
      return a->next != b->next ? a->next < b->next : a->sched_seq < b->sched_seq;
    });
    for (timer_knote* kn : due) fire(*kn);
    return due.size();
  }
  std::size_t tick(std::int64_t t) {
    set_time(t);
    return tick();
  }

  // Callouts pending (registered() and queued() are kern_event's).
  std::size_t armed() const {
    std::size_t n = 0;
    for (const auto& [key, kn] : knotes_) n += kn.armed ? 1 : 0;
    return n;
  }
  // The earliest pending deadline, or INT64_MAX when none (what a blocking
  // kevent() would sleep until).
  std::int64_t next_deadline() const {
    std::int64_t d = time_max;
    for (const auto& [key, kn] : knotes_)
      if (kn.armed) d = std::min(d, kn.next);
    return d;
  }
  // For the self-tests: the knote's pending deadline (-1: no callout, or no
  // such knote) and its undelivered expiration count kn_data.
  std::int64_t deadline_of(std::uintptr_t ident) const {
    const auto it = knotes_.find(key{ident, EVFILT_TIMER});
    return it == knotes_.end() || !it->second.armed ? -1 : it->second.next;
  }
  std::int64_t data_of(std::uintptr_t ident) const {
    const auto it = knotes_.find(key{ident, EVFILT_TIMER});
    return it == knotes_.end() ? -1 : it->second.kn_kevent.data;
  }

 private:
  friend class kern_event<timer_model, timer_knote>;


  // kqtimer_sched_callout: "callout_reset_sbt_on(&kc->c, kc->next, 0,
  // filt_timerexpire, kc->kn, kc->cpuid, C_ABSOLUTE);"
  void sched_callout(timer_knote& kn) {
    kn.armed = true;
    kn.sched_seq = ++seq_;
  }

  // filt_timervalidate(kn, &to): returns 0 or an errno; sets *to in ns.
  static int filt_timervalidate(timer_knote& kn, std::int64_t& to) {
    // "if (kn->kn_sdata < 0) return (EINVAL);"
    if (kn.kn_sdata < 0) return EINVAL;
    // "if (kn->kn_sdata == 0 && (kn->kn_flags & EV_ONESHOT) == 0)
    // kn->kn_sdata = 1;": a periodic timer of 0 is one of 1 unit; a one-shot
    // timer of 0 fires at the next tick.
    if (kn.kn_sdata == 0 && (kn.kn_kevent.flags & EV_ONESHOT) == 0) kn.kn_sdata = 1;
    // "if ((kn->kn_sfflags & ~(NOTE_TIMER_PRECMASK | NOTE_ABSTIME)) != 0)
    // return (EINVAL);"
    if ((kn.kn_sfflags & ~(NOTE_TIMER_PRECMASK | NOTE_ABSTIME)) != 0) return EINVAL;
    // "*to = timer2sbintime(kn->kn_sdata, kn->kn_sfflags); if (*to < 0)
    // return (EINVAL);"
    to = timer2ns(kn.kn_sdata, kn.kn_sfflags);
    if (to < 0) return EINVAL;
    // "if ((kn->kn_sfflags & NOTE_ABSTIME) != 0) { getboottimebin(&bt); sbt =
    // bttosbt(bt); *to = MAX(0, *to - sbt); }": MODEL: one epoch, so the
    // absolute time is `to` itself (boot time 0).
    return 0;
  }

  // filt_timerstart(kn, to): "if ((kn->kn_sfflags & NOTE_ABSTIME) != 0) {
  // kc->next = to; kc->to = 0; } else { kc->next = to + sbinuptime();
  // kc->to = to; } kqtimer_sched_callout(kc);"
  void filt_timerstart(timer_knote& kn, std::int64_t to) {
    if ((kn.kn_sfflags & NOTE_ABSTIME) != 0) {
      kn.next = to;
      kn.to = 0;
    } else {
      kn.next = sat_add(now_, to);
      kn.to = to;
    }
    sched_callout(kn);
  }

  // kqueue_fo_find: the model knows EVFILT_TIMER only; every other filter is
  // EINVAL, as an unknown one. EVFILT_TIMER is not f_isfd: no fget().
  static bool fo_find(std::int16_t filter) { return filter == EVFILT_TIMER; }
  static int fget(const kev&) { return 0; }

  // filt_timerattach: returns 0 or an errno (kqueue_register then drops the
  // knote: nothing registered, and its EV_ERROR entry shows fflags 0).
  int f_attach(timer_knote& kn) {
    std::int64_t to = -1;
    // "error = filt_timervalidate(kn, &to); if (error != 0) return (error);"
    if (const int error = filt_timervalidate(kn, to); error != 0) return error;
    // "if ((kn->kn_sfflags & NOTE_ABSTIME) == 0) kn->kn_flags |= EV_CLEAR;
    // /* automatically set */" (kqueue.2: "For non-monotonic timers"):
    // relative timers become EV_CLEAR; an absolute one keeps the caller's
    // flags: without EV_CLEAR its one expiration stays reported at every scan
    // (level-triggered, filt_timertouch EVENT_PROCESS does not reset it)
    // until deleted or re-added.
    if ((kn.kn_sfflags & NOTE_ABSTIME) == 0) kn.kn_kevent.flags |= EV_CLEAR;
    // "callout_init(&kc->c, 1); filt_timerstart(kn, to);"
    filt_timerstart(kn, to);
    return 0;
  }

  // filt_timerdetach: "callout_drain(&kc->c); ... free(kc, M_KQUEUE);": a
  // one-shot timer reported by kqueue_scan (as stored, data = expirations)
  // is dropped and its callout stopped. EV_DISABLE does not touch the
  // callout: a disabled timer keeps expiring and counting (filt_timerexpire
  // -> KNOTE_ACTIVATE), and an enable queues it (kqueue_register's
  // done_ev_add).
  static void f_detach(timer_knote& kn) { kn.armed = false; }

  // filt_timer: "return (kn->kn_data != 0);"
  static bool f_event(const timer_knote& kn) { return kn.kn_kevent.data != 0; }

  // filt_timerexpire_l(kn): the callout fired at now_ (>= kn.next).
  void fire(timer_knote& kn) {
    kn.armed = false;  // a callout runs once per callout_reset
    // "if ((kn->kn_flags & EV_ONESHOT) != 0 || kc->to == 0) { kn->kn_data++;
    // KNOTE_ACTIVATE(kn, 0); return; }": a one-shot or absolute timer counts
    // one expiration and is not rescheduled.
    if ((kn.kn_kevent.flags & EV_ONESHOT) != 0 || kn.to == 0) {
      kn.kn_kevent.data = sat_add(kn.kn_kevent.data, 1);
      knote_activate(kn);
      return;
    }
    // FreeBSD: "now = sbinuptime(); if (now >= kc->next) { delta = (now -
    // kc->next) / kc->to; if (delta == 0) delta = 1; kn->kn_data += delta;
    // kc->next += delta * kc->to; if (now >= kc->next) /* overflow */
    // kc->next = now + kc->to; KNOTE_ACTIVATE(kn, 0); } ...
    // kqtimer_sched_callout(kc);"
    //
    // That formula UNDERCOUNTS: the boundaries at or before now are next,
    // next + to, ..., next + d * to with d = (now - next) / to, which is
    // d + 1 of them, but it adds d (d >= 1) or 1 (d == 0: right, one
    // boundary). E.g. period 10 due at 10, softclock late until 30: 10, 20
    // and 30 passed, FreeBSD reports 2. It then moves next to next + d * to,
    // which is <= now, so its "overflow" branch sets next = now + to, which
    // also shifts the phase when now is between boundaries (due at 10, late
    // until 35: FreeBSD's next is 45, the period's boundary is 40).
    //
    // MODEL: count every period boundary <= now (issue 13: "missed periods
    // counted") and keep the phase: the next deadline is the first boundary
    // after now. Saturated: a deadline that would pass INT64_MAX is INT64_MAX.
    if (freebsd_missed_periods) {
      std::int64_t delta = (now_ - kn.next) / kn.to;
      if (delta == 0) delta = 1;
      kn.kn_kevent.data = sat_add(kn.kn_kevent.data, delta);
      kn.next = kn.next + (delta - 1) * kn.to;  // <= now: no overflow
      kn.next = sat_add(kn.next, kn.to);
      if (now_ >= kn.next) kn.next = sat_add(now_, kn.to);  // "/* overflow */"
    } else {
      const std::int64_t boundaries = (now_ - kn.next) / kn.to + 1;
      kn.kn_kevent.data = sat_add(kn.kn_kevent.data, boundaries);
      // (boundaries - 1) * to <= now - next: no overflow; the last step
      // saturates.
      kn.next = sat_add(kn.next + (boundaries - 1) * kn.to, kn.to);
    }
    knote_activate(kn);
    sched_callout(kn);
  }

  // kqueue_register and kqueue_scan call filt_timertouch (not f_isfd, has a
  // f_touch).
  static constexpr bool touch = true;

  // filt_timertouch(kn, kev, EVENT_REGISTER)
  void f_touch_register(timer_knote& kn, const kev& k) {
    // "/* Handle re-added timers that update data/fflags */ if (kev->flags &
    // EV_ADD) {": only a change carrying EV_ADD re-arms; EV_ENABLE,
    // EV_DISABLE, a bare udata change leave the timer and its count alone.
    if ((k.flags & EV_ADD) == 0) return;
    // "callout_drain(&kc->c);"
    kn.armed = false;
    // "if (kn->kn_status & KN_QUEUED) knote_dequeue(kn); kn->kn_status &=
    // ~KN_ACTIVE; kn->kn_data = 0;": undelivered expirations are thrown away.
    if ((kn.kn_status & KN_QUEUED) != 0) knote_dequeue(kn);
    kn.kn_status &= ~KN_ACTIVE;
    kn.kn_kevent.data = 0;
    // "kn->kn_sfflags = kev->fflags; kn->kn_sdata = kev->data; error =
    // filt_timervalidate(kn, &to); if (error != 0) { kn->kn_flags |=
    // EV_ERROR; kn->kn_data = error; } else filt_timerstart(kn, to);":
    // an invalid re-add does not fail the change (kqueue_register returns 0):
    // the knote is left with no callout, EV_ERROR in its flags (for good:
    // nothing clears it) and the errno as its data, so f_event reports it.
    // kn_flags is the knote's: the change's EV_ONESHOT does not count here.
    kn.kn_sfflags = k.fflags;
    kn.kn_sdata = k.data;
    std::int64_t to = -1;
    if (const int error = filt_timervalidate(kn, to); error != 0) {
      kn.kn_kevent.flags |= EV_ERROR;
      kn.kn_kevent.data = error;
    } else {
      filt_timerstart(kn, to);
    }
  }

  // filt_timertouch(kn, kev, EVENT_PROCESS): "*kev = kn->kn_kevent; if
  // (kn->kn_flags & EV_CLEAR) { kn->kn_data = 0; kn->kn_fflags = 0; }": the
  // report is the stored kevent (fflags 0, data = expirations), then reset.
  static kev f_touch_process(timer_knote& kn) {
    const kev out = kn.kn_kevent;
    if ((kn.kn_kevent.flags & EV_CLEAR) != 0) {
      kn.kn_kevent.data = 0;
      kn.kn_kevent.fflags = 0;
    }
    return out;
  }

  std::int64_t now_ = 0;         // MODEL: the manual clock, ns since its epoch
  std::uint64_t seq_ = 0;        // MODEL: scheduling order, for equal deadlines
};

}  // namespace kqref

#endif  // KCONT_TESTS_TIMER_REFERENCE_HPP
