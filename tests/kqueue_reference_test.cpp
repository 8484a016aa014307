// kqueue_reference: pins the reference model (kqueue_reference.hpp) to
// scripts whose outcome the FreeBSD sources state. Each case names the
// function of sys/kern/kern_event.c (or the manual) it checks.
#include "kqueue_reference.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace {

using namespace kqref;

kev user(std::uintptr_t ident, std::uint16_t flags, std::uint32_t fflags = 0,
         std::int64_t data = 0, std::uintptr_t udata = 0) {
  kev k;
  k.ident = ident;
  k.filter = EVFILT_USER;
  k.flags = flags;
  k.fflags = fflags;
  k.data = data;
  k.udata = udata;
  return k;
}

kevent_outcome call(model& kq, std::initializer_list<kev> changes, std::size_t nevents) {
  const std::vector<kev> v(changes);
  return kq.kevent(v, nevents);
}

kevent_outcome poll(model& kq, std::size_t nevents = 8) { return kq.kevent({}, nevents); }

// The entry kqueue_kevent writes for a receipt or an error.
kev error_entry(kev change, std::int64_t error) {
  change.flags = EV_ERROR;
  change.data = error;
  return change;
}

}  // namespace

TEST_CASE("kqref.flag_values_from_event_h") {
  // sys/sys/event.h
  CHECK(EVFILT_USER == -11);
  CHECK(EV_ADD == 0x1);
  CHECK(EV_DELETE == 0x2);
  CHECK(EV_ENABLE == 0x4);
  CHECK(EV_DISABLE == 0x8);
  CHECK(EV_ONESHOT == 0x10);
  CHECK(EV_CLEAR == 0x20);
  CHECK(EV_RECEIPT == 0x40);
  CHECK(EV_DISPATCH == 0x80);
  CHECK(EV_FORCEONESHOT == 0x100);
  CHECK(EV_KEEPUDATA == 0x200);
  CHECK(EV_SYSFLAGS == 0xF000);
  CHECK(EV_DROP == 0x1000);
  CHECK(EV_FLAG1 == 0x2000);
  CHECK(EV_ERROR == 0x4000);
  CHECK(EV_FLAG2 == EV_ERROR);  // both 0x4000 in event.h
  CHECK(EV_EOF == 0x8000);
  CHECK(NOTE_FFNOP == 0u);
  CHECK(NOTE_FFAND == 0x40000000u);
  CHECK(NOTE_FFOR == 0x80000000u);
  CHECK(NOTE_FFCOPY == 0xc0000000u);
  CHECK(NOTE_FFCTRLMASK == 0xc0000000u);
  CHECK(NOTE_FFLAGSMASK == 0x00ffffffu);
  CHECK(NOTE_TRIGGER == 0x01000000u);
}

TEST_CASE("kqref.fflags_and_data_of_creating_add_kept") {
  // kqueue_register: "kn->kn_sfflags = kev->fflags; kn->kn_sdata = kev->data"
  // at creation; filt_usertouch EVENT_PROCESS reports kn_sfflags/kn_sdata.
  // A later change with NOTE_FFNOP keeps kn_sfflags, but every change sets
  // kn_sdata = kev->data (filt_usertouch EVENT_REGISTER).
  model kq;
  CHECK(call(kq, {user(1, EV_ADD | EV_CLEAR, 0x5, 7, 11)}, 0).ret == 0);
  CHECK(call(kq, {user(1, 0, NOTE_TRIGGER, 7, 11)}, 0).ret == 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == user(1, EV_CLEAR, 0x5, 7, 11));
}

TEST_CASE("kqref.data_replaced_by_every_change") {
  // filt_usertouch EVENT_REGISTER: "kn->kn_sdata = kev->data;" whatever the
  // change is, so a bare NOTE_TRIGGER with data 0 resets the saved data.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR, 0x5, 7)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER, 0)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].data == 0);
  CHECK(r.out[0].fflags == 0x5);
}

