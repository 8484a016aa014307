// timer_source and timer_filter: never early, missed periods, units and
// abstime, one-shot, delete while armed, standalone timers, a random run
// against a std::multimap reference, and no allocation on expiry or re-arm.
#include <kcont/timer_source.hpp>
#include <kcont/timer_filter.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/kqueue.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "kq_support.hpp"
#include "support.hpp"

using namespace kq_test;
namespace note = kcont::note;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using tkn = kcont::knote_base<manual_clock::time_point>;

namespace {

kev timer(std::uintptr_t id, ev flags, std::uint32_t fflags, std::int64_t data) {
  return kev{id, filter_id::timer, flags, fflags, data};
}

// A continuation that records the knote's ident and data at each expiry.
struct record_fn {
  struct hit {
    std::uintptr_t ident;
    std::int64_t data;
  };
  void operator()(tkn* kn, std::vector<hit>& hits, kcont::knote_cause) const {
    const auto f = kn->snapshot();
    hits.push_back({f.ident, f.data});
  }
};

}  // namespace

TEST_CASE("timer.never_early_one_ns_before_the_deadline_does_not_fire") {
  // Before, a timer armed from the source's last tick: added 3 ms after a
  // tick, a 10 ms timer fired 7 ms after its EV_ADD.
  fixture f;
  f.tick(t0);
  manual_clock::set(t0 + milliseconds(3));
  REQUIRE(f.change(timer(1, ev::add, 0, 10)) == 0);
  const auto deadline = t0 + milliseconds(13);
  CHECK(f.ts.next_deadline() == deadline);
  CHECK(f.tick(deadline - nanoseconds(1)) == 0);
  CHECK(f.scan().empty());
  CHECK(f.tick(deadline) == 1);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
  // The next period runs from the deadline, not from the tick.
  CHECK(f.ts.next_deadline() == deadline + milliseconds(10));
}

TEST_CASE("timer.missed_periods_are_counted") {
  // Every period boundary at or before the tick counts (FreeBSD's late
  // callout fires once per missed period, each adding one to kn_data).
  fixture f;
  REQUIRE(f.change(timer(1, ev::add, 0, 10)) == 0);
  CHECK(f.tick(t0 + milliseconds(10) + milliseconds(35)) == 1);  // 10..40: 4
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 4);
  CHECK(f.ts.next_deadline() == t0 + milliseconds(50));
  CHECK(f.tick(t0 + milliseconds(50)) == 1);
  CHECK(f.tick(t0 + milliseconds(70)) == 1);  // 60, 70: not yet scanned
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
}

TEST_CASE("timer.units_abstime_and_invalid_fflags") {
  fixture f;
  REQUIRE(f.change(timer(1, ev::add | ev::oneshot, note::seconds, 2)) == 0);
  REQUIRE(f.change(timer(2, ev::add | ev::oneshot, note::mseconds, 2)) == 0);
  REQUIRE(f.change(timer(3, ev::add | ev::oneshot, note::useconds, 2)) == 0);
  REQUIRE(f.change(timer(4, ev::add | ev::oneshot, note::nseconds, 2)) == 0);
  REQUIRE(f.change(timer(5, ev::add | ev::oneshot, 0, 2)) == 0);  // ms
  CHECK(f.tick(t0 + nanoseconds(2)) == 1);
  CHECK(f.tick(t0 + std::chrono::microseconds(2)) == 1);
  CHECK(f.tick(t0 + milliseconds(2)) == 2);
  CHECK(f.tick(t0 + std::chrono::seconds(2) - nanoseconds(1)) == 0);
  CHECK(f.tick(t0 + std::chrono::seconds(2)) == 1);
  CHECK(f.scan().size() == 5);
  // filt_timervalidate: only the unit bits and NOTE_ABSTIME; timer2sbintime:
  // one unit at most.
  CHECK(f.change(timer(6, ev::add, 0x100, 1)) == EINVAL);
  CHECK(f.change(timer(6, ev::add, note::seconds | note::nseconds, 1)) == EINVAL);
  CHECK(f.change(timer(6, ev::add, 0, -1)) == EINVAL);
  // NOTE_ABSTIME: data is a time since the clock's epoch; it expires once.
  // filt_timerattach sets EV_CLEAR only without NOTE_ABSTIME, so without
  // ev::clear it stays reported (data 1) by every scan, as on FreeBSD.
  const auto at = t0 + std::chrono::seconds(5);
  const std::int64_t at_ms = std::chrono::duration_cast<milliseconds>(at.time_since_epoch()).count();
  REQUIRE(f.change(timer(7, ev::add, note::abstime, at_ms)) == 0);
  REQUIRE(f.change(timer(8, ev::add | ev::clear, note::abstime | note::mseconds, at_ms)) == 0);
  CHECK(f.tick(at - nanoseconds(1)) == 0);
  CHECK(f.tick(at) == 2);
  CHECK(f.tick(at + std::chrono::hours(1)) == 0);  // not periodic
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].data == 1);
  CHECK(e[1].data == 1);
  e = f.scan();
  REQUIRE(e.size() == 1);  // 7: no EV_CLEAR, still reported
  CHECK(e[0].ident == 7);
  CHECK(e[0].data == 1);
  // An absolute time already past expires at the next tick.
  REQUIRE(f.change(timer(9, ev::add | ev::oneshot, note::abstime | note::seconds, 1)) == 0);
  CHECK(f.tick(manual_clock::now()) == 1);
}

