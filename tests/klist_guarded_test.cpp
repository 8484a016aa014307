// kcont::list_guarded: knotes whose fields and filter are guarded by their
// locked klist's lock (FreeBSD's knlist lock over kn_data / kn_sfflags:
// kern_event.c's knote() runs f_event with the list lock held), reached from
// outside a fan-out through klist::guard().
#include <kcont/klist.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/knote_closure.hpp>
#include <kcont/timer_filter.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kn_t = kcont::knote_base<long>;

template <class Lock>
struct source {
  kcont::klist<long, bsd_level, Lock> list;
};
// Fires when the hint has one of the knote's interest bits (sfflags) and
// at least `threshold` of them; counts its events in data.
template <class Lock>
struct bits_filter {
  source<Lock>* src;
  int threshold = 1;
  int attach(kn_t& kn) {
    src->list.insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)src->list.erase(kn); }
  bool event(kn_t& kn, long hint) {
    const auto hit = static_cast<std::uint32_t>(hint) & kn.sfflags;
    if (__builtin_popcount(hit) < threshold) return false;
    kn.fflags |= hit;
    ++kn.data;
    return true;
  }
};

struct count_fn {
  void operator()(kn_t*, int& n, knote_cause) const { ++n; }
};

}  // namespace

TEST_CASE_TEMPLATE("klist.list_guarded_fire_runs_each_filter_under_the_list_lock", Lock,
                   std::mutex, kcont::spin_lock) {
  kcont::manual_dispatcher<> d;
  source<Lock> s;
  using F = bits_filter<Lock>;
  kcont::kc<count_fn, int, bsd_level> k1{count_fn{}, 0, bsd_level::immediate};
  kcont::kc<count_fn, int, bsd_level> k2{count_fn{}, 0, bsd_level::softnet};
  kcont::knote<F, bsd_level, kcont::list_guarded> a{F{&s}, k1, 1};
  kcont::knote<F, bsd_level, kcont::list_guarded> b{F{&s}, k2, 2};
  kcont::knote_closure<F, count_fn, int, kcont::static_level<bsd_level::immediate>,
                       kcont::list_guarded>
      c{F{&s}, count_fn{}, 0, kcont::at<bsd_level::immediate>, 3};
  a.sfflags = 0x1;  // not linked yet: the owner's alone
  b.sfflags = 0x3;
  c.sfflags = 0x2;
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  REQUIRE(c.attach() == 0);

  CHECK(s.list.fire(d, 0x1, bsd_level::softserial) == 2);  // a now, b deferred
  CHECK(k1.env() == 1);
  CHECK(d.drain_all() == 1);
  CHECK(k2.env() == 1);
  CHECK(s.list.fire(d, 0x2, bsd_level::process, kcont::hold_lock) == 2);  // b, c
  CHECK(k2.env() == 2);
  CHECK(c.env() == 1);
  {
    auto g = s.list.guard();
    CHECK(a.snapshot().data == 1);
    CHECK(b.snapshot().fflags == 0x3);
    const kcont::knote_change rep = c.filter_report(0, /*clear=*/true);
    CHECK(rep.data == 1);
    CHECK(rep.fflags == 0x2);
    kcont::knote_change ch{0, 0x1, 0};
    c.filter_change(ch);  // c now fires on bit 1
  }
  CHECK(s.list.fire(d, 0x1, bsd_level::process, kcont::hold_lock) == 3);
  CHECK(c.env() == 2);
  CHECK(kcont::detail::klist_checker<long, bsd_level, Lock>::valid(s.list));
  a.detach(d);
  b.detach(d);
  c.detach(d);
  CHECK(c.snapshot().data == 1);  // unlinked: the owner's alone again
  CHECK(s.list.empty());
}

namespace {
// A continuation that reads its knote's fields with no guard of its own:
// under a hold_lock fan-out (the list lock held), or on a no_lock klist
// (its one thread).
struct read_fn {
  void operator()(kn_t* kn, long& seen, knote_cause) const { seen = kn->snapshot().data; }
};
}  // namespace

