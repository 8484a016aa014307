// Rule 8 and the thread_dispatcher's concurrency (issue 10, part B): a
// cancel_sync that waits for the run in progress, a detach that leaves its
// continuation clean at a cost independent of unrelated work, at most one
// run at a time per continuation in a pool, a safe cancel for allocated
// continuations, and the detach cycle caught in debug builds.
#include <kcont/thread_dispatcher.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/klist.hpp>
#include <kcont/knote.hpp>
#include <kcont/run.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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

// ---- B10: a locked klist's fan-out, its cursor and detach -------------------
// A fan-out over a klist with a real lock runs each continuation but the
// last unpinned, published as its cursor's current knote; an erase from
// another thread pins the knote for that run (the cursor table in
// kcont/klist.hpp), so detach still waits for it (rule 8).

namespace {
using mutex_list = kcont::klist<long, bsd_level, std::mutex>;
struct mutex_list_filter {
  mutex_list* list;
  int attach(kn_t& kn) {
    (void)list->insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)list->erase(kn); }
  bool event(kn_t&, long) { return true; }
};
using mutex_knote = kcont::knote<mutex_list_filter>;

// A continuation that does what its test asks, once its knote fired.
struct cursor_env {
  std::function<void(kn_t*)> on_run;
};
struct cursor_fn {
  void operator()(kn_t* kn, cursor_env& e, knote_cause) const { e.on_run(kn); }
};
using cursor_kc = kcont::kc<cursor_fn, cursor_env, bsd_level>;

