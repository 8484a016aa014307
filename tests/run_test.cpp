// run / run_all / defer: docs/design.md rules 1-5 and the NetBSD patch's defects.
#include <kcont/run.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/resume.hpp>
#include <kcont/thread_dispatcher.hpp>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <system_error>
#include <stdexcept>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::run_result;

struct request {
  int id = 0;
};

// One call as seen by a continuation.
struct call {
  int who;
  request* obj;
  int status;
  bool operator==(const call&) const = default;
};

struct recorder {
  std::vector<call> calls;
};

// A continuation that records (its id, obj, status).
struct tagged {
  int id;
  recorder* rec;
};
struct record_fn {
  void operator()(request* r, tagged& t, int status) const {
    t.rec->calls.push_back({t.id, r, status});
  }
};
using tagged_kc = kcont::kc<record_fn, tagged, bsd_level>;
using base_t = kcont::kc_base<request*, int, bsd_level>;

}  // namespace

TEST_CASE("run.rule1_at_or_below_runs_now") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  request r{1};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softnet};
  CHECK(kcont::run(d, k, &r, 5, bsd_level::process) == run_result::ran);
  CHECK(kcont::run(d, k, &r, 6, bsd_level::softnet) == run_result::ran);
  CHECK(rec.calls == std::vector<call>{{1, &r, 5}, {1, &r, 6}});
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

TEST_CASE("run.rule1_above_defers_and_schedules_its_level") {
  struct schedule_log {
    std::vector<bsd_level>* log;
    void operator()(bsd_level l) const { log->push_back(l); }
  };
  std::vector<bsd_level> scheduled;
  kcont::manual_dispatcher<bsd_level, kcont::no_lock, schedule_log> d{
      schedule_log{&scheduled}};
  recorder rec;
  request r{1};
  tagged_kc a{record_fn{}, {1, &rec}, bsd_level::softnet};
  tagged_kc b{record_fn{}, {2, &rec}, bsd_level::softnet};
  CHECK(kcont::run(d, a, &r, 5, bsd_level::softserial) == run_result::deferred);
  CHECK(kcont::run(d, b, &r, 6, bsd_level::softserial) == run_result::deferred);
  CHECK(rec.calls.empty());
  CHECK(a.is_queued());
  CHECK(a.is_deferred());
  // Scheduled once, when the queue turned non-empty.
  CHECK(scheduled == std::vector<bsd_level>{bsd_level::softnet});
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK(rec.calls == std::vector<call>{{1, &r, 5}, {2, &r, 6}});
}

TEST_CASE("run.rule1_immediate_runs_from_any_level") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::immediate};
  CHECK(kcont::run(d, k, nullptr, 1, bsd_level::softserial) == run_result::ran);
  kcont::kc s{record_fn{}, tagged{2, &rec}, kcont::at<bsd_level::immediate>};
  CHECK(kcont::run(d, s, nullptr, 2, bsd_level::softserial) == run_result::ran);
  CHECK(rec.calls == std::vector<call>{{1, nullptr, 1}, {2, nullptr, 2}});
}

TEST_CASE("run.rule1_static_level_defers_like_a_runtime_one") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  kcont::kc k{record_fn{}, tagged{1, &rec}, kcont::at<bsd_level::softclock>};
  CHECK(kcont::run(d, k, nullptr, 1, bsd_level::softnet) == run_result::deferred);
  CHECK(kcont::run(d, k, nullptr, 2, bsd_level::softnet) == run_result::refused);
  d.drain(bsd_level::softclock);
  CHECK(kcont::run(d, k, nullptr, 3, bsd_level::softclock) == run_result::ran);
  CHECK(rec.calls == std::vector<call>{{1, nullptr, 1}, {1, nullptr, 3}});
}

TEST_CASE("run.defer_of_immediate_is_refused_in_every_build") {
  // run.hpp documents `refused` for an immediate continuation (it has no
  // level queue); a debug build used to abort instead. Refused in every
  // build, k untouched: the caller still owns it and may run it.
  kcont::manual_dispatcher<> d;
  recorder rec;
  request r{1};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::immediate};
  CHECK(kcont::defer(d, k, &r, 3) == run_result::refused);
  CHECK_FALSE(k.is_queued());
  CHECK_FALSE(k.is_deferred());
  CHECK(rec.calls.empty());
  CHECK(kcont::run(d, k, &r, 4, bsd_level::softserial) == run_result::ran);
  CHECK(rec.calls == std::vector<call>{{1, &r, 4}});
}