TEST_CASE("kqref.fflags_of_creating_add_stored_unmasked") {
  // kqueue_register stores kev->fflags whole at creation (no
  // NOTE_FFLAGSMASK, no FFCTRL interpretation) and filt_usertouch
  // EVENT_PROCESS copies kn_sfflags out unmasked.
  model kq;
  const std::uint32_t ff = NOTE_FFCOPY | NOTE_TRIGGER | 0x3;
  call(kq, {user(1, EV_ADD, ff)}, 0);
  CHECK(kq.queued() == 0);  // the NOTE_TRIGGER did not fire
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].fflags == ff);
}

TEST_CASE("kqref.trigger_at_add_does_not_fire") {
  // kqueue_register: "kev->fflags = 0; ... kn->kn_kevent = *kev;" before
  // f_attach; filt_userattach tests kn->kn_fflags (== 0) for NOTE_TRIGGER.
  model kq;
  const auto r = call(kq, {user(1, EV_ADD, NOTE_TRIGGER)}, 4);
  CHECK(r.ret == 0);
  CHECK(r.out.empty());
  CHECK(kq.registered() == 1);
  CHECK(kq.queued() == 0);
}

TEST_CASE("kqref.udata_replaced_by_trigger") {
  // kqueue_register: "if ((kev->flags & EV_KEEPUDATA) == 0)
  // kn->kn_kevent.udata = kev->udata;" for every change but EV_DELETE.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR, 0, 0, 100)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER, 0, 200)}, 0);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].udata == 200);
  // A change with no action at all replaces it too.
  call(kq, {user(1, 0, 0, 0, 300)}, 0);
  call(kq, {user(1, EV_KEEPUDATA, NOTE_TRIGGER, 0, 400)}, 0);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].udata == 300);
}

TEST_CASE("kqref.keepudata_with_add_is_einval") {
  // kqueue_register: "Reject an invalid flag pair early": EV_ADD|EV_KEEPUDATA.
  model kq;
  const kev c = user(1, EV_ADD | EV_KEEPUDATA, 0x7, 3, 9);
  const auto r = call(kq, {c}, 1);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == error_entry(c, EINVAL));
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.receipt_kept_in_reported_flags") {
  // kqueue_register: "kn->kn_kevent.flags &= ~(EV_ADD | EV_DELETE |
  // EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT)": EV_RECEIPT stays and comes
  // back in every report. Corroborated by FreeBSD tests/sys/kqueue/libkqueue
  // user.c, which expects kev.flags == EV_CLEAR after EV_ADD|EV_CLEAR.
  model kq;
  const auto a = call(kq, {user(1, EV_ADD | EV_RECEIPT | EV_CLEAR | EV_DISPATCH, 0, 0, 5)}, 1);
  CHECK(a.ret == 1);
  call(kq, {user(1, EV_KEEPUDATA, NOTE_TRIGGER)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == (EV_RECEIPT | EV_CLEAR | EV_DISPATCH));
  CHECK(r.out[0].udata == 5);
}

TEST_CASE("kqref.receipt_entry_is_ev_error_alone") {
  // kqueue_kevent: "kevp->flags = EV_ERROR; kevp->data = error;": not the
  // change's flags | EV_ERROR. For a creation kqueue_register zeroed
  // kev->fflags and kev->data first; for a modification filt_usertouch
  // masked kev->fflags with NOTE_FFLAGSMASK.
  model kq;
  const kev add = user(1, EV_ADD | EV_RECEIPT | EV_CLEAR, 0x42, 9, 77);
  auto r = call(kq, {add}, 4);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == user(1, EV_ERROR, 0, 0, 77));
  const kev mod = user(1, EV_RECEIPT, NOTE_FFOR | NOTE_TRIGGER | 0x1, 5, 78);
  r = call(kq, {mod}, 4);
  CHECK(r.ret == 1);  // a receipt counts as an error entry: no scan
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == user(1, EV_ERROR, 0x1, 0, 78));
  CHECK(kq.queued() == 1);
}

