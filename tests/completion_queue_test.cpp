// kcont::post / kcont::resume_all: a queue of completions, each run with its
// own obj/status, with no dispatcher (issue 14, gap 1).
#include <kcont/completion_queue.hpp>

#include <doctest/doctest.h>

#include <kcont/contract.hpp>
#include <kcont/kc.hpp>
#include <kcont/kcqueue.hpp>

#include <cerrno>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;

struct request {
  int id = 0;
};

struct seen {
  int who;
  int id;
  int status;
  bool operator==(const seen&) const = default;
};

}  // namespace

TEST_CASE("completion_queue.each_completion_runs_with_its_own_result") {
  // What a user of an I/O loop writes: completions collected as they are
  // known, run later at one place, each told its own request and result.
  std::vector<seen> log;
  auto on_read = [](request* r, std::vector<seen>* l, int status) {
    l->push_back({1, r->id, status});
  };
  auto on_write = [](request* r, std::vector<seen>* l, int status) {
    l->push_back({2, r->id, status});
  };
  kcont::kc rd{on_read, &log, bsd_level::softnet};
  kcont::kc wr{on_write, &log, bsd_level::softclock};
  request r1{7}, r2{9};

  kcont::kcqueue<kcont::kc_base<request*, int>> done;
  CHECK(kcont::post(done, rd, &r1, 12) == kcont::push_result::first);
  CHECK(kcont::post(done, wr, &r2, -EPIPE) == kcont::push_result::queued);
  CHECK(log.empty());

  CHECK(kcont::resume_all(done) == 2);
  CHECK(log == std::vector<seen>{{1, 7, 12}, {2, 9, -EPIPE}});
  CHECK(done.empty());
  CHECK_FALSE(rd.is_queued());
  CHECK_FALSE(rd.is_deferred());

  // Reusable at once: a second round carries the new values, not stale ones.
  log.clear();
  CHECK(kcont::post(done, rd, &r2, 3) == kcont::push_result::first);
  CHECK(kcont::resume_all(done) == 1);
  CHECK(log == std::vector<seen>{{1, 9, 3}});
}

TEST_CASE("completion_queue.mixed_signatures_on_a_kc_hook_queue") {
  // A kcqueue<kc_hook> holds continuations of different obj/status types.
  int got_int = 0;
  long got_ptr = 0;
  kcont::kc a{[](int o, int* out, int s) { *out = o + s; }, &got_int,
              bsd_level::softnet};
  kcont::kc b{[](long* o, long* out, bool s) { *out = s ? *o : -1; }, &got_ptr,
              bsd_level::softnet};
  long forty = 40;
  kcont::kcqueue<kcont::kc_hook> q;
  CHECK(kcont::post(q, a, 5, 6) == kcont::push_result::first);
  CHECK(kcont::post(q, b, &forty, true) == kcont::push_result::queued);
  CHECK(kcont::resume_all(q) == 2);
  CHECK(got_int == 11);
  CHECK(got_ptr == 40);
}

TEST_CASE("completion_queue.a_second_post_before_the_run_is_refused_and_keeps_the_first") {
  std::vector<seen> log;
  kcont::kc k{[](request* r, std::vector<seen>* l, int s) { l->push_back({0, r->id, s}); },
              &log, bsd_level::softnet};
  request r1{1}, r2{2};
  kcont::kcqueue<kcont::kc_base<request*, int>> q;
  CHECK(kcont::post(q, k, &r1, 10) == kcont::push_result::first);
  CHECK(kcont::post(q, k, &r2, 20) == kcont::push_result::already_queued);
  CHECK(kcont::resume_all(q) == 1);
  CHECK(log == std::vector<seen>{{0, 1, 10}});
}

TEST_CASE("completion_queue.one_posted_while_running_waits_for_the_next_call") {
  struct env {
    kcont::kcqueue<kcont::kc_base<int, int>>* q;
    kcont::kc_base<int, int>* self;
    std::vector<int> got;
  } e;
  kcont::kcqueue<kcont::kc_base<int, int>> q;
  kcont::kc k{[](int o, env* en, int) {
                en->got.push_back(o);
                if (o < 3) (void)kcont::post(*en->q, *en->self, o + 1, 0);
              },
              &e, bsd_level::softnet};
  e.q = &q;
  e.self = &k;
  (void)kcont::post(q, k, 1, 0);
  CHECK(kcont::resume_all(q) == 1);  // bounded: the re-post waits
  CHECK(e.got == std::vector<int>{1});
  CHECK(kcont::resume_all(q) == 1);
  CHECK(kcont::resume_all(q) == 1);
  CHECK(kcont::resume_all(q) == 0);
  CHECK(e.got == std::vector<int>{1, 2, 3});
}

TEST_CASE("completion_queue.posts_from_other_threads_on_a_locked_queue") {
  constexpr int per_thread = 200;
  std::vector<int> sums(2, 0);
  auto add = +[](int o, int* sum, int s) { *sum += o * s; };
  std::deque<kcont::kc<void (*)(int, int*, int), int*, bsd_level>> ks;
  for (int t = 0; t < 2; ++t)
    for (int i = 0; i < per_thread; ++i)
      ks.emplace_back(add, &sums[static_cast<std::size_t>(t)], bsd_level::softnet);
  kcont::kcqueue<kcont::kc_base<int, int>, std::mutex> q;
  std::vector<std::thread> producers;
  for (int t = 0; t < 2; ++t)
    producers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        CHECK(kcont::post(q, ks[static_cast<std::size_t>(t * per_thread + i)],
                          i, t + 1) != kcont::push_result::already_queued);
    });
  std::size_t ran = 0;
  while (ran < 2 * per_thread) ran += kcont::resume_all(q);
  for (auto& p : producers) p.join();
  const int base = per_thread * (per_thread - 1) / 2;
  CHECK(sums[0] == base * 1);
  CHECK(sums[1] == base * 2);
}

TEST_CASE("completion_queue.resume_all_of_a_plain_push_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  // kcqueue::push saves no obj/status: resume_all would run it with none.
  CHECK(kcont_test::dies_with(
      [] {
        int seen = 0;
        kcont::kc k{[](int o, int* s, int) { *s = o; }, &seen, bsd_level::softnet};
        kcont::kcqueue<kcont::kc_base<int, int>> q;
        (void)q.push(k);
        (void)kcont::resume_all(q);
      },
      "push it with kcont::post"));
}