TEST_CASE("run.rule2_deferral_saves_once") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  request first{1}, second{2};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::process};
  CHECK(kcont::defer(d, k, &first, 10) == run_result::deferred);
  // While queued: refused, the saved values untouched.
  CHECK(kcont::defer(d, k, &second, 20) == run_result::refused);
  // Handed back by cancel, deferred again: the first deferral's values stand.
  CHECK(d.cancel(k));
  CHECK(k.is_deferred());
  CHECK(kcont::defer(d, k, &second, 20) == run_result::deferred);
  CHECK(d.drain(bsd_level::process) == 1);
  CHECK(rec.calls == std::vector<call>{{1, &first, 10}});
  CHECK_FALSE(k.is_deferred());
}

TEST_CASE("run.rule2_deferred_runs_with_saved_values_through_run") {
  // A deferred continuation handed back and then run (the NetBSD patch's kcont_run on
  // a KC_DEFERRED kc) gets its saved obj/status, not the caller's.
  kcont::manual_dispatcher<> d;
  recorder rec;
  request saved{1}, fresh{2};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softclock};
  CHECK(kcont::run(d, k, &saved, 7, bsd_level::softnet) == run_result::deferred);
  CHECK(d.cancel(k));
  CHECK(kcont::run(d, k, nullptr, 8, bsd_level::process) == run_result::ran);
  CHECK(rec.calls == std::vector<call>{{1, &saved, 7}});
  (void)fresh;
}

TEST_CASE("run.deferred_with_a_fresh_obj_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        kcont::manual_dispatcher<> d;
        static recorder rec;
        static request saved{1}, fresh{2};
        static tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softclock};
        (void)kcont::run(d, k, &saved, 7, bsd_level::softnet);
        (void)d.cancel(k);
        (void)kcont::run(d, k, &fresh, 8, bsd_level::process);
      },
      "run: a deferred continuation runs with its saved obj"));
}

namespace {
// A continuation that is a member of a heap object its function deletes.
struct self_node;
struct self_owned {
  int* ran;
  std::unique_ptr<self_node>* owner;
};
struct destroy_fn {
  void operator()(request*, self_owned& s, int) const;
};
struct self_node {
  kcont::kc<destroy_fn, self_owned, bsd_level> k;
  self_node(self_owned s, bsd_level l) : k{destroy_fn{}, s, l} {}
};
void destroy_fn::operator()(request*, self_owned& s, int) const {
  ++*s.ran;
  std::unique_ptr<self_node>* owner = s.owner;
  owner->reset();  // destroys the kc this function belongs to, and `s`
}
}  // namespace

TEST_CASE("run.rule3_continuation_may_destroy_itself") {
  // Runs under ASan in CI: any touch after the call is a heap-use-after-free.
  kcont::manual_dispatcher<> d;
  int ran = 0;
  std::unique_ptr<self_node> holder;
  using base = kcont::kc_base<request*, int, bsd_level>;

  // Immediate run, through the base (trampoline).
  holder = std::make_unique<self_node>(self_owned{&ran, &holder}, bsd_level::process);
  CHECK(kcont::run(d, static_cast<base&>(holder->k), nullptr, 0,
                   bsd_level::process) == run_result::ran);
  CHECK(holder == nullptr);

  // Immediate run, the concrete type known (direct call).
  holder = std::make_unique<self_node>(self_owned{&ran, &holder}, bsd_level::process);
  CHECK(kcont::run(d, holder->k, nullptr, 0, bsd_level::process) == run_result::ran);
  CHECK(holder == nullptr);

  // Deferred, then drained.
  holder = std::make_unique<self_node>(self_owned{&ran, &holder}, bsd_level::softclock);
  CHECK(kcont::run(d, holder->k, nullptr, 0, bsd_level::softnet) ==
        run_result::deferred);
  CHECK(d.drain(bsd_level::softclock) == 1);
  CHECK(holder == nullptr);

  // From run_all over an object's queue.
  kcont::kcqueue<base> q;
  holder = std::make_unique<self_node>(self_owned{&ran, &holder}, bsd_level::process);
  (void)q.push(holder->k);
  CHECK(kcont::run_all(d, q, nullptr, 0, bsd_level::process) == 1);
  CHECK(holder == nullptr);
  CHECK(ran == 4);
}