TEST_CASE("kqref.error_entry_keeps_the_change_fields") {
  // kqueue_register returns ENOENT before touching kev: the entry is the
  // change with flags = EV_ERROR and data = ENOENT (kqueue_kevent).
  model kq;
  const kev c = user(5, EV_ENABLE | EV_CLEAR, 0x123, 8, 99);
  const auto r = call(kq, {c}, 2);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == error_entry(c, ENOENT));
}

TEST_CASE("kqref.enoent_without_add") {
  // kqueue_register: "No matching knote and the EV_ADD flag is not set."
  model kq;
  CHECK(call(kq, {user(1, EV_DELETE)}, 1).out.at(0).data == ENOENT);
  CHECK(call(kq, {user(1, 0, NOTE_TRIGGER)}, 1).out.at(0).data == ENOENT);
  CHECK(call(kq, {user(1, EV_ENABLE)}, 1).out.at(0).data == ENOENT);
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.error_with_no_room_is_minus_one") {
  // kqueue_kevent: "if (nevents == 0) return (error);" and kqueue.2 RETURN
  // VALUES: "Otherwise, -1 will be returned, and errno will be set".
  model kq;
  const auto r = call(kq, {user(1, EV_DELETE)}, 0);
  CHECK(r.ret == -1);
  CHECK(r.err == ENOENT);
  CHECK(r.out.empty());
}

TEST_CASE("kqref.full_eventlist_stops_changelist") {
  // kqueue_kevent: the first error takes the only slot (nevents-- to 0); the
  // second error returns at once: -1/ENOENT with one entry already written,
  // and the third change (an EV_ADD) is never registered.
  model kq;
  const kev bad1 = user(1, EV_DELETE, 0, 0, 1);
  const auto r = call(kq, {bad1, user(2, EV_DELETE), user(3, EV_ADD)}, 1);
  CHECK(r.ret == -1);
  CHECK(r.err == ENOENT);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == error_entry(bad1, ENOENT));
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.receipt_with_no_room_returns_zero_and_stops") {
  // kqueue_kevent: a successful EV_RECEIPT change with nevents == 0 does
  // "return (error)" with error == 0: kevent() returns td_retval[0], which
  // cpu_fetch_syscall_args set to 0, not nerrors. The change itself was
  // registered; the ones after it are not processed (kqueue.2 EV_RECEIPT).
  model kq;
  const auto r = call(kq,
                      {user(1, EV_ADD | EV_RECEIPT), user(2, EV_ADD | EV_RECEIPT),
                       user(3, EV_ADD)},
                      1);
  CHECK(r.ret == 0);
  CHECK(r.err == 0);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == user(1, EV_ERROR));
  CHECK(kq.registered() == 2);  // 1 and 2, not 3
}

TEST_CASE("kqref.errors_mean_no_scan") {
  // kqueue_kevent: "if (nerrors) { td->td_retval[0] = nerrors; return (0); }"
  model kq;
  call(kq, {user(1, EV_ADD, 0, 0, 0), user(1, 0, NOTE_TRIGGER)}, 0);
  REQUIRE(kq.queued() == 1);
  const auto r = call(kq, {user(9, EV_DELETE)}, 4);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].flags == EV_ERROR);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.filter_zero_skipped") {
  // kqueue_kevent: "if (!kevp->filter) continue;": no receipt, no error.
  model kq;
  kev z = user(1, EV_ADD | EV_RECEIPT);
  z.filter = 0;
  const auto r = call(kq, {z}, 4);
  CHECK(r.ret == 0);
  CHECK(r.out.empty());
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.unknown_filter_is_einval") {
  // kqueue_register: "fops = kqueue_fo_find(filt); if (fops == NULL) return
  // EINVAL;" (every filter but EVFILT_USER is unknown to this model).
  model kq;
  kev t = user(1, EV_ADD, 0, 1000);
  t.filter = -7;
  auto r = call(kq, {t}, 1);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == error_entry(t, EINVAL));
  t.filter = 3;
  r = call(kq, {t}, 0);
  CHECK(r.ret == -1);
  CHECK(r.err == EINVAL);
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.sysflags_stripped_from_input") {
  // kqueue_kevent: "kevp->flags &= ~EV_SYSFLAGS;" before kqueue_register, so
  // none of 0xF000 is stored or reported.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR | EV_EOF | EV_ERROR | EV_FLAG1 | EV_DROP)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == EV_CLEAR);
}

