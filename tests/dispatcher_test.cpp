// manual_dispatcher: per-level queues, priority order, budgets, cancel.
#include <kcont/dispatcher.hpp>

#include <doctest/doctest.h>

#include <kcont/kcqueue.hpp>
#include <kcont/run.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::run_result;

struct log_fn {
  void operator()(int, std::vector<int>*& log, int status) const {
    log->push_back(status);
  }
};
using log_kc = kcont::kc<log_fn, std::vector<int>*, bsd_level>;

// A continuation that defers another one when it runs.
struct chain_env {
  std::vector<int>* log;
  kcont::manual_dispatcher<>* d;
  log_kc* next;
};
struct chain_fn {
  void operator()(int, chain_env& e, int status) const {
    e.log->push_back(status);
    (void)kcont::defer(*e.d, *e.next, 0, status + 1);
  }
};

}  // namespace

static_assert(kcont::deferral_target<kcont::manual_dispatcher<>>);
static_assert(kcont::deferral_target<kcont::manual_dispatcher<bsd_level, std::mutex>>);
static_assert(!kcont::deferral_target<int>);
static_assert(!kcont::manual_dispatcher<>::concurrent);
static_assert(kcont::manual_dispatcher<bsd_level, kcont::spin_lock>::concurrent);

TEST_CASE("dispatcher.drain_all_runs_higher_levels_first") {
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc p{log_fn{}, &log, bsd_level::process};
  log_kc c{log_fn{}, &log, bsd_level::softclock};
  log_kc n{log_fn{}, &log, bsd_level::softnet};
  log_kc s{log_fn{}, &log, bsd_level::softserial};
  (void)kcont::defer(d, p, 0, 0);
  (void)kcont::defer(d, c, 0, 1);
  (void)kcont::defer(d, n, 0, 2);
  (void)kcont::defer(d, s, 0, 3);
  CHECK(d.drain_all() == 4);
  CHECK(log == std::vector<int>{3, 2, 1, 0});
}

TEST_CASE("dispatcher.work_deferred_higher_while_draining_lower_runs_first") {
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc high{log_fn{}, &log, bsd_level::softserial};
  kcont::kc first{chain_fn{}, chain_env{&log, &d, &high}, bsd_level::process};
  log_kc second{log_fn{}, &log, bsd_level::process};
  (void)kcont::defer(d, first, 0, 10);
  (void)kcont::defer(d, second, 0, 20);
  CHECK(d.drain_all() == 3);
  CHECK(log == std::vector<int>{10, 11, 20});
}

TEST_CASE("dispatcher.budget_leaves_the_rest_queued") {
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc a{log_fn{}, &log, bsd_level::softnet};
  log_kc b{log_fn{}, &log, bsd_level::softnet};
  log_kc c{log_fn{}, &log, bsd_level::softnet};
  for (auto* k : {&a, &b, &c}) (void)kcont::defer(d, *k, 0, int(log.size()));
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(2)) == 2);
  CHECK(d.has_work(bsd_level::softnet));
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(2)) == 1);
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