TEST_CASE("run.rule4_run_all_gives_each_the_callers_values") {
  // NetBSD patch defect: kcont_run's loop assigned a deferred kc's saved obj/status to
  // its own loop variables, so every later entry got the deferred one's values.
  kcont::manual_dispatcher<> d;
  recorder rec;
  request caller{1}, saved{2};
  tagged_kc plain1{record_fn{}, {1, &rec}, bsd_level::process};
  tagged_kc was_deferred{record_fn{}, {2, &rec}, bsd_level::process};
  tagged_kc plain2{record_fn{}, {3, &rec}, bsd_level::process};
  // Give was_deferred its own deferral, then hand it back.
  CHECK(kcont::defer(d, was_deferred, &saved, 99) == run_result::deferred);
  CHECK(d.cancel(was_deferred));

  kcont::kcqueue<base_t> q;
  (void)q.push(plain1);
  (void)q.push(was_deferred);
  (void)q.push(plain2);
  CHECK(kcont::run_all(d, q, &caller, 5, bsd_level::process) == 3);
  CHECK(rec.calls == std::vector<call>{{1, &caller, 5}, {2, &saved, 99},
                                       {3, &caller, 5}});
}

TEST_CASE("run.rule4_run_all_mixes_run_and_defer") {
  // An I/O completion at softserial: waiters at softnet and process defer,
  // an immediate one runs at once; all get the completion's status.
  kcont::manual_dispatcher<> d;
  recorder rec;
  request io{7};
  tagged_kc net{record_fn{}, {1, &rec}, bsd_level::softnet};
  tagged_kc now{record_fn{}, {2, &rec}, bsd_level::immediate};
  tagged_kc proc{record_fn{}, {3, &rec}, bsd_level::process};
  kcont::kcqueue<base_t> waiters;
  (void)waiters.push(net);
  (void)waiters.push(now);
  (void)waiters.push(proc);
  CHECK(kcont::run_all(d, waiters, &io, 0, bsd_level::softserial) == 3);
  CHECK(rec.calls == std::vector<call>{{2, &io, 0}});
  CHECK(d.drain_all() == 2);
  CHECK(rec.calls == std::vector<call>{{2, &io, 0}, {1, &io, 0}, {3, &io, 0}});
}

TEST_CASE("run.run_all_is_bounded_by_the_entries_present_at_its_start") {
  // A waiter that re-pushes itself onto the list it is run from runs once
  // per run_all call (FreeBSD's kqueue_scan marker bounds a scan the same
  // way), and the re-pushed entry is still queued afterwards (rule 9).
  // Before, one call ran it again and again (here capped at 4 re-pushes so
  // that the old behaviour ends).
  struct again {
    kcont::kcqueue<base_t>* q;
    base_t* self;
    int runs = 0;
    int repushes_left = 4;
  };
  struct again_fn {
    void operator()(request*, again& a, int) const {
      ++a.runs;
      if (a.repushes_left-- > 0) (void)a.q->push(*a.self);
    }
  };
  kcont::manual_dispatcher<> d;
  kcont::kcqueue<base_t> q;
  recorder rec;
  kcont::kc w{again_fn{}, again{&q, nullptr}, bsd_level::immediate};
  tagged_kc other{record_fn{}, {2, &rec}, bsd_level::immediate};
  w.env().self = &w;
  REQUIRE(q.push(w) == kcont::push_result::first);
  REQUIRE(q.push(other) == kcont::push_result::queued);
  CHECK(kcont::run_all(d, q, nullptr, 1, bsd_level::process) == 2);
  CHECK(w.env().runs == 1);
  CHECK(rec.calls == std::vector<call>{{2, nullptr, 1}});
  CHECK(w.is_queued());
  CHECK(q.size_slow() == 1);
  CHECK(kcont::run_all(d, q, nullptr, 1, bsd_level::process) == 1);
  CHECK(w.env().runs == 2);
  CHECK(w.is_queued());
  while (q.pop() != nullptr) {
  }
}

