// kfilters: the user filter's NOTE_FF* arithmetic and the timer filter,
// both driven through a kqueue and, for the timer, through a plain knote.
#include <kcont/event_source.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/timer_filter.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <mutex>

#include "kq_support.hpp"
#include "support.hpp"

using namespace kq_test;
namespace note = kcont::note;
using std::chrono::milliseconds;

static_assert(kcont::filter_for<kcont::user_filter, kcont::knote_base<long>>);
static_assert(kcont::detail::filter_has_touch<kcont::user_filter, kcont::knote_base<long>>);
static_assert(kcont::filter_for<kcont::timer_filter<>,
                                kcont::knote_base<kcont::timer_source::time_point>>);
static_assert(!kcont::filter_for<kcont::timer_filter<>, kcont::knote_base<long>>);

TEST_CASE("kfilters.user_ff_arithmetic") {
  using kcont::user_filter;
  CHECK(user_filter::apply(0x0f, note::ffnop | 0xf0) == 0x0f);
  CHECK(user_filter::apply(0x0f, note::ffand | 0x3c) == 0x0c);
  CHECK(user_filter::apply(0x0f, note::ffor | 0xf0) == 0xff);
  CHECK(user_filter::apply(0x0f, note::ffcopy | 0xf0) == 0xf0);
  // Only the low 24 bits are user flags: NOTE_TRIGGER and beyond never stick.
  CHECK(user_filter::apply(0, note::ffcopy | note::trigger | 0xffffff) == 0xffffff);
}