TEST_CASE("kqref.enable_and_disable_together_is_einval") {
  // kqueue_register (current main, FreeBSD 12 on): "if ((kev->flags &
  // (EV_ENABLE | EV_DISABLE)) == (EV_ENABLE | EV_DISABLE)) return (EINVAL);"
  // before anything else, so nothing of the change is applied. (Older
  // releases applied EV_DISABLE then EV_ENABLE: enabled.)
  model kq;
  call(kq, {user(1, EV_ADD | EV_DISABLE, 0, 0, 1)}, 0);
  const kev both = user(1, EV_ENABLE | EV_DISABLE, NOTE_TRIGGER, 0, 2);
  const auto r = call(kq, {both}, 1);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == error_entry(both, EINVAL));
  // Still disabled, not triggered, udata not replaced.
  call(kq, {user(1, EV_ENABLE | EV_KEEPUDATA)}, 0);
  CHECK(poll(kq).ret == 0);
  CHECK(call(kq, {user(1, EV_ADD | EV_ENABLE | EV_DISABLE)}, 0).err == EINVAL);
}

TEST_CASE("kqref.readd_does_not_reenable") {
  // kqueue_register: only "(kev->flags & EV_ENABLE) != 0" clears
  // KN_DISABLED; a re-EV_ADD of an existing knote does not.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR)}, 0);
  call(kq, {user(1, EV_DISABLE)}, 0);
  call(kq, {user(1, EV_ADD, NOTE_TRIGGER)}, 0);
  CHECK(kq.queued() == 0);
  CHECK(poll(kq).ret == 0);
  call(kq, {user(1, EV_ENABLE)}, 0);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.readd_does_not_change_stored_flags") {
  // kqueue_register: an existing knote's kn_kevent.flags are not assigned
  // (only EV_FORCEONESHOT ORs in EV_ONESHOT). A re-add with EV_ONESHOT and
  // without EV_CLEAR keeps the creating EV_CLEAR: FreeBSD's own
  // libkqueue/user.c disable_and_enable() relies on this (EV_ADD on ident 1
  // made earlier with EV_CLEAR, expects flags == EV_CLEAR).
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR)}, 0);
  call(kq, {user(1, EV_ADD | EV_ONESHOT | EV_DISPATCH | EV_RECEIPT, NOTE_TRIGGER)}, 1);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == EV_CLEAR);
  CHECK(kq.registered() == 1);  // not dropped as a oneshot
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq).ret == 1);  // not disabled as a dispatch
}

