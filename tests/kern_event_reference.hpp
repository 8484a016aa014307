// kern_event_reference.hpp: the filter-independent part of FreeBSD's
// kern_event.c, written once for the three independent reference models of
// kqueue(2): kqueue_reference.hpp (EVFILT_USER), timer_reference.hpp
// (EVFILT_TIMER) and fd_reference.hpp (EVFILT_READ / EVFILT_WRITE).
//
// What it models
//   One kqueue and kevent() with a zero timeout (a poll that never blocks),
//   single-threaded: struct kevent, the change loop (kqueue_kevent), the
//   registration of each change (kqueue_register), the scan of the active
//   queue (kqueue_scan), knote_enqueue, knote_dequeue, knote_drop and
//   KNOTE_ACTIVATE. A model derives from kern_event<Model, Knote> and gives
//   the filter's side, the parts of struct filterops and of the descriptor
//   table kern_event.c calls through:
//     bool fo_find(std::int16_t filter)   kqueue_fo_find(filt) != NULL
//     int fget(const kev&)                f_isfd filters: fget()'s errno
//                                         (0 for the others)
//     int f_attach(Knote&)                0 or an errno
//     void f_detach(Knote&)
//     bool f_event(Knote&)                f_event(kn, 0)
//     static constexpr bool touch         !f_isfd && f_touch != NULL; then
//     void f_touch_register(Knote&, kev&) f_touch(kn, kev, EVENT_REGISTER)
//     kev f_touch_process(Knote&)         f_touch(kn, kevp, EVENT_PROCESS)
//   Knote derives from knote_base (the fields kern_event.c itself reads)
//   and adds the filter's own state.
//
// Sources (every rule below cites its function)
//   FreeBSD sys/kern/kern_event.c, main branch as held in kostikbel/freebsd-src
//   at commit efedda13b52cf93df98deab4cacfe560ba24a1fe (it already has
//   KQUEUE_CPONFORK, 2025), cross-checked line by line for the functions used
//   here against fel1x-developer/freebsd-src 2d614aa2fe3e (same code):
//     kqueue_kevent, kern_kevent_fp, kqueue_register, kqueue_fo_find,
//     kqueue_scan, knote_enqueue, knote_dequeue, knote_drop, KNOTE_ACTIVATE.
//   FreeBSD sys/sys/event.h (same tree): flag values, EV_SYSFLAGS.
//   FreeBSD lib/libc/sys/kqueue.2 (14.x): EV_RECEIPT, RETURN VALUES.
//   amd64 cpu_fetch_syscall_args: td_retval[0] = 0 before every system call,
//     which is what kevent() returns when kqueue_kevent returns 0 without
//     setting td_retval.
//   Older releases, where they differ, are noted at the rule ("older:"),
//   from freebsd/freebsd-src 00f0196e (a FreeBSD 10-era kern_event.c).
//
// What it leaves out
//   Blocking and timeouts, threads (KN_INFLUX/flux waits), EV_DROP (only
//   filters set it; kqueue_kevent strips it from input), copyin/copyout
//   faults (EFAULT), kevent() on a bad descriptor, the KQ_NEVENTS batching of
//   copyout (it does not change what is written), ENOMEM.
//
// Independence
//   Written from the FreeBSD sources above only, without reading kcont's
//   kqueue, knote, klist or kfilters headers or their tests. It includes only
//   standard headers and uses none of kcont's types.
#ifndef KCONT_TESTS_KERN_EVENT_REFERENCE_HPP
#define KCONT_TESTS_KERN_EVENT_REFERENCE_HPP

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <span>
#include <utility>
#include <vector>

