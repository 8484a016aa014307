// kqueue: the regression suite, one case per flag and per interaction
// (kqueue(2), and FreeBSD kern_event.c where the manual is silent).
#include <kcont/event_source.hpp>
#include <kcont/knote_closure.hpp>
#include <kcont/kqueue.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "kq_support.hpp"
#include "support.hpp"

using namespace kq_test;
namespace note = kcont::note;
using std::chrono::milliseconds;

// A knote that cannot be allocated is reported, never lost: with exceptions
// as std::bad_alloc, without them as ENOMEM (FreeBSD's kevent(2) error);
// nothing is registered either way and the next add works.
TEST_CASE("kqueue.add_reports_allocation_failure") {
  fixture f;
  int err = -1;
  bool threw = false;
  if (!kcont_test::fail_allocations(true)) return;  // cannot inject here
#if defined(__cpp_exceptions)
  try {
    err = f.change(user(1, ev::add));
  } catch (const std::bad_alloc&) {
    threw = true;
  }
#else
  err = f.change(user(1, ev::add));
#endif
  kcont_test::fail_allocations(false);
#if defined(__cpp_exceptions)
  CHECK(threw);
  CHECK(err == -1);  // nothing returned: it threw
#else
  CHECK(err == ENOMEM);
  CHECK_FALSE(threw);
#endif
  CHECK(f.kq.size() == 0);
  CHECK(f.change(user(1, ev::add)) == 0);
  CHECK(f.kq.size() == 1);
}

TEST_CASE_TEMPLATE("kqueue.add_trigger_scan_round_trips_udata", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev ch[] = {user(1, ev::add | ev::clear, 0, 0, 0xfeed)};
  kev out[4];
  auto r = f.kq.kevent(ch, out);
  CHECK(r == kcont::kevent_result{0, 0, 0});
  CHECK(f.kq.size() == 1);
  // Every change but a delete replaces the udata (kqueue_register), so the
  // trigger carries it too.
  REQUIRE(f.change(user(1, ev::none, note::trigger, 0, 0xfeed)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == 1);
  CHECK(e[0].filter == filter_id::user);
  CHECK(e[0].udata == 0xfeed);
  CHECK(kcont::has(e[0].flags, ev::clear));
  CHECK(!kcont::has(e[0].flags, ev::add));
  CHECK(f.scan().empty());
}

TEST_CASE("kqueue.typed_udata_round_trips_a_pointer") {
  struct session {
    int id;
  } s{4};
  kcont::kqueue<kcont::filters<kcont::user_filter>, session*, kcont::spin_lock> kq;
  using K = kcont::basic_kevent<session*>;
  REQUIRE(kq.change(K{1, filter_id::user, ev::add | ev::clear, 0, 0, &s}) == 0);
  REQUIRE(kq.change(K{1, filter_id::user, ev::none, note::trigger, 0, &s}) == 0);
  K out[2];
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].udata->id == 4);
}

TEST_CASE_TEMPLATE("kqueue.trigger_before_add_is_enoent_and_not_remembered", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  CHECK(f.change(trigger(1)) == ENOENT);
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  CHECK(f.scan().empty());
  // The same through a klist: events before the knote exists are not seen.
  f.cs.fire(5);
  REQUIRE(f.change(counter(9, ev::add | ev::clear)) == 0);
  CHECK(f.scan().empty());
  f.cs.fire(1);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 1);
}

TEST_CASE_TEMPLATE("kqueue.errors_have_errno_codes", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  CHECK(f.change(user(1, ev::delete_)) == ENOENT);
  CHECK(f.change(user(1, ev::enable)) == ENOENT);
  CHECK(f.change(user(1, ev::disable)) == ENOENT);
  CHECK(f.change(kev{1, filter_id{55}, ev::add}) == EINVAL);
  CHECK(f.change(kev{1, filter_id{55}, ev::delete_}) == EINVAL);
  CHECK(f.kq.size() == 0);
}

TEST_CASE_TEMPLATE("kqueue.receipt_and_error_entries", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev ch[] = {user(1, ev::add | ev::receipt, 0, 0, 7), user(2, ev::delete_),
              user(3, ev::add)};
  kev out[4];
  auto r = f.kq.kevent(ch, out);
  CHECK(r == kcont::kevent_result{2, 0, 2});
  // kqueue_kevent: an entry's flags are EV_ERROR alone, data its errno.
  CHECK(out[0].ident == 1);
  CHECK(out[0].flags == ev::error);
  CHECK(out[0].data == 0);
  CHECK(out[0].udata == 7);
  CHECK(out[1].ident == 2);
  CHECK(out[1].flags == ev::error);
  CHECK(out[1].data == ENOENT);
  CHECK(f.kq.size() == 2);

  // With a pending event and receipts, kevent reports only the receipts.
  REQUIRE(f.change(trigger(1)) == 0);
  kev ch2[] = {user(3, ev::enable | ev::receipt)};
  r = f.kq.kevent(ch2, out);
  CHECK(r == kcont::kevent_result{1, 0, 1});
  CHECK(out[0].flags == ev::error);
  CHECK(f.kq.pending() == 1);

  // An error with no room left fails the call; later changes are not applied.
  kev ch3[] = {user(8, ev::enable), user(9, ev::add)};
  r = f.kq.kevent(ch3, std::span<kev>{});
  CHECK(r == kcont::kevent_result{-1, ENOENT, 0});
  CHECK(f.kq.size() == 2);
}

TEST_CASE_TEMPLATE("kqueue.rule7_coalesces_activations_before_a_scan", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(counter(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(counter(2, ev::add | ev::clear)) == 0);
  for (int i = 0; i < 10; ++i) CHECK(f.cs.fire(1) == 2);
  CHECK(f.kq.pending() == 2);
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].ident == 1);
  CHECK(e[0].data == 10);
  CHECK(e[1].ident == 2);
  CHECK(f.scan().empty());
}