TEST_CASE("timer.reports_carry_the_ev_clear_filt_timerattach_sets") {
  // filt_timerattach: "if ((kn->kn_sfflags & NOTE_ABSTIME) == 0)
  // kn->kn_flags |= EV_CLEAR;", and kqueue_scan reports kn_kevent (flags
  // included): a relative timer's events carry EV_CLEAR, an abstime one's not.
  fixture f;
  REQUIRE(f.change(timer(1, ev::add, 0, 10)) == 0);
  const std::int64_t at_ms =
      std::chrono::duration_cast<milliseconds>((t0 + milliseconds(10)).time_since_epoch()).count();
  REQUIRE(f.change(timer(2, ev::add | ev::oneshot, note::abstime, at_ms)) == 0);
  f.tick(t0 + milliseconds(10));
  const auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].flags == ev::clear);
  CHECK(e[1].flags == ev::oneshot);
}

TEST_CASE("timer.zero_data_as_filt_timervalidate") {
  // One-shot 0: expires at the next tick (even at the same time). Periodic
  // 0: kn_sdata = 1, a period of one unit.
  fixture f;
  REQUIRE(f.change(timer(1, ev::add | ev::oneshot, 0, 0)) == 0);
  REQUIRE(f.change(timer(2, ev::add, note::useconds, 0)) == 0);
  CHECK(f.tick(t0) == 1);
  CHECK(f.tick(t0 + std::chrono::microseconds(1) - nanoseconds(1)) == 0);
  CHECK(f.tick(t0 + std::chrono::microseconds(3)) == 1);
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].data == 1);
  CHECK(e[1].data == 3);
}