TEST_CASE("kfilters.user_fflags_reported_through_a_kqueue") {
  fixture f;
  REQUIRE(f.change(user(1, ev::add | ev::clear, note::ffcopy | 0x11)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(trigger(1, note::ffor | 0x100)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  // The creating EV_ADD's fflags are saved raw (kqueue_register: kn_sfflags
  // = kev->fflags), control bits included; FFOR keeps them.
  CHECK(e[0].fflags == (note::ffcopy | 0x111));
  REQUIRE(f.change(trigger(1, note::ffand | 0x101)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x101);
  REQUIRE(f.change(trigger(1, note::ffcopy | 0x7)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x7);
  // FFNOP with a trigger reports the saved flags unchanged.
  REQUIRE(f.change(trigger(1, note::ffnop | 0xff)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x7);
  // A change without NOTE_TRIGGER only edits the flags.
  REQUIRE(f.change(user(1, ev::none, note::ffor | 0x8)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(trigger(1)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0xf);
}

TEST_CASE("kfilters.user_trigger_in_the_add_does_not_fire") {
  // FreeBSD's kqueue_register clears kev->fflags before f_attach, and
  // filt_userattach looks for NOTE_TRIGGER in kn_fflags: nothing fires.
  fixture f;
  REQUIRE(f.change(user(2, ev::add | ev::clear, note::trigger | note::ffcopy | 0x3, 9)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(2, ev::none, note::trigger, 9)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == (note::trigger | note::ffcopy | 0x3));  // saved raw
  CHECK(e[0].data == 9);
}

TEST_CASE("kfilters.timer_periodic_counts_expirations_since_last_scan") {
  fixture f;
  REQUIRE(f.change(kev{1, filter_id::timer, ev::add, 0, 10, 42}) == 0);  // 10 ms
  f.tick(t0 + milliseconds(5));
  CHECK(f.scan().empty());
  f.tick(t0 + milliseconds(10));
  f.tick(t0 + milliseconds(35));  // two more expirations: 20 and 30
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
  CHECK(e[0].udata == 42);
  CHECK(f.scan().empty());  // timers behave as EV_CLEAR
  f.tick(t0 + milliseconds(40));
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
  REQUIRE(f.change(kev{1, filter_id::timer, ev::delete_}) == 0);
  f.tick(t0 + milliseconds(100));
  CHECK(f.scan().empty());
  CHECK(f.ts.empty());
}

TEST_CASE("kfilters.timer_oneshot_fires_once_and_is_deleted") {
  fixture f;
  REQUIRE(f.change(kev{2, filter_id::timer, ev::add | ev::oneshot, note::useconds, 1500}) == 0);
  f.tick(t0 + milliseconds(1));
  CHECK(f.scan().empty());
  f.tick(t0 + milliseconds(10));
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
  CHECK(f.kq.size() == 0);
  CHECK(f.ts.empty());
}

TEST_CASE("kfilters.timer_units_and_rearm_on_readd") {
  using tf = test_timer_filter;
  CHECK(tf::period_of(note::seconds, 2) == std::chrono::seconds(2));
  CHECK(tf::period_of(note::nseconds, 7) == std::chrono::nanoseconds(7));
  CHECK(tf::period_of(0, 3) == milliseconds(3));
  fixture f;
  CHECK(f.change(kev{3, filter_id::timer, ev::add, 0, -1}) == EINVAL);
  REQUIRE(f.change(kev{3, filter_id::timer, ev::add, 0, 100}) == 0);
  f.tick(t0 + milliseconds(50));
  REQUIRE(f.change(kev{3, filter_id::timer, ev::add, 0, 10}) == 0);  // re-armed from t0+50
  f.tick(t0 + milliseconds(59));
  CHECK(f.scan().empty());
  f.tick(t0 + milliseconds(60));
  CHECK(f.scan().size() == 1);
}

TEST_CASE("kfilters.timer_int64_max_saturates_in_every_unit") {
  // FreeBSD's timer2sbintime saturates a period too long for its clock at
  // SBT_MAX ("if (data > SBT_MAX / modifier) return SBT_MAX"); kcont at the
  // clock's longest duration. Before, INT64_MAX ms overflowed (signed
  // overflow: UBSan) and a release build fired after one tick with data -1.
  using tf = test_timer_filter;
  using dur = tf::duration;
  constexpr std::int64_t big = std::numeric_limits<std::int64_t>::max();
  CHECK(tf::period_of(0, big) == dur::max());
  CHECK(tf::period_of(note::seconds, big) == dur::max());
  CHECK(tf::period_of(note::useconds, big) == dur::max());
  CHECK(tf::period_of(note::nseconds, big) == std::chrono::nanoseconds(big));
  CHECK(tf::period_of(note::seconds, -big) == dur::min());
  const std::uint32_t units[] = {0, note::seconds, note::useconds, note::nseconds};
  for (const std::uint32_t unit : units) {
    CAPTURE(unit);
    fixture f;
    REQUIRE(f.change(kev{1, filter_id::timer, ev::add, unit, big}) == 0);
    REQUIRE(f.change(kev{2, filter_id::timer, ev::add | ev::oneshot, unit, big}) == 0);
    // Its deadline is past the clock's end: no tick, however late, fires it.
    f.tick(t0 + milliseconds(1));
    CHECK(f.scan().empty());
    f.tick(t0 + std::chrono::hours(24 * 365 * 200));
    CHECK(f.scan().empty());
    f.tick(manual_clock::time_point::max());
    CHECK(f.scan().empty());
    CHECK(f.kq.size() == 2);
  }
}

TEST_CASE("kfilters.timer_late_tick_at_the_clock_end_does_not_overflow") {
  // A 1 ns periodic timer ticked at the last time point: the expirations
  // counted and the next deadline computed without signed overflow (UBSan).
  using tp = manual_clock::time_point;
  fixture f;
  REQUIRE(f.change(kev{1, filter_id::timer, ev::add, note::nseconds, 1}) == 0);
  f.tick(tp::max());
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  // Expirations at t0 + 1 ns, t0 + 2 ns, ..., up to tp::max().
  CHECK(e[0].data == (tp::max() - t0).count());
  f.tick(tp::max());  // the next deadline is past the clock's end
  CHECK(f.scan().empty());
}

TEST_CASE("kfilters.timer_on_a_plain_knote_defers_to_its_level") {
  kcont::manual_dispatcher<> d;
  clock_at_t0 clock_reset;
  test_timer_source ts;
  using tkn = kcont::knote_base<manual_clock::time_point>;
  kcont::kc k{[](tkn* kn, long& total, kcont::knote_cause) { total += kn->snapshot().data; },
              0L, bsd_level::softclock};
  kcont::knote<test_timer_filter> kn{test_timer_filter{ts}, k, 1};
  kn.sdata = 5;
  REQUIRE(kn.attach() == 0);
  CHECK(ts.tick(d, t0 + milliseconds(12), bsd_level::softserial) == 1);
  CHECK(k.env() == 0);
  d.drain(bsd_level::softclock);
  CHECK(k.env() == 2);
  kn.detach(d);
}

TEST_CASE("kfilters.counting_filter_on_an_event_source") {
  constexpr kcont::filter_id rx_id{7};
  kcont::event_source rx;
  kcont::kqueue<kcont::filters<kcont::counting_filter<rx_id>>> kq{rx};
  REQUIRE(kq.change(kev{1, rx_id, ev::add | ev::clear, 0x2}) == 0);  // wants bit 1
  REQUIRE(kq.change(kev{2, rx_id, ev::add}) == 0);                   // wants everything
  CHECK(rx.post(0x1) == 1);
  CHECK(rx.post(0x3) == 2);
  CHECK(rx.post(0x2) == 2);
  kev out[4];
  REQUIRE(kq.scan(out) == 2);
  CHECK(out[0].ident == 2);
  CHECK(out[0].data == 3);
  CHECK(out[0].fflags == 0x3);
  CHECK(out[1].ident == 1);
  CHECK(out[1].data == 2);
  CHECK(out[1].fflags == 0x2);
  REQUIRE(kq.scan(out) == 1);  // ident 2 is level-triggered
  CHECK(out[0].ident == 2);
  REQUIRE(kq.change(kev{2, rx_id, ev::delete_}) == 0);
  CHECK(kq.scan(out) == 0);
}

// A pending knote's activation changes no state (the kqueue's fast path for
// it: kcont/detail/kqueue_pending.hpp, "a pending knote is active"), but the
// filter still counts the event, and a knote disabled while pending counts
// as not activated (post's return), as in knote::activate; enabled again,
// it is reported with every count. Both lock policies (the fast path is the
// same code under either).
TEST_CASE_TEMPLATE("kfilters.counting_knote_disabled_while_pending_counts_but_is_not_activated",
                   Pol, std::mutex, kcont::no_lock) {
  constexpr kcont::filter_id rx_id{7};
  kcont::basic_event_source<bsd_level, Pol> rx;
  using filter = kcont::counting_filter<rx_id, kcont::basic_event_source<bsd_level, Pol>>;
  kcont::kqueue<kcont::filters<filter>, std::uintptr_t, Pol> kq{rx};
  REQUIRE(kq.change(kev{1, rx_id, ev::add | ev::clear}) == 0);
  CHECK(rx.post(1) == 1);
  CHECK(rx.post(1) == 1);  // pending: coalesced, still activated
  REQUIRE(kq.change(kev{1, rx_id, ev::disable}) == 0);
  CHECK(kq.pending() == 1);  // disabled in place
  CHECK(rx.post(1) == 0);    // counted by the filter, not activated
  kev out[2];
  CHECK(kq.scan(out) == 0);  // the scan drops it, unreported, still active
  CHECK(kq.pending() == 0);
  CHECK(rx.post(1) == 0);
  REQUIRE(kq.change(kev{1, rx_id, ev::enable}) == 0);  // active: queued again
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].data == 4);
  CHECK(kq.scan(out) == 0);  // ev::clear: reset by the report
  CHECK(rx.post(1) == 1);
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].data == 1);
}

// Issue 14, gap 3: "object i" activated directly from outside the kqueue.
// Each connection owns its event source and registers it under its own
// ident (kcont::ident_of); posting to one connection's source queues that
// connection's knote only: no change list, no table lookup, no fan-out over
// the others; any number of sources share one filter type in one kqueue.
TEST_CASE_TEMPLATE("kfilters.object_filter_one_source_per_object", Pol, std::mutex,
                   kcont::no_lock) {
  constexpr kcont::filter_id conn_id{9};
  struct conn {
    kcont::basic_event_source<bsd_level, Pol> rx;
    int id = 0;
  };
  using filter = kcont::object_filter<conn_id, kcont::basic_event_source<bsd_level, Pol>>;
  using queue = kcont::kqueue<kcont::filters<filter>, conn*, Pol>;
  conn conns[8];
  queue kq;
  for (int i = 0; i < 8; ++i) {
    conns[i].id = i;
    REQUIRE(kq.change({.ident = kcont::ident_of(conns[i].rx),
                       .filter = conn_id,
                       .flags = ev::add | ev::clear,
                       .udata = &conns[i]}) == 0);
  }
  // Ident 0 names no source.
  CHECK(kq.change({.ident = 0, .filter = conn_id, .flags = ev::add}) == EINVAL);
  typename queue::kevent_type out[8];
  {
    kcont_test::allocation_scope scope;  // activation and scan never allocate
    CHECK(conns[5].rx.post(1) == 1);
    CHECK(conns[2].rx.post(1) == 1);
    CHECK(conns[5].rx.post(1) == 1);  // coalesced: still one event
    REQUIRE(kq.scan(out) == 2);
    CHECK(scope.count() == 0);
  }
  CHECK(out[0].udata->id == 5);
  CHECK(out[0].ident == kcont::ident_of(conns[5].rx));
  CHECK(out[0].data == 2);
  CHECK(out[1].udata->id == 2);
  CHECK(out[1].data == 1);
  CHECK(kq.scan(out) == 0);
  // Deleting a knote detaches it from its own source only.
  REQUIRE(kq.change({.ident = kcont::ident_of(conns[2].rx), .filter = conn_id,
                     .flags = ev::delete_}) == 0);
  CHECK(conns[2].rx.post(1) == 0);
  CHECK(conns[3].rx.post(1) == 1);
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].udata->id == 3);
}