TEST_CASE("klist.list_guarded_hold_lock_continuation_reads_its_fields") {
  source<std::mutex> s;
  using F = bits_filter<std::mutex>;
  kcont::knote_closure<F, read_fn, long, kcont::static_level<bsd_level::immediate>,
                       kcont::list_guarded>
      a{F{&s}, read_fn{}, 0, kcont::at<bsd_level::immediate>, 1};
  a.sfflags = 1;
  REQUIRE(a.attach() == 0);
  kcont::immediate_target<> t;
  for (int i = 0; i < 3; ++i) CHECK(s.list.fire(t, 1, t.lowest, kcont::hold_lock) == 1);
  CHECK(a.env() == 3);
  (void)a.detach();
}

TEST_CASE("klist.list_guarded_field_change_from_another_thread_is_seen_by_the_next_fire") {
  // Another thread changes the knote's saved interest (filter_change, a
  // kqueue's EV_ADD over it) and its filter's state (filter()) under
  // guard(); the fire after it, on this thread, sees both.
  source<std::mutex> s;
  using F = bits_filter<std::mutex>;
  kcont::knote_closure<F, count_fn, int, kcont::static_level<bsd_level::immediate>,
                       kcont::list_guarded>
      a{F{&s}, count_fn{}, 0, kcont::at<bsd_level::immediate>, 1};
  a.sfflags = 0x1;
  REQUIRE(a.attach() == 0);
  kcont::immediate_target<> t;
  CHECK(s.list.fire(t, 0x6, t.lowest, kcont::hold_lock) == 0);  // not interested
  std::thread other([&] {
    auto g = s.list.guard();
    kcont::knote_change ch{0, 0x6, 0};
    a.filter_change(ch);        // interested in bits 2 and 4
    a.filter().threshold = 2;   // both of them
  });
  other.join();
  CHECK(s.list.fire(t, 0x2, t.lowest, kcont::hold_lock) == 0);  // one bit: below it
  CHECK(s.list.fire(t, 0x6, t.lowest, kcont::hold_lock) == 1);
  CHECK(s.list.fire(t, 0x6, t.lowest) == 1);  // the plain fan-out too
  CHECK(a.env() == 2);
  (void)a.detach();
}

TEST_CASE("klist.list_guarded_concurrent_fire_and_field_access_under_the_lock") {
  // One thread fires (plain and hold_lock), another changes and reads the
  // knotes' fields and filters under guard(): no field lock, the list's
  // lock orders every access (ThreadSanitizer checks it); every event is
  // counted once, by data or by a report that cleared it.
  source<std::mutex> s;
  using F = bits_filter<std::mutex>;
  using sub = kcont::knote_closure<F, count_fn, int,
                                   kcont::static_level<bsd_level::immediate>,
                                   kcont::list_guarded>;
  constexpr int N = 4;
  constexpr int fires = 2000;
  std::vector<std::unique_ptr<sub>> subs;
  for (int i = 0; i < N; ++i) {
    subs.push_back(std::make_unique<sub>(F{&s}, count_fn{}, 0,
                                         kcont::at<bsd_level::immediate>,
                                         static_cast<std::uintptr_t>(i)));
    subs.back()->sfflags = 1;
    REQUIRE(subs.back()->attach() == 0);
  }
  std::atomic<bool> done{false};
  long reported = 0;
  std::thread other([&] {
    std::uint32_t flip = 0;
    while (!done.load()) {
      auto g = s.list.guard();
      for (auto& p : subs) {
        kcont::knote_change ch{0, 1u | (flip & 2u), 0};
        p->filter_change(ch);
        p->filter().threshold = 1;
        reported += p->filter_report(0, /*clear=*/true).data;
        (void)p->snapshot();
      }
      ++flip;
    }
  });
  kcont::immediate_target<> t;
  std::size_t fired = 0;
  for (int i = 0; i < fires; ++i)
    fired += (i % 2 == 0) ? s.list.fire(t, 1, t.lowest, kcont::hold_lock)
                          : s.list.fire(t, 1, t.lowest);
  done.store(true);
  other.join();
  CHECK(fired == static_cast<std::size_t>(N * fires));
  long left = 0;
  int runs = 0;
  {
    auto g = s.list.guard();  // linked: guarded, even with one thread left
    for (auto& p : subs) left += p->snapshot().data;
  }
  for (auto& p : subs) {
    runs += p->env();
    (void)p->detach();
  }
  CHECK(reported + left == static_cast<long>(N) * fires);
  CHECK(runs == N * fires);
}

