// kcont's kqueue against the independent FreeBSD reference model
// (kqueue_reference.hpp): thousands of fixed-seed sequences of kevent()
// calls, every outcome compared (kqueue_differential.hpp).
#include <kcont/kqueue.hpp>

#include <doctest/doctest.h>

#include <random>
#include <string>

#include "kqueue_differential.hpp"

TEST_CASE_TEMPLATE("kqueue.random_sequences_match_the_freebsd_reference", Lock, std::mutex,
                   kcont::no_lock) {
  constexpr int sequences = 3000;
  constexpr int steps = 60;
  std::size_t entries_seen = 0;
  for (int seed = 1; seed <= sequences; ++seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    const std::string verdict = kq_diff::run_kqueue_ops<Lock>(pick, steps, entries_seen);
    INFO("seed " << seed << "\n" << verdict);
    REQUIRE(verdict.empty());
  }
  CHECK(entries_seen > 50000);  // the sequences do write entries
}
