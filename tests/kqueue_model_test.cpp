// kqueue against a reference model: thousands of random op sequences (fixed
// seeds) over user and klist-driven knotes, comparing every change's result
// and every scan's events with the model in kqueue_model.hpp.
#include <kcont/kqueue.hpp>

#include <doctest/doctest.h>

#include <random>
#include <string>

#include "kqueue_model.hpp"

TEST_CASE("kqueue.random_sequences_match_the_reference_model") {
  constexpr int sequences = 5000;
  constexpr int ops = 80;
  std::size_t events_seen = 0;
  for (int seed = 1; seed <= sequences; ++seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    const std::string verdict = kq_model::run_kqueue_ops(pick, ops, events_seen);
    INFO("seed " << seed);
    REQUIRE(verdict == "");
  }
  CHECK(events_seen > 1000);  // the sequences do exercise the scan
}
