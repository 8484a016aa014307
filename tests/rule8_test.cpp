// Rule 8 and the thread_dispatcher's concurrency (issue 10, part B): a
// cancel_sync that waits for the run in progress, a detach that leaves its
// continuation clean at a cost independent of unrelated work, at most one
// run at a time per continuation in a pool, a safe cancel for allocated
// continuations, and the detach cycle caught in debug builds.
#include <kcont/thread_dispatcher.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/knote.hpp>
#include <kcont/run.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <unistd.h>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kcont::run_result;
using kn_t = kcont::knote_base<long>;

using one_thread = kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>;
using manual_all = kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>;
using pool_of_two = kcont::plan_for<bsd_level, kcont::pool_runner<2>, kcont::no_runner>;

// A run that holds its runner until the test releases it.
struct gate {
  std::atomic<int> entries{0};
  std::atomic<bool> release{false};
  std::atomic<int> finished{0};
  void hold() {
    entries.fetch_add(1);
    kcont_test::spin_until([&] { return release.load(); });
  }
};

struct gate_fn {
  void operator()(int, gate*& g, int) const {
    g->hold();
    g->finished.fetch_add(1);
  }
};
using gate_kc = kcont::kc<gate_fn, gate*, bsd_level>;

struct count_fn {
  void operator()(int, std::atomic<int>*& n, int) const { n->fetch_add(1); }
};
using count_kc = kcont::kc<count_fn, std::atomic<int>*, bsd_level>;

// Fires on every hint.
struct any_filter {
  int attach(kn_t&) { return 0; }
  void detach(kn_t&) {}
  bool event(kn_t& kn, long hint) {
    kn.data += hint;
    return true;
  }
};

}  // namespace

// ---- B1: cancel_sync waits for the run in progress -------------------------

TEST_CASE("thread_dispatcher.cancel_sync_waits_for_the_run_in_progress_when_it_removed_a_queued_one") {
  // h runs (held by its gate) and a second deferral of it is queued:
  // cancel_sync removes the queued one AND waits for the run. Several rounds:
  // the old code returned at once, and a round shows it unless the test
  // thread released the gate before the canceller got back from its erase.
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  for (int round = 0; round < 20; ++round) {
    gate g;
    gate_kc k{gate_fn{}, &g, bsd_level::softnet};
    REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
    kcont_test::spin_until([&] { return g.entries.load() == 1; });
    REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);  // queued behind the run
    bool removed = false;
    bool returned_while_running = true;
    std::thread canceller([&] {
      removed = d.cancel_sync(k);
      returned_while_running = g.finished.load() == 0;
    });
    // The one runner is held in the gate: only the cancel empties the queue.
    kcont_test::spin_until([&] { return !d.has_work(bsd_level::softnet); });
    g.release = true;
    canceller.join();
    kcont_test::spin_until([&] { return g.finished.load() != 0; });  // g, k live until then
    CHECK(removed);
    CHECK_FALSE(returned_while_running);
    CHECK(g.finished.load() == 1);  // the removed deferral never ran
    CHECK_FALSE(k.is_queued());
  }
}

namespace {
// A knote continuation that, once released, reads its knote (obj): a knote
// freed too early is a heap-use-after-free under ASan.
struct slow_reader {
  gate* g;
  std::atomic<long>* seen;
};
struct slow_reader_fn {
  void operator()(kn_t* kn, slow_reader& e, knote_cause) const {
    e.g->hold();
    e.seen->store(kn->snapshot().data);
    e.g->finished.fetch_add(1);
  }
};
}  // namespace

TEST_CASE("knote.rule8_detach_waits_for_the_running_continuation_when_a_second_activation_is_queued") {
  // The continuation runs on the runner thread (a slow handler) and a second
  // event defers it again; detach(d) then frees the knote. Before the fix,
  // detach's cancel_sync removed the queued run and returned while the first
  // still ran, which then read the freed knote.
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  for (int round = 0; round < 20; ++round) {
    gate g;
    std::atomic<long> seen{0};
    kcont::kc k{slow_reader_fn{}, slow_reader{&g, &seen}, bsd_level::softnet};
    auto kn = std::make_unique<kcont::knote<any_filter>>(any_filter{}, k);
    REQUIRE(kn->attach() == 0);
    REQUIRE(kn->activate(d, bsd_level::softserial) == run_result::deferred);
    kcont_test::spin_until([&] { return g.entries.load() == 1; });
    REQUIRE(kn->activate(d, bsd_level::softserial) == run_result::deferred);
    bool returned_while_running = true;
    std::thread detacher([&] {
      kn->detach(d);
      returned_while_running = g.finished.load() == 0;
      kn.reset();  // the owner frees it as soon as detach returns
    });
    kcont_test::spin_until([&] { return !d.has_work(bsd_level::softnet); });
    g.release = true;
    detacher.join();
    kcont_test::spin_until([&] { return g.finished.load() != 0; });  // g, k live until then
    CHECK_FALSE(returned_while_running);
    CHECK(g.finished.load() == 1);
    CHECK_FALSE(k.is_queued());
    CHECK_FALSE(k.is_deferred());
  }
}

