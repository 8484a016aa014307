// timer_reference: pins the EVFILT_TIMER reference model (timer_reference.hpp)
// to scripts whose outcome FreeBSD's sys/kern/kern_event.c states. Each case
// names the function it checks; "MODEL:" marks the model's stated departures
// (exact nanoseconds, missed periods counted, one clock epoch).
#include "timer_reference.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace {

using namespace kqref;

constexpr std::int64_t ms = 1000000;  // nanoseconds

kev timer(std::uintptr_t ident, std::uint16_t flags, std::int64_t data = 0,
          std::uint32_t fflags = 0, std::uintptr_t udata = 0) {
  kev k;
  k.ident = ident;
  k.filter = EVFILT_TIMER;
  k.flags = flags;
  k.fflags = fflags;
  k.data = data;
  k.udata = udata;
  return k;
}

kevent_outcome call(timer_model& kq, std::initializer_list<kev> changes, std::size_t nevents) {
  const std::vector<kev> v(changes);
  return kq.kevent(v, nevents);
}

kevent_outcome poll(timer_model& kq, std::size_t nevents = 8) { return kq.kevent({}, nevents); }

// What a scan reports for a timer: the stored kevent, fflags 0.
kev event(std::uintptr_t ident, std::uint16_t flags, std::int64_t data, std::uintptr_t udata = 0) {
  return timer(ident, flags, data, 0, udata);
}

}  // namespace

TEST_CASE("kqref.timer_values_from_event_h") {
  // sys/sys/event.h
  CHECK(EVFILT_TIMER == -7);
  CHECK(NOTE_SECONDS == 0x1u);
  CHECK(NOTE_MSECONDS == 0x2u);
  CHECK(NOTE_USECONDS == 0x4u);
  CHECK(NOTE_NSECONDS == 0x8u);
  CHECK(NOTE_ABSTIME == 0x10u);
  CHECK(NOTE_TIMER_PRECMASK == 0xfu);
}

TEST_CASE("kqref.timer_units_convert_data") {
  // timer2sbintime: "case NOTE_MSECONDS: /* FALLTHROUGH */ case 0:": no unit
  // is milliseconds; "default: break; } return (-1);": two units are none.
  CHECK(timer2ns(3, NOTE_SECONDS) == 3000000000);
  CHECK(timer2ns(3, NOTE_MSECONDS) == 3 * ms);
  CHECK(timer2ns(3, 0) == 3 * ms);
  CHECK(timer2ns(3, NOTE_USECONDS) == 3000);
  CHECK(timer2ns(3, NOTE_NSECONDS) == 3);
  CHECK(timer2ns(3, NOTE_ABSTIME | NOTE_USECONDS) == 3000);
  CHECK(timer2ns(3, NOTE_SECONDS | NOTE_MSECONDS) == -1);
  CHECK(timer2ns(3, NOTE_USECONDS | NOTE_NSECONDS) == -1);
  // MODEL: saturated at INT64_MAX ns (FreeBSD: at SBT_MAX), never overflows.
  CHECK(timer2ns(INT64_MAX, NOTE_SECONDS) == INT64_MAX);
  CHECK(timer2ns(INT64_MAX / 1000 + 1, NOTE_USECONDS) == INT64_MAX);
  CHECK(timer2ns(INT64_MAX / 1000, NOTE_USECONDS) == INT64_MAX / 1000 * 1000);
  CHECK(timer2ns(INT64_MAX, NOTE_NSECONDS) == INT64_MAX);
}

TEST_CASE("kqref.timer_negative_data_is_einval") {
  // filt_timervalidate: "if (kn->kn_sdata < 0) return (EINVAL);" from
  // filt_timerattach; kqueue_register: "knote_drop_detached(kn, td);" and the
  // change (its fflags and data zeroed before the attach) comes back EV_ERROR.
  timer_model kq;
  auto r = call(kq, {timer(1, EV_ADD, -1, NOTE_USECONDS, 9)}, 4);
  CHECK(r.ret == 1);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0] == timer(1, EV_ERROR, EINVAL, 0, 9));
  CHECK(kq.registered() == 0);
  CHECK(kq.armed() == 0);
  // No room for the entry: kevent() fails with the errno.
  r = call(kq, {timer(1, EV_ADD, -5)}, 0);
  CHECK(r.ret == -1);
  CHECK(r.err == EINVAL);
}