namespace kqref {

// sys/sys/event.h
// actions
inline constexpr std::uint16_t EV_ADD = 0x0001;           // add event to kq (implies enable)
inline constexpr std::uint16_t EV_DELETE = 0x0002;        // delete event from kq
inline constexpr std::uint16_t EV_ENABLE = 0x0004;        // enable event
inline constexpr std::uint16_t EV_DISABLE = 0x0008;       // disable event (not reported)
inline constexpr std::uint16_t EV_FORCEONESHOT = 0x0100;  // enable _ONESHOT and force trigger
inline constexpr std::uint16_t EV_KEEPUDATA = 0x0200;     // do not update the udata field
// flags
inline constexpr std::uint16_t EV_ONESHOT = 0x0010;   // only report one occurrence
inline constexpr std::uint16_t EV_CLEAR = 0x0020;     // clear event state after reporting
inline constexpr std::uint16_t EV_RECEIPT = 0x0040;   // force EV_ERROR on success, data=0
inline constexpr std::uint16_t EV_DISPATCH = 0x0080;  // disable event after reporting
inline constexpr std::uint16_t EV_SYSFLAGS = 0xF000;  // reserved by system
inline constexpr std::uint16_t EV_DROP = 0x1000;      // note should be dropped
inline constexpr std::uint16_t EV_FLAG1 = 0x2000;     // filter-specific flag
inline constexpr std::uint16_t EV_FLAG2 = 0x4000;     // filter-specific flag
// returned values
inline constexpr std::uint16_t EV_EOF = 0x8000;    // EOF detected
inline constexpr std::uint16_t EV_ERROR = 0x4000;  // error, data contains errno

// The errno values kern_event.c produces here; FreeBSD's numbers
// (sys/sys/errno.h) are the same as the host's for these on every platform
// we build on.
static_assert(ENOENT == 2 && EINVAL == 22, "errno numbers differ from FreeBSD's");

// struct kevent without ext[4] (none of the modelled filters reads or writes it).
struct kev {
  std::uintptr_t ident = 0;
  std::int16_t filter = 0;
  std::uint16_t flags = 0;
  std::uint32_t fflags = 0;
  std::int64_t data = 0;
  std::uintptr_t udata = 0;
  friend bool operator==(const kev&, const kev&) = default;
};

struct kevent_outcome {
  int ret = 0;           // exactly what C's kevent() returns: a count >= 0, or -1
  int err = 0;           // errno when ret == -1, else 0
  std::vector<kev> out;  // every entry the kernel wrote to the event list, in
                         // order; may be non-empty when ret == -1 (EV_ERROR
                         // entries written before a later change failed with
                         // no room left), see kern_event::kevent below
};

// The fields of struct knote that kern_event.c itself reads and writes.
struct knote_base {
  kev kn_kevent;                 // kn_id, kn_filter, kn_flags, kn_fflags, kn_data, udata
  std::uint32_t kn_sfflags = 0;  // saved filter flags (an int in the kernel)
  std::int64_t kn_sdata = 0;     // saved data field
  unsigned kn_status = 0;
};

template <class Model, class Knote>
class kern_event {
 public:
  // kevent(kq, changes, changes.size(), eventlist, nevents, &zero_timeout).
  kevent_outcome kevent(std::span<const kev> changes, std::size_t nevents) {
    kevent_outcome r;
    int n_ev = static_cast<int>(nevents);
    // kqueue_kevent: "nerrors = 0"
    int nerrors = 0;
    for (const kev& change : changes) {
      kev k = change;  // kqueue_kevent works on its copy (keva) and writes it back out
      // kqueue_kevent: "if (!kevp->filter) continue;": filter 0 is skipped
      // silently: no registration, no receipt, no error entry.
      if (k.filter == 0) continue;
      // kqueue_kevent: "kevp->flags &= ~EV_SYSFLAGS" before kqueue_register.
      k.flags = static_cast<std::uint16_t>(k.flags & ~EV_SYSFLAGS);
      const int error = kqueue_register(k);
      // kqueue_kevent: "if (error || (kevp->flags & EV_RECEIPT))"
      if (error != 0 || (k.flags & EV_RECEIPT) != 0) {
        // kqueue_kevent: "if (nevents == 0) return (error);": no room left
        // stops the change list (kqueue.2 EV_RECEIPT: "subsequent changes
        // will not get processed"). An error gives -1/errno; a successful
        // receipt returns 0 and kevent() returns td_retval[0], which the
        // syscall entry (cpu_fetch_syscall_args) set to 0, even when error
        // entries were written before: nerrors is lost.
        if (n_ev == 0) {
          r.ret = error != 0 ? -1 : 0;
          r.err = error;
          return r;
        }
        // kqueue_kevent: "kevp->flags = EV_ERROR; kevp->data = error;": the
        // flags are EV_ERROR alone (the change's flags are not kept); ident,
        // filter and udata are the change's, and fflags is what
        // kqueue_register left in the change (0 after a creation, what
        // f_touch left after a touch, as given otherwise).
        k.flags = EV_ERROR;
        k.data = error;
        r.out.push_back(k);
        // kqueue_kevent: "nevents--; nerrors++;"
        --n_ev;
        ++nerrors;
      }
    }
    // kqueue_kevent: "if (nerrors) { td->td_retval[0] = nerrors; return (0); }"
    // so any receipt or error entry means no scan.
    if (nerrors != 0) {
      r.ret = nerrors;
      return r;
    }
    // kqueue_kevent: "return (kqueue_scan(kq, nevents, ...))"
    r.ret = kqueue_scan(n_ev, r.out);
    return r;
  }