TEST_CASE("klist.list_guarded_fields_without_the_list_lock_are_caught" *
          doctest::skip(!kcont::contract_checks)) {
  // The promise list_guarded makes: a linked knote's fields are touched only
  // with its list's lock held. Debug builds abort, naming it.
  CHECK(kcont_test::dies_with(
      [] {
        static source<std::mutex> s;
        static kcont::kc<count_fn, int, bsd_level> k{count_fn{}, 0, bsd_level::immediate};
        static kcont::knote<bits_filter<std::mutex>, bsd_level, kcont::list_guarded> a{
            bits_filter<std::mutex>{&s}, k, 1};
        (void)a.attach();
        (void)a.snapshot();
      },
      "without its klist's lock"));
  CHECK(kcont_test::dies_with(
      [] {
        // The plain fan-out runs a continuation with the lock dropped.
        static source<std::mutex> s;
        static kcont::kc k{[](kn_t* kn, int&, knote_cause) { (void)kn->snapshot(); }, 0,
                           bsd_level::immediate};
        static kcont::knote<bits_filter<std::mutex>, bsd_level, kcont::list_guarded> a{
            bits_filter<std::mutex>{&s}, k, 1};
        a.sfflags = 1;
        (void)a.attach();
        kcont::immediate_target<> t;
        (void)s.list.fire(t, 1, t.lowest);
      },
      "without its klist's lock"));
  CHECK(kcont_test::dies_with(
      [] {
        // The default policy (list_guarded) is checked the same way.
        static source<std::mutex> s;
        static kcont::kc<count_fn, int, bsd_level> k{count_fn{}, 0, bsd_level::immediate};
        static kcont::knote<bits_filter<std::mutex>> a{bits_filter<std::mutex>{&s}, k, 1};
        (void)a.attach();
        (void)a.snapshot();
      },
      "without its klist's lock"));
  CHECK(kcont_test::dies_with(
      [] {
        // guard() from a hold_lock continuation: the lock is held.
        static source<std::mutex> s;
        static kcont::kc k{[](kn_t*, int&, knote_cause) { auto g = s.list.guard(); }, 0,
                           bsd_level::immediate};
        static kcont::knote<bits_filter<std::mutex>, bsd_level, kcont::list_guarded> a{
            bits_filter<std::mutex>{&s}, k, 1};
        a.sfflags = 1;
        (void)a.attach();
        kcont::immediate_target<> t;
        (void)s.list.fire(t, 1, t.lowest, kcont::hold_lock);
      },
      "its own hold_lock fan-out"));
}

// ------------------------------------------- the default policy: list_guarded
// FreeBSD guards a knote's kn_data / kn_sfflags by its knlist's lock
// (kl_lock: knote() runs each f_event with it held, sys/kern/kern_event.c),
// with no lock of the knote's own; kcont's default knote policy is the same.

namespace {
// bits_filter that also records, in each event, whether the knote's field
// lock was held around it (it tries to take it).
template <class Lock>
struct probe_filter : bits_filter<Lock> {
  int events = 0;
  int under_field_lock = 0;
  bool event(kn_t& kn, long hint) {
    ++events;
    kcont::spin_lock& l = kcont::detail::knote_access::fields_lock(kn);
    if (l.try_lock())
      l.unlock();
    else
      ++under_field_lock;
    return bits_filter<Lock>::event(kn, hint);
  }
};
struct method_owner {
  int n = 0;
  void on(kn_t*, knote_cause) { ++n; }
};
}  // namespace

