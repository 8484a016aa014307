// kqueue_reference.hpp: an independent reference model of FreeBSD kqueue(2)
// for EVFILT_USER, used as a test oracle beside kcont's kqueue.
//
// What it models
//   One kqueue and the kevent() system call with a zero timeout (a poll that
//   never blocks), single-threaded, for the EVFILT_USER filter only:
//   the change loop, the registration of each change, filt_user*, and the
//   scan of the active queue, including what the kernel writes to the event
//   list and what kevent() returns (count, or -1 and errno).
//
// Sources (read for this model; every rule below cites its function)
//   FreeBSD sys/kern/kern_event.c, main branch as held in kostikbel/freebsd-src
//   at commit efedda13b52cf93df98deab4cacfe560ba24a1fe (it already has
//   KQUEUE_CPONFORK, 2025), cross-checked line by line for the functions used
//   here against fel1x-developer/freebsd-src 2d614aa2fe3e (same code):
//     filt_userattach, filt_userdetach, filt_user, filt_usertouch; and
//     kqueue_kevent, kern_kevent_fp, kqueue_register, kqueue_fo_find,
//     kqueue_scan, knote_enqueue, knote_dequeue, knote_drop, KNOTE_ACTIVATE,
//     which kern_event_reference.hpp models for all three reference models.
//   FreeBSD sys/sys/event.h (same tree): EVFILT_USER, NOTE_FF*.
//   FreeBSD lib/libc/sys/kqueue.2 (14.x): EV_RECEIPT, RETURN VALUES.
//   amd64 cpu_fetch_syscall_args: td_retval[0] = 0 before every system call,
//     which is what kevent() returns when kqueue_kevent returns 0 without
//     setting td_retval.
//   Corroboration (not a source of rules): FreeBSD
//     tests/sys/kqueue/libkqueue/user.c.
//   Older releases, where they differ, are noted at the rule ("older:"),
//   from freebsd/freebsd-src 00f0196e (a FreeBSD 10-era kern_event.c).
//
// What it leaves out
//   Every filter but EVFILT_USER: the model treats any other non-zero filter
//   as one kqueue_fo_find does not know (EINVAL). Real FreeBSD knows -1..-13;
//   for those the result would be that filter's own behaviour. Blocking and
//   timeouts, threads (KN_INFLUX/flux waits), EV_DROP (only filters set it;
//   kqueue_kevent strips it from input), copyin/copyout faults (EFAULT),
//   kevent() on a bad descriptor, the KQ_NEVENTS batching of copyout (it does
//   not change what is written), ENOMEM.
//
// Independence
//   Written from the FreeBSD sources above only, without reading kcont's
//   kqueue, knote, klist or kfilters headers or their tests. It includes only
//   standard headers and uses none of kcont's types.
#ifndef KCONT_TESTS_KQUEUE_REFERENCE_HPP
#define KCONT_TESTS_KQUEUE_REFERENCE_HPP

#include <cstdint>
#include <span>

#include "kern_event_reference.hpp"  // kev, kevent_outcome, EV_* values, kern_event

namespace kqref {

// sys/sys/event.h
inline constexpr std::int16_t EVFILT_USER = -11;

// EVFILT_USER fflags
inline constexpr std::uint32_t NOTE_FFNOP = 0x00000000;       // ignore input fflags
inline constexpr std::uint32_t NOTE_FFAND = 0x40000000;       // AND fflags
inline constexpr std::uint32_t NOTE_FFOR = 0x80000000;        // OR fflags
inline constexpr std::uint32_t NOTE_FFCOPY = 0xc0000000;      // copy fflags
inline constexpr std::uint32_t NOTE_FFCTRLMASK = 0xc0000000;  // masks for operations
inline constexpr std::uint32_t NOTE_FFLAGSMASK = 0x00ffffff;
inline constexpr std::uint32_t NOTE_TRIGGER = 0x01000000;  // cause the event to be triggered

// What a user knote adds to kern_event.c's: kn_hookid, EVFILT_USER's
// "triggered" (1) state.
struct user_knote : knote_base {
  int kn_hookid = 0;
};

// The EVFILT_USER filter on kern_event.c's skeleton (kern_event_reference.hpp),
// which cites the change loop, kqueue_register and kqueue_scan line by line.
class model : public kern_event<model, user_knote> {
 private:
  friend class kern_event<model, user_knote>;