// ---- B2: detach leaves the continuation clean ------------------------------

namespace {
struct obj_log {
  std::vector<kn_t*> objs;
};
struct obj_log_fn {
  void operator()(kn_t* kn, obj_log*& log, knote_cause) const { log->objs.push_back(kn); }
};
using manual_threaded = kcont::thread_dispatcher<bsd_level, manual_all>;
}  // namespace

TEST_CASE_TEMPLATE("knote.rule8_detach_leaves_the_continuation_clean_for_another_knote", D,
                   kcont::manual_dispatcher<>, manual_threaded) {
  // Cancelled by detach, the deferral must not stay in the continuation with
  // the detached knote as its saved obj: reused for another knote, it would
  // run with the freed one (or trip run's fresh-obj check in a debug build).
  D d;
  obj_log log;
  kcont::kc k{obj_log_fn{}, &log, bsd_level::softnet};
  auto first = std::make_unique<kcont::knote<any_filter>>(any_filter{}, k);
  REQUIRE(first->attach() == 0);
  REQUIRE(first->activate(d, bsd_level::softserial) == run_result::deferred);
  CHECK(first->detach(d));
  CHECK_FALSE(k.is_queued());
  REQUIRE_FALSE(k.is_deferred());
  first.reset();

  kcont::knote<any_filter> second{any_filter{}, k};
  REQUIRE(second.attach() == 0);
  CHECK(second.activate(d, bsd_level::process) == run_result::ran);
  REQUIRE(log.objs.size() == 1);
  CHECK(log.objs[0] == &second);
  CHECK(second.detach(d));
}

TEST_CASE("knote.rule8_detach_drops_a_deferral_handed_back_earlier") {
  // A deferral handed back by a cancel of the owner's, not run since: after
  // detach it is gone too (rule 8: clean, whatever put it there).
  kcont::manual_dispatcher<> d;
  obj_log log;
  kcont::kc k{obj_log_fn{}, &log, bsd_level::softnet};
  kcont::knote<any_filter> kn{any_filter{}, k};
  REQUIRE(kn.attach() == 0);
  REQUIRE(kn.activate(d, bsd_level::softserial) == run_result::deferred);
  REQUIRE(d.cancel(k));
  REQUIRE(k.is_deferred());  // cancel hands it back with its saved values
  CHECK(kn.detach(d));
  CHECK_FALSE(k.is_deferred());
  CHECK(log.objs.empty());
}

// ---- B3: detach costs O(1) when nothing of the knote is queued ------------

namespace {
// A level queue that counts the walks made on cancel's behalf: erase_slow is
// the only member that walks (and locks) the queue for a cancel. The queues
// sit inside the dispatcher, so the count is one for the type.
struct counting_queue : kcont::kcqueue<kcont::kc_hook, std::mutex> {
  static inline std::atomic<int> erases{0};
  bool erase_slow(kcont::kc_hook& h) noexcept {
    erases.fetch_add(1);
    return kcqueue::erase_slow(h);
  }
};
struct counting_policy {
  using queue = counting_queue;
};
}  // namespace

static_assert(kcont::detail::level_queue<counting_queue>);