// A no_lock drain leaves the link of a node it runs as it was (the pop in
// kcont/dispatcher.hpp, detail::kcqueue_drain): here a's still points at b.
// Whatever queue takes a next must link it afresh.
TEST_CASE("dispatcher.a_drained_continuation_is_linked_afresh_by_its_next_push") {
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc a{log_fn{}, &log, bsd_level::softnet};
  log_kc b{log_fn{}, &log, bsd_level::softnet};
  REQUIRE(kcont::defer(d, a, 0, 1) == run_result::deferred);
  REQUIRE(kcont::defer(d, b, 0, 2) == run_result::deferred);
  REQUIRE(d.drain(bsd_level::softnet, kcont::drain_budget::items(1)) == 1);
  using base_t = kcont::kc_base<int, int, bsd_level>;
  kcont::kcqueue<base_t> q;  // an object's list
  REQUIRE(q.push(a) == kcont::push_result::first);
  CHECK(q.size_slow() == 1);
  CHECK(kcont::detail::kcqueue_checker<base_t, kcont::no_lock>::valid(q));
  CHECK(q.pop() == &a);
  REQUIRE(kcont::defer(d, a, 0, 3) == run_result::deferred);
  CHECK(d.drain(bsd_level::softnet) == 2);  // b, then a: nothing lost, nothing twice
  CHECK(log == std::vector<int>{1, 2, 3});
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

TEST_CASE("dispatcher.cancel_before_it_runs") {
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc a{log_fn{}, &log, bsd_level::softnet};
  log_kc b{log_fn{}, &log, bsd_level::softnet};
  (void)kcont::defer(d, a, 0, 1);
  (void)kcont::defer(d, b, 0, 2);
  CHECK(d.cancel(a));
  CHECK_FALSE(d.cancel(a));
  CHECK_FALSE(a.is_queued());
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK(log == std::vector<int>{2});
  log_kc imm{log_fn{}, &log, bsd_level::immediate};
  CHECK_FALSE(d.cancel(imm));
}

TEST_CASE("dispatcher.self_requeue_runs_in_the_same_drain") {
  // A continuation that defers itself again (a periodic job) runs once per
  // deferral; with a budget, one drain cannot loop forever.
  kcont::manual_dispatcher<> d;
  struct again_env {
    kcont::manual_dispatcher<>* d;
    int left;
    int runs;
    kcont::kc_base<int, int, bsd_level>* self;
  };
  struct again_fn {
    void operator()(int, again_env& e, int) const {
      ++e.runs;
      if (--e.left > 0) (void)kcont::defer(*e.d, *e.self, 0, 0);
    }
  };
  kcont::kc k{again_fn{}, again_env{&d, 5, 0, nullptr}, bsd_level::process};
  k.env().self = &k;
  (void)kcont::defer(d, k, 0, 0);
  CHECK(d.drain(bsd_level::process, kcont::drain_budget::items(3)) == 3);
  CHECK(d.drain(bsd_level::process) == 2);
  CHECK(k.env().runs == 5);
}

TEST_CASE("dispatcher.destroyed_with_pending_work_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        static std::vector<int> log;
        static log_kc k{log_fn{}, &log, bsd_level::softnet};
        kcont::manual_dispatcher<> d;
        (void)kcont::defer(d, k, 0, 0);
      },
      "rule 9"));
}

TEST_CASE("dispatcher.destroyed_with_pending_work_runs_it_in_release" *
          doctest::skip(kcont::contract_checks)) {
  // Before, a release build dropped the work silently and left the
  // continuations marked queued: every later defer of them was refused.
  // Rule 9: it runs (as drain_all) instead. Debug builds abort (above).
  std::vector<int> log;
  log_kc a{log_fn{}, &log, bsd_level::softnet};
  log_kc b{log_fn{}, &log, bsd_level::process};
  {
    kcont::manual_dispatcher<> d;
    CHECK(kcont::defer(d, b, 0, 2) == run_result::deferred);
    CHECK(kcont::defer(d, a, 0, 1) == run_result::deferred);
  }
  CHECK(log == std::vector<int>{1, 2});  // highest level first, as drain_all
  CHECK_FALSE(a.is_queued());
  CHECK_FALSE(b.is_queued());
  kcont::manual_dispatcher<> d2;
  CHECK(kcont::defer(d2, a, 0, 3) == run_result::deferred);
  CHECK(d2.drain(bsd_level::softnet) == 1);
  CHECK(log == std::vector<int>{1, 2, 3});
}

TEST_CASE("dispatcher.immediate_is_not_a_queue_level") {
  // `immediate` has no queue: has_work and drain read past the queue array
  // with it. Refused: a contract violation in a debug build, a defined result
  // (false, 0: nothing run) in release.
  if constexpr (kcont::contract_checks) {
    CHECK(kcont_test::dies_with(
        [] {
          kcont::manual_dispatcher<> d;
          (void)d.has_work(bsd_level::immediate);
        },
        "has_work needs a deferrable level"));
    CHECK(kcont_test::dies_with(
        [] {
          kcont::manual_dispatcher<> d;
          (void)d.drain(bsd_level::immediate);
        },
        "drain needs a deferrable level"));
  } else {
    std::vector<int> log;
    log_kc k{log_fn{}, &log, bsd_level::softserial};
    kcont::manual_dispatcher<> d;
    (void)kcont::defer(d, k, 0, 1);
    CHECK_FALSE(d.has_work(bsd_level::immediate));
    CHECK(d.drain(bsd_level::immediate) == 0);
    CHECK(log.empty());
    CHECK(d.drain(bsd_level::softserial) == 1);
  }
}