// A run that waits until its knote's detach has begun, then lingers, so that
// a detach that does not wait for it returns before `done`.
void linger_until_detached(kn_t* kn, std::atomic<bool>& in, std::atomic<bool>& done) {
  in.store(true);
  kcont_test::spin_until([&] { return kn->is_detached(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  done.store(true);
}
}  // namespace

TEST_CASE("klist.rule8_detach_from_another_thread_waits_for_the_fanout_running_that_knote") {
  // The fan-out runs a (not the last knote: the cursor's unpinned run);
  // another thread detaches a, then frees it: detach must return only after
  // a's continuation did, and the fan-out must not touch a after it (ASan).
  mutex_list l;
  kcont::immediate_target<> t;
  std::atomic<bool> in{false};
  std::atomic<bool> done{false};
  std::atomic<int> others{0};
  cursor_kc ka{cursor_fn{}, {[&](kn_t* kn) { linger_until_detached(kn, in, done); }},
               bsd_level::immediate};
  cursor_kc kb{cursor_fn{}, {[&](kn_t*) { others.fetch_add(1); }}, bsd_level::immediate};
  auto a = std::make_unique<mutex_knote>(mutex_list_filter{&l}, ka, 1);
  mutex_knote b{mutex_list_filter{&l}, kb, 2};
  mutex_knote c{mutex_list_filter{&l}, kb, 3};
  REQUIRE(a->attach() == 0);
  REQUIRE(b.attach() == 0);
  REQUIRE(c.attach() == 0);
  std::thread firer([&] { CHECK(l.fire(t, 1, t.lowest) == 3); });
  kcont_test::spin_until([&] { return in.load(); });
  CHECK(a->detach());
  CHECK(done.load());  // detach waited for the run in progress
  a.reset();
  firer.join();
  CHECK(others.load() == 2);
  CHECK(kcont::detail::klist_checker<long, bsd_level, std::mutex>::valid(l));
  b.detach();
  c.detach();
}

TEST_CASE("klist.rule8_a_continuation_detaches_and_frees_its_own_knote_under_a_mutex") {
  // Self-detach from the cursor's run (a, then again the middle knote b):
  // no wait for its own run, and the fan-out never touches the freed knote.
  mutex_list l;
  kcont::immediate_target<> t;
  std::vector<std::uintptr_t> order;
  std::unique_ptr<mutex_knote> a, b;
  cursor_kc ka{cursor_fn{}, {[&](kn_t* kn) {
                 order.push_back(kn->ident);
                 CHECK(a->detach());
                 a.reset();
               }},
               bsd_level::immediate};
  cursor_kc kb{cursor_fn{}, {[&](kn_t* kn) {
                 order.push_back(kn->ident);
                 CHECK(b->detach());
                 b.reset();
               }},
               bsd_level::immediate};
  cursor_kc kc{cursor_fn{}, {[&](kn_t* kn) { order.push_back(kn->ident); }},
               bsd_level::immediate};
  a = std::make_unique<mutex_knote>(mutex_list_filter{&l}, ka, 1);
  b = std::make_unique<mutex_knote>(mutex_list_filter{&l}, kb, 2);
  mutex_knote c{mutex_list_filter{&l}, kc, 3};
  REQUIRE(a->attach() == 0);
  REQUIRE(b->attach() == 0);
  REQUIRE(c.attach() == 0);
  CHECK(l.fire(t, 1, t.lowest) == 3);
  CHECK(order == std::vector<std::uintptr_t>{1, 2, 3});
  CHECK(l.size_slow() == 1);
  CHECK(kcont::detail::klist_checker<long, bsd_level, std::mutex>::valid(l));
  CHECK(l.fire(t, 1, t.lowest) == 1);
  c.detach();
}

TEST_CASE("klist.rule8_a_continuation_detaches_the_next_knote_while_another_fanout_runs_it") {
  // Thread 2's fan-out runs b (a's run there does nothing); this thread's
  // fan-out runs a, whose continuation detaches b, the NEXT knote: it must
  // wait for thread 2's run of b, and this fan-out must then skip b.
  mutex_list l;
  kcont::immediate_target<> t;
  const auto main_id = std::this_thread::get_id();
  std::atomic<bool> in_b{false};
  std::atomic<bool> done_b{false};
  std::atomic<bool> waited{false};
  std::atomic<int> c_runs{0};
  std::unique_ptr<mutex_knote> b;
  cursor_kc ka{cursor_fn{}, {[&](kn_t*) {
                 if (std::this_thread::get_id() != main_id) return;
                 CHECK(b->detach());
                 waited.store(done_b.load());
                 b.reset();
               }},
               bsd_level::immediate};
  cursor_kc kb{cursor_fn{}, {[&](kn_t* kn) { linger_until_detached(kn, in_b, done_b); }},
               bsd_level::immediate};
  cursor_kc kc{cursor_fn{}, {[&](kn_t*) { c_runs.fetch_add(1); }}, bsd_level::immediate};
  mutex_knote a{mutex_list_filter{&l}, ka, 1};
  b = std::make_unique<mutex_knote>(mutex_list_filter{&l}, kb, 2);
  mutex_knote c{mutex_list_filter{&l}, kc, 3};
  REQUIRE(a.attach() == 0);
  REQUIRE(b->attach() == 0);
  REQUIRE(c.attach() == 0);
  std::thread other([&] { CHECK(l.fire(t, 1, t.lowest) == 3); });
  kcont_test::spin_until([&] { return in_b.load(); });
  CHECK(l.fire(t, 1, t.lowest) == 2);  // a and c: b was detached by a
  other.join();
  CHECK(waited.load());
  CHECK(c_runs.load() == 2);
  CHECK(kcont::detail::klist_checker<long, bsd_level, std::mutex>::valid(l));
  a.detach();
  c.detach();
}

TEST_CASE("klist.rule8_two_fanouts_whose_continuations_detach_each_others_knote_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks || kcont_test::under_tsan)) {
  // Two locked klists fired on two threads; a1's continuation (first on
  // its list: the cursor's unpinned run) detaches a2 and a2's detaches a1:
  // each detach waits for the other's run, forever. Debug builds abort.
  CHECK(kcont_test::dies_with(
      [] {
        ::alarm(30);
        static mutex_list l1, l2;
        static std::atomic<bool> in1{false};
        static std::atomic<bool> in2{false};
        static mutex_knote* a1 = nullptr;
        static mutex_knote* a2 = nullptr;
        static cursor_kc k1{cursor_fn{}, {[](kn_t*) {
                              in1.store(true);
                              kcont_test::spin_until([] { return in2.load(); });
                              a2->detach();
                            }},
                            bsd_level::immediate};
        static cursor_kc k2{cursor_fn{}, {[](kn_t*) {
                              in2.store(true);
                              kcont_test::spin_until([] { return in1.load(); });
                              a1->detach();
                            }},
                            bsd_level::immediate};
        static cursor_kc idle{cursor_fn{}, {[](kn_t*) {}}, bsd_level::immediate};
        static mutex_knote kn1{mutex_list_filter{&l1}, k1, 1};
        static mutex_knote x1{mutex_list_filter{&l1}, idle, 2};
        static mutex_knote kn2{mutex_list_filter{&l2}, k2, 3};
        static mutex_knote x2{mutex_list_filter{&l2}, idle, 4};
        a1 = &kn1;
        a2 = &kn2;
        for (auto* kn : {&kn1, &x1, &kn2, &x2}) (void)kn->attach();
        static kcont::immediate_target<> t;
        std::thread a([] { (void)l1.fire(t, 1, t.lowest); });
        std::thread b([] { (void)l2.fire(t, 1, t.lowest); });
        a.join();
        b.join();
      },
      "two continuations detach each other's knote"));
}
