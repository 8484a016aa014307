// Level sets: the concept, the ordering rule, custom sets, compile-time levels.
#include <kcont/level.hpp>

#include <doctest/doctest.h>

#include <cstdint>

namespace {

// A user's own three-level set.
enum class app_level : std::uint8_t { background, interactive, realtime, immediate };

enum class no_immediate : std::uint8_t { low, high };
enum class only_immediate : std::uint8_t { immediate };
enum plain_enum { pe_low, immediate };  // unscoped: converts to int
struct not_an_enum {
  static constexpr int immediate = 1;
};
static_assert(not_an_enum::immediate == 1);

// Positive and negative types for the level_set concept.
static_assert(kcont::level_set<kcont::bsd_level>);
static_assert(kcont::level_set<app_level>);
static_assert(!kcont::level_set<no_immediate>, "needs an immediate level");
static_assert(!kcont::level_set<only_immediate>, "needs a deferrable level");
static_assert(!kcont::level_set<plain_enum>, "must be a scoped enum");
static_assert(!kcont::level_set<not_an_enum>);
static_assert(!kcont::level_set<int>);

static_assert(kcont::level_count<kcont::bsd_level> == 4);
static_assert(kcont::level_count<app_level> == 3);

static_assert(kcont::level_spec<kcont::bsd_level>);
static_assert(kcont::level_spec<kcont::static_level<app_level::realtime>>);
static_assert(!kcont::level_spec<int>);
static_assert(std::is_same_v<
              kcont::level_set_of_t<kcont::static_level<app_level::realtime>>,
              app_level>);
static_assert(kcont::detail::is_static_immediate<
              kcont::static_level<kcont::bsd_level::immediate>>());
static_assert(!kcont::detail::is_static_immediate<
              kcont::static_level<kcont::bsd_level::softnet>>());
static_assert(!kcont::detail::is_static_immediate<kcont::bsd_level>());

}  // namespace

TEST_CASE("level.seed_order") {
  using L = kcont::bsd_level;
  CHECK(L::process < L::softclock);
  CHECK(L::softclock < L::softnet);
  CHECK(L::softnet < L::softserial);
  CHECK(L::softserial < L::immediate);
}

TEST_CASE("level.rule1_runs_now_at_or_below") {
  using L = kcont::bsd_level;
  // At or below the requested level: at once.
  CHECK(kcont::runs_now(L::softnet, L::process));
  CHECK(kcont::runs_now(L::softnet, L::softclock));
  CHECK(kcont::runs_now(L::softnet, L::softnet));
  // Above it: deferred.
  CHECK_FALSE(kcont::runs_now(L::softnet, L::softserial));
  CHECK_FALSE(kcont::runs_now(L::process, L::softclock));
  // Immediate: at once from anywhere.
  CHECK(kcont::runs_now(L::immediate, L::softserial));
  CHECK(kcont::runs_now(L::immediate, L::process));
}

TEST_CASE("level.custom_set") {
  CHECK(kcont::runs_now(app_level::interactive, app_level::background));
  CHECK_FALSE(kcont::runs_now(app_level::background, app_level::realtime));
  CHECK(kcont::level_index(app_level::realtime) == 2);
  CHECK(kcont::level_at<app_level>(1) == app_level::interactive);
  CHECK(kcont::is_valid_level(app_level::immediate));
  CHECK_FALSE(kcont::is_valid_level(static_cast<app_level>(9)));
}

TEST_CASE("level.static_level_converts") {
  constexpr auto tag = kcont::at<kcont::bsd_level::softclock>;
  constexpr kcont::bsd_level v = tag;
  CHECK(v == kcont::bsd_level::softclock);
}