TEST_CASE("dispatcher.drain_and_drain_all_take_a_drain_budget") {
  // The budget of the drain vocabulary (kcont/drain_budget.hpp): a count, or
  // a deadline checked before each continuation.
  kcont::manual_dispatcher<> d;
  std::vector<int> log;
  log_kc p{log_fn{}, &log, bsd_level::process};
  log_kc n{log_fn{}, &log, bsd_level::softnet};
  log_kc s{log_fn{}, &log, bsd_level::softserial};
  (void)kcont::defer(d, p, 0, 0);
  (void)kcont::defer(d, n, 0, 2);
  (void)kcont::defer(d, s, 0, 3);
  CHECK(d.drain(bsd_level::softnet,
                kcont::drain_budget::for_time(std::chrono::milliseconds(-1))) == 0);
  CHECK(d.drain_all(kcont::drain_budget::for_time(std::chrono::seconds(0))) == 0);
  CHECK(log.empty());
  CHECK(d.drain_all(kcont::drain_budget::items(1)) == 1);
  CHECK(log == std::vector<int>{3});
  CHECK(d.drain(bsd_level::softnet,
                kcont::drain_budget::for_time(std::chrono::hours(1))) == 1);
  CHECK(d.drain_all(kcont::drain_budget::items(5)) == 1);
  CHECK(log == std::vector<int>{3, 2, 0});
}

// ---- batches: a locked queue drains in batches (kcont/kcqueue.hpp) ---------
//
// Each case runs for the two real locks: the batch is theirs (no_lock pops
// one by one, as before).

namespace {
template <class Lock>
using locked_dispatcher = kcont::manual_dispatcher<bsd_level, Lock>;

// A continuation running a test's hook, then logging its status.
template <class D>
struct hook_env {
  std::vector<int>* log;
  D* d;
  void (*hook)(hook_env&, int status);
};
template <class D>
struct hook_fn {
  void operator()(int, hook_env<D>& e, int status) const {
    e.log->push_back(status);
    if (e.hook != nullptr) e.hook(e, status);
  }
};
}  // namespace