  // Knotes attached (registered and not dropped).
  std::size_t registered() const { return knotes_.size(); }
  // Knotes on the active queue: kq_count, which counts a knote from
  // knote_enqueue until a scan or a knote_drop takes it off; disabled knotes
  // stay counted until a scan meets them.
  std::size_t queued() const { return kq_count_; }

 protected:
  // kn_status bits (sys/sys/event.h)
  static constexpr unsigned KN_ACTIVE = 0x01;    // event has been triggered
  static constexpr unsigned KN_QUEUED = 0x02;    // event is on queue
  static constexpr unsigned KN_DISABLED = 0x04;  // event is disabled

  using key = std::pair<std::uintptr_t, std::int16_t>;  // (ident, filter)

  // kqueue_register: returns 0 or an errno; may modify k (the caller writes
  // it out as the EV_ERROR/receipt entry).
  int kqueue_register(kev& k) {
    // kqueue_register: "if ((kev->flags & (EV_ENABLE | EV_DISABLE)) ==
    // (EV_ENABLE | EV_DISABLE)) return (EINVAL);" (current main, also in the
    // FreeBSD 12-based trees; older: no check, EV_DISABLE then EV_ENABLE were
    // applied in that order, so both together enabled).
    if ((k.flags & (EV_ENABLE | EV_DISABLE)) == (EV_ENABLE | EV_DISABLE)) return EINVAL;
    // kqueue_register: "fops = kqueue_fo_find(filt); if (fops == NULL) return
    // EINVAL;": a filter the model does not know is an unknown one.
    if (!self().fo_find(k.filter)) return EINVAL;
    // kqueue_register: "if (kev->flags & EV_ADD) { /* Reject an invalid flag
    // pair early */ if (kev->flags & EV_KEEPUDATA) { error = EINVAL; ..."
    if ((k.flags & EV_ADD) != 0 && (k.flags & EV_KEEPUDATA) != 0) return EINVAL;
    // kqueue_register, f_isfd: "if (kev->ident > INT_MAX) error = EBADF;
    // else error = fget(td, kev->ident, ...); if (error) goto done;": before
    // the knote is looked up, so for every change, EV_DELETE included.
    if (const int error = self().fget(k); error != 0) return error;

    // kqueue_register: lookup in kq_knhash (kq_knlist for f_isfd filters) by
    // "kev->ident == kn->kn_id && kev->filter == kn->kn_filter".
    auto found = knotes_.find(key{k.ident, k.filter});
    Knote* kn = nullptr;
    if (found == knotes_.end()) {
      // kqueue_register: "No matching knote and the EV_ADD flag is not set."
      if ((k.flags & EV_ADD) == 0) return ENOENT;
      kn = &knotes_[key{k.ident, k.filter}];
      // kqueue_register: "kn->kn_sfflags = kev->fflags; kn->kn_sdata =
      // kev->data;": the creating change's fflags are saved whole (not
      // masked) and data too.
      kn->kn_sfflags = k.fflags;
      kn->kn_sdata = k.data;
      // kqueue_register: "kev->fflags = 0; kev->data = 0;" (so a receipt or
      // an error entry for a creation shows fflags 0) then
      // "kn->kn_kevent = *kev;"
      k.fflags = 0;
      k.data = 0;
      kn->kn_kevent = k;
      // kqueue_register: "kn->kn_kevent.flags &= ~(EV_ADD | EV_DELETE |
      // EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT);": every other flag of the
      // creating change is stored and reported later (EV_RECEIPT, EV_ONESHOT,
      // EV_CLEAR, EV_DISPATCH, unassigned bits). (older: EV_FORCEONESHOT did
      // not exist.)
      kn->kn_kevent.flags = static_cast<std::uint16_t>(
          kn->kn_kevent.flags & ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT));
      // kqueue_register: "kn->kn_status = KN_DETACHED; if ((kev->flags &
      // EV_DISABLE) != 0) kn->kn_status |= KN_DISABLED;"
      kn->kn_status = (k.flags & EV_DISABLE) != 0 ? KN_DISABLED : 0;
      // kqueue_register: "if ((error = kn->kn_fop->f_attach(kn)) != 0) {
      // knote_drop_detached(kn, td); goto done; }": nothing registered.
      if (const int error = self().f_attach(*kn); error != 0) {
        knotes_.erase(key{k.ident, k.filter});
        return error;
      }
      // kqueue_register: "goto done_ev_add;"
    } else {
      kn = &found->second;
      // kqueue_register: "if (kev->flags & EV_DELETE) { ... knote_drop(kn,
      // td); goto done; }": nothing else of the change is applied.
      if ((k.flags & EV_DELETE) != 0) {
        knote_drop(*kn);
        return 0;
      }
      // kqueue_register: "if (kev->flags & EV_FORCEONESHOT) { kn->kn_flags
      // |= EV_ONESHOT; KNOTE_ACTIVATE(kn, 1); }"
      if ((k.flags & EV_FORCEONESHOT) != 0) {
        kn->kn_kevent.flags |= EV_ONESHOT;
        knote_activate(*kn);
      }
      // kqueue_register: "if ((kev->flags & EV_ENABLE) != 0) kn->kn_status
      // &= ~KN_DISABLED; else if ((kev->flags & EV_DISABLE) != 0)
      // kn->kn_status |= KN_DISABLED;": EV_ADD alone does not re-enable.
      // (older: the same two tests ran after the event check, disable first.)
      if ((k.flags & EV_ENABLE) != 0) {
        kn->kn_status &= ~KN_DISABLED;
      } else if ((k.flags & EV_DISABLE) != 0) {
        kn->kn_status |= KN_DISABLED;
      }
      // kqueue_register: "if ((kev->flags & EV_KEEPUDATA) == 0)
      // kn->kn_kevent.udata = kev->udata;": every non-delete change replaces
      // udata (older: unconditionally).
      if ((k.flags & EV_KEEPUDATA) == 0) kn->kn_kevent.udata = k.udata;
      // kqueue_register: "if (!fops->f_isfd && fops->f_touch != NULL) {
      // fops->f_touch(kn, kev, EVENT_REGISTER); } else { kn->kn_sfflags =
      // kev->fflags; kn->kn_sdata = kev->data; }". Nothing here touches
      // kn_kevent.flags: a re-EV_ADD does not change the stored
      // EV_CLEAR/EV_ONESHOT/EV_DISPATCH/EV_RECEIPT.
      if constexpr (Model::touch) {
        self().f_touch_register(*kn, k);
      } else {
        kn->kn_sfflags = k.fflags;
        kn->kn_sdata = k.data;
      }
    }

