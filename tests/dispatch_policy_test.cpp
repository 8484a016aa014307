// thread_dispatcher policy knobs seen from a user's policy struct: the
// on_thread_start hook (issue 14, gap 5).
#include <kcont/dispatch_policy.hpp>

#include <doctest/doctest.h>

#include <kcont/kc.hpp>
#include <kcont/run.hpp>
#include <kcont/runner.hpp>
#include <kcont/thread_dispatcher.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace {

using kcont::bsd_level;

// process: a pool of 2 threads; softclock falls back to it; softnet: one
// thread; softserial: drained by the caller (no thread, no hook).
using plan = kcont::runner_plan<kcont::pool_runner<2>, kcont::no_runner,
                                kcont::thread_runner, kcont::manual_runner>;

// Per-thread state a user sets up in the hook: a tag naming the thread.
thread_local int thread_tag = -1;

std::mutex starts_mutex;
std::vector<std::pair<bsd_level, unsigned>> starts;

struct tagging_policy : kcont::dispatch_defaults {
  // The static-function form.
  static void on_thread_start(bsd_level level, unsigned thread) {
    thread_tag = static_cast<int>(level) * 10 + static_cast<int>(thread);
    std::lock_guard g(starts_mutex);
    starts.emplace_back(level, thread);
  }
};

std::atomic<int> hook_calls{0};
struct counting_hook {
  void operator()(bsd_level level, unsigned) const {
    thread_tag = 100 + static_cast<int>(level);
    hook_calls.fetch_add(1);
  }
};
struct counting_policy : kcont::dispatch_defaults {
  using on_thread_start = counting_hook;  // the callable-type form
};

struct job_env {
  std::atomic<int>* done;
  std::atomic<int>* tag;
};
void record_tag(int, job_env& e, int) {
  e.tag->store(thread_tag);
  e.done->fetch_add(1);
}

bool wait_for(const std::atomic<int>& n, int want) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (n.load() < want)
    if (std::chrono::steady_clock::now() > until) return false;
    else std::this_thread::yield();
  return true;
}

}  // namespace

TEST_CASE("thread_dispatcher.on_thread_start_runs_on_each_runner_thread_before_its_work") {
  {
    std::lock_guard g(starts_mutex);
    starts.clear();
  }
  std::atomic<int> done{0};
  std::atomic<int> tag_process{-2}, tag_softnet{-2}, tag_softserial{-2};
  kcont::kc at_process{&record_tag, job_env{&done, &tag_process}, bsd_level::process};
  kcont::kc at_softnet{&record_tag, job_env{&done, &tag_softnet}, bsd_level::softnet};
  kcont::kc at_softserial{&record_tag, job_env{&done, &tag_softserial},
                          bsd_level::softserial};
  {
    kcont::thread_dispatcher<bsd_level, plan, tagging_policy> d;
    // Deferred at once: whichever thread runs them has run its hook first.
    CHECK(kcont::defer(d, at_process, 0, 0) == kcont::run_result::deferred);
    CHECK(kcont::defer(d, at_softnet, 0, 0) == kcont::run_result::deferred);
    CHECK(kcont::defer(d, at_softserial, 0, 0) == kcont::run_result::deferred);
    REQUIRE(wait_for(done, 2));
    d.drain_all();  // the manual runner: this thread, no hook
    CHECK(done.load() == 3);
    d.stop();
  }
  // process is runner 0 (its 2 threads: tags 0 and 1), softnet runner 2
  // (tag 20); softserial is manual: the caller's thread, untagged.
  CHECK((tag_process.load() == 0 || tag_process.load() == 1));
  CHECK(tag_softnet.load() == 20);
  CHECK(tag_softserial.load() == -1);
  std::lock_guard g(starts_mutex);
  std::sort(starts.begin(), starts.end());
  CHECK(starts == std::vector<std::pair<bsd_level, unsigned>>{
                      {bsd_level::process, 0},
                      {bsd_level::process, 1},
                      {bsd_level::softnet, 0}});
}

TEST_CASE("thread_dispatcher.on_thread_start_as_a_callable_type") {
  hook_calls = 0;
  std::atomic<int> done{0};
  std::atomic<int> tag{-2};
  kcont::kc job{&record_tag, job_env{&done, &tag}, bsd_level::softnet};
  {
    kcont::thread_dispatcher<bsd_level, plan, counting_policy> d;
    CHECK(kcont::defer(d, job, 0, 0) == kcont::run_result::deferred);
    REQUIRE(wait_for(done, 1));
    d.stop();
  }
  CHECK(hook_calls.load() == 3);  // 2 pool threads + 1 softnet thread
  CHECK(tag.load() == 100 + static_cast<int>(bsd_level::softnet));
}

TEST_CASE("thread_dispatcher.without_on_thread_start_nothing_is_called") {
  // The default policy: no hook (detection finds none; compiles and runs).
  std::atomic<int> done{0};
  std::atomic<int> tag{-2};
  kcont::kc job{&record_tag, job_env{&done, &tag}, bsd_level::process};
  kcont::thread_dispatcher<bsd_level, plan> d;
  CHECK(kcont::defer(d, job, 0, 0) == kcont::run_result::deferred);
  REQUIRE(wait_for(done, 1));
  d.stop();
  CHECK(tag.load() == -1);
}