TEST_CASE_TEMPLATE("dispatcher.batch_runs_in_fifo_order", Lock, kcont::spin_lock,
                   std::mutex) {
  locked_dispatcher<Lock> d;
  std::vector<int> log;
  std::vector<std::unique_ptr<log_kc>> ks;
  for (int i = 0; i < 50; ++i) {
    ks.push_back(std::make_unique<log_kc>(log_fn{}, &log, bsd_level::softnet));
    REQUIRE(kcont::defer(d, *ks.back(), 0, i) == run_result::deferred);
  }
  CHECK(d.drain(bsd_level::softnet) == 50);
  std::vector<int> want(50);
  for (int i = 0; i < 50; ++i) want[static_cast<std::size_t>(i)] = i;
  CHECK(log == want);
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

TEST_CASE_TEMPLATE("dispatcher.cancel_of_an_item_in_a_taken_batch", Lock,
                   kcont::spin_lock, std::mutex) {
  // The first continuation of the batch cancels the third: the drain has
  // taken all three (one lock), yet the cancel finds it and it never runs.
  using D = locked_dispatcher<Lock>;
  D d;
  std::vector<int> log;
  static log_kc* victim = nullptr;
  static bool cancelled = false;
  log_kc b{log_fn{}, &log, bsd_level::softnet};
  log_kc c{log_fn{}, &log, bsd_level::softnet};
  victim = &c;
  cancelled = false;
  kcont::kc a{hook_fn<D>{},
              hook_env<D>{&log, &d,
                          [](hook_env<D>& e, int) { cancelled = e.d->cancel(*victim); }},
              bsd_level::softnet};
  (void)kcont::defer(d, a, 0, 1);
  (void)kcont::defer(d, b, 0, 2);
  (void)kcont::defer(d, c, 0, 3);
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK(cancelled);
  CHECK(log == std::vector<int>{1, 2});
  CHECK_FALSE(c.is_queued());
  CHECK(c.is_deferred());  // handed back with its saved values (rule 9)
  CHECK_FALSE(d.cancel(c));
}

// A cancel from another thread of a continuation in the batch the drain has
// taken, while the drain runs an earlier one of that batch which waits for
// the cancel to return (as it would wait for a lock the cancelling thread
// holds): the cancel wins at once, the victim never runs, and its owner
// destroys it right after the cancel (ASan / TSan see any later touch).
// The first batch drain (branch r13-batch) made such a cancel wait for the
// drainer's next step: this test deadlocked there.
TEST_CASE_TEMPLATE("dispatcher.cross_thread_cancel_of_a_batched_node_never_waits_for_the_drain",
                   Lock, kcont::spin_lock, std::mutex) {
  using D = locked_dispatcher<Lock>;
  D d;
  std::vector<int> log;
  static std::atomic<bool> running{false};
  static std::atomic<bool> cancel_returned{false};
  running = false;
  cancel_returned = false;
  kcont::kc first{hook_fn<D>{},
                  hook_env<D>{&log, &d,
                              [](hook_env<D>&, int) {
                                running.store(true);
                                kcont_test::spin_until([] { return cancel_returned.load(); });
                              }},
                  bsd_level::softnet};
  auto victim = std::make_unique<log_kc>(log_fn{}, &log, bsd_level::softnet);
  log_kc last{log_fn{}, &log, bsd_level::softnet};
  (void)kcont::defer(d, first, 0, 1);
  (void)kcont::defer(d, *victim, 0, 2);
  (void)kcont::defer(d, last, 0, 3);
  bool won = false;
  std::thread canceller([&] {
    kcont_test::spin_until([] { return running.load(); });
    won = d.cancel(*victim);
    if (won) victim.reset();  // the owner frees it at once
    cancel_returned.store(true);
  });
  CHECK(d.drain(bsd_level::softnet) == 2);
  canceller.join();
  CHECK(won);
  CHECK(log == std::vector<int>{1, 3});
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

TEST_CASE_TEMPLATE("dispatcher.budget_leaves_the_rest_of_a_batch_queued_in_order", Lock,
                   kcont::spin_lock, std::mutex) {
  locked_dispatcher<Lock> d;
  std::vector<int> log;
  log_kc a{log_fn{}, &log, bsd_level::softnet};
  log_kc b{log_fn{}, &log, bsd_level::softnet};
  log_kc c{log_fn{}, &log, bsd_level::softnet};
  log_kc late{log_fn{}, &log, bsd_level::softnet};
  int i = 0;
  for (auto* k : {&a, &b, &c}) (void)kcont::defer(d, *k, 0, i++);
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(1)) == 1);
  (void)kcont::defer(d, late, 0, 9);  // behind the batch's rest
  CHECK(d.has_work(bsd_level::softnet));
  CHECK(d.cancel(b));  // the rest is queued again: cancel finds it there
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK(log == std::vector<int>{0, 2, 9});
}

TEST_CASE_TEMPLATE("dispatcher.higher_level_deferral_mid_batch_runs_first", Lock,
                   kcont::spin_lock, std::mutex) {
  using D = locked_dispatcher<Lock>;
  D d;
  std::vector<int> log;
  static log_kc* high = nullptr;
  log_kc h{log_fn{}, &log, bsd_level::softserial};
  high = &h;
  kcont::kc first{hook_fn<D>{},
                  hook_env<D>{&log, &d,
                              [](hook_env<D>& e, int) { (void)kcont::defer(*e.d, *high, 0, 11); }},
                  bsd_level::process};
  log_kc second{log_fn{}, &log, bsd_level::process};
  log_kc third{log_fn{}, &log, bsd_level::process};
  (void)kcont::defer(d, first, 0, 10);
  (void)kcont::defer(d, second, 0, 20);
  (void)kcont::defer(d, third, 0, 30);
  CHECK(d.drain_all() == 4);
  CHECK(log == std::vector<int>{10, 11, 20, 30});
}