TEST_CASE("knote.default_policy_is_freebsd_knlist_discipline") {
  using F = bits_filter<std::mutex>;
  using imm = kcont::static_level<bsd_level::immediate>;
  CHECK(std::is_same_v<kcont::knote<F>::lock_type, kcont::list_guarded>);
  CHECK(std::is_same_v<kcont::knote_closure<F, count_fn, int, imm>::knote_type::lock_type,
                       kcont::list_guarded>);
  CHECK(std::is_same_v<kcont::knote_method<&method_owner::on, F>::knote_type::lock_type,
                       kcont::list_guarded>);
  // Filters whose fields no klist lock of the user's guards name a field
  // lock as their knotes' default (their knote_policy).
  CHECK(std::is_same_v<kcont::knote<kcont::timer_filter<>>::lock_type, kcont::spin_lock>);
  CHECK(std::is_same_v<kcont::knote<kcont::user_filter>::lock_type, kcont::spin_lock>);

  // On a locked klist: each fan-out's filter event runs under the list lock
  // and no field lock; guard() is how anyone else reaches the fields.
  source<std::mutex> s;
  using P = probe_filter<std::mutex>;
  kcont::knote_closure<P, count_fn, int, imm> a{P{{&s}}, count_fn{}, 0,
                                                kcont::at<bsd_level::immediate>, 1};
  a.sfflags = 1;
  REQUIRE(a.attach() == 0);
  kcont::immediate_target<> t;
  CHECK(s.list.fire(t, 1, t.lowest) == 1);
  CHECK(s.list.fire(t, 1, t.lowest, kcont::hold_lock) == 1);
  CHECK(a.env() == 2);
  {
    auto g = s.list.guard();
    CHECK(a.filter().events == 2);
    CHECK(a.filter().under_field_lock == 0);
    CHECK(a.snapshot().data == 2);  // bits_filter counts its events
    CHECK(a.snapshot().fflags == 1);
  }
  CHECK(a.detach());
}

TEST_CASE("knote.default_knote_on_a_no_lock_klist_fans_out_with_no_field_lock") {
  // On a klist<..., no_lock> the list's lock is its contract (one thread at
  // a time fires and touches it): a default knote's fields are that
  // thread's. No field lock around the filter, none to read them (its
  // continuation's snapshot, the owner's), guard() a no-op lock.
  source<kcont::no_lock> s;
  using P = probe_filter<kcont::no_lock>;  // counts its events in data
  kcont::knote_closure<P, read_fn, long, kcont::static_level<bsd_level::immediate>> a{
      P{{&s}}, read_fn{}, 0, kcont::at<bsd_level::immediate>, 1};
  kcont::kc<count_fn, int, bsd_level> k{count_fn{}, 0, bsd_level::immediate};
  kcont::knote<P> b{P{{&s}}, k, 2};
  a.sfflags = 1;
  b.sfflags = 1;
  REQUIRE(a.attach() == 0);  // the old default's debug builds aborted here
  REQUIRE(b.attach() == 0);
  kcont::immediate_target<> t;
  for (int i = 0; i < 3; ++i) CHECK(s.list.fire(t, 1, t.lowest) == 2);
  CHECK(a.env() == 3);  // its continuation read its data
  CHECK(k.env() == 3);
  CHECK(a.filter().events == 3);
  CHECK(a.filter().under_field_lock == 0);
  CHECK(b.filter().under_field_lock == 0);
  CHECK(b.snapshot().data == 3);  // the list's thread: no guard needed
  {
    auto g = s.list.guard();  // nothing held: fire and erase may follow
    CHECK(s.list.fire(t, 1, t.lowest) == 2);
    CHECK(b.detach());
  }
  CHECK(s.list.fire(t, 1, t.lowest) == 1);  // one subscriber left
  CHECK(a.env() == 5);
  CHECK(kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>::valid(s.list));
  CHECK(a.detach());
  CHECK(a.snapshot().data == 5);
}

namespace {
template <class Lock>
struct shared_env {
  std::atomic<long>* runs;
  source<Lock>* src;
};
// Counts its runs; on a locked klist also reads its knote's data under the
// list's guard() (from whichever thread runs it).
template <class Lock>
struct shared_fn {
  void operator()(kn_t* kn, shared_env<Lock>& e, knote_cause) const {
    e.runs->fetch_add(1);
    if constexpr (!std::is_same_v<Lock, kcont::no_lock>) {
      auto g = e.src->list.guard();
      (void)kn->snapshot();
    }
  }
};
}  // namespace