TEST_CASE_TEMPLATE("kqueue.disable_then_trigger_then_enable_reports", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(user(1, ev::disable)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(1, ev::enable)) == 0);
  CHECK(f.scan().size() == 1);
  // The same through a klist: disabled knotes are marked active, not queued.
  REQUIRE(f.change(counter(2, ev::add | ev::clear | ev::disable)) == 0);
  f.cs.fire(3);
  CHECK(f.kq.pending() == 0);
  REQUIRE(f.change(counter(2, ev::enable)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
}

TEST_CASE_TEMPLATE("kqueue.disable_while_pending_withdraws_the_event", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  CHECK(f.kq.pending() == 1);
  REQUIRE(f.change(user(1, ev::disable)) == 0);
  // kqueue_register only sets KN_DISABLED; kqueue_scan drops the queued
  // knote (kq_count counts it until then).
  CHECK(f.kq.pending() == 1);
  CHECK(f.scan().empty());
  CHECK(f.kq.pending() == 0);
  REQUIRE(f.change(user(1, ev::enable)) == 0);  // still triggered: back again
  CHECK(f.scan().size() == 1);
}

TEST_CASE_TEMPLATE("kqueue.oneshot_auto_deletes_after_its_report", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::oneshot, 0, 0, 3)) == 0);
  REQUIRE(f.change(counter(2, ev::add | ev::oneshot)) == 0);
  REQUIRE(f.change(user(1, ev::none, note::trigger, 0, 3)) == 0);
  f.cs.fire(4);
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(kcont::has(e[0].flags, ev::oneshot));
  CHECK(e[0].udata == 3);
  CHECK(e[1].data == 4);
  CHECK(f.kq.size() == 0);
  CHECK(f.cs.list.empty());
  CHECK(f.change(trigger(1)) == ENOENT);
}

TEST_CASE_TEMPLATE("kqueue.dispatch_auto_disables_and_enable_rearms", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear | ev::dispatch)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  CHECK(f.scan().size() == 1);
  REQUIRE(f.change(trigger(1)) == 0);  // delivered while disabled: held back
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(1, ev::enable)) == 0);
  CHECK(f.scan().size() == 1);
  CHECK(f.scan().empty());

  // Without EV_CLEAR the user event stays triggered: re-enabling reports it
  // again (FreeBSD re-checks the filter on every change).
  REQUIRE(f.change(user(2, ev::add | ev::dispatch)) == 0);
  REQUIRE(f.change(trigger(2)) == 0);
  CHECK(f.scan().size() == 1);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(2, ev::enable)) == 0);
  CHECK(f.scan().size() == 1);
}

TEST_CASE_TEMPLATE("kqueue.clear_resets_state_and_no_clear_is_level_triggered", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(counter(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(counter(2, ev::add)) == 0);
  f.cs.fire(2);
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].data == 2);
  CHECK(e[1].data == 2);
  e = f.scan();  // the level-triggered one is reported again, data kept
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == 2);
  CHECK(e[0].data == 2);
  f.cs.fire(1);
  e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].ident == 2);  // it was pending first
  CHECK(e[0].data == 3);
  CHECK(e[1].ident == 1);
  CHECK(e[1].data == 1);
  // A user event without EV_CLEAR stays triggered until a change clears it.
  REQUIRE(f.change(user(3, ev::add)) == 0);
  REQUIRE(f.change(trigger(3)) == 0);
  (void)f.scan();
  REQUIRE(f.change(counter(2, ev::delete_)) == 0);
  CHECK(f.scan().size() == 1);
  REQUIRE(f.change(user(3, ev::clear)) == 0);
  CHECK(f.scan().empty());
}

TEST_CASE_TEMPLATE("kqueue.level_triggered_knote_is_reported_once_per_scan", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  auto e = f.scan(8);
  CHECK(e.size() == 1);
}

TEST_CASE_TEMPLATE("kqueue.scan_max_below_pending_leaves_the_rest_in_order", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  for (std::uintptr_t i = 1; i <= 5; ++i) REQUIRE(f.change(user(i, ev::add | ev::clear)) == 0);
  for (std::uintptr_t i : {3, 1, 5, 2, 4}) REQUIRE(f.change(trigger(i)) == 0);
  auto e = f.scan(2);
  REQUIRE(e.size() == 2);
  CHECK(e[0].ident == 3);
  CHECK(e[1].ident == 1);
  CHECK(f.kq.pending() == 3);
  e = f.scan(1);
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == 5);
  e = f.scan(10);
  REQUIRE(e.size() == 2);
  CHECK(e[0].ident == 2);
  CHECK(e[1].ident == 4);
}

TEST_CASE_TEMPLATE("kqueue.delete_while_pending_drops_the_event", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(counter(2, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  f.cs.fire(1);
  CHECK(f.kq.pending() == 2);
  REQUIRE(f.change(user(1, ev::delete_)) == 0);
  REQUIRE(f.change(counter(2, ev::delete_)) == 0);
  CHECK(f.kq.pending() == 0);
  CHECK(f.scan().empty());
  CHECK(f.cs.list.empty());
  // Re-adding does not resurrect the old event.
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  CHECK(f.scan().empty());
}

TEST_CASE_TEMPLATE("kqueue.readd_while_pending_updates_udata_without_duplicate", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear, 0, 0, 10)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  REQUIRE(f.change(user(1, ev::add, 0, 0, 20)) == 0);
  CHECK(f.kq.size() == 1);
  CHECK(f.kq.pending() == 1);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 20);
  CHECK(kcont::has(e[0].flags, ev::clear));  // the EV_ADD's flags are kept
  // A klist-driven knote keeps its accumulated state across a re-add.
  REQUIRE(f.change(counter(2, ev::add | ev::clear, 1)) == 0);
  f.cs.fire(2);
  REQUIRE(f.change(counter(2, ev::add | ev::clear, 2)) == 0);
  f.cs.fire(3);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 2);
  CHECK(e[0].data == 5);
  // A re-add updates the filter flags (through the user filter's FF* ops).
  REQUIRE(f.change(user(1, ev::add, note::ffcopy | 0x5, 0, 21)) == 0);
  REQUIRE(f.change(user(1, ev::none, note::trigger, 0, 21)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x5);
  CHECK(e[0].udata == 21);
  // FreeBSD's filt_usertouch: EV_CLEAR in any change, a re-add included,
  // resets a user event, so the pending event is dropped by the re-check.
  REQUIRE(f.change(trigger(1)) == 0);
  REQUIRE(f.change(user(1, ev::add | ev::clear, 0, 0, 30)) == 0);
  CHECK(f.scan().empty());
}