TEST_CASE("run.rule5_each_level_drains_its_own_queue") {
  // NetBSD patch defect: the softclock handler was handed the softnet queue.
  kcont::manual_dispatcher<> d;
  recorder rec;
  tagged_kc clock{record_fn{}, {1, &rec}, bsd_level::softclock};
  tagged_kc net{record_fn{}, {2, &rec}, bsd_level::softnet};
  tagged_kc serial{record_fn{}, {3, &rec}, bsd_level::softserial};
  tagged_kc proc{record_fn{}, {4, &rec}, bsd_level::process};
  for (auto* k : {&clock, &net, &serial, &proc})
    CHECK(kcont::defer(d, *k, nullptr, k->env().id) == run_result::deferred);
  CHECK(d.drain(bsd_level::softclock) == 1);
  CHECK(rec.calls == std::vector<call>{{1, nullptr, 1}});
  CHECK(d.has_work(bsd_level::softnet));
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK(rec.calls.back() == call{2, nullptr, 2});
  CHECK(d.drain(bsd_level::softserial) == 1);
  CHECK(rec.calls.back() == call{3, nullptr, 3});
  CHECK(d.drain(bsd_level::process) == 1);
  CHECK(rec.calls.back() == call{4, nullptr, 4});
}

TEST_CASE("run.regression_deferred_state_cleared_after_running") {
  // NetBSD patch defect: KC_DEFERRED was never cleared, so a caller-owned kc reused
  // after it ran replayed the stale obj/status forever.
  kcont::manual_dispatcher<> d;
  recorder rec;
  request old_req{1}, new_req{2};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softnet};
  CHECK(kcont::run(d, k, &old_req, 1, bsd_level::softserial) ==
        run_result::deferred);
  d.drain(bsd_level::softnet);
  CHECK_FALSE(k.is_deferred());
  CHECK(kcont::run(d, k, &new_req, 2, bsd_level::softnet) == run_result::ran);
  // And deferred again: the new values are saved, not the old ones.
  CHECK(kcont::run(d, k, &new_req, 3, bsd_level::softserial) ==
        run_result::deferred);
  d.drain(bsd_level::softnet);
  CHECK(rec.calls == std::vector<call>{{1, &old_req, 1}, {1, &new_req, 2},
                                       {1, &new_req, 3}});
}

TEST_CASE("run.regression_double_enqueue_refused") {
  // The NetBSD patch's SIMPLEQ_INSERT_TAIL of an already queued kc corrupted the list.
  kcont::manual_dispatcher<> d;
  recorder rec;
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::process};
  kcont::kcqueue<base_t> q;
  CHECK(kcont::detail::pushed(q.push(k)));
  CHECK(q.push(k) == kcont::push_result::already_queued);
  CHECK(kcont::defer(d, k, nullptr, 0) == run_result::refused);
  CHECK(kcont::detail::kcqueue_checker<base_t, kcont::no_lock>::valid(q));
  CHECK(q.pop() == &k);
  CHECK(q.pop() == nullptr);
  CHECK_FALSE(d.has_work(bsd_level::process));
}

TEST_CASE("run.queued_continuation_is_refused_not_run_twice") {
  // A continuation already waiting (deferred, or on an object's list) absorbs
  // a second request instead of running while linked.
  kcont::manual_dispatcher<> d;
  recorder rec;
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::process};
  kcont::kcqueue<base_t> q;
  (void)q.push(k);
  CHECK(kcont::run(d, static_cast<base_t&>(k), nullptr, 0, bsd_level::process) ==
        run_result::refused);
  CHECK(kcont::run(d, k, nullptr, 0, bsd_level::process) == run_result::refused);
  CHECK(rec.calls.empty());
  CHECK(kcont::run_all(d, q, nullptr, 1, bsd_level::process) == 1);
  CHECK(rec.calls == std::vector<call>{{1, nullptr, 1}});
}