TEST_CASE_TEMPLATE("knote.default_knote_state_changes_from_another_thread_stay_safe", Lock,
                   std::mutex, kcont::spin_lock, kcont::no_lock) {
  // The state word of a default knote stays thread-safe: while this thread
  // fans out, another activates, disables and enables the knotes (on a
  // locked klist it then detaches and frees them, fan-outs still running).
  // ThreadSanitizer and ASan watch.
  using F = bits_filter<Lock>;
  using sub = kcont::knote_closure<F, shared_fn<Lock>, shared_env<Lock>,
                                   kcont::static_level<bsd_level::immediate>>;
  CHECK(std::is_same_v<typename sub::knote_type::lock_type, kcont::list_guarded>);
  constexpr bool locked = !std::is_same_v<Lock, kcont::no_lock>;
  constexpr int N = 8;
  source<Lock> s;
  std::atomic<long> runs{0};
  std::vector<std::unique_ptr<sub>> subs;
  for (int i = 0; i < N; ++i) {
    subs.push_back(std::make_unique<sub>(F{&s}, shared_fn<Lock>{}, shared_env<Lock>{&runs, &s},
                                         kcont::at<bsd_level::immediate>,
                                         static_cast<std::uintptr_t>(i)));
    subs.back()->sfflags = 1;
    REQUIRE(subs.back()->attach() == 0);
  }
  kcont::immediate_target<> t;
  std::atomic<bool> go{false};
  std::atomic<bool> done{false};
  std::atomic<int> detached{0};
  std::thread other([&] {
    kcont::immediate_target<> ot;
    while (!go.load()) std::this_thread::yield();
    for (int round = 0; round < 200; ++round) {
      for (auto& p : subs) {
        (void)p->activate(ot, ot.lowest);
        p->disable();
        (void)p->activate(ot, ot.lowest);  // marked active, not run
        (void)p->enable(ot, ot.lowest);    // runs it (rule 6)
      }
    }
    if constexpr (locked) {
      for (auto& p : subs) {
        if (p->detach()) detached.fetch_add(1);
        p.reset();
      }
    }
    done.store(true);
  });
  go.store(true);
  long fired = 0;
  while (!done.load()) fired += static_cast<long>(s.list.fire(t, 1, t.lowest));
  other.join();
  if constexpr (!locked) {
    for (auto& p : subs)
      if (p->detach()) detached.fetch_add(1);
  }
  CHECK(detached.load() == N);
  CHECK(s.list.empty());
  CHECK(kcont::detail::klist_checker<long, bsd_level, Lock>::valid(s.list));
  CHECK(runs.load() == fired + 2L * 200 * N);  // every fire and two activations a round ran
}

TEST_CASE("knote.timer_default_stays_thread_safe") {
  // A timer fires without a klist (the source's tick), so no list lock can
  // guard its fields: its default is a field lock, and its data may be
  // read from any thread while another ticks (ThreadSanitizer watches).
  kcont::timer_source timers;
  using tk = kcont::knote<kcont::timer_filter<>>;
  CHECK(std::is_same_v<tk::lock_type, kcont::spin_lock>);
  std::atomic<long> runs{0};
  kcont::kc on{[](kcont::timer_source::knote_type*, std::atomic<long>*& n, knote_cause) {
                 n->fetch_add(1);
               },
               &runs, bsd_level::immediate};
  tk timer{kcont::timer_filter<>{timers, std::chrono::nanoseconds(1), kcont::timer_mode::periodic},
           on};
  REQUIRE(timer.attach() == 0);
  std::atomic<bool> done{false};
  std::atomic<bool> monotonic{true};
  std::thread reader([&] {
    std::int64_t last = 0;
    while (!done.load()) {
      const std::int64_t d = timer.snapshot().data;
      if (d < last) monotonic.store(false);  // expirations only add up
      last = d;
    }
  });
  std::size_t fired = 0;
  for (int i = 0; i < 2000; ++i) fired += timers.tick();
  done.store(true);
  reader.join();
  CHECK(monotonic.load());
  CHECK(timer.detach());
  CHECK(runs.load() == static_cast<long>(fired));
  CHECK(timer.snapshot().data >= static_cast<std::int64_t>(fired));
}