TEST_CASE_TEMPLATE("kqueue.recheck_drops_an_event_whose_condition_no_longer_holds", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  REQUIRE(f.change(user(1, ev::clear)) == 0);  // FreeBSD: EV_CLEAR in a change resets
  CHECK(f.kq.pending() == 1);
  CHECK(f.scan().empty());
  CHECK(f.kq.pending() == 0);
}

TEST_CASE("kqueue.blocking_scan_is_woken_by_an_activation") {
  fixture f;
  REQUIRE(f.change(counter(1, ev::add | ev::clear)) == 0);
  // Fires once the scan below is blocked (waiting() counts it), so the event
  // must wake a sleeping scanner rather than be found by its first look.
  std::thread firer([&] {
    while (f.kq.waiting() == 0) std::this_thread::yield();
    f.cs.fire(1);
  });
  kev out[2];
  const auto n = f.kq.scan(out, std::nullopt);
  firer.join();
  REQUIRE(n == 1);
  CHECK(out[0].data == 1);
}

// A blocked scanner is woken once per empty-to-non-empty transition of the
// pending list, not once per activation: one fan-out over 256 knotes while
// a scanner sleeps is one wake-up (kqueue::wakeups counts them). Before, each
// activation that queued a knote notified the condition variable while the
// woken scanner had not yet retaken the kqueue's lock: up to 256 wake-ups.
TEST_CASE("kqueue.blocked_scanner_is_woken_once_per_empty_to_nonempty") {
  fixture f;
  constexpr std::uintptr_t knotes = 256;
  for (std::uintptr_t i = 0; i < knotes; ++i)
    REQUIRE(f.change(counter(i, ev::add | ev::clear)) == 0);
  CHECK(f.kq.wakeups() == 0);
  for (std::uint64_t round = 1; round <= 3; ++round) {
    std::thread firer([&] {
      while (f.kq.waiting() == 0) std::this_thread::yield();
      f.cs.fire(1);  // 256 activations, the list empty before the first
    });
    kev out[knotes];
    std::size_t n = f.kq.scan(out, std::nullopt);
    firer.join();
    REQUIRE(n >= 1);
    n += f.kq.scan(out);  // what the first scan found no more
    CHECK(n == knotes);
    CHECK(f.kq.wakeups() == round);
  }
}

TEST_CASE("kqueue.scan_timeout_expires_empty") {
  fixture f;
  kev out[2];
  const auto start = std::chrono::steady_clock::now();
  CHECK(f.kq.scan(out, milliseconds(15)) == 0);
  CHECK(std::chrono::steady_clock::now() - start >= milliseconds(15));
  auto r = f.kq.kevent({}, out, milliseconds(1));
  CHECK(r == kcont::kevent_result{0, 0, 0});
}

TEST_CASE("kqueue.scan_timeout_max_blocks_until_an_event") {
  // FreeBSD's kqueue_scan: a timeout that cannot be added to the current
  // time (or with tv_sec > INT32_MAX) means no timeout (asbt = 0). Before,
  // now + nanoseconds::max() overflowed (UBSan) into a deadline in the past
  // and the scan returned at once, empty.
  fixture f;
  REQUIRE(f.change(counter(1, ev::add | ev::clear)) == 0);
  std::atomic<bool> returned{false};
  std::size_t n = 0;
  kev out[2];
  std::thread scanner([&] {
    n = f.kq.scan(out, std::chrono::nanoseconds::max());
    returned.store(true);
  });
  // Fire only once the scan is seen blocked (or, on a broken build, back).
  while (f.kq.waiting() == 0 && !returned.load()) std::this_thread::yield();
  CHECK_FALSE(returned.load());
  f.cs.fire(1);
  scanner.join();
  REQUIRE(n == 1);
  CHECK(out[0].ident == 1);
  CHECK(out[0].data == 1);
}

TEST_CASE_TEMPLATE("kqueue.activation_and_scan_never_allocate", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  for (std::uintptr_t i = 0; i < 8; ++i) {
    REQUIRE(f.change(counter(i, ev::add | ev::clear)) == 0);
    REQUIRE(f.change(user(i, ev::add | ev::clear)) == 0);
    REQUIRE(f.change(user(100 + i, ev::add | ev::dispatch)) == 0);
  }
  kev out[32];
  kcont_test::allocation_scope scope;
  std::size_t total = 0;
  for (int round = 0; round < 200; ++round) {
    f.cs.fire(1);
    f.cs.fire(1);
    for (std::uintptr_t i = 0; i < 8; ++i) {
      (void)f.change(trigger(i));
      (void)f.change(trigger(100 + i));
      (void)f.change(user(100 + i, ev::enable));
    }
    total += f.kq.scan(out);
  }
  CHECK(scope.count() == 0);
  CHECK(total == 200 * 24);
}

TEST_CASE("kqueue.destructor_frees_pending_and_attached_knotes") {
  clock_at_t0 clock_reset;
  counter_source cs;
  test_timer_source ts;
  {
    kq_t kq{cs, ts};
    REQUIRE(kq.change(counter(1, ev::add)) == 0);
    REQUIRE(kq.change(user(1, ev::add)) == 0);
    REQUIRE(kq.change(trigger(1)) == 0);
    REQUIRE(kq.change(kev{1, filter_id::timer, ev::add, 0, 5}) == 0);
    cs.fire(1);
    CHECK(kq.pending() == 2);
  }
  CHECK(cs.list.empty());
  CHECK(ts.empty());
}

TEST_CASE("kqueue.filter_without_its_context_is_einval") {
  kcont::kqueue<kcont::filters<kcont::user_filter, counter_filter>> kq;  // no counter_source
  CHECK(kq.change(counter(1, ev::add)) == EINVAL);
  CHECK(kq.change(user(1, ev::add)) == 0);
}

