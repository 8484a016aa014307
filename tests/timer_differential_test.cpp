// kcont's timer filter against the independent FreeBSD EVFILT_TIMER model
// (timer_reference.hpp): thousands of fixed-seed sequences of clock moves,
// ticks and kevent() calls, every outcome compared (timer_differential.hpp).
// The driver itself is checked on a second model: it must find no difference
// there, and must find FreeBSD's own count of missed periods.
#include "timer_differential.hpp"

#include <doctest/doctest.h>

#include <random>
#include <span>
#include <string>
#include <vector>

#if __has_include(<kcont/timer_source.hpp>)
#include <kcont/kfilters.hpp>
#include <kcont/timer_filter.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/level.hpp>
#include <kcont/timer_source.hpp>

#include <mutex>
#define KCONT_TESTS_HAVE_TIMER_SOURCE 1
#endif

namespace {

// A second timer_model behind the kqueue and timer-source interface the
// driver uses, reading test_clock as kcont's source does.
struct model_kqueue {
  kqref::timer_model m;
  kcont::kevent_result kevent(std::span<const kcont::kevent> changes,
                              std::span<kcont::kevent> events) {
    m.set_time(timer_diff::test_clock::now_ns);
    std::vector<kqref::kev> ref;
    for (const auto& c : changes) ref.push_back(timer_diff::to_ref(c));
    const kqref::kevent_outcome r = m.kevent(ref, events.size());
    for (std::size_t i = 0; i < r.out.size(); ++i) events[i] = timer_diff::to_kcont(r.out[i]);
    return {r.ret, r.err, r.out.size()};
  }
  std::size_t size() const { return m.registered(); }
  std::size_t pending() const { return m.queued(); }
};
struct model_source {
  model_kqueue* kq;
  void tick() {
    kq->m.set_time(timer_diff::test_clock::now_ns);
    kq->m.tick();
  }
};

// Runs `sequences` fixed-seed sequences; returns the first verdict that is
// not "" (with its seed), or "".
template <class Run>
std::string run_sequences(int sequences, Run run) {
  for (int seed = 1; seed <= sequences; ++seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    std::string verdict = run(pick);
    if (!verdict.empty()) return "seed " + std::to_string(seed) + "\n" + verdict;
  }
  return "";
}

}  // namespace

TEST_CASE("timer.reference_model_random_sequences_hold_invariants") {
  std::size_t entries_seen = 0;
  const std::string verdict = run_sequences(
      1000, [&](auto& pick) { return timer_diff::run_model_ops(pick, 60, entries_seen); });
  INFO(verdict);
  CHECK(verdict.empty());
  CHECK(entries_seen > 10000);
}

TEST_CASE("timer.differential_driver_agrees_with_a_second_model") {
  // No false alarms: the same model on both sides agrees everywhere ...
  std::size_t entries_seen = 0;
  std::size_t fired = 0;
  std::string verdict = run_sequences(500, [&](auto& pick) {
    model_kqueue kq;
    model_source timers{&kq};
    return timer_diff::run_timer_ops(kq, timers, pick, 60, entries_seen, fired);
  });
  INFO(verdict);
  CHECK(verdict.empty());
  CHECK(entries_seen > 5000);
  CHECK(fired > 3000);
  // ... and FreeBSD's own count of missed periods, on the other side, is
  // found (filt_timerexpire_l's "delta = (now - kc->next) / kc->to").
  verdict = run_sequences(500, [&](auto& pick) {
    model_kqueue kq;
    kq.m.freebsd_missed_periods = true;
    model_source timers{&kq};
    return timer_diff::run_timer_ops(kq, timers, pick, 60, entries_seen, fired);
  });
  CHECK(!verdict.empty());
}

#if defined(KCONT_TESTS_HAVE_TIMER_SOURCE)
TEST_CASE("timer.random_sequences_match_the_freebsd_reference") {
  using source = kcont::basic_timer_source<kcont::bsd_level, std::mutex, timer_diff::test_clock>;
  using timer_kqueue =
      kcont::kqueue<kcont::filters<kcont::user_filter, kcont::timer_filter<source>>>;
  std::size_t entries_seen = 0;
  std::size_t fired = 0;
  const std::string verdict = run_sequences(3000, [&](auto& pick) {
    timer_diff::test_clock::now_ns = 0;  // before the source reads it
    source timers;
    timer_kqueue kq{timers};
    return timer_diff::run_timer_ops(kq, timers, pick, 60, entries_seen, fired);
  });
  INFO(verdict);
  REQUIRE(verdict.empty());
  CHECK(entries_seen > 30000);  // the sequences do write entries
  CHECK(fired > 20000);         // and timers do fire
}
#endif