TEST_CASE("knote.rule8_detach_of_an_unqueued_continuation_does_not_walk_the_level_queue") {
  // 10^5 unrelated continuations wait on softnet (a manual runner nobody
  // drains meanwhile). Detaching a knote whose continuation is not queued
  // must not walk (nor lock) that queue: erase_slow is never called, so the
  // cost does not grow with unrelated queued work (rule 8). Detaching one
  // whose continuation is queued walks it once.
  using D = kcont::thread_dispatcher<bsd_level, manual_all, counting_policy>;
  D d;
  std::atomic<int> ran{0};
  const std::size_t n = 100000;
  auto unrelated = std::make_unique<std::optional<count_kc>[]>(n);

  obj_log log;
  kcont::kc k{obj_log_fn{}, &log, bsd_level::softnet};
  kcont::knote<any_filter> kn{any_filter{}, k};
  REQUIRE(kn.attach() == 0);
  REQUIRE(kn.activate(d, bsd_level::softserial) == run_result::deferred);
  for (std::size_t i = 0; i < n; ++i) {
    unrelated[i].emplace(count_fn{}, &ran, bsd_level::softnet);
    REQUIRE(kcont::defer(d, *unrelated[i], 0, 0) == run_result::deferred);
  }
  REQUIRE(d.drain(bsd_level::softnet, kcont::drain_budget::items(1)) == 1);  // k ran
  REQUIRE(log.objs.size() == 1);

  // Never activated, and run already: both detach without a walk.
  obj_log idle_log;
  kcont::kc idle{obj_log_fn{}, &idle_log, bsd_level::softnet};
  kcont::knote<any_filter> never{any_filter{}, idle};
  REQUIRE(never.attach() == 0);
  counting_queue::erases = 0;
  CHECK(never.detach(d));
  CHECK(kn.detach(d));
  CHECK(counting_queue::erases.load() == 0);

  // Queued behind the 10^5: found and removed by one walk.
  kcont::kc queued{obj_log_fn{}, &log, bsd_level::softnet};
  kcont::knote<any_filter> behind{any_filter{}, queued};
  REQUIRE(behind.attach() == 0);
  REQUIRE(behind.activate(d, bsd_level::softserial) == run_result::deferred);
  CHECK(behind.detach(d));
  CHECK(counting_queue::erases.load() == 1);
  CHECK_FALSE(queued.is_queued());
  CHECK_FALSE(queued.is_deferred());

  CHECK(d.drain(bsd_level::softnet) == n);
  CHECK(ran.load() == static_cast<int>(n));
  CHECK(log.objs.size() == 1);
}

// ---- B7: one continuation never runs on two pool threads at once ----------

namespace {
// Counts overlapping runs; the first run holds its thread in the gate.
struct overlap_probe {
  gate g;
  std::atomic<int> in_flight{0};
  std::atomic<bool> overlap{false};
  std::atomic<int> runs{0};
};
struct overlap_fn {
  void operator()(int, overlap_probe*& p, int) const {
    if (p->in_flight.fetch_add(1) != 0) p->overlap = true;
    if (p->g.entries.fetch_add(1) == 0)
      kcont_test::spin_until([&] { return p->g.release.load(); });
    p->in_flight.fetch_sub(1);
    p->runs.fetch_add(1);
  }
};
using overlap_kc = kcont::kc<overlap_fn, overlap_probe*, bsd_level>;
}  // namespace

TEST_CASE("thread_dispatcher.pool_never_runs_one_continuation_on_two_threads_at_once") {
  // k runs on one pool thread (held) and is deferred again meanwhile; a
  // marker deferred after it runs on the other thread, which therefore took
  // k's re-deferral first. Before the fix that thread ran k alongside the
  // held run. Now it hands it over: k runs again after the held run
  // returns, on that thread; nothing is lost (rule 9).
  kcont::thread_dispatcher<bsd_level, pool_of_two> d;
  overlap_probe p;
  overlap_kc k{overlap_fn{}, &p, bsd_level::softnet};
  std::atomic<int> marker_ran{0};
  count_kc marker{count_fn{}, &marker_ran, bsd_level::softnet};
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  kcont_test::spin_until([&] { return p.g.entries.load() == 1; });
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  REQUIRE(kcont::defer(d, marker, 0, 0) == run_result::deferred);
  kcont_test::spin_until([&] { return marker_ran.load() == 1; });
  CHECK_FALSE(p.overlap.load());
  CHECK(p.runs.load() == 0);  // the held run has not returned
  CHECK(k.is_queued());       // the re-deferral is still claimed, not run
  CHECK_FALSE(d.cancel(k));   // handed over: it counts as popped
  p.g.release = true;
  kcont_test::spin_until([&] { return p.runs.load() == 2; });
  CHECK_FALSE(p.overlap.load());
  d.stop();
  CHECK(p.runs.load() == 2);
  CHECK_FALSE(k.is_queued());
}