TEST_CASE("kqueue.rule8_delete_while_an_activation_is_in_flight") {
  // A klist fan-out on another thread is inside the kqueue's continuation
  // when the knote is deleted: the delete waits, and nothing is reported for
  // it afterwards. Repeated to hit the window; ASan/TSan check the memory.
  fixture f;
  std::atomic<bool> stop{false};
  std::thread firer([&] {
    while (!stop.load()) f.cs.fire(1);
  });
  kev out[4];
  for (int i = 0; i < 300; ++i) {
    REQUIRE(f.change(counter(1, ev::add | ev::clear, static_cast<std::uintptr_t>(i))) == 0);
    std::this_thread::yield();
    REQUIRE(f.change(counter(1, ev::delete_)) == 0);
    CHECK(f.kq.scan(out) == 0);
  }
  stop.store(true);
  firer.join();
}

namespace {
// A source whose filter's attach links the knote, then waits (up to 5 s)
// until a fan-out over that source on another thread has returned.
struct slow_attach_source {
  kcont::klist<long, bsd_level, std::mutex> list;
  std::atomic<bool> linked{false};
  std::atomic<bool> fired{false};
  bool fired_during_attach = false;
};
struct slow_attach_filter {
  static constexpr filter_id id{101};
  using context_type = slow_attach_source;
  slow_attach_source* src;
  explicit slow_attach_filter(slow_attach_source& s) : src(&s) {}
  int attach(kcont::knote_base<long>& kn) {
    src->list.insert(kn);
    src->linked.store(true);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!src->fired.load() && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    src->fired_during_attach = src->fired.load();
    return 0;
  }
  void detach(kcont::knote_base<long>& kn) { (void)src->list.erase(kn); }
  bool event(kcont::knote_base<long>& kn, long hint) {
    if (hint > 0) {
      kn.data += hint;
      return true;
    }
    return kn.data != 0;
  }
};
}  // namespace

TEST_CASE("kqueue.a_source_fires_while_a_knote_is_being_attached") {
  // FreeBSD's kqueue_register calls the filter's f_attach without the
  // kqueue's lock (the knote marked in flux), and knote() reaches the kqueue
  // from under the source's lock: so a source fired on another thread while
  // a filter attaches neither waits for that attach nor loses its event (the
  // registration's re-check queues the knote once the attach returns).
  slow_attach_source src;
  kcont::kqueue<kcont::filters<slow_attach_filter>, std::uintptr_t, std::mutex> kq{src};
  std::thread firer([&] {
    while (!src.linked.load()) std::this_thread::yield();
    kcont::immediate_target<> t;
    CHECK(src.list.fire(t, 1, t.lowest) == 1);
    src.fired.store(true);
  });
  const int err = kq.change({.ident = 7, .filter = filter_id{101},
                             .flags = ev::add | ev::clear, .udata = 70});
  firer.join();
  CHECK(err == 0);
  CHECK(src.fired_during_attach);
  kev out[4];
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].ident == 7);
  CHECK(out[0].data == 1);
  CHECK(out[0].udata == 70);
  CHECK(kq.change({.ident = 7, .filter = filter_id{101}, .flags = ev::delete_}) == 0);
  CHECK(src.list.empty());
}

namespace {
// A source whose knotes can be closed one by one (fire(-ident)), as
// fd_source::forget closes a descriptor: the filter refuses that event
// and says defunct() from then on (kcont/filter.hpp). With close_in_attach
// the attach closes its own knote right after linking it (a close racing
// the registration: FreeBSD's knote_fdclose waits for the knote in flux).
struct closable_source {
  kcont::klist<long, bsd_level, std::mutex> list;
  bool close_in_attach = false;
};
struct closable_filter {
  static constexpr filter_id id{102};
  using context_type = closable_source;
  closable_source* src;
  bool closed = false;
  explicit closable_filter(closable_source& s) : src(&s) {}
  int attach(kcont::knote_base<long>& kn) {
    (void)src->list.insert(kn);
    if (src->close_in_attach) {
      kcont::immediate_target<> t;
      CHECK(src->list.fire(t, -static_cast<long>(kn.ident), t.lowest) == 0);
    }
    return 0;
  }
  void detach(kcont::knote_base<long>& kn) { (void)src->list.erase(kn); }
  bool event(kcont::knote_base<long>& kn, long hint) {
    if (hint == -static_cast<long>(kn.ident)) closed = true;
    if (closed || hint < 0) return false;  // another knote's close: no event here
    if (hint > 0) kn.data += hint;
    return kn.data != 0;
  }
  bool defunct() const noexcept { return closed; }
};
}  // namespace

// FreeBSD's knote_fdclose drops a closed descriptor's knotes from the
// kqueue (knote_drop): never reported, gone at once (EV_DELETE: ENOENT; an
// EV_ADD makes a new knote). Here any filter that says defunct() after
// refusing an event; the knote is freed (detached from its source) by the
// kqueue's next change or scan, and one closed during its own attach is
// dropped when the attach returns, the EV_ADD succeeding.
TEST_CASE_TEMPLATE("kqueue.defunct_knote_is_dropped_like_knote_fdclose", Pol, std::mutex,
                   kcont::no_lock) {
  closable_source src;
  kcont::kqueue<kcont::filters<closable_filter>, std::uintptr_t, Pol> kq{src};
  kcont::immediate_target<> t;
  auto ch = [&](std::uintptr_t id, ev flags) {
    return kq.change({.ident = id, .filter = filter_id{102}, .flags = flags, .udata = id});
  };
  REQUIRE(ch(1, ev::add) == 0);
  REQUIRE(ch(2, ev::add) == 0);
  CHECK(src.list.fire(t, 1, t.lowest) == 2);
  CHECK(kq.pending() == 2);
  CHECK(src.list.fire(t, -1, t.lowest) == 0);  // close 1
  CHECK(kq.size() == 1);
  CHECK(kq.pending() == 1);
  CHECK(src.list.size_slow() == 2);  // not freed yet: under the fan-out's lock
  kev out[4];
  REQUIRE(kq.scan(out) == 1);  // nothing for 1
  CHECK(out[0].ident == 2);
  CHECK(src.list.size_slow() == 1);  // the scan freed it
  CHECK(src.list.fire(t, -2, t.lowest) == 0);  // close 2
  CHECK(kq.size() == 0);
  CHECK(kq.pending() == 0);
  CHECK(ch(2, ev::delete_) == ENOENT);
  CHECK(src.list.empty());  // the change freed it
  REQUIRE(ch(1, ev::add) == 0);  // a new knote, not the old one
  CHECK(kq.pending() == 0);
  CHECK(src.list.fire(t, 5, t.lowest) == 1);
  REQUIRE(kq.scan(out) == 1);
  CHECK(out[0].ident == 1);
  CHECK(out[0].data == 5);
  REQUIRE(ch(1, ev::delete_) == 0);
  src.close_in_attach = true;
  CHECK(ch(3, ev::add) == 0);
  CHECK(kq.size() == 0);
  CHECK(kq.pending() == 0);
  CHECK(kq.scan(out) == 0);
  CHECK(src.list.empty());
  CHECK(ch(3, ev::delete_) == ENOENT);
  CHECK(ch(4, ev::add) == 0);  // freed by the destructor: ASan's leak check
}