TEST_CASE("kqref.add_disabled") {
  // kqueue_register: "if ((kev->flags & EV_DISABLE) != 0) kn->kn_status |=
  // KN_DISABLED;" at creation; done_ev_add asks f_event only when enabled.
  model kq;
  call(kq, {user(1, EV_ADD | EV_DISABLE)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(kq.queued() == 0);
  call(kq, {user(1, EV_ENABLE)}, 0);  // kn_hookid is still 1
  CHECK(kq.queued() == 1);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == 0);  // EV_DISABLE is not stored
}

TEST_CASE("kqref.delete_drops_and_dequeues") {
  // kqueue_register: "if (kev->flags & EV_DELETE) { ... knote_drop(kn, td);"
  // knote_drop_detached: "if (kn->kn_status & KN_QUEUED) knote_dequeue(kn);"
  model kq;
  call(kq, {user(1, EV_ADD), user(1, 0, NOTE_TRIGGER)}, 0);
  REQUIRE(kq.queued() == 1);
  CHECK(call(kq, {user(1, EV_DELETE | EV_ADD)}, 0).ret == 0);  // EV_DELETE wins on an existing knote
  CHECK(kq.registered() == 0);
  CHECK(kq.queued() == 0);
  CHECK(poll(kq).ret == 0);
  CHECK(call(kq, {user(1, EV_DELETE)}, 0).err == ENOENT);
}

TEST_CASE("kqref.add_with_delete_creates") {
  // kqueue_register: no knote and EV_ADD: created; the stored flags drop
  // EV_DELETE.
  model kq;
  CHECK(call(kq, {user(1, EV_ADD | EV_DELETE | EV_CLEAR)}, 0).ret == 0);
  CHECK(kq.registered() == 1);
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == EV_CLEAR);
}

TEST_CASE("kqref.oneshot") {
  // kqueue_scan: EV_ONESHOT: "*kevp = kn->kn_kevent; knote_drop(kn, td);":
  // reported without f_touch, so fflags/data are kn_fflags/kn_data (0 for
  // EVFILT_USER), and the knote is gone. Matches FreeBSD libkqueue/user.c
  // oneshot(): expects flags EV_ONESHOT, fflags 0.
  model kq;
  call(kq, {user(2, EV_ADD | EV_ONESHOT, 0x5, 9, 1)}, 0);
  call(kq, {user(2, 0, NOTE_TRIGGER | NOTE_FFOR | 0x2, 4, 1)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == user(2, EV_ONESHOT, 0, 0, 1));
  CHECK(kq.registered() == 0);
  CHECK(kq.queued() == 0);
  CHECK(poll(kq).ret == 0);
}

TEST_CASE("kqref.oneshot_not_rechecked") {
  // kqueue_scan: the EV_ONESHOT branch does not call f_event: a queued
  // oneshot whose trigger was reset (EV_CLEAR in a change,
  // filt_usertouch EVENT_REGISTER) is still reported.
  model kq;
  call(kq, {user(1, EV_ADD | EV_ONESHOT), user(1, 0, NOTE_TRIGGER)}, 0);
  call(kq, {user(1, EV_CLEAR)}, 0);
  const auto r = poll(kq);
  CHECK(r.ret == 1);
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.forceoneshot") {
  // kqueue_register: "if (kev->flags & EV_FORCEONESHOT) { kn->kn_flags |=
  // EV_ONESHOT; KNOTE_ACTIVATE(kn, 1); }": queued without a trigger,
  // reported once with EV_ONESHOT in the flags, then dropped.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR, 0, 0, 3)}, 0);
  call(kq, {user(1, EV_FORCEONESHOT, 0, 0, 4)}, 0);
  CHECK(kq.queued() == 1);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == user(1, EV_CLEAR | EV_ONESHOT, 0, 0, 4));
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.clear") {
  // filt_usertouch EVENT_PROCESS: "if (kn->kn_flags & EV_CLEAR)
  // kn->kn_hookid = 0"; kqueue_scan: EV_CLEAR knotes leave the queue after a
  // report.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR, 0x8), user(1, 0, NOTE_TRIGGER)}, 0);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].fflags == 0x8);
  CHECK(kq.queued() == 0);
  CHECK(poll(kq).ret == 0);
  // A new trigger fires again, with the saved fflags kept.
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].fflags == 0x8);
}