// Producers push while a drain runs, and a third thread cancels: each
// continuation runs once or is cancelled, never both, never lost (rule 9).
// Meant for TSan (scripts/test.sh gcc-tsan).
TEST_CASE_TEMPLATE("dispatcher.batch_stress_producers_push_while_a_drain_runs", Lock,
                   kcont::spin_lock, std::mutex) {
  using D = locked_dispatcher<Lock>;
  struct count_fn {
    void operator()(int, std::atomic<int>*& runs, int) const { runs->fetch_add(1); }
  };
  using count_kc = kcont::kc<count_fn, std::atomic<int>*, bsd_level>;
  constexpr std::size_t per_producer = 2000;
  D d;
  std::vector<std::atomic<int>> runs(2 * per_producer);
  std::vector<std::unique_ptr<count_kc>> ks;
  for (auto& r : runs)
    ks.push_back(std::make_unique<count_kc>(count_fn{}, &r, bsd_level::softnet));
  std::atomic<int> producing{2};
  std::atomic<std::size_t> cancelled{0};
  std::vector<std::atomic<bool>> was_cancelled(ks.size());
  auto produce = [&](std::size_t from) {
    for (std::size_t i = from; i < from + per_producer; ++i)
      CHECK(kcont::defer(d, *ks[i], 0, 0) == run_result::deferred);
    producing.fetch_sub(1);
  };
  std::thread p1(produce, 0);
  std::thread p2(produce, per_producer);
  std::thread canceller([&] {
    for (std::size_t i = 0; i < ks.size(); i += 7)
      if (d.cancel(*ks[i])) {
        was_cancelled[i].store(true);
        cancelled.fetch_add(1);
      }
  });
  std::size_t ran = 0;
  while (producing.load() > 0 || d.has_work(bsd_level::softnet))
    ran += d.drain(bsd_level::softnet, kcont::drain_budget::items(64));
  p1.join();
  p2.join();
  canceller.join();
  ran += d.drain(bsd_level::softnet);
  CHECK(ran + cancelled.load() == ks.size());
  for (std::size_t i = 0; i < ks.size(); ++i)
    CHECK(runs[i].load() == (was_cancelled[i].load() ? 0 : 1));
}

// Two threads claim the same idle continuations at once, one deferring them
// to a locked dispatcher, the other pushing them onto an object's queue
// under another lock: each continuation is taken by exactly one (the other
// is refused), and each then runs or pops once (rule 9). The claim of a
// push under a queue's lock stays a read-modify-write of the state word for
// this race alone (the "why" note under the state table in
// kcont/kc_hook.hpp): with a plain store there, both claims could win and
// the continuation would be linked on two queues through its one link.
// Meant for TSan as well (scripts/test.sh gcc-tsan).
TEST_CASE_TEMPLATE("dispatcher.rule9_a_locked_defer_racing_a_push_elsewhere_claims_once",
                   Lock, kcont::spin_lock, std::mutex) {
  using D = locked_dispatcher<Lock>;
  struct count_fn {
    void operator()(int, std::atomic<int>*& runs, int) const { runs->fetch_add(1); }
  };
  using count_kc = kcont::kc<count_fn, std::atomic<int>*, bsd_level>;
  const std::size_t n = kcont_test::sized(4000, 1000);
  const int rounds = 8;
  D d;
  kcont::kcqueue<kcont::kc_base<int, int, bsd_level>, std::mutex> waiters;
  std::vector<std::atomic<int>> runs(n);
  std::vector<std::unique_ptr<count_kc>> ks;
  for (auto& r : runs) ks.push_back(std::make_unique<count_kc>(count_fn{}, &r, bsd_level::softnet));
  std::size_t expected_runs = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<char> deferred(n, 0);
    std::vector<char> pushed(n, 0);
    std::atomic<int> ready{0};
    auto start = [&] {
      ready.fetch_add(1);
      kcont_test::spin_until([&] { return ready.load() == 2; });
    };
    std::thread pusher([&] {
      start();
      for (std::size_t i = 0; i < n; ++i)
        pushed[i] = kcont::detail::pushed(waiters.push(*ks[i])) ? 1 : 0;
    });
    start();
    for (std::size_t i = 0; i < n; ++i)
      deferred[i] = kcont::defer(d, *ks[i], 0, round) == run_result::deferred ? 1 : 0;
    pusher.join();
    std::size_t popped = 0;
    while (auto* k = waiters.pop()) {
      ++popped;
      (void)k;
    }
    const std::size_t ran = d.drain(bsd_level::softnet);
    std::size_t both = 0;
    std::size_t neither = 0;
    std::size_t defers = 0;
    for (std::size_t i = 0; i < n; ++i) {
      both += deferred[i] && pushed[i];
      neither += !deferred[i] && !pushed[i];
      defers += deferred[i];
    }
    CHECK(both == 0);
    CHECK(neither == 0);
    CHECK(ran == defers);
    CHECK(popped == n - defers);
    CHECK_FALSE(d.has_work(bsd_level::softnet));
    expected_runs += defers;
  }
  std::size_t total = 0;
  for (auto& r : runs) total += static_cast<std::size_t>(r.load());
  CHECK(total == expected_runs);
}