TEST_CASE("kqueue.single_threaded_with_no_lock") {
  kcont::kqueue<kcont::filters<kcont::user_filter>, std::uintptr_t, kcont::no_lock> kq;
  REQUIRE(kq.change(user(1, ev::add | ev::clear)) == 0);
  REQUIRE(kq.change(trigger(1)) == 0);
  REQUIRE(kq.change(trigger(1)) == 0);
  kev out[2];
  CHECK(kq.scan(out, std::chrono::milliseconds(1)) == 1);
  CHECK(kq.scan(out) == 0);
}

TEST_CASE("kqueue.destroyed_while_a_thread_scans_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks || kcont_test::under_tsan)) {
  // The check fires in a forked child that destroys its copy of a kqueue on
  // which the parent's scanner thread is blocked.
  auto f = std::make_unique<kq_test::fixture>();
  std::thread scanner([&] {
    kev out[1];
    (void)f->kq.scan(out, std::chrono::seconds(30));
  });
  while (f->kq.waiting() == 0) std::this_thread::yield();
  CHECK(kcont_test::dies_with([&] { f.reset(); },
                              "kqueue: destroyed while a thread scans it"));
  // Wake the scanner in this process: an event ends its wait.
  REQUIRE(f->change({.ident = 9, .filter = kcont::filter_id::user,
                     .flags = ev::add}) == 0);
  REQUIRE(f->change({.ident = 9, .filter = kcont::filter_id::user,
                     .fflags = note::trigger}) == 0);
  scanner.join();
}

// ---------------------------------------------------------------------------
// kqueue(2) fidelity: each case is a behaviour of FreeBSD sys/kern/kern_event.c
// that kcont once did differently (issue 10, part A), with the kernel function
// it comes from.

// A1. kqueue_register, new knote: `kn->kn_sfflags = kev->fflags;` (raw),
// and filt_usertouch's EVENT_PROCESS reports `kev->fflags = kn->kn_sfflags`.
TEST_CASE_TEMPLATE("kqueue.freebsd_fflags_of_creating_add_kept", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear, 0x42, 7)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);  // NOTE_FFNOP: the saved flags stay
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x42);
  CHECK(e[0].data == 0);  // filt_usertouch: kn_sdata = kev->data, every change
  // Saved raw, control bits included, until an FF operation changes them.
  REQUIRE(f.change(user(2, ev::add | ev::clear, note::ffor | 0x3)) == 0);
  REQUIRE(f.change(trigger(2)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == (note::ffor | 0x3));
  REQUIRE(f.change(trigger(2, note::ffand | 0x1)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == 0x1);
}

// A2. kqueue_register, existing knote: `kn->kn_kevent.udata = kev->udata;`
// on every change but EV_DELETE, a bare NOTE_TRIGGER included.
TEST_CASE_TEMPLATE("kqueue.freebsd_udata_replaced_by_every_change", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear, 0, 0, 10)) == 0);
  REQUIRE(f.change(user(1, ev::none, note::trigger, 0, 11)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 11);
  REQUIRE(f.change(user(1, ev::disable, 0, 0, 12)) == 0);
  REQUIRE(f.change(user(1, ev::enable, note::trigger, 0, 13)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 13);
  REQUIRE(f.change(trigger(1)) == 0);  // udata 0
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 0);
  // The same for a klist-driven knote: an enable sets it too.
  REQUIRE(f.change(counter(2, ev::add | ev::clear, 20)) == 0);
  REQUIRE(f.change(counter(2, ev::enable, 21)) == 0);
  f.cs.fire(1);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 21);
}

// A3. kqueue_kevent clears EV_SYSFLAGS (EV_EOF, EV_ERROR, ...) from each
// change; kqueue_register keeps the rest of the creating change's flags but
// EV_ADD/DELETE/ENABLE/DISABLE in kn_kevent, which every report copies.
TEST_CASE_TEMPLATE("kqueue.freebsd_receipt_kept_in_reported_flags", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev ch[] = {user(1, ev::add | ev::clear | ev::receipt | ev::eof | ev::error)};
  kev out[2];
  auto r = f.kq.kevent(ch, out);
  REQUIRE(r.count == 1);
  CHECK(out[0].flags == ev::error);  // the receipt: EV_ERROR alone
  CHECK(out[0].data == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].flags == (ev::clear | ev::receipt));
  // A later EV_ADD's flags are not taken (kn_kevent.flags is set at creation).
  REQUIRE(f.change(user(1, ev::add | ev::dispatch, note::trigger)) == 0);
  e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].flags == (ev::clear | ev::receipt));
}

// A4. kqueue_register clears KN_DISABLED on EV_ENABLE only; EV_ADD of an
// existing knote is like any other change (kqueue(2)'s "adding an event
// automatically enables it" is about creation).
TEST_CASE_TEMPLATE("kqueue.freebsd_readd_does_not_reenable", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear | ev::disable)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(1, ev::add)) == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(1, ev::enable)) == 0);
  CHECK(f.scan().size() == 1);
}