TEST_CASE("timer.only_ev_add_rearms_and_disable_keeps_it_running") {
  // filt_timertouch re-arms only `if (kev->flags & EV_ADD)`: an EV_DISABLE
  // or EV_ENABLE change leaves the callout running, and expirations while
  // disabled are reported once it is enabled.
  fixture f;
  REQUIRE(f.change(timer(1, ev::add, 0, 10)) == 0);
  f.tick(t0 + milliseconds(5));
  REQUIRE(f.change(timer(1, ev::disable, 0, 100)) == 0);
  CHECK(f.tick(t0 + milliseconds(10)) == 1);
  CHECK(f.tick(t0 + milliseconds(20)) == 1);
  CHECK(f.scan().empty());
  REQUIRE(f.change(timer(1, ev::enable, 0, 100)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 2);
  // EV_ADD on the existing timer: re-armed from now, unreported dropped.
  CHECK(f.tick(t0 + milliseconds(30)) == 1);
  manual_clock::set(t0 + milliseconds(33));
  REQUIRE(f.change(timer(1, ev::add, 0, 100)) == 0);
  CHECK(f.scan().empty());
  CHECK(f.tick(t0 + milliseconds(132)) == 0);
  CHECK(f.tick(t0 + milliseconds(133)) == 1);
  // A re-add with bad data stops it and reports the errno in data, with
  // EV_ERROR in the flags (filt_timertouch: kn_flags |= EV_ERROR).
  REQUIRE(f.change(timer(1, ev::add, 0, -5)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == EINVAL);
  CHECK(e[0].flags == (ev::clear | ev::error));
  CHECK(f.ts.empty());
}

TEST_CASE("timer.readd_dequeues_a_pending_expiry") {
  // filt_timertouch on EV_ADD: "if (kn->kn_status & KN_QUEUED)
  // knote_dequeue(kn); kn->kn_status &= ~KN_ACTIVE; kn->kn_data = 0;": a
  // one-shot timer that fired and is re-added before the scan is not
  // reported (before, the scan reported it with data 0 and deleted it).
  fixture f;
  REQUIRE(f.change(timer(1, ev::add | ev::oneshot, note::nseconds, 5)) == 0);
  CHECK(f.tick(t0 + nanoseconds(5)) == 1);
  CHECK(f.kq.pending() == 1);
  REQUIRE(f.change(timer(1, ev::add, note::nseconds, 10)) == 0);
  CHECK(f.kq.pending() == 0);
  CHECK(f.scan().empty());
  CHECK(f.kq.size() == 1);
  CHECK(f.tick(t0 + nanoseconds(15)) == 1);
  const auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
  CHECK(f.kq.size() == 0);
}

TEST_CASE("timer.forceoneshot_stops_a_periodic_timer_after_one_more_expiry") {
  // EV_FORCEONESHOT: kn_flags |= EV_ONESHOT, which filt_timerexpire reads at
  // each expiry: a disabled periodic timer expires once more (data + 1) and
  // is not re-armed; enabled, it is reported and deleted.
  fixture f;
  REQUIRE(f.change(timer(1, ev::add | ev::disable, note::nseconds, 10)) == 0);
  CHECK(f.tick(t0 + nanoseconds(25)) == 1);  // 10, 20
  REQUIRE(f.change(timer(1, ev::forceoneshot, 0, 0)) == 0);
  CHECK(f.tick(t0 + nanoseconds(100)) == 1);  // 30 only: then stopped
  CHECK(f.tick(t0 + nanoseconds(200)) == 0);
  REQUIRE(f.change(timer(1, ev::enable, 0, 0)) == 0);
  const auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
  CHECK(f.kq.size() == 0);
}

TEST_CASE("timer.equal_deadlines_fire_in_arm_order") {
  fixture f;
  for (std::uintptr_t i : {5u, 3u, 9u, 1u, 7u})
    REQUIRE(f.change(timer(i, ev::add | ev::oneshot, note::nseconds, 10)) == 0);
  CHECK(f.tick(t0 + nanoseconds(10)) == 5);
  const auto e = f.scan();
  REQUIRE(e.size() == 5);
  const std::uintptr_t want[] = {5, 3, 9, 1, 7};
  for (std::size_t i = 0; i < 5; ++i) CHECK(e[i].ident == want[i]);
}

TEST_CASE("timer.dispatch_keeps_counting_while_disabled") {
  fixture f;
  REQUIRE(f.change(timer(1, ev::add | ev::dispatch, 0, 10)) == 0);
  f.tick(t0 + milliseconds(10));
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
  f.tick(t0 + milliseconds(20));
  f.tick(t0 + milliseconds(30));
  CHECK(f.scan().empty());  // disabled by the report
  REQUIRE(f.change(timer(1, ev::enable, 0, 0)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 2);
}

TEST_CASE("timer.delete_while_armed_never_fires") {
  fixture f;
  for (std::uintptr_t i = 0; i < 50; ++i)
    REQUIRE(f.change(timer(i, ev::add, 0, static_cast<std::int64_t>(1 + i))) == 0);
  CHECK(f.ts.size() == 50);
  for (std::uintptr_t i = 0; i < 50; i += 2) REQUIRE(f.change(timer(i, ev::delete_, 0, 0)) == 0);
  CHECK(f.ts.size() == 25);
  CHECK(f.tick(t0 + milliseconds(50)) == 25);
  const auto e = f.scan(64);
  REQUIRE(e.size() == 25);
  for (const auto& x : e) CHECK(x.ident % 2 == 1);
}

TEST_CASE("timer.standalone_as_a_user_writes_it") {
  // The documented standalone timer: no field writes, any continuation.
  clock_at_t0 clock_reset;
  test_timer_source timers;
  kcont::kc on{[](tkn* kn, long& total, kcont::knote_cause) { total += kn->snapshot().data; },
               0L, kcont::at<bsd_level::immediate>};
  kcont::knote<test_timer_filter> every{
      test_timer_filter{timers, milliseconds(250), kcont::timer_mode::periodic}, on};
  REQUIRE(every.attach() == 0);
  CHECK(timers.next_deadline() == t0 + milliseconds(250));
  manual_clock::set(t0 + milliseconds(499));
  CHECK(timers.tick() == 1);
  CHECK(on.env() == 1);
  manual_clock::set(t0 + milliseconds(1000));
  CHECK(timers.tick() == 1);
  CHECK(on.env() == 1 + 4);  // cumulative data: 4 expirations so far
  // Re-armed once, 1 s from now.
  timers.arm(every, std::chrono::seconds(1));
  manual_clock::set(t0 + milliseconds(1999));
  CHECK(timers.tick() == 0);
  manual_clock::set(t0 + milliseconds(2000));
  CHECK(timers.tick() == 1);
  CHECK(on.env() == 1 + 4 + 1);
  CHECK(!timers.next_deadline());
  every.detach();
  // Deferred to its level through a dispatcher.
  kcont::manual_dispatcher<> d;
  kcont::kc later{[](tkn*, int& n, kcont::knote_cause) { ++n; }, 0, bsd_level::softclock};
  kcont::knote<test_timer_filter> once{test_timer_filter{timers, milliseconds(5)}, later};
  REQUIRE(once.attach() == 0);
  manual_clock::set(t0 + milliseconds(2005));
  CHECK(timers.tick(d, bsd_level::softserial) == 1);
  CHECK(later.env() == 0);
  d.drain(bsd_level::softclock);
  CHECK(later.env() == 1);
  once.detach(d);
}

TEST_CASE_TEMPLATE("timer.rearm_from_its_own_continuation_waits_for_the_next_tick", Lock,
                   std::mutex, kcont::no_lock) {
  using source = kcont::basic_timer_source<bsd_level, Lock, manual_clock>;
  using filter = kcont::timer_filter<source>;
  clock_at_t0 clock_reset;
  source timers;
  struct env {
    source* src;
    kcont::knote<filter>* self;
    int runs;
  };
  kcont::kc again{[](tkn*, env& e, kcont::knote_cause) {
                    ++e.runs;
                    e.src->arm(*e.self, nanoseconds(0));  // due at once
                  },
                  env{&timers, nullptr, 0}, kcont::at<bsd_level::immediate>};
  kcont::knote<filter> kn{filter{timers, nanoseconds(0)}, again};
  again.env().self = &kn;
  REQUIRE(kn.attach() == 0);
  CHECK(timers.tick() == 1);  // no endless loop inside one tick
  CHECK(again.env().runs == 1);
  CHECK(timers.tick() == 0);  // pushed one clock tick past the tick's time
  manual_clock::set(t0 + nanoseconds(1));
  CHECK(timers.tick() == 1);
  CHECK(again.env().runs == 2);
  kn.detach();
}

// The source's two tick loops: with a lock (pins, firing counts) and
// single-threaded (no_lock: unpinned activations).
TEST_CASE_TEMPLATE("timer.random_arms_and_cancels_match_a_multimap", Lock, std::mutex,
                   kcont::no_lock) {
  // 10^5 standalone one-shot timers armed, re-armed and cancelled at random;
  // at each tick the timers that fire are exactly the reference's due ones.
  using source = kcont::basic_timer_source<bsd_level, Lock, manual_clock>;
  using filter = kcont::timer_filter<source>;
  constexpr std::size_t timers_n = 100000;
  clock_at_t0 clock_reset;
  source timers;
  timers.reserve(timers_n);
  std::vector<record_fn::hit> hits;
  hits.reserve(timers_n);
  kcont::kc on{record_fn{}, std::vector<record_fn::hit>{}, kcont::at<bsd_level::immediate>};
  on.env().reserve(timers_n);
  std::deque<kcont::knote<filter>> kn;
  for (std::size_t i = 0; i < timers_n; ++i) kn.emplace_back(filter{timers, nanoseconds(0)}, on, i);
  std::multimap<manual_clock::time_point, std::size_t> ref;
  std::vector<std::multimap<manual_clock::time_point, std::size_t>::iterator> where(
      timers_n, ref.end());
  std::vector<bool> attached(timers_n, false);
  std::mt19937_64 rng(13);
  auto now = t0;
  std::size_t fired_total = 0;
  for (int step = 0; step < 300000; ++step) {
    const auto i = static_cast<std::size_t>(rng() % timers_n);
    const unsigned op = static_cast<unsigned>(rng() % 100);
    if (op < 60) {  // arm or re-arm
      const auto delay = nanoseconds(static_cast<std::int64_t>(rng() % 5000));
      if (!attached[i]) {
        REQUIRE(kn[i].attach() == 0);
        attached[i] = true;
      }
      timers.arm(kn[i], delay);
      if (where[i] != ref.end()) ref.erase(where[i]);
      where[i] = ref.emplace(now + delay, i);
    } else if (op < 97) {  // cancel
      if (attached[i]) {
        kn[i].detach();
        attached[i] = false;
      }
      if (where[i] != ref.end()) ref.erase(where[i]);
      where[i] = ref.end();
    } else {  // advance and tick
      now += nanoseconds(static_cast<std::int64_t>(rng() % 3000));
      manual_clock::set(now);
      std::vector<std::size_t> want;
      while (!ref.empty() && ref.begin()->first <= now) {
        want.push_back(ref.begin()->second);
        where[ref.begin()->second] = ref.end();
        ref.erase(ref.begin());
      }
      on.env().clear();
      const std::size_t n = timers.tick();
      REQUIRE(n == want.size());
      std::vector<std::size_t> got;
      for (const auto& h : on.env()) {
        got.push_back(h.ident);
        CHECK(h.data >= 1);
      }
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      REQUIRE(got == want);
      fired_total += n;
      const auto next = timers.next_deadline();
      REQUIRE(next.has_value() == !ref.empty());
      if (next) REQUIRE(*next == ref.begin()->first);
    }
  }
  CHECK(fired_total > 1000);
  CHECK(timers.size() == ref.size());
  for (std::size_t i = 0; i < timers_n; ++i)
    if (attached[i]) kn[i].detach();
  CHECK(timers.empty());
}

TEST_CASE("timer.expiry_and_rearm_never_allocate") {
  fixture f;
  constexpr std::uintptr_t n = 64;
  for (std::uintptr_t i = 0; i < n; ++i)
    REQUIRE(f.change(timer(i, ev::add, note::useconds, static_cast<std::int64_t>(1 + i % 7))) == 0);
  kcont::kc on{[](tkn*, long& c, kcont::knote_cause) { ++c; }, 0L,
               kcont::at<bsd_level::immediate>};
  std::deque<kcont::knote<test_timer_filter>> solo;
  for (std::uintptr_t i = 0; i < n; ++i) {
    solo.emplace_back(test_timer_filter{f.ts, nanoseconds(1 + i), kcont::timer_mode::periodic},
                      on, i);
    REQUIRE(solo.back().attach() == 0);
  }
  std::vector<kev> out(2 * n);
  kcont_test::allocation_scope scope;
  auto now = t0;
  std::size_t reported = 0;
  for (int round = 0; round < 500; ++round) {
    now += std::chrono::microseconds(3);
    (void)f.tick(now);
    reported += f.kq.scan(out);
    for (std::uintptr_t i = 0; i < n; i += 5) f.ts.arm(solo[i], nanoseconds(100 + i));  // re-arm
    for (std::uintptr_t i = 0; i < n; i += 9)  // a kqueue re-add re-arms too
      (void)f.change(timer(i, ev::add, note::useconds, 2));
  }
  CHECK(scope.count() == 0);
  CHECK(reported > 0);
  CHECK(on.env() > 0);
  for (auto& k : solo) k.detach();
}

TEST_CASE("timer.ticks_on_two_threads_race_arm_rearm_and_detach") {
  // Real clock, std::mutex source: two threads tick while this one arms,
  // re-arms (standalone and through a kqueue's EV_ADD, which re-arms under
  // the knote's field lock) and detaches. A detached timer's continuation
  // never runs afterwards (detach waits for a tick counting it). TSan and
  // ASan check the rest.
  using source = kcont::timer_source;
  using knote_t = source::knote_type;
  source timers;
  kcont::kqueue<kcont::filters<kcont::timer_filter<>>> kq{timers};
  struct env {
    std::atomic<bool>* gone;
    std::atomic<int>* late;
    std::atomic<long>* runs;
  };
  struct fn {
    void operator()(knote_t*, env& e, kcont::knote_cause) const {
      if (e.gone->load()) e.late->fetch_add(1);
      e.runs->fetch_add(1);
    }
  };
  constexpr int n = 16;
  std::atomic<bool> stop{false};
  std::atomic<int> late{0};
  std::atomic<long> runs{0};
  std::atomic<bool> gone[n];
  std::deque<kcont::kc<fn, env, kcont::static_level<bsd_level::immediate>>> ks;
  for (int i = 0; i < n; ++i) {
    gone[i].store(true);
    ks.emplace_back(fn{}, env{&gone[i], &late, &runs}, kcont::at<bsd_level::immediate>);
  }
  auto ticker = [&] {
    while (!stop.load()) (void)timers.tick();
  };
  std::thread a(ticker), b(ticker);
  kev out[n];
  for (int round = 0; round < 200; ++round) {
    std::deque<kcont::knote<kcont::timer_filter<>>> kn;
    for (int i = 0; i < n; ++i) {
      kn.emplace_back(kcont::timer_filter<>{timers, std::chrono::microseconds(1 + i % 3),
                                            kcont::timer_mode::periodic},
                      ks[static_cast<std::size_t>(i)]);
      gone[i].store(false);
      REQUIRE(kn.back().attach() == 0);
      REQUIRE(kq.change(kev{static_cast<std::uintptr_t>(i), filter_id::timer, ev::add,
                            note::useconds, 1 + i % 4}) == 0);
    }
    for (int i = 0; i < n; i += 2) timers.arm(kn[static_cast<std::size_t>(i)], nanoseconds(500));
    std::this_thread::yield();
    (void)kq.scan(out);
    for (int i = 0; i < n; ++i) {
      kn[static_cast<std::size_t>(i)].detach();
      gone[i].store(true);
      REQUIRE(kq.change(kev{static_cast<std::uintptr_t>(i), filter_id::timer,
                            i % 2 == 0 ? ev::delete_ : ev::add, 0, 1}) == 0);
    }
    for (int i = 1; i < n; i += 2)
      REQUIRE(kq.change(kev{static_cast<std::uintptr_t>(i), filter_id::timer, ev::delete_}) == 0);
  }
  stop.store(true);
  a.join();
  b.join();
  CHECK(late.load() == 0);
  CHECK(timers.empty());
  MESSAGE("continuations run: " << runs.load());
}

TEST_CASE_TEMPLATE("timer.continuation_detaches_its_own_timer", Lock, std::mutex, kcont::no_lock) {
  // Rule 8 from inside a tick: the continuation detaches (and could free)
  // its own periodic timer; the tick touches it no more, nothing fires later.
  using source = kcont::basic_timer_source<bsd_level, Lock, manual_clock>;
  using filter = kcont::timer_filter<source>;
  clock_at_t0 clock_reset;
  source timers;
  struct env {
    std::unique_ptr<kcont::knote<filter>>* self;
    int runs;
  };
  std::unique_ptr<kcont::knote<filter>> kn;
  kcont::kc bye{[](tkn*, env& e, kcont::knote_cause) {
                  ++e.runs;
                  (*e.self)->detach();
                  e.self->reset();  // freed inside its own activation
                },
                env{&kn, 0}, kcont::at<bsd_level::immediate>};
  kn = std::make_unique<kcont::knote<filter>>(filter{timers, nanoseconds(5), kcont::timer_mode::periodic},
                                              bye);
  REQUIRE(kn->attach() == 0);
  manual_clock::set(t0 + nanoseconds(20));
  CHECK(timers.tick() == 1);
  CHECK(bye.env().runs == 1);
  CHECK(kn == nullptr);
  CHECK(timers.empty());
  manual_clock::set(t0 + nanoseconds(100));
  CHECK(timers.tick() == 0);
}