TEST_CASE("kqref.timer_unknown_fflags_are_einval") {
  // filt_timervalidate: "if ((kn->kn_sfflags & ~(NOTE_TIMER_PRECMASK |
  // NOTE_ABSTIME)) != 0) return (EINVAL);" and "*to =
  // timer2sbintime(...); if (*to < 0) return (EINVAL);" (two units).
  timer_model kq;
  auto r = call(kq, {timer(1, EV_ADD, 5, 0x20), timer(2, EV_ADD, 5, NOTE_SECONDS | NOTE_NSECONDS),
                     timer(3, EV_ADD, 5, NOTE_ABSTIME | NOTE_NSECONDS)},
                4);
  CHECK(r.ret == 2);
  REQUIRE(r.out.size() == 2);
  CHECK(r.out[0] == timer(1, EV_ERROR, EINVAL));
  CHECK(r.out[1] == timer(2, EV_ERROR, EINVAL));
  CHECK(kq.registered() == 1);
}

TEST_CASE("kqref.timer_zero_data") {
  // filt_timervalidate: "if (kn->kn_sdata == 0 && (kn->kn_flags &
  // EV_ONESHOT) == 0) kn->kn_sdata = 1;": a periodic 0 is one unit; a
  // one-shot 0 is due now (filt_timerstart: next = 0 + sbinuptime()).
  timer_model kq;
  kq.set_time(1000);
  call(kq, {timer(1, EV_ADD, 0), timer(2, EV_ADD | EV_ONESHOT, 0),
            timer(3, EV_ADD, 0, NOTE_NSECONDS)},
       0);
  CHECK(kq.deadline_of(1) == 1000 + ms);
  CHECK(kq.deadline_of(2) == 1000);
  CHECK(kq.deadline_of(3) == 1001);
  CHECK(kq.tick() == 1);  // the one-shot, at the time it was added
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(2, EV_ONESHOT | EV_CLEAR, 1));
}

TEST_CASE("kqref.timer_deadline_saturates") {
  // timer2sbintime saturates (SBT_MAX); MODEL: at INT64_MAX ns, and now +
  // period saturates too: such a timer never fires before INT64_MAX.
  timer_model kq;
  kq.set_time(std::int64_t{1} << 40);
  call(kq, {timer(1, EV_ADD, INT64_MAX, NOTE_SECONDS), timer(2, EV_ADD, INT64_MAX - 5, NOTE_NSECONDS)},
       0);
  CHECK(kq.deadline_of(1) == INT64_MAX);
  CHECK(kq.deadline_of(2) == INT64_MAX);
  CHECK(kq.tick(std::int64_t{1} << 62) == 0);
  // Fired at INT64_MAX itself, once: the re-armed deadline saturates again
  // but a tick fires each callout at most once.
  CHECK(kq.tick(INT64_MAX) == 2);
  CHECK(kq.data_of(1) == 1);
  CHECK(kq.deadline_of(1) == INT64_MAX);
}

TEST_CASE("kqref.timer_attach_forces_ev_clear_unless_abstime") {
  // filt_timerattach: "if ((kn->kn_sfflags & NOTE_ABSTIME) == 0)
  // kn->kn_flags |= EV_CLEAR; /* automatically set */".
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10), timer(2, EV_ADD, 10 * ms, NOTE_ABSTIME | NOTE_NSECONDS)}, 0);
  kq.tick(10 * ms);
  auto r = poll(kq);
  REQUIRE(r.ret == 2);
  CHECK(r.out[0] == event(1, EV_CLEAR, 1));
  CHECK(r.out[1] == event(2, 0, 1));
  // Not EV_CLEAR: filt_timertouch EVENT_PROCESS keeps kn_data and
  // kqueue_scan puts it back on the queue: the absolute timer is reported at
  // every scan, with the same count, while timer 1 was cleared.
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(2, 0, 1));
  CHECK(kq.queued() == 1);
}