TEST_CASE("kqref.level_triggered_reported_every_scan") {
  // kqueue_scan: neither EV_CLEAR nor EV_DISPATCH: "TAILQ_INSERT_TAIL(
  // &kq->kq_head, kn, kn_tqe)": stays queued while filt_user returns 1.
  model kq;
  call(kq, {user(1, EV_ADD), user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq).ret == 1);
  CHECK(poll(kq).ret == 1);
  CHECK(kq.queued() == 1);
}

TEST_CASE("kqref.change_with_clear_untriggers") {
  // filt_usertouch EVENT_REGISTER: "if (kev->flags & EV_CLEAR) {
  // kn->kn_hookid = 0; ...}" even with NOTE_TRIGGER in the same change;
  // kqueue_register leaves the knote queued (KN_ACTIVE from before) and
  // kqueue_scan drops it on "f_event(kn, 0) == 0" without reporting it.
  model kq;
  call(kq, {user(1, EV_ADD), user(1, 0, NOTE_TRIGGER)}, 0);
  REQUIRE(kq.queued() == 1);
  call(kq, {user(1, EV_CLEAR, NOTE_TRIGGER)}, 0);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq).ret == 0);
  CHECK(kq.queued() == 0);
  // The knote's own flags did not gain EV_CLEAR: level-triggered still.
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq).ret == 1);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.dispatch") {
  // kqueue_scan: "if (kn->kn_flags & EV_DISPATCH) kn->kn_status |=
  // KN_DISABLED;" after the report; kqueue_register: EV_ENABLE clears it and
  // done_ev_add re-checks filt_user, whose kn_hookid is still 1 without
  // EV_CLEAR, so the knote fires again on enable.
  model kq;
  call(kq, {user(1, EV_ADD | EV_DISPATCH), user(1, 0, NOTE_TRIGGER)}, 0);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].flags == EV_DISPATCH);
  CHECK(kq.queued() == 0);
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(kq.queued() == 0);  // disabled
  CHECK(poll(kq).ret == 0);
  call(kq, {user(1, EV_ENABLE)}, 0);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.dispatch_with_clear_needs_new_trigger") {
  // EV_DISPATCH|EV_CLEAR: the report resets kn_hookid (filt_usertouch
  // EVENT_PROCESS), so EV_ENABLE alone does not queue it.
  model kq;
  call(kq, {user(1, EV_ADD | EV_DISPATCH | EV_CLEAR), user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq).ret == 1);
  call(kq, {user(1, EV_ENABLE)}, 0);
  CHECK(kq.queued() == 0);
  call(kq, {user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.disabled_knote_dropped_from_queue_by_scan") {
  // kqueue_register: EV_DISABLE sets KN_DISABLED but does not dequeue;
  // kqueue_scan: "if ((kn->kn_status & KN_DISABLED) == KN_DISABLED) {
  // kn->kn_status &= ~KN_QUEUED; kq->kq_count--; continue; }"
  model kq;
  call(kq, {user(1, EV_ADD), user(1, 0, NOTE_TRIGGER)}, 0);
  call(kq, {user(1, EV_DISABLE)}, 0);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq).ret == 0);
  CHECK(kq.queued() == 0);
  call(kq, {user(1, EV_ENABLE)}, 0);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq).ret == 1);
}