// A5. kqueue_register saves the new knote's fflags and clears kev->fflags
// before f_attach; filt_userattach tests kn_fflags for NOTE_TRIGGER, so the
// creating EV_ADD never fires a user event.
TEST_CASE_TEMPLATE("kqueue.freebsd_trigger_at_add_does_not_fire", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  const std::uint32_t ff = note::trigger | note::ffcopy | 0x3;
  REQUIRE(f.change(user(1, ev::add | ev::clear, ff, 9)) == 0);
  CHECK(f.kq.pending() == 0);
  CHECK(f.scan().empty());
  REQUIRE(f.change(user(1, ev::none, note::trigger, 9)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].fflags == ff);  // saved raw (A1)
  CHECK(e[0].data == 9);
  // Through kevent: the receipt shows the change as kqueue_register left it,
  // its fflags and data cleared.
  kev ch[] = {user(2, ev::add | ev::receipt, ff, 5, 77)};
  kev out[2];
  REQUIRE(f.kq.kevent(ch, out).count == 1);
  CHECK(out[0] == kev{2, filter_id::user, ev::error, 0, 0, 77});
  CHECK(f.kq.pending() == 0);
}

// A6. kqueue_kevent: `if (nevents == 0) return (error);` — a change that
// needs an entry (an error, or EV_RECEIPT) and finds the event list full
// ends the call after it was applied; later changes are not. C returns -1
// with the errno for an error, 0 for a receipt (td_retval untouched).
TEST_CASE_TEMPLATE("kqueue.freebsd_full_eventlist_stops_changelist", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev out[1];
  kev ch[] = {user(1, ev::add | ev::receipt, 0, 0, 5), user(2, ev::add | ev::receipt),
              user(3, ev::add)};
  auto r = f.kq.kevent(ch, out);
  CHECK(r == kcont::kevent_result{0, 0, 1});
  CHECK(out[0] == kev{1, filter_id::user, ev::error, 0, 0, 5});
  CHECK(f.kq.size() == 2);  // 2 was applied, 3 was not
  // An error with no room: -1 and its errno; the entry written before stays.
  kev ch2[] = {user(7, ev::enable), user(8, ev::enable), user(4, ev::add)};
  r = f.kq.kevent(ch2, out);
  CHECK(r == kcont::kevent_result{-1, ENOENT, 1});
  CHECK(out[0].ident == 7);
  CHECK(out[0].data == ENOENT);
  CHECK(f.kq.size() == 2);
  // No event list at all: the first receipt ends the call, with 0.
  kev ch3[] = {user(1, ev::delete_ | ev::receipt), user(5, ev::add)};
  r = f.kq.kevent(ch3, std::span<kev>{});
  CHECK(r == kcont::kevent_result{0, 0, 0});
  CHECK(f.kq.size() == 1);
  // filt_usertouch masks the change's fflags in place, which the receipt
  // shows; the entry has room, and the call returns its count.
  kev ch4[] = {user(2, ev::receipt, note::ffor | note::trigger | 0x10, 3, 6)};
  r = f.kq.kevent(ch4, out);
  CHECK(r == kcont::kevent_result{1, 0, 1});
  CHECK(out[0] == kev{2, filter_id::user, ev::error, 0x10, 0, 6});
  CHECK(f.kq.pending() == 1);  // applied: triggered, and not scanned
}

// A7. kqueue_register (FreeBSD 12 and later) begins with
// `if ((kev->flags & (EV_ENABLE | EV_DISABLE)) == (EV_ENABLE | EV_DISABLE))
//      return (EINVAL);` — for an existing knote and a new one alike.
TEST_CASE_TEMPLATE("kqueue.freebsd_enable_and_disable_together_is_einval", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear | ev::disable)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  CHECK(f.change(user(1, ev::enable | ev::disable)) == EINVAL);
  CHECK(f.scan().empty());  // unchanged: still disabled
  CHECK(f.change(user(2, ev::add | ev::enable | ev::disable)) == EINVAL);
  CHECK(f.change(user(3, ev::enable | ev::disable)) == EINVAL);  // before ENOENT
  CHECK(f.kq.size() == 1);
  REQUIRE(f.change(user(1, ev::enable)) == 0);
  CHECK(f.scan().size() == 1);
}

// kqueue_scan: `if (maxevents == 0) goto done_nl;` comes first, then
// `if (!timespecvalid_interval(tsp)) { error = EINVAL; goto done_nl; }`:
// a negative timeout is EINVAL, after kqueue_kevent applied the changes,
// and is not looked at when there is no room for events.
TEST_CASE_TEMPLATE("kqueue.freebsd_negative_timeout_is_einval", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev out[2];
  kev ch[] = {user(1, ev::add | ev::clear)};
  auto r = f.kq.kevent(ch, out, std::chrono::nanoseconds{-1});
  CHECK(r == kcont::kevent_result{-1, EINVAL, 0});
  CHECK(f.kq.size() == 1);  // the change was applied all the same
  REQUIRE(f.change(trigger(1)) == 0);
  r = f.kq.kevent({}, std::span<kev>{}, std::chrono::seconds{-5});
  CHECK(r == kcont::kevent_result{0, 0, 0});
  CHECK(f.kq.pending() == 1);  // not scanned
  r = f.kq.kevent({}, out, std::chrono::seconds{0});
  CHECK(r == kcont::kevent_result{1, 0, 1});
}

// A8 (found by the reference model, tests/kqueue_reference.hpp).

// kqueue_register only sets KN_DISABLED (no knote_dequeue); kqueue_scan
// drops a disabled knote when it reaches it. An EV_ENABLE before that finds
// it still KN_QUEUED, so it keeps its place in the order.
TEST_CASE_TEMPLATE("kqueue.freebsd_disabled_knote_keeps_its_place_in_the_queue", Pol,
                   std::mutex, kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(user(2, ev::add | ev::clear)) == 0);
  REQUIRE(f.change(trigger(1)) == 0);
  REQUIRE(f.change(trigger(2)) == 0);
  REQUIRE(f.change(user(1, ev::disable)) == 0);
  REQUIRE(f.change(user(1, ev::enable)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 2);
  CHECK(e[0].ident == 1);
  CHECK(e[1].ident == 2);
  // A disabled knote does not use up a slot of the event list.
  REQUIRE(f.change(trigger(1)) == 0);
  REQUIRE(f.change(trigger(2)) == 0);
  REQUIRE(f.change(user(1, ev::disable)) == 0);
  e = f.scan(1);
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == 2);
}

// kqueue_scan reports an EV_ONESHOT knote as `*kevp = kn->kn_kevent`,
// without f_touch: a user event's fflags and data there are the knote's own
// (0), not the saved sfflags/sdata that filt_usertouch would report.
TEST_CASE_TEMPLATE("kqueue.freebsd_oneshot_reports_the_knote_without_touch", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::oneshot, 0x5, 3, 8)) == 0);
  REQUIRE(f.change(user(1, ev::none, note::trigger, 4, 8)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0] == kev{1, filter_id::user, ev::oneshot, 0, 0, 8});
  CHECK(f.kq.size() == 0);
}

