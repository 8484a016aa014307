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
//   The kevent() change loop and the scan are the same code as for
//   EVFILT_USER; kqueue_reference.hpp cites them line by line and this model
//   follows it (same kev type, same outcome type).
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
#include <list>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "kqueue_reference.hpp"  // kev, kevent_outcome, EV_* values

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

class timer_model {
 public:
  // true: filt_timerexpire_l's own count of missed periods (which undercounts,
  // see fire()) instead of the model's; for comparing with FreeBSD and for
  // the differential driver's self-test. Default false.
  bool freebsd_missed_periods = false;

  // kevent(kq, changes, changes.size(), eventlist, nevents, &zero_timeout) at
  // time now(). The change loop is kern_kevent_fp's (kqueue_kevent's), as in
  // kqueue_reference.hpp's model::kevent, which cites it line by line.
  kevent_outcome kevent(std::span<const kev> changes, std::size_t nevents) {
    kevent_outcome r;
    int n_ev = static_cast<int>(nevents);
    int nerrors = 0;
    for (const kev& change : changes) {
      kev k = change;
      // "if (!kevp->filter) continue;"
      if (k.filter == 0) continue;
      // "kevp->flags &= ~EV_SYSFLAGS;"
      k.flags = static_cast<std::uint16_t>(k.flags & ~EV_SYSFLAGS);
      const int error = kqueue_register(k);
      // "if (error || (kevp->flags & EV_RECEIPT)) { if (nevents == 0) goto
      // done; kevp->flags = EV_ERROR; kevp->data = error; ... nevents--;
      // nerrors++; }" (kevent() returns td_retval[0] = 0 on a successful
      // receipt with no room: see kqueue_reference.hpp).
      if (error != 0 || (k.flags & EV_RECEIPT) != 0) {
        if (n_ev == 0) {
          r.ret = error != 0 ? -1 : 0;
          r.err = error;
          return r;
        }
        k.flags = EV_ERROR;
        k.data = error;
        r.out.push_back(k);
        --n_ev;
        ++nerrors;
      }
    }
    // "if (nerrors) { td->td_retval[0] = nerrors; error = 0; goto done; }"
    if (nerrors != 0) {
      r.ret = nerrors;
      return r;
    }
    r.ret = kqueue_scan(n_ev, r.out);
    return r;
  }

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
    std::vector<knote*> due;
    for (auto& [key, kn] : knotes_)
      if (kn.armed && kn.next <= now_) due.push_back(&kn);
    std::sort(due.begin(), due.end(), [](const knote* a, const knote* b) {
      return a->next != b->next ? a->next < b->next : a->sched_seq < b->sched_seq;
    });
    for (knote* kn : due) fire(*kn);
    return due.size();
  }
  std::size_t tick(std::int64_t t) {
    set_time(t);
    return tick();
  }

  // Knotes attached; knotes on the active queue (kq_count); callouts pending.
  std::size_t registered() const { return knotes_.size(); }
  std::size_t queued() const { return kq_count_; }
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
  static constexpr unsigned KN_ACTIVE = 0x01;
  static constexpr unsigned KN_QUEUED = 0x02;
  static constexpr unsigned KN_DISABLED = 0x04;

  struct knote {
    kev kn_kevent;                 // kn_data is kn_kevent.data: the expirations
    std::uint32_t kn_sfflags = 0;  // units | NOTE_ABSTIME as given
    std::int64_t kn_sdata = 0;     // the timeout as given (0 -> 1, see validate)
    unsigned kn_status = 0;
    // struct kq_timer_cb_data: "sbintime_t next; /* next timer event fires
    // at */ sbintime_t to; /* precalculated timer period, 0 for abs */" and
    // whether its callout is pending (callout_reset .. callout_drain).
    bool armed = false;
    std::int64_t next = 0;
    std::int64_t to = 0;
    std::uint64_t sched_seq = 0;  // MODEL: the tie order of equal deadlines
  };
  using key = std::pair<std::uintptr_t, std::int16_t>;

  // kqtimer_sched_callout: "callout_reset_sbt_on(&kc->c, kc->next, 0,
  // filt_timerexpire, kc->kn, kc->cpuid, C_ABSOLUTE);"
  void sched_callout(knote& kn) {
    kn.armed = true;
    kn.sched_seq = ++seq_;
  }

  // filt_timervalidate(kn, &to): returns 0 or an errno; sets *to in ns.
  static int filt_timervalidate(knote& kn, std::int64_t& to) {
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
  void filt_timerstart(knote& kn, std::int64_t to) {
    if ((kn.kn_sfflags & NOTE_ABSTIME) != 0) {
      kn.next = to;
      kn.to = 0;
    } else {
      kn.next = sat_add(now_, to);
      kn.to = to;
    }
    sched_callout(kn);
  }

  // filt_timerattach: returns 0 or an errno.
  int filt_timerattach(knote& kn) {
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

  // filt_timerdetach: "callout_drain(&kc->c); ... free(kc, M_KQUEUE);"
  static void filt_timerdetach(knote& kn) { kn.armed = false; }

  // filt_timer: "return (kn->kn_data != 0);"
  static int filt_timer(const knote& kn) { return kn.kn_kevent.data != 0 ? 1 : 0; }

  // KNOTE_ACTIVATE(kn, islock): "(kn)->kn_status |= KN_ACTIVE; if
  // (((kn)->kn_status & (KN_QUEUED | KN_DISABLED)) == 0) knote_enqueue(kn);":
  // a disabled knote becomes active but is not queued; its counts go on.
  void knote_activate(knote& kn) {
    kn.kn_status |= KN_ACTIVE;
    if ((kn.kn_status & (KN_QUEUED | KN_DISABLED)) == 0) knote_enqueue(kn);
  }

  // filt_timerexpire_l(kn): the callout fired at now_ (>= kn.next).
  void fire(knote& kn) {
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

  // filt_timertouch(kn, kev, EVENT_REGISTER)
  void filt_timertouch_register(knote& kn, const kev& k) {
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
  static kev filt_timertouch_process(knote& kn) {
    const kev out = kn.kn_kevent;
    if ((kn.kn_kevent.flags & EV_CLEAR) != 0) {
      kn.kn_kevent.data = 0;
      kn.kn_kevent.fflags = 0;
    }
    return out;
  }

  void knote_enqueue(knote& kn) {
    kq_head_.push_back(&kn);
    kn.kn_status |= KN_QUEUED;
    ++kq_count_;
  }
  void knote_dequeue(knote& kn) {
    kq_head_.remove(&kn);
    kn.kn_status &= ~KN_QUEUED;
    --kq_count_;
  }
  // knote_drop -> knote_drop_detached: "kn->kn_fop->f_detach(kn)"
  // (filt_timerdetach stops the callout), dequeue, free.
  void knote_drop(knote& kn) {
    filt_timerdetach(kn);
    if ((kn.kn_status & KN_QUEUED) != 0) knote_dequeue(kn);
    knotes_.erase(key{kn.kn_kevent.ident, kn.kn_kevent.filter});
  }

  // kqueue_register (see kqueue_reference.hpp for each line's citation).
  int kqueue_register(kev& k) {
    if ((k.flags & (EV_ENABLE | EV_DISABLE)) == (EV_ENABLE | EV_DISABLE)) return EINVAL;
    // "fops = kqueue_fo_find(filt); if (fops == NULL) return EINVAL;": the
    // model knows EVFILT_TIMER only.
    if (k.filter != EVFILT_TIMER) return EINVAL;
    if ((k.flags & EV_ADD) != 0 && (k.flags & EV_KEEPUDATA) != 0) return EINVAL;
    auto found = knotes_.find(key{k.ident, k.filter});
    knote* kn = nullptr;
    if (found == knotes_.end()) {
      if ((k.flags & EV_ADD) == 0) return ENOENT;
      kn = &knotes_[key{k.ident, k.filter}];
      // "kn->kn_sfflags = kev->fflags; kn->kn_sdata = kev->data; kev->fflags
      // = 0; kev->data = 0; kn->kn_kevent = *kev; kn->kn_kevent.flags &=
      // ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT);":
      // the change is zeroed before the attach, so the EV_ERROR entry of a
      // failed attach shows fflags 0.
      kn->kn_sfflags = k.fflags;
      kn->kn_sdata = k.data;
      k.fflags = 0;
      k.data = 0;
      kn->kn_kevent = k;
      kn->kn_kevent.flags = static_cast<std::uint16_t>(
          kn->kn_kevent.flags & ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT));
      kn->kn_status = (k.flags & EV_DISABLE) != 0 ? KN_DISABLED : 0;
      // "if ((error = kn->kn_fop->f_attach(kn)) != 0) {
      // knote_drop_detached(kn, td); goto done; }": nothing registered.
      if (const int error = filt_timerattach(*kn); error != 0) {
        knotes_.erase(key{k.ident, k.filter});
        return error;
      }
    } else {
      kn = &found->second;
      // "if (kev->flags & EV_DELETE) { ... knote_drop(kn, td); goto done; }"
      if ((k.flags & EV_DELETE) != 0) {
        knote_drop(*kn);
        return 0;
      }
      // "if (kev->flags & EV_FORCEONESHOT) { kn->kn_flags |= EV_ONESHOT;
      // KNOTE_ACTIVATE(kn, 1); }"
      if ((k.flags & EV_FORCEONESHOT) != 0) {
        kn->kn_kevent.flags |= EV_ONESHOT;
        knote_activate(*kn);
      }
      // "if ((kev->flags & EV_ENABLE) != 0) kn->kn_status &= ~KN_DISABLED;
      // else if ((kev->flags & EV_DISABLE) != 0) kn->kn_status |=
      // KN_DISABLED;": the callout is not touched: a disabled timer keeps
      // expiring and counting (filt_timerexpire -> KNOTE_ACTIVATE).
      if ((k.flags & EV_ENABLE) != 0) {
        kn->kn_status &= ~KN_DISABLED;
      } else if ((k.flags & EV_DISABLE) != 0) {
        kn->kn_status |= KN_DISABLED;
      }
      // "if ((kev->flags & EV_KEEPUDATA) == 0) kn->kn_kevent.udata =
      // kev->udata; if (!fops->f_isfd && fops->f_touch != NULL) {
      // fops->f_touch(kn, kev, EVENT_REGISTER); }"
      if ((k.flags & EV_KEEPUDATA) == 0) kn->kn_kevent.udata = k.udata;
      filt_timertouch_register(*kn, k);
    }
    // done_ev_add: "if ((kn->kn_status & KN_DISABLED) == 0) event =
    // kn->kn_fop->f_event(kn, 0); else event = 0; ... if (event)
    // kn->kn_status |= KN_ACTIVE; if ((kn->kn_status & (KN_ACTIVE |
    // KN_DISABLED | KN_QUEUED)) == KN_ACTIVE) knote_enqueue(kn);": an enable
    // queues a timer that expired while disabled.
    const int event = (kn->kn_status & KN_DISABLED) == 0 ? filt_timer(*kn) : 0;
    if (event != 0) kn->kn_status |= KN_ACTIVE;
    if ((kn->kn_status & (KN_ACTIVE | KN_DISABLED | KN_QUEUED)) == KN_ACTIVE) knote_enqueue(*kn);
    return 0;
  }

  // kqueue_scan with a zero timeout (see kqueue_reference.hpp for each line).
  int kqueue_scan(int maxevents, std::vector<kev>& out) {
    if (maxevents == 0) return 0;
    int count = maxevents;
  retry:
    if (kq_count_ == 0) return maxevents - count;
    kq_head_.push_back(nullptr);  // the marker
    while (count != 0) {
      knote* kn = kq_head_.front();
      kq_head_.pop_front();
      // "if ((kn->kn_status & KN_DISABLED) == KN_DISABLED) { kn->kn_status &=
      // ~KN_QUEUED; kq->kq_count--; continue; }"
      if (kn != nullptr && (kn->kn_status & KN_DISABLED) != 0) {
        kn->kn_status &= ~KN_QUEUED;
        --kq_count_;
        continue;
      }
      if (kn == nullptr) {
        if (count == maxevents) goto retry;
        return maxevents - count;
      }
      if ((kn->kn_kevent.flags & EV_ONESHOT) != 0) {
        // "*kevp = kn->kn_kevent; knote_drop(kn, td);": reported as stored
        // (data = expirations), no f_event, no f_touch; the drop detaches
        // (stops) the callout.
        kn->kn_status &= ~KN_QUEUED;
        --kq_count_;
        out.push_back(kn->kn_kevent);
        knote_drop(*kn);
      } else {
        // "if (kn->kn_fop->f_event(kn, 0) == 0) { kn->kn_status &=
        // ~(KN_QUEUED | KN_ACTIVE | KN_SCAN); ... kq->kq_count--; continue; }"
        if (filt_timer(*kn) == 0) {
          kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE);
          --kq_count_;
          continue;
        }
        // "if (touch) kn->kn_fop->f_touch(kn, kevp, EVENT_PROCESS);"
        out.push_back(filt_timertouch_process(*kn));
        // "if (kn->kn_flags & (EV_CLEAR | EV_DISPATCH)) { ... if
        // (kn->kn_flags & EV_DISPATCH) kn->kn_status |= KN_DISABLED;
        // kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE); kq->kq_count--; } else
        // TAILQ_INSERT_TAIL(&kq->kq_head, kn, kn_tqe);"
        if ((kn->kn_kevent.flags & (EV_CLEAR | EV_DISPATCH)) != 0) {
          if ((kn->kn_kevent.flags & EV_DISPATCH) != 0) kn->kn_status |= KN_DISABLED;
          kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE);
          --kq_count_;
        } else {
          kq_head_.push_back(kn);
        }
      }
      --count;
    }
    kq_head_.remove(nullptr);
    return maxevents - count;
  }

  std::map<key, knote> knotes_;  // kq_knhash; std::map keeps addresses stable
  std::list<knote*> kq_head_;    // the active queue; nullptr is the scan marker
  std::size_t kq_count_ = 0;     // kq_count
  std::int64_t now_ = 0;         // MODEL: the manual clock, ns since its epoch
  std::uint64_t seq_ = 0;        // MODEL: scheduling order, for equal deadlines
};

}  // namespace kqref

#endif  // KCONT_TESTS_TIMER_REFERENCE_HPP
