// kcont/kfilters.hpp — the user event filter, and the counting sources.
//
// Defines `user_filter` (EVFILT_USER: an event triggered by the program
// itself through a kqueue change with note::trigger, carrying 24 user flag
// bits combined by note::ffand / ffor / ffcopy), and includes
// kcont/event_source.hpp (`counting_filter` with `basic_event_source`, a
// generic klist-driven source whose events a kqueue counts, and
// `object_filter`, one such source per object). The filters of the event
// sources are beside their sources: timers in kcont/timer_filter.hpp,
// descriptors in kcont/posix/fd_filters.hpp.
//
// They are ordinary filters (kcont/filter.hpp's filter_for): nothing in the
// kqueue knows them; a filter of your own plugs in the same way.
//
// Usage:
//   kcont::kqueue<kcont::filters<kcont::user_filter>> kq;
//   kq.change({.ident = 1, .filter = kcont::filter_id::user, .flags = kcont::ev::add});
//   kq.change({.ident = 1, .filter = kcont::filter_id::user,
//              .fflags = kcont::note::trigger});          // fires it
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
  // A plain knote's policy: a field lock (no klist: its owner triggers it).
  using knote_policy = spin_lock;

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

}  // namespace kcont