TEST_CASE("run.queued_immediate_static_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        kcont::manual_dispatcher<> d;
        static recorder rec;
        static kcont::kc k{record_fn{}, tagged{1, &rec},
                           kcont::at<bsd_level::immediate>};
        static kcont::kcqueue<base_t> q;
        (void)q.push(k);
        (void)kcont::run(d, k, nullptr, 0, bsd_level::process);
      },
      "run: an immediate continuation is on a queue"));
}

#if defined(__cpp_exceptions)  // a throwing continuation needs exceptions
TEST_CASE("run.throwing_continuation_leaves_the_rest_queued") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  struct throw_fn {
    void operator()(request*, int&, int) const { throw std::runtime_error("x"); }
  };
  tagged_kc a{record_fn{}, {1, &rec}, bsd_level::process};
  kcont::kc bad{throw_fn{}, 0, bsd_level::process};
  tagged_kc c{record_fn{}, {3, &rec}, bsd_level::process};
  kcont::kcqueue<base_t> q;
  (void)q.push(a);
  (void)q.push(bad);
  (void)q.push(c);
  CHECK_THROWS_AS(kcont::run_all(d, q, nullptr, 0, bsd_level::process),
                  std::runtime_error);
  CHECK(q.pop() == &c);  // not lost
  for (auto* k : {static_cast<base_t*>(&a), static_cast<base_t*>(&bad),
                  static_cast<base_t*>(&c)})
    (void)kcont::defer(d, *k, nullptr, 0);
  CHECK_THROWS_AS(d.drain(bsd_level::process), std::runtime_error);
  CHECK(d.drain(bsd_level::process) == 1);
  CHECK(rec.calls == std::vector<call>{{1, nullptr, 0}, {1, nullptr, 0},
                                       {3, nullptr, 0}});
}
#endif  // __cpp_exceptions

TEST_CASE("run.custom_level_set") {
  enum class app_level : unsigned char { background, interactive, realtime, immediate };
  kcont::manual_dispatcher<app_level> d;
  static_assert(decltype(d)::levels == 3);
  recorder rec;
  kcont::kc k{record_fn{}, tagged{1, &rec}, app_level::background};
  kcont::kc rt{record_fn{}, tagged{2, &rec}, kcont::at<app_level::realtime>};
  CHECK(kcont::run(d, k, nullptr, 1, app_level::realtime) == run_result::deferred);
  CHECK(kcont::run(d, rt, nullptr, 2, app_level::interactive) == run_result::ran);
  CHECK(d.drain(app_level::background) == 1);
  CHECK(rec.calls == std::vector<call>{{2, nullptr, 2}, {1, nullptr, 1}});
}

// ---- resume: continuations popped or handed back (kcont/resume.hpp) ---------

namespace {

// A deferral target of the user's own: one kcqueue of every level, drained
// by hand. Before kcont::resume, what it popped could only be run through
// detail::hook_access.
struct user_target {
  using level_type = bsd_level;
  static constexpr bool concurrent = false;
  kcont::kcqueue<kcont::kc_hook> q;
  template <std::invocable<> BeforeLink>
  kcont::push_result push_deferred(kcont::kc_hook& h, BeforeLink&& before_link) {
    return q.push(h, std::forward<BeforeLink>(before_link));
  }
};
static_assert(kcont::deferral_target<user_target>);


enum class io_status : unsigned char { ok, failed, cancelled };
enum class plain_status : unsigned char { ok, failed };

}  // namespace

static_assert(kcont::detail::has_cancel_status<int>);
static_assert(kcont::detail::has_cancel_status<std::error_code>);
static_assert(kcont::detail::has_cancel_status<io_status>);
static_assert(!kcont::detail::has_cancel_status<plain_status>);