// kqueue_kevent: `if (!kevp->filter) continue;` — a change with filter 0 is
// skipped: not applied, no entry, no error.
TEST_CASE_TEMPLATE("kqueue.freebsd_filter_zero_change_is_skipped", Pol, std::mutex,
                   kcont::no_lock) {
  basic_fixture<Pol> f;
  kev ch[] = {kev{1, filter_id{}, ev::add | ev::receipt}, user(2, ev::add)};
  kev out[2];
  auto r = f.kq.kevent(ch, out);
  CHECK(r.count == 0);
  CHECK(f.kq.size() == 1);
}

// kqueue_register: `if (kev->flags & EV_FORCEONESHOT) { kn->kn_flags |=
// EV_ONESHOT; KNOTE_ACTIVATE(kn, 1); }` — an existing knote becomes
// one-shot and is queued at once, fired or not (the scan reports a one-shot
// knote without re-checking it); at creation the bit is stripped.
TEST_CASE_TEMPLATE("kqueue.freebsd_forceoneshot_fires_and_deletes_after_report", Pol,
                   std::mutex, kcont::no_lock) {
  basic_fixture<Pol> f;
  REQUIRE(f.change(user(1, ev::add | ev::clear | ev::forceoneshot, 0, 0, 4)) == 0);
  CHECK(f.kq.pending() == 0);
  REQUIRE(f.change(user(1, ev::forceoneshot, 0, 0, 5)) == 0);
  CHECK(f.kq.pending() == 1);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0] == kev{1, filter_id::user, ev::clear | ev::oneshot, 0, 0, 5});
  CHECK(f.kq.size() == 0);
}

// kqueue_register: EV_ADD with EV_KEEPUDATA is EINVAL ("Reject an invalid
// flag pair early"); on other changes `if ((kev->flags & EV_KEEPUDATA) == 0)
// kn->kn_kevent.udata = kev->udata;`.
TEST_CASE_TEMPLATE("kqueue.freebsd_keepudata_keeps_udata_and_is_einval_with_add", Pol,
                   std::mutex, kcont::no_lock) {
  basic_fixture<Pol> f;
  CHECK(f.change(user(1, ev::add | ev::keepudata, 0, 0, 1)) == EINVAL);
  CHECK(f.kq.size() == 0);
  REQUIRE(f.change(user(1, ev::add | ev::clear, 0, 0, 2)) == 0);
  CHECK(f.change(user(1, ev::add | ev::keepudata, 0, 0, 3)) == EINVAL);
  REQUIRE(f.change(user(1, ev::keepudata, note::trigger, 0, 4)) == 0);
  auto e = f.scan();
  REQUIRE(e.size() == 1);
  CHECK(e[0].udata == 2);
}

// A fan-out fires a run of one kqueue's knotes in one call (a batch:
// kcont/detail/fire.hpp, fire_batch; kqueue_node::fire_batched). The batch
// must stop at a knote of another kind (a plain subscriber) and, under a
// lock, at a knote of another kqueue (another lock), and must count what it
// fired in post's return: each knote still fires once per post, in list
// order, a disabled one counted by its filter but not activated, and a
// batch that starts in the middle of the list (after a plain knote) too.
namespace {
template <class Src>
struct plain_filter {
  Src* src;
  int attach(kcont::knote_base<long>& kn) {
    src->list().insert(kn);
    return 0;
  }
  void detach(kcont::knote_base<long>& kn) { (void)src->list().erase(kn); }
  bool event(kcont::knote_base<long>&, long) { return true; }
};
struct plain_count {
  void operator()(kcont::knote_base<long>*, int*& calls, kcont::knote_cause) const { ++*calls; }
};
}  // namespace