TEST_CASE("kqref.timer_abstime_fires_once") {
  // filt_timerstart: "if ((kn->kn_sfflags & NOTE_ABSTIME) != 0) { kc->next =
  // to; kc->to = 0; }"; filt_timerexpire_l: "if (... || kc->to == 0) {
  // kn->kn_data++; KNOTE_ACTIVATE(kn, 0); return; }": one expiration, no
  // reschedule, the knote stays registered (not EV_ONESHOT).
  timer_model kq;
  kq.set_time(5 * ms);
  call(kq, {timer(1, EV_ADD | EV_CLEAR, 7, NOTE_ABSTIME)}, 0);  // 7 ms since the epoch
  CHECK(kq.deadline_of(1) == 7 * ms);
  CHECK(kq.tick(7 * ms - 1) == 0);
  CHECK(kq.tick(100 * ms) == 1);
  CHECK(kq.data_of(1) == 1);  // one, however late
  CHECK(kq.armed() == 0);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR, 1));
  CHECK(kq.tick(1000 * ms) == 0);
  CHECK(poll(kq).ret == 0);
  CHECK(kq.registered() == 1);
  // A time already past is due at the next tick (the callout is scheduled
  // in the past; FreeBSD: "*to = MAX(0, *to - sbt)").
  call(kq, {timer(2, EV_ADD, 1, NOTE_ABSTIME | NOTE_SECONDS)}, 0);
  CHECK(kq.deadline_of(2) == 1000000000);
  CHECK(kq.tick() == 1);
}

TEST_CASE("kqref.timer_fires_at_its_deadline_never_before") {
  // filt_timerstart: "kc->next = to + sbinuptime();"; the callout runs at or
  // after kc->next (C_ABSOLUTE); filt_timerexpire_l counts "if (now >=
  // kc->next)".
  timer_model kq;
  kq.set_time(3);
  call(kq, {timer(1, EV_ADD, 10)}, 0);
  CHECK(kq.deadline_of(1) == 3 + 10 * ms);
  CHECK(kq.tick(3 + 10 * ms - 1) == 0);
  CHECK(poll(kq).ret == 0);
  CHECK(kq.tick(3 + 10 * ms) == 1);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR, 1));
  CHECK(kq.deadline_of(1) == 3 + 20 * ms);  // periodic: re-armed one period on
}

TEST_CASE("kqref.timer_missed_periods_counted") {
  // filt_timerexpire_l adds "delta = (now - kc->next) / kc->to; if (delta ==
  // 0) delta = 1;": due at 10 with period 10, run at 35, FreeBSD adds 2 and
  // re-arms at now + to = 45. MODEL: boundaries 10, 20, 30 all passed: 3,
  // and the phase is kept: next at 40.
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  CHECK(kq.tick(35) == 1);
  CHECK(kq.data_of(1) == 3);
  CHECK(kq.deadline_of(1) == 40);
  // Exactly on a boundary: 40, 50, 60 -> 3 more; next at 70.
  CHECK(kq.tick(60) == 1);
  CHECK(kq.data_of(1) == 6);
  CHECK(kq.deadline_of(1) == 70);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR, 6));
  CHECK(kq.data_of(1) == 0);  // EVENT_PROCESS with EV_CLEAR: "kn->kn_data = 0"
}