TEST_CASE("resume.runs_a_continuation_popped_from_a_user_queue_with_its_saved_values") {
  user_target t;
  recorder rec;
  request r{7};
  tagged_kc a{record_fn{}, {1, &rec}, bsd_level::softnet};
  tagged_kc b{record_fn{}, {2, &rec}, bsd_level::process};
  CHECK(kcont::defer(t, a, &r, 5) == run_result::deferred);
  CHECK(kcont::defer(t, b, nullptr, 6) == run_result::deferred);
  kcont::kc_hook* h = t.q.pop();
  REQUIRE(h == &a);
  CHECK(kcont::resume(*h));
  // Popped claimed: the claim is the caller's until resume ends it.
  h = t.q.pop_claimed([](kcont::kc_hook&) noexcept {});
  REQUIRE(h == &b);
  CHECK(b.is_queued());
  CHECK(kcont::resume(*h));
  CHECK(rec.calls == std::vector<call>{{1, &r, 5}, {2, nullptr, 6}});
  // Both are idle again: their deferrals are consumed, a new one saves anew.
  CHECK_FALSE(a.is_queued());
  CHECK_FALSE(a.is_deferred());
  CHECK_FALSE(b.is_queued());
  CHECK_FALSE(b.is_deferred());
  CHECK(kcont::run(t, a, &r, 8, bsd_level::process) == run_result::ran);
  CHECK(rec.calls.back() == call{1, &r, 8});
}

TEST_CASE("resume.a_cancelled_deferral_with_the_saved_obj_and_a_given_status") {
  kcont::manual_dispatcher<> d;
  recorder rec;
  request r{3};
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softclock};
  CHECK(kcont::defer(d, k, &r, 0) == run_result::deferred);
  CHECK(d.cancel(k));
  CHECK(kcont::resume(k, -ECANCELED));  // typed: any status
  CHECK(kcont::defer(d, k, &r, 0) == run_result::deferred);
  CHECK(d.cancel(k));
  CHECK(kcont::resume(k, kcont::cancelled));  // int: ECANCELED
  CHECK(rec.calls == std::vector<call>{{1, &r, -ECANCELED}, {1, &r, ECANCELED}});
  CHECK_FALSE(k.is_deferred());
  CHECK_FALSE(d.has_work(bsd_level::softclock));
}

// Fuchsia's handlers receive ZX_ERR_CANCELED at shutdown: a hand-back stop
// returns a list of continuations of mixed signatures, and each is told, in
// its own status type, that it was cancelled; the one make_kc allocated is
// freed after its call.
TEST_CASE("resume.hand_back_stop_list_of_mixed_continuations_told_cancelled") {
  struct hand_back {
    using on_stop = kcont::hand_back_on_stop;
  };
  using manual_all =
      kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>;
  kcont::thread_dispatcher<bsd_level, manual_all, hand_back> d;
  kcont_test::counting_resource res;
  request r{1};
  int seen_int = 0;
  std::error_code seen_ec;
  io_status seen_io = io_status::ok;
  int seen_alloc = 0;
  kcont::kc ki{[](request*, int* out, int s) { *out = s; }, &seen_int,
               bsd_level::process};
  kcont::kc ke{[](request*, std::error_code* out, std::error_code s) { *out = s; },
               &seen_ec, bsd_level::softnet};
  kcont::kc kio{[](int, io_status* out, io_status s) { *out = s; }, &seen_io,
                bsd_level::softclock};
  auto& ka = kcont::allocate_kc(std::pmr::polymorphic_allocator<std::byte>(&res),
                                [](request*, int* out, int s) { *out = s; },
                                &seen_alloc, bsd_level::process);
  CHECK(kcont::defer(d, ki, &r, 0) == run_result::deferred);
  CHECK(kcont::defer(d, ke, &r, std::error_code{}) == run_result::deferred);
  CHECK(kcont::defer(d, kio, 4, io_status::ok) == run_result::deferred);
  CHECK(kcont::defer(d, ka, &r, 0) == run_result::deferred);
  CHECK(res.live == 1);
  kcont::kcqueue<kcont::kc_hook> out;
  CHECK(d.stop(out) == 4);
  int n = 0;
  while (kcont::kc_hook* h = out.pop()) {
    CHECK(kcont::resume(*h, kcont::cancelled));
    ++n;
  }
  CHECK(n == 4);
  CHECK(seen_int == ECANCELED);
  CHECK(seen_ec == std::errc::operation_canceled);
  CHECK(seen_io == io_status::cancelled);
  CHECK(seen_alloc == ECANCELED);
  CHECK(res.live == 0);  // freed after its call
}