  // kqueue_fo_find: every filter but EVFILT_USER is unknown to this model.
  static bool fo_find(std::int16_t filter) { return filter == EVFILT_USER; }
  // EVFILT_USER is not f_isfd: no fget().
  static int fget(const kev&) { return 0; }

  // filt_userattach: "if (kn->kn_fflags & NOTE_TRIGGER) kn->kn_hookid = 1;
  // else kn->kn_hookid = 0;": kn_fflags is kn_kevent.fflags, which
  // kqueue_register zeroed before the attach, so a NOTE_TRIGGER in the
  // creating EV_ADD never fires. (kqueue_register saved the creating
  // change's fflags whole in kn_sfflags, NOTE_TRIGGER and control bits
  // included, and reports them at the first scan.)
  static int f_attach(user_knote& kn) {
    kn.kn_hookid = (kn.kn_kevent.fflags & NOTE_TRIGGER) != 0 ? 1 : 0;
    return 0;
  }

  // filt_userdetach: nothing: "EVFILT_USER knotes are not attached to
  // anything in the kernel".
  static void f_detach(user_knote&) {}

  // filt_user: "return (kn->kn_hookid);"
  static bool f_event(const user_knote& kn) { return kn.kn_hookid != 0; }

  // kqueue_register and kqueue_scan call filt_usertouch (not f_isfd, has a
  // f_touch). A bare NOTE_TRIGGER change replaces udata too (kqueue_register).
  static constexpr bool touch = true;

  // filt_usertouch(kn, kev, EVENT_REGISTER)
  static void f_touch_register(user_knote& kn, kev& k) {
    // "if (kev->fflags & NOTE_TRIGGER) kn->kn_hookid = 1;"
    if ((k.fflags & NOTE_TRIGGER) != 0) kn.kn_hookid = 1;
    // "ffctrl = kev->fflags & NOTE_FFCTRLMASK; kev->fflags &= NOTE_FFLAGSMASK;"
    // (the change itself is masked: a receipt entry shows it)
    const std::uint32_t ffctrl = k.fflags & NOTE_FFCTRLMASK;
    k.fflags &= NOTE_FFLAGSMASK;
    switch (ffctrl) {
      case NOTE_FFNOP:
        break;
      case NOTE_FFAND:
        kn.kn_sfflags &= k.fflags;
        break;
      case NOTE_FFOR:
        kn.kn_sfflags |= k.fflags;
        break;
      case NOTE_FFCOPY:
        kn.kn_sfflags = k.fflags;
        break;
      default:
        break;
    }
    // "kn->kn_sdata = kev->data;": every change replaces the saved data.
    kn.kn_sdata = k.data;
    // "if (kev->flags & EV_CLEAR) { kn->kn_hookid = 0; kn->kn_data = 0;
    // kn->kn_fflags = 0; }": EV_CLEAR in a change un-triggers the knote
    // (even together with NOTE_TRIGGER); it does not change kn_flags.
    if ((k.flags & EV_CLEAR) != 0) {
      kn.kn_hookid = 0;
      kn.kn_kevent.data = 0;
      kn.kn_kevent.fflags = 0;
    }
  }

  // filt_usertouch(kn, kev, EVENT_PROCESS)
  static kev f_touch_process(user_knote& kn) {
    // "*kev = kn->kn_kevent; kev->fflags = kn->kn_sfflags;
    // kev->data = kn->kn_sdata;": fflags is kn_sfflags unmasked, so control
    // bits or NOTE_TRIGGER stored at creation are reported (event.h's comment
    // "On output, the top two bits will always be set to NOTE_FFNOP" holds
    // only for values that came through FFAND/FFOR/FFCOPY).
    kev out = kn.kn_kevent;
    out.fflags = kn.kn_sfflags;
    out.data = kn.kn_sdata;
    // "if (kn->kn_flags & EV_CLEAR) { kn->kn_hookid = 0; ... }": only the
    // trigger is reset; kn_sfflags and kn_sdata are kept and reported again.
    if ((kn.kn_kevent.flags & EV_CLEAR) != 0) {
      kn.kn_hookid = 0;
      kn.kn_kevent.data = 0;
      kn.kn_kevent.fflags = 0;
    }
    return out;
  }
};

}  // namespace kqref

#endif  // KCONT_TESTS_KQUEUE_REFERENCE_HPP