TEST_CASE("thread_dispatcher.cancel_sync_from_inside_withdraws_a_re_deferral_handed_over_to_it") {
  // As above, but the held run cancels itself before it returns (a
  // continuation detaching its own knote does): the handed-over re-deferral
  // is withdrawn and never runs, so the continuation may be freed then.
  using D = kcont::thread_dispatcher<bsd_level, pool_of_two>;
  D d;
  struct env_t {
    D* d;
    kcont::kc_hook* self;
    gate g;
    std::atomic<int> cancelled{-1};
    std::atomic<int> runs{0};
  };
  env_t env{&d, nullptr, {}, {}, {}};
  kcont::kc k{[](int, env_t*& e, int) {
                if (e->g.entries.fetch_add(1) == 0) {
                  kcont_test::spin_until([&] { return e->g.release.load(); });
                  e->cancelled = e->d->cancel_sync(*e->self) ? 1 : 0;
                }
                e->runs.fetch_add(1);
              },
              &env, bsd_level::softnet};
  env.self = &k;
  std::atomic<int> marker_ran{0};
  count_kc marker{count_fn{}, &marker_ran, bsd_level::softnet};
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  kcont_test::spin_until([&] { return env.g.entries.load() == 1; });
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  REQUIRE(kcont::defer(d, marker, 0, 0) == run_result::deferred);
  kcont_test::spin_until([&] { return marker_ran.load() == 1; });
  env.g.release = true;
  d.stop();  // joins the threads: any run again would have happened
  CHECK(env.cancelled.load() == 1);
  CHECK(env.runs.load() == 1);
  CHECK_FALSE(k.is_queued());
}

// ---- B8: cancel of an allocated continuation -------------------------------

namespace {
// An environment that counts its own destruction (the continuation freed).
struct freed_env {
  std::atomic<int>* freed;
  std::atomic<int>* ran;
  bool owner = true;
  freed_env(std::atomic<int>* f, std::atomic<int>* r) : freed(f), ran(r) {}
  freed_env(freed_env&& o) noexcept : freed(o.freed), ran(o.ran), owner(o.owner) {
    o.owner = false;
  }
  freed_env(const freed_env&) = delete;
  ~freed_env() {
    if (owner) freed->fetch_add(1);
  }
};
struct freed_fn {
  void operator()(int, freed_env& e, int) const { e.ran->fetch_add(1); }
};
}  // namespace

TEST_CASE("thread_dispatcher.cancel_and_dispose_of_an_allocated_continuation_that_ran_reads_nothing") {
  // The runner ran k and freed it. `if (d.cancel(k)) dispose(k)` would read
  // the freed memory (ASan: heap-use-after-free); cancel_and_dispose finds
  // k by its address only, and reads nothing when it is not queued.
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  std::atomic<int> freed{0};
  std::atomic<int> ran{0};
  auto& k = kcont::make_kc(freed_fn{}, freed_env{&freed, &ran}, bsd_level::softnet);
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  kcont_test::spin_until([&] { return freed.load() == 1; });
  CHECK_FALSE(d.cancel_and_dispose(k));
  CHECK(ran.load() == 1);
}

TEST_CASE("thread_dispatcher.cancel_and_dispose_frees_a_queued_allocated_continuation") {
  kcont::thread_dispatcher<bsd_level, manual_all> d;
  std::atomic<int> freed{0};
  std::atomic<int> ran{0};
  auto& k = kcont::make_kc(freed_fn{}, freed_env{&freed, &ran}, bsd_level::softclock);
  REQUIRE(kcont::defer(d, k, 0, 0) == run_result::deferred);
  CHECK(d.cancel_and_dispose(k));
  CHECK(freed.load() == 1);
  CHECK(d.drain(bsd_level::softclock) == 0);
  CHECK(ran.load() == 0);
}

// ---- B9: two continuations detaching each other's knote --------------------

TEST_CASE("knote.rule8_two_continuations_detaching_each_others_knote_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks || kcont_test::under_tsan)) {
  // k1 runs on softclock's thread and detaches kn2; k2 runs on softnet's
  // thread and detaches kn1: each detach waits for the other's run, forever.
  // Debug builds abort instead. (The alarm only ends a child that hangs,
  // as the old code did: then the check fails, it does not wait forever.)
  CHECK(kcont_test::dies_with(
      [] {
        ::alarm(30);
        using plan = kcont::runner_plan<kcont::manual_runner, kcont::thread_runner,
                                        kcont::thread_runner, kcont::no_runner>;
        using D = kcont::thread_dispatcher<bsd_level, plan>;
        struct side {
          D* d;
          kcont::knote<any_filter>* other = nullptr;
          std::atomic<bool>* mine;
          std::atomic<bool>* theirs;
        };
        struct detach_other_fn {
          void operator()(kn_t*, side& s, knote_cause) const {
            s.mine->store(true);
            kcont_test::spin_until([&] { return s.theirs->load(); });
            s.other->detach(*s.d);
          }
        };
        static D d;
        static std::atomic<bool> in1{false};
        static std::atomic<bool> in2{false};
        static kcont::kc k1{detach_other_fn{}, side{&d, nullptr, &in1, &in2},
                            bsd_level::softclock};
        static kcont::kc k2{detach_other_fn{}, side{&d, nullptr, &in2, &in1},
                            bsd_level::softnet};
        static kcont::knote<any_filter> kn1{any_filter{}, k1};
        static kcont::knote<any_filter> kn2{any_filter{}, k2};
        k1.env().other = &kn2;
        k2.env().other = &kn1;
        (void)kn1.attach();
        (void)kn2.attach();
        (void)kn1.activate(d, bsd_level::softserial);
        (void)kn2.activate(d, bsd_level::softserial);
        for (;;) std::this_thread::yield();
      },
      "two continuations cancel or detach each other"));
}