TEST_CASE("resume.an_allocated_continuation_is_freed_after_it_runs") {
  user_target t;
  kcont_test::counting_resource res;
  int sum = 0;
  auto& k = kcont::allocate_kc(std::pmr::polymorphic_allocator<std::byte>(&res),
                               [](request* r, int* s, int st) { *s += r->id + st; },
                               &sum, bsd_level::softnet);
  request r{10};
  CHECK(kcont::defer(t, k, &r, 2) == run_result::deferred);
  CHECK(res.live == 1);
  kcont::kc_hook* h = t.q.pop();
  REQUIRE(h != nullptr);
  CHECK(kcont::resume(*h));
  CHECK(sum == 12);
  CHECK(res.live == 0);
}

TEST_CASE("resume.never_allocates") {
  user_target t;
  recorder rec;
  tagged_kc k{record_fn{}, {1, &rec}, bsd_level::softnet};
  rec.calls.reserve(3000);
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 1000; ++i) {
    (void)kcont::defer(t, k, nullptr, i);
    (void)kcont::resume(*t.q.pop());
    (void)kcont::defer(t, k, nullptr, i);
    (void)kcont::resume(*t.q.pop(), kcont::cancelled);
    (void)kcont::defer(t, k, nullptr, i);
    (void)kcont::resume(*static_cast<base_t*>(t.q.pop()), -1);
  }
  CHECK(scope.count() == 0);
  CHECK(rec.calls.size() == 3000);
}

TEST_CASE("resume.nothing_to_resume_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  // Never deferred: no saved values, no claim.
  CHECK(kcont_test::dies_with(
      [] {
        recorder rec;
        tagged_kc k{record_fn{}, {1, &rec}, bsd_level::process};
        (void)kcont::resume(k);
      },
      "resume: nothing to resume"));
  // Resumed twice: the first resume consumed the deferral.
  CHECK(kcont_test::dies_with(
      [] {
        user_target t;
        recorder rec;
        tagged_kc k{record_fn{}, {1, &rec}, bsd_level::process};
        (void)kcont::defer(t, k, nullptr, 1);
        kcont::kc_hook* h = t.q.pop();
        (void)kcont::resume(*h);
        (void)kcont::resume(*h);
      },
      "resume: nothing to resume"));
}

TEST_CASE("resume.still_linked_on_a_queue_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        auto* t = new user_target;  // never destroyed: the child aborts
        recorder rec;
        tagged_kc a{record_fn{}, {1, &rec}, bsd_level::process};
        tagged_kc b{record_fn{}, {2, &rec}, bsd_level::process};
        (void)kcont::defer(*t, a, nullptr, 1);
        (void)kcont::defer(*t, b, nullptr, 2);
        (void)kcont::resume(a);  // not popped
      },
      "resume: the continuation is still linked"));
}

TEST_CASE("resume.cancelled_without_a_cancel_status_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        user_target t;
        plain_status seen = plain_status::ok;
        kcont::kc k{[](int, plain_status* out, plain_status s) { *out = s; },
                    &seen, bsd_level::process};
        (void)kcont::defer(t, k, 1, plain_status::failed);
        (void)kcont::resume(*t.q.pop(), kcont::cancelled);
      },
      "no kcont::cancel_status"));
}

// Release builds: a continuation whose status cannot say "cancelled" is
// handed back as dispose() would: not called, freed when allocated.
TEST_CASE("resume.cancelled_without_a_cancel_status_is_disposed_in_release" *
          doctest::skip(kcont::contract_checks)) {
  user_target t;
  kcont_test::counting_resource res;
  int calls = 0;
  auto& k = kcont::allocate_kc(std::pmr::polymorphic_allocator<std::byte>(&res),
                               [](int, int* c, plain_status) { ++*c; }, &calls,
                               bsd_level::process);
  (void)kcont::defer(t, k, 1, plain_status::failed);
  CHECK(kcont::resume(*t.q.pop(), kcont::cancelled));
  CHECK(calls == 0);
  CHECK(res.live == 0);
}