TEST_CASE("kqref.timer_readd_rearms_and_throws_away_expirations") {
  // filt_timertouch EVENT_REGISTER with EV_ADD: "callout_drain ... if
  // (kn->kn_status & KN_QUEUED) knote_dequeue(kn); kn->kn_status &=
  // ~KN_ACTIVE; kn->kn_data = 0; ... kn->kn_sfflags = kev->fflags;
  // kn->kn_sdata = kev->data; ... filt_timerstart(kn, to);"
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS, 1)}, 0);
  kq.tick(25);
  CHECK(kq.queued() == 1);
  kq.set_time(27);
  const auto r = call(kq, {timer(1, EV_ADD | EV_RECEIPT, 3, NOTE_USECONDS, 2)}, 4);
  REQUIRE(r.ret == 1);
  // The receipt shows the change as given (not zeroed: an existing knote).
  CHECK(r.out[0] == timer(1, EV_ERROR, 0, NOTE_USECONDS, 2));
  CHECK(kq.queued() == 0);
  CHECK(kq.data_of(1) == 0);
  CHECK(kq.deadline_of(1) == 27 + 3000);
  kq.tick(27 + 3000);
  const auto e = poll(kq);
  REQUIRE(e.ret == 1);
  // kn_flags kept from the creation (EV_CLEAR forced; the re-add's
  // EV_RECEIPT does not join them); udata replaced by kqueue_register.
  CHECK(e.out[0] == event(1, EV_CLEAR, 1, 2));
}

TEST_CASE("kqref.timer_change_without_add_keeps_the_timer") {
  // filt_timertouch: "if (kev->flags & EV_ADD) {" only: EV_ENABLE,
  // EV_DISABLE or a bare change neither re-arm nor reset the count, and the
  // change's data/fflags are ignored (kqueue_register's "kn_sfflags =
  // kev->fflags" is for filters without f_touch).
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  kq.tick(10);
  call(kq, {timer(1, 0, 999, NOTE_SECONDS, 5), timer(1, EV_ENABLE, -1)}, 0);
  CHECK(kq.deadline_of(1) == 20);
  CHECK(kq.data_of(1) == 1);
  CHECK(kq.queued() == 1);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR, 1, 0));  // udata of the last change
}

TEST_CASE("kqref.timer_invalid_readd_leaves_an_error_event") {
  // filt_timertouch: "error = filt_timervalidate(kn, &to); if (error != 0)
  // { kn->kn_flags |= EV_ERROR; kn->kn_data = error; }": kqueue_register
  // returns 0 (no EV_ERROR entry for the change); the knote has no callout
  // and filt_timer ("kn->kn_data != 0") reports it: EV_ERROR, data EINVAL.
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  auto r = call(kq, {timer(1, EV_ADD, -3)}, 0);
  CHECK(r.ret == 0);
  CHECK(kq.armed() == 0);
  CHECK(kq.registered() == 1);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR | EV_ERROR, EINVAL));
  // EV_ERROR stays in kn_flags after a valid re-add.
  call(kq, {timer(1, EV_ADD, 5, NOTE_NSECONDS)}, 0);
  kq.tick(5);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR | EV_ERROR, 1));
}