TEST_CASE("knote.rule8_two_immediate_continuations_detaching_each_others_knote_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks || kcont_test::under_tsan)) {
  // The same cycle through activations on threads of the caller's: each
  // continuation runs at once inside its activate() and detach waits for
  // the other's activation in flight.
  CHECK(kcont_test::dies_with(
      [] {
        ::alarm(30);
        struct side {
          kcont::knote<any_filter>* other = nullptr;
          std::atomic<bool>* mine;
          std::atomic<bool>* theirs;
        };
        struct detach_other_fn {
          void operator()(kn_t*, side& s, knote_cause) const {
            s.mine->store(true);
            kcont_test::spin_until([&] { return s.theirs->load(); });
            s.other->detach();
          }
        };
        static std::atomic<bool> in1{false};
        static std::atomic<bool> in2{false};
        static kcont::kc k1{detach_other_fn{}, side{nullptr, &in1, &in2},
                            bsd_level::immediate};
        static kcont::kc k2{detach_other_fn{}, side{nullptr, &in2, &in1},
                            bsd_level::immediate};
        static kcont::knote<any_filter> kn1{any_filter{}, k1};
        static kcont::knote<any_filter> kn2{any_filter{}, k2};
        k1.env().other = &kn2;
        k2.env().other = &kn1;
        (void)kn1.attach();
        (void)kn2.attach();
        static kcont::immediate_target<> t;
        std::thread a([] { (void)kn1.activate(t, t.lowest); });
        std::thread b([] { (void)kn2.activate(t, t.lowest); });
        a.join();
        b.join();
      },
      "two continuations detach each other's knote"));
}

namespace {
struct overlap_tally {
  std::atomic<int> in_flight{0};
  std::atomic<bool> overlap{false};
  std::atomic<std::uint64_t> runs{0};
};
struct overlap_count_fn {
  void operator()(int, overlap_tally*& t, int) const {
    if (t->in_flight.fetch_add(1) != 0) t->overlap = true;
    std::this_thread::yield();  // widen the window for a second run
    t->in_flight.fetch_sub(1);
    t->runs.fetch_add(1);
  }
};
using overlap_count_kc = kcont::kc<overlap_count_fn, overlap_tally*, bsd_level>;
}  // namespace

TEST_CASE("thread_dispatcher.pool_hand_over_stress_runs_each_deferral_once_and_never_overlaps") {
  // Two producers re-defer four continuations as fast as they can onto a
  // pool of three threads, so re-deferrals land while the previous run is
  // in progress and siblings pop them: every accepted deferral runs exactly
  // once (rule 9), never two runs of one continuation at once. Deferrals:
  // 200,000 per producer in a plain build, 20,000 under a sanitizer.
  using plan = kcont::plan_for<bsd_level, kcont::pool_runner<3>, kcont::no_runner>;
  constexpr std::size_t nodes = 4;
  const std::size_t per_producer = kcont_test::sized(200000, 20000);
  overlap_tally tallies[nodes];
  std::atomic<std::uint64_t> accepted[nodes] = {};
  {
    kcont::thread_dispatcher<bsd_level, plan> d;
    std::optional<overlap_count_kc> ks[nodes];
    for (std::size_t i = 0; i < nodes; ++i)
      ks[i].emplace(overlap_count_fn{}, &tallies[i], bsd_level::softnet);
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p)
      producers.emplace_back([&] {
        for (std::size_t j = 0; j < per_producer; ++j) {
          const std::size_t i = j % nodes;
          if (kcont::defer(d, *ks[i], 0, 0) == run_result::deferred) accepted[i].fetch_add(1);
        }
      });
    for (auto& t : producers) t.join();
    d.stop();
  }
  for (std::size_t i = 0; i < nodes; ++i) {
    CHECK_FALSE(tallies[i].overlap.load());
    CHECK(tallies[i].runs.load() == accepted[i].load());
  }
}