    // kqueue_register, done_ev_add: "if ((kn->kn_status & KN_DISABLED) == 0)
    // event = kn->kn_fop->f_event(kn, 0); else event = 0;"
    // (older: f_event was asked even for a disabled knote.)
    const bool event = (kn->kn_status & KN_DISABLED) == 0 && self().f_event(*kn);
    // kqueue_register: "if (event) kn->kn_status |= KN_ACTIVE;
    // if ((kn->kn_status & (KN_ACTIVE | KN_DISABLED | KN_QUEUED)) ==
    // KN_ACTIVE) knote_enqueue(kn);": KN_ACTIVE left from before also
    // enqueues, even when the event is gone (the scan then drops it); an
    // enable queues a knote that became active while disabled.
    if (event) kn->kn_status |= KN_ACTIVE;
    if ((kn->kn_status & (KN_ACTIVE | KN_DISABLED | KN_QUEUED)) == KN_ACTIVE) knote_enqueue(*kn);
    return 0;
  }

  // kqueue_scan with a zero timeout; returns td_retval[0] = maxevents - count.
  int kqueue_scan(int maxevents, std::vector<kev>& out) {
    // kqueue_scan: "if (maxevents == 0) goto done_nl;": returns 0 without
    // looking at the queue.
    if (maxevents == 0) return 0;
    int count = maxevents;
  retry:
    // kqueue_scan: "if (kq->kq_count == 0) { if (asbt == -1) error =
    // EWOULDBLOCK; ... else if (error == EWOULDBLOCK) error = 0; goto done; }"
    // (a zero timespec gives asbt = -1: no sleep).
    if (kq_count_ == 0) return maxevents - count;
    // kqueue_scan: "TAILQ_INSERT_TAIL(&kq->kq_head, marker, kn_tqe);": the
    // marker bounds this pass to the knotes queued when it started; knotes
    // re-queued at the tail come after it.
    kq_head_.push_back(nullptr);
    while (count != 0) {
      // kqueue_scan: "kn = TAILQ_FIRST(&kq->kq_head); ...
      // TAILQ_REMOVE(&kq->kq_head, kn, kn_tqe);": FIFO.
      Knote* kn = kq_head_.front();
      kq_head_.pop_front();
      // kqueue_scan: "if ((kn->kn_status & KN_DISABLED) == KN_DISABLED) {
      // kn->kn_status &= ~KN_QUEUED; kq->kq_count--; continue; }":
      // a disabled knote leaves the queue unreported (KN_ACTIVE is kept).
      if (kn != nullptr && (kn->kn_status & KN_DISABLED) != 0) {
        kn->kn_status &= ~KN_QUEUED;
        --kq_count_;
        continue;
      }
      // kqueue_scan: "if (kn == marker) { ... if (count == maxevents) goto
      // retry; goto done; }"
      if (kn == nullptr) {
        if (count == maxevents) goto retry;
        return maxevents - count;
      }
      if ((kn->kn_kevent.flags & EV_ONESHOT) != 0) {
        // kqueue_scan: "kn->kn_status &= ~KN_QUEUED; ... kq->kq_count--;
        // ... *kevp = kn->kn_kevent; knote_drop(kn, td);": no f_event
        // re-check and no f_touch: the stored kevent is reported as is (the
        // data and flags of the knote's last f_event call or activation),
        // then the knote is dropped (f_detach included).
        kn->kn_status &= ~KN_QUEUED;
        --kq_count_;
        out.push_back(kn->kn_kevent);
        knote_drop(*kn);
      } else {
        // kqueue_scan: "if (kn->kn_fop->f_event(kn, 0) == 0) {
        // kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE | KN_SCAN); ...
        // kq->kq_count--; ... continue; }": not active any more: dropped from
        // the queue, not reported, not counted.
        if (!self().f_event(*kn)) {
          kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE);
          --kq_count_;
          continue;
        }
        // kqueue_scan: "touch = (!kn->kn_fop->f_isfd && kn->kn_fop->f_touch
        // != NULL); ... if (touch) kn->kn_fop->f_touch(kn, kevp,
        // EVENT_PROCESS); else *kevp = kn->kn_kevent;"
        if constexpr (Model::touch) {
          out.push_back(self().f_touch_process(*kn));
        } else {
          out.push_back(kn->kn_kevent);
        }
        // kqueue_scan: "if (kn->kn_flags & (EV_CLEAR | EV_DISPATCH)) { if
        // (touch == 0 && kn->kn_flags & EV_CLEAR) { kn->kn_data = 0;
        // kn->kn_fflags = 0; } if (kn->kn_flags & EV_DISPATCH)
        // kn->kn_status |= KN_DISABLED; kn->kn_status &= ~(KN_QUEUED |
        // KN_ACTIVE); kq->kq_count--; } else TAILQ_INSERT_TAIL(&kq->kq_head,
        // kn, kn_tqe);": level-triggered knotes go back to the tail (behind
        // the marker).
        if ((kn->kn_kevent.flags & (EV_CLEAR | EV_DISPATCH)) != 0) {
          if (!Model::touch && (kn->kn_kevent.flags & EV_CLEAR) != 0) {
            kn->kn_kevent.data = 0;
            kn->kn_kevent.fflags = 0;
          }
          if ((kn->kn_kevent.flags & EV_DISPATCH) != 0) kn->kn_status |= KN_DISABLED;
          kn->kn_status &= ~(KN_QUEUED | KN_ACTIVE);
          --kq_count_;
        } else {
          kq_head_.push_back(kn);
        }
      }
      // kqueue_scan: "kevp++; nkev++; count--;": at most maxevents reported.
      --count;
    }
    // kqueue_scan: "TAILQ_REMOVE(&kq->kq_head, marker, kn_tqe);"
    kq_head_.remove(nullptr);
    // kqueue_scan: "td->td_retval[0] = maxevents - count;"
    return maxevents - count;
  }

  // knote_enqueue: "TAILQ_INSERT_TAIL(&kq->kq_head, kn, kn_tqe);
  // kn->kn_status |= KN_QUEUED; kq->kq_count++;"
  void knote_enqueue(Knote& kn) {
    kq_head_.push_back(&kn);
    kn.kn_status |= KN_QUEUED;
    ++kq_count_;
  }

  // knote_dequeue: "TAILQ_REMOVE(&kq->kq_head, kn, kn_tqe); kn->kn_status
  // &= ~KN_QUEUED; kq->kq_count--;"
  void knote_dequeue(Knote& kn) {
    kq_head_.remove(&kn);
    kn.kn_status &= ~KN_QUEUED;
    --kq_count_;
  }

  // KNOTE_ACTIVATE(kn, islock): "(kn)->kn_status |= KN_ACTIVE; if
  // (((kn)->kn_status & (KN_QUEUED | KN_DISABLED)) == 0) knote_enqueue(kn);":
  // a disabled knote becomes active but is not queued.
  void knote_activate(Knote& kn) {
    kn.kn_status |= KN_ACTIVE;
    if ((kn.kn_status & (KN_QUEUED | KN_DISABLED)) == 0) knote_enqueue(kn);
  }

  // knote_drop: "if ((kn->kn_status & KN_DETACHED) == 0)
  // kn->kn_fop->f_detach(kn);" then knote_drop_detached: "if (kn->kn_status
  // & KN_QUEUED) knote_dequeue(kn);" and the knote is freed.
  void knote_drop(Knote& kn) {
    self().f_detach(kn);
    if ((kn.kn_status & KN_QUEUED) != 0) knote_dequeue(kn);
    knotes_.erase(key{kn.kn_kevent.ident, kn.kn_kevent.filter});
  }

  std::map<key, Knote> knotes_;  // kq_knhash / kq_knlist; std::map keeps addresses stable
  std::list<Knote*> kq_head_;    // the active queue; nullptr is the scan marker
  std::size_t kq_count_ = 0;     // kq_count

 private:
  Model& self() { return static_cast<Model&>(*this); }
};

}  // namespace kqref

#endif  // KCONT_TESTS_KERN_EVENT_REFERENCE_HPP