TEST_CASE("kqref.ffand_ffor_ffcopy") {
  // filt_usertouch EVENT_REGISTER: "kev->fflags &= NOTE_FFLAGSMASK;" then
  // FFNOP: nothing, FFAND: &=, FFOR: |=, FFCOPY: =. The control bits and
  // NOTE_TRIGGER never reach kn_sfflags this way.
  model kq;
  call(kq, {user(1, EV_ADD)}, 0);
  auto sfflags = [&kq]() {
    const auto r = call(kq, {user(1, 0, NOTE_TRIGGER)}, 4);  // FFNOP
    REQUIRE(r.ret == 1);
    return r.out[0].fflags;
  };
  CHECK(sfflags() == 0u);
  call(kq, {user(1, 0, NOTE_FFOR | 0x3)}, 0);
  CHECK(sfflags() == 0x3u);
  call(kq, {user(1, 0, NOTE_FFOR | 0x30)}, 0);
  CHECK(sfflags() == 0x33u);
  call(kq, {user(1, 0, NOTE_FFAND | 0x12)}, 0);
  CHECK(sfflags() == 0x12u);
  call(kq, {user(1, 0, NOTE_FFCOPY | NOTE_TRIGGER | 0x00ff00ff)}, 0);
  CHECK(sfflags() == 0x00ff00ffu);
  call(kq, {user(1, 0, NOTE_FFNOP | 0x1)}, 0);
  CHECK(sfflags() == 0x00ff00ffu);
  call(kq, {user(1, 0, NOTE_FFAND | 0xff000001u)}, 0);  // the mask drops the high byte
  CHECK(sfflags() == 0x1u);
}

TEST_CASE("kqref.scan_fifo_order") {
  // knote_enqueue: TAILQ_INSERT_TAIL; kqueue_scan: TAILQ_FIRST.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR), user(2, EV_ADD | EV_CLEAR), user(3, EV_ADD | EV_CLEAR)}, 0);
  call(kq, {user(3, 0, NOTE_TRIGGER), user(1, 0, NOTE_TRIGGER), user(2, 0, NOTE_TRIGGER)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 3);
  CHECK(r.out[0].ident == 3);
  CHECK(r.out[1].ident == 1);
  CHECK(r.out[2].ident == 2);
}

TEST_CASE("kqref.scan_at_most_nevents") {
  // kqueue_scan: "while (count)": stops after maxevents; the rest stay
  // queued in order.
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR), user(2, EV_ADD | EV_CLEAR), user(3, EV_ADD | EV_CLEAR)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER), user(2, 0, NOTE_TRIGGER), user(3, 0, NOTE_TRIGGER)}, 0);
  auto r = poll(kq, 2);
  REQUIRE(r.ret == 2);
  CHECK(r.out[0].ident == 1);
  CHECK(r.out[1].ident == 2);
  CHECK(kq.queued() == 1);
  r = poll(kq, 2);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].ident == 3);
}

TEST_CASE("kqref.scan_bounded_by_marker") {
  // kqueue_scan: the marker inserted at the tail ends the pass; a
  // level-triggered knote re-queued at the tail lands behind it, so one
  // kevent() reports each knote at most once even with room for more.
  model kq;
  call(kq, {user(1, EV_ADD), user(2, EV_ADD)}, 0);
  call(kq, {user(1, 0, NOTE_TRIGGER), user(2, 0, NOTE_TRIGGER)}, 0);
  auto r = poll(kq, 10);
  REQUIRE(r.ret == 2);
  CHECK(r.out[0].ident == 1);
  CHECK(r.out[1].ident == 2);
  // With room for one, the re-queued knotes take turns.
  r = poll(kq, 1);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].ident == 1);
  r = poll(kq, 1);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].ident == 2);
  r = poll(kq, 1);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0].ident == 1);
}

TEST_CASE("kqref.nevents_zero_does_not_scan") {
  // kqueue_scan: "if (maxevents == 0) goto done_nl;"
  model kq;
  call(kq, {user(1, EV_ADD | EV_CLEAR), user(1, 0, NOTE_TRIGGER)}, 0);
  CHECK(poll(kq, 0).ret == 0);
  CHECK(kq.queued() == 1);
  CHECK(poll(kq, 1).ret == 1);
}

TEST_CASE("kqref.changes_then_scan_in_one_call") {
  // kqueue_kevent: with no error or receipt the same call scans with the
  // whole nevents after applying every change.
  model kq;
  const auto r = call(kq, {user(1, EV_ADD | EV_CLEAR, 0x4, 0, 8), user(1, 0, NOTE_TRIGGER, 6, 8)}, 4);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == user(1, EV_CLEAR, 0x4, 6, 8));
}
