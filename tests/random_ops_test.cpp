// Random operation sequences over the foundation's public API, against the
// reference model in random_ops.hpp: fixed seeds, thousands of sequences.
#include "random_ops.hpp"

#include <doctest/doctest.h>

#include <random>

TEST_CASE("random_ops.model_agrees_on_fixed_seeds") {
  constexpr int sequences = 4000;
  std::mt19937 rng(20041121);  // fixed: every run checks the same sequences
  std::vector<std::uint8_t> bytes;
  int checked = 0;
  for (int s = 0; s < sequences; ++s) {
    bytes.resize(static_cast<std::size_t>(6 * (1 + rng() % 120)));
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    const std::string verdict = kcont_test::run_ops(bytes.data(), bytes.size());
    INFO("sequence " << s);
    REQUIRE(verdict == "");
    ++checked;
  }
  CHECK(checked == sequences);
}