TEST_CASE("kqref.timer_disabled_keeps_counting") {
  // kqueue_register: EV_DISABLE sets KN_DISABLED and leaves the callout;
  // filt_timerexpire_l counts and KNOTE_ACTIVATE does not queue a disabled
  // knote; EV_ENABLE: done_ev_add's "event = kn->kn_fop->f_event(kn, 0)"
  // then knote_enqueue.
  timer_model kq;
  call(kq, {timer(1, EV_ADD | EV_DISABLE, 10, NOTE_NSECONDS), timer(2, EV_ADD, 10, NOTE_NSECONDS)},
       0);
  kq.tick(10);
  call(kq, {timer(2, EV_DISABLE)}, 0);
  CHECK(kq.queued() == 1);  // timer 2 stays queued until a scan meets it
  kq.tick(30);
  CHECK(poll(kq).ret == 0);  // the scan drops the disabled knote unreported
  CHECK(kq.queued() == 0);
  CHECK(kq.data_of(1) == 3);
  CHECK(kq.data_of(2) == 3);
  call(kq, {timer(1, EV_ENABLE), timer(2, EV_ENABLE)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 2);
  CHECK(r.out[0] == event(1, EV_CLEAR, 3));
  CHECK(r.out[1] == event(2, EV_CLEAR, 3));
}

TEST_CASE("kqref.timer_dispatch_disables_after_report") {
  // kqueue_scan: "if (kn->kn_flags & EV_DISPATCH) kn->kn_status |=
  // KN_DISABLED;"; the callout goes on (nothing stops it).
  timer_model kq;
  call(kq, {timer(1, EV_ADD | EV_DISPATCH, 10, NOTE_NSECONDS)}, 0);
  kq.tick(10);
  auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_DISPATCH | EV_CLEAR, 1));
  kq.tick(40);
  CHECK(poll(kq).ret == 0);
  CHECK(kq.data_of(1) == 3);
  call(kq, {timer(1, EV_ENABLE)}, 0);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_DISPATCH | EV_CLEAR, 3));
}

TEST_CASE("kqref.timer_oneshot_fires_once_and_is_dropped") {
  // filt_timerexpire_l: "if ((kn->kn_flags & EV_ONESHOT) != 0 ...) {
  // kn->kn_data++; ... return; }" (no reschedule); kqueue_scan's EV_ONESHOT
  // path reports kn_kevent and knote_drop()s it.
  timer_model kq;
  call(kq, {timer(1, EV_ADD | EV_ONESHOT, 10, NOTE_NSECONDS)}, 0);
  CHECK(kq.tick(100) == 1);
  CHECK(kq.data_of(1) == 1);  // not 10: one expiration
  CHECK(kq.armed() == 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_ONESHOT | EV_CLEAR, 1));
  CHECK(kq.registered() == 0);
}

TEST_CASE("kqref.timer_delete_stops_the_callout") {
  // kqueue_register EV_DELETE: knote_drop -> filt_timerdetach
  // ("callout_drain") and knote_dequeue.
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS), timer(2, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  kq.tick(10);
  CHECK(kq.queued() == 2);
  const auto r = call(kq, {timer(1, EV_DELETE), timer(1, EV_DELETE)}, 4);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == timer(1, EV_ERROR, ENOENT));
  CHECK(kq.registered() == 1);
  CHECK(kq.queued() == 1);
  CHECK(kq.armed() == 1);
  CHECK(kq.tick(20) == 1);
}

TEST_CASE("kqref.timer_receipt_on_creation_shows_zeroed_change") {
  // kqueue_register zeroes kev->fflags and kev->data at creation;
  // kqueue_kevent: "kevp->flags = EV_ERROR; kevp->data = error;"; the stored
  // flags keep EV_RECEIPT (only ADD/DELETE/ENABLE/DISABLE/FORCEONESHOT are
  // stripped), so the events carry it.
  timer_model kq;
  auto r = call(kq, {timer(1, EV_ADD | EV_RECEIPT, 4, NOTE_NSECONDS, 3)}, 1);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == timer(1, EV_ERROR, 0, 0, 3));
  kq.tick(4);
  r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_RECEIPT | EV_CLEAR, 1, 3));
}

TEST_CASE("kqref.timer_equal_deadlines_fire_in_scheduling_order") {
  // MODEL: FreeBSD's callwheel does not order callouts due in one pass; the
  // model fires by deadline, then by scheduling order; knote_enqueue appends
  // (TAILQ_INSERT_TAIL), so the scan reports in firing order.
  timer_model kq;
  call(kq, {timer(3, EV_ADD, 20, NOTE_NSECONDS), timer(1, EV_ADD, 10, NOTE_NSECONDS),
            timer(2, EV_ADD, 10, NOTE_NSECONDS)},
       0);
  kq.tick(20);
  const auto r = poll(kq);
  REQUIRE(r.ret == 3);
  CHECK(r.out[0].ident == 1);
  CHECK(r.out[1].ident == 2);
  CHECK(r.out[2].ident == 3);
}

