// manual_dispatcher: per-level queues, priority order, budgets, cancel.
#include <kcont/dispatcher.hpp>

#include <doctest/doctest.h>

#include <kcont/run.hpp>

#include <chrono>
#include <mutex>
#include <vector>

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