TEST_CASE_TEMPLATE("kqueue.fanout_batch_fires_each_knote_once_and_counts_it", Pol, std::mutex,
                   kcont::no_lock) {
  constexpr kcont::filter_id rx_id{7};
  using source = kcont::basic_event_source<kcont::bsd_level, Pol>;
  using filter = kcont::counting_filter<rx_id, source>;
  using queue = kcont::kqueue<kcont::filters<filter>, std::uintptr_t, Pol>;
  using knote_lock = std::conditional_t<std::is_same_v<Pol, kcont::no_lock>, kcont::no_lock,
                                        kcont::spin_lock>;
  using plain = kcont::knote_closure<plain_filter<source>, plain_count, int*,
                                     kcont::static_level<kcont::bsd_level::immediate>, knote_lock>;
  source rx;
  queue a{rx};
  queue b{rx};
  int calls = 0;
  plain first{plain_filter<source>{&rx}, plain_count{}, &calls,
              kcont::at<kcont::bsd_level::immediate>};
  plain middle{plain_filter<source>{&rx}, plain_count{}, &calls,
               kcont::at<kcont::bsd_level::immediate>};
  // The list: plain, a:1, a:2, b:1, a:3, plain, a:4, a:5 (disabled), b:2.
  REQUIRE(first.attach() == 0);
  REQUIRE(a.change(kev{1, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(a.change(kev{2, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(b.change(kev{1, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(a.change(kev{3, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(middle.attach() == 0);
  REQUIRE(a.change(kev{4, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(a.change(kev{5, rx_id, ev::add | ev::clear | ev::disable}) == 0);
  REQUIRE(b.change(kev{2, rx_id, ev::add | ev::clear}) == 0);
  CHECK(rx.list().size_slow() == 9);
  CHECK(rx.post(1) == 8);  // a:5 is disabled: counted by its filter only
  CHECK(rx.post(1) == 8);  // pending knotes coalesce, still activated
  CHECK(calls == 4);
  CHECK(a.pending() == 4);
  CHECK(b.pending() == 2);
  kev out[8];
  REQUIRE(a.scan(out) == 4);
  for (std::uintptr_t i = 0; i < 4; ++i) {
    CHECK(out[i].ident == i + 1);
    CHECK(out[i].data == 2);
  }
  REQUIRE(b.scan(out) == 2);
  CHECK(out[0].ident == 1);
  CHECK(out[0].data == 2);
  CHECK(out[1].ident == 2);
  CHECK(out[1].data == 2);
  REQUIRE(a.change(kev{5, rx_id, ev::enable}) == 0);  // active: reported with both counts
  REQUIRE(a.scan(out) == 1);
  CHECK(out[0].ident == 5);
  CHECK(out[0].data == 2);
  // A knote deleted between posts leaves the batch; the others still fire.
  REQUIRE(a.change(kev{2, rx_id, ev::delete_}) == 0);
  CHECK(rx.post(1) == 8);
  REQUIRE(a.scan(out) == 4);
  CHECK(out[0].ident == 1);
  CHECK(out[1].ident == 3);
  CHECK(out[2].ident == 4);
  CHECK(out[3].ident == 5);
  REQUIRE(b.scan(out) == 2);
  CHECK(calls == 6);
  CHECK(first.detach());
  CHECK(middle.detach());
}

#if defined(__cpp_exceptions)  // a throwing filter needs exceptions
namespace {
// counting_filter whose event throws on a post (not on a re-check) to a
// knote added with fflags 0x8000: a filter's exception inside a batch.
template <kcont::filter_id Id, class Source>
struct throwing_count : kcont::counting_filter<Id, Source> {
  using kcont::counting_filter<Id, Source>::counting_filter;
  template <class K>
  static bool event(K& kn, long hint) {
    if (hint != 0 && kn.sfflags == 0x8000) throw std::runtime_error("filter");
    return kcont::counting_filter<Id, Source>::event(kn, hint);
  }
};
}  // namespace

// A batch queues its knotes on a list of its own and moves them onto the
// pending list at its end: they arrive in the klist's order, and those it
// queued before a filter threw are pending after the throw.
TEST_CASE_TEMPLATE("kqueue.fanout_batch_queues_in_list_order_and_keeps_them_when_a_filter_throws",
                   Pol, std::mutex, kcont::no_lock) {
  constexpr kcont::filter_id rx_id{7};
  using source = kcont::basic_event_source<kcont::bsd_level, Pol>;
  using queue = kcont::kqueue<kcont::filters<throwing_count<rx_id, source>>, std::uintptr_t, Pol>;
  source rx;
  queue a{rx};
  // The list: a:3, a:1, a:2, a:4 (throws), a:5.
  for (const std::uintptr_t id : {3u, 1u, 2u})
    REQUIRE(a.change(kev{id, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(a.change(kev{4, rx_id, ev::add | ev::clear, 0x8000}) == 0);
  REQUIRE(a.change(kev{5, rx_id, ev::add | ev::clear}) == 0);
  CHECK_THROWS_AS((void)rx.post(1), std::runtime_error);
  CHECK(a.pending() == 3);
  kev out[8];
  REQUIRE(a.scan(out) == 3);
  const std::uintptr_t first[] = {3, 1, 2};
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(out[i].ident == first[i]);
    CHECK(out[i].data == 1);
  }
  CHECK(a.pending() == 0);
  // Without the throwing knote every other one fires again, in list order.
  REQUIRE(a.change(kev{4, rx_id, ev::delete_}) == 0);
  CHECK(rx.post(1) == 4);
  CHECK(a.pending() == 4);
  REQUIRE(a.scan(out) == 4);
  const std::uintptr_t second[] = {3, 1, 2, 5};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(out[i].ident == second[i]);
    CHECK(out[i].data == 1);
  }
  CHECK(a.pending() == 0);
}
#endif  // __cpp_exceptions

// The queued bit a fan-out tests: a knote disabled while pending stays pending and a post to it is
// counted by its filter but not fired; the scan unqueues it unreported, a post then only marks it
// active, and the enable queues it once; a level-triggered knote a scan re-queued is not queued
// twice by the next post.
TEST_CASE_TEMPLATE("kqueue.fanout_sees_the_queued_bit_through_disable_enable_and_level", Pol,
                   std::mutex, kcont::no_lock) {
  constexpr kcont::filter_id rx_id{7};
  using source = kcont::basic_event_source<kcont::bsd_level, Pol>;
  using filter = kcont::counting_filter<rx_id, source>;
  using queue = kcont::kqueue<kcont::filters<filter>, std::uintptr_t, Pol>;
  source rx;
  queue q{rx};
  REQUIRE(q.change(kev{1, rx_id, ev::add | ev::clear}) == 0);
  REQUIRE(q.change(kev{2, rx_id, ev::add | ev::clear}) == 0);
  CHECK(rx.post(1) == 2);
  REQUIRE(q.change(kev{1, rx_id, ev::disable}) == 0);
  CHECK(q.pending() == 2);  // disabled in place
  CHECK(rx.post(1) == 1);   // 1: pending but disabled, not fired
  kev out[4];
  REQUIRE(q.scan(out) == 1);
  CHECK(out[0].ident == 2);
  CHECK(out[0].data == 2);
  CHECK(q.pending() == 0);  // 1 left the list unreported
  CHECK(rx.post(1) == 1);   // 1: marked active only
  CHECK(q.pending() == 1);
  REQUIRE(q.change(kev{1, rx_id, ev::enable}) == 0);
  CHECK(q.pending() == 2);
  CHECK(rx.post(1) == 2);  // both pending: coalesced
  CHECK(q.pending() == 2);
  REQUIRE(q.scan(out) == 2);
  CHECK(out[0].ident == 2);
  CHECK(out[0].data == 2);
  CHECK(out[1].ident == 1);
  CHECK(out[1].data == 4);
  CHECK(q.scan(out, milliseconds(0)) == 0);
  REQUIRE(q.change(kev{3, rx_id, ev::add}) == 0);  // level-triggered
  CHECK(rx.post(1) == 3);
  REQUIRE(q.scan(out) == 3);
  CHECK(q.pending() == 1);  // 3 re-queued
  CHECK(rx.post(1) == 3);
  CHECK(q.pending() == 3);
  REQUIRE(q.scan(out) == 3);
  CHECK(out[0].ident == 3);
  CHECK(out[0].data == 2);  // level: not reset
  CHECK(out[1].ident == 1);
  CHECK(out[2].ident == 2);
}