TEST_CASE("kqref.timer_set_time_without_tick_is_late_not_lost") {
  // The callout runs when the softclock does: a timer due by the clock but
  // not yet ticked is not reported; a timer added meanwhile arms from the
  // clock's time (filt_timerstart: "to + sbinuptime()").
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  kq.set_time(50);
  CHECK(poll(kq).ret == 0);
  call(kq, {timer(2, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  CHECK(kq.deadline_of(2) == 60);
  CHECK(kq.next_deadline() == 10);
  CHECK(kq.tick() == 1);
  CHECK(kq.data_of(1) == 5);
}

TEST_CASE("kqref.timer_forceoneshot_reports_and_drops") {
  // kqueue_register: "if (kev->flags & EV_FORCEONESHOT) { kn->kn_flags |=
  // EV_ONESHOT; KNOTE_ACTIVATE(kn, 1); }": queued even with no expiration;
  // the scan's EV_ONESHOT path reports kn_kevent (data 0) and drops it.
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  call(kq, {timer(1, EV_FORCEONESHOT)}, 0);
  const auto r = poll(kq);
  REQUIRE(r.ret == 1);
  CHECK(r.out[0] == event(1, EV_CLEAR | EV_ONESHOT, 0));
  CHECK(kq.registered() == 0);
  CHECK(kq.armed() == 0);
}

TEST_CASE("kqref.timer_freebsd_formula_undercounts_missed_periods") {
  // filt_timerexpire_l, as FreeBSD has it (the model's
  // freebsd_missed_periods switch): "delta = (now - kc->next) / kc->to; if
  // (delta == 0) delta = 1; kn->kn_data += delta; kc->next += delta *
  // kc->to; if (now >= kc->next) /* overflow */ kc->next = now + kc->to;".
  // Due at 10, period 10, run at 35: boundaries 10, 20, 30 passed, FreeBSD
  // counts 2 and re-arms at 45 (the model: 3, at 40; see
  // kqref.timer_missed_periods_counted). On time it agrees: 1, next + to.
  timer_model kq;
  kq.freebsd_missed_periods = true;
  call(kq, {timer(1, EV_ADD, 10, NOTE_NSECONDS)}, 0);
  CHECK(kq.tick(35) == 1);
  CHECK(kq.data_of(1) == 2);
  CHECK(kq.deadline_of(1) == 45);
  CHECK(kq.tick(45) == 1);
  CHECK(kq.data_of(1) == 3);
  CHECK(kq.deadline_of(1) == 55);
}

TEST_CASE("kqref.timer_zero_data_applies_to_abstime_too") {
  // filt_timervalidate turns a 0 into 1 before looking at NOTE_ABSTIME: a
  // periodic (not EV_ONESHOT) absolute timer of 0 is due at 1 unit after the
  // epoch; an EV_ONESHOT one at the epoch itself.
  timer_model kq;
  call(kq, {timer(1, EV_ADD, 0, NOTE_ABSTIME | NOTE_SECONDS),
            timer(2, EV_ADD | EV_ONESHOT, 0, NOTE_ABSTIME | NOTE_SECONDS)},
       0);
  CHECK(kq.deadline_of(1) == 1000000000);
  CHECK(kq.deadline_of(2) == 0);
}

TEST_CASE("kqref.timer_receipt_without_room_returns_zero") {
  // kqueue_kevent: "if (nevents == 0) return (error);" with error 0 for a
  // successful EV_RECEIPT: kevent() returns 0 and later changes are not
  // applied (see kqueue_reference.hpp).
  timer_model kq;
  const auto r = call(kq, {timer(1, EV_ADD | EV_RECEIPT, 5), timer(2, EV_ADD, 5)}, 0);
  CHECK(r.ret == 0);
  CHECK(r.err == 0);
  CHECK(kq.registered() == 1);
}
