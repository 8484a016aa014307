// runner: compile-time runner plans and their fallback mapping.
#include <kcont/runner.hpp>

#include <doctest/doctest.h>

#include <type_traits>

namespace {

using kcont::bsd_level;
using kcont::no_runner;
using kcont::pool_runner;
using kcont::detail::runner_kind;
using kcont::thread_runner;

using mixed = kcont::runner_plan<pool_runner<4>, no_runner, thread_runner,
                                 no_runner>;

// A plan whose size matches the level set.
static_assert(kcont::runner_plan_for<mixed, bsd_level>);
static_assert(!kcont::runner_plan_for<kcont::runner_plan<thread_runner>, bsd_level>);
static_assert(kcont::detail::runner_spec<kcont::manual_runner>);
static_assert(!kcont::detail::runner_spec<int>);

// no_runner falls back to the next runner below; a shared runner spans
// its own level and the no_runner levels above it.
static_assert(mixed::runner_of(0) == 0);
static_assert(mixed::runner_of(1) == 0);
static_assert(mixed::runner_of(2) == 2);
static_assert(mixed::runner_of(3) == 2);
static_assert(mixed::top_of(0) == 1);
static_assert(mixed::top_of(2) == 3);
static_assert(mixed::has_threads);
static_assert(mixed::threads[0] == 4);

// plan_for builds a plan of the set's size.
static_assert(std::is_same_v<
              kcont::plan_for<bsd_level, pool_runner<>, no_runner>,
              kcont::runner_plan<pool_runner<>, no_runner, no_runner, no_runner>>);
static_assert(!kcont::plan_for<bsd_level, kcont::manual_runner,
                               kcont::manual_runner>::has_threads);

}  // namespace

TEST_CASE("runner.plan_kinds_are_visible_at_run_time_too") {
  CHECK(mixed::kinds[1] == runner_kind::none);
  CHECK(mixed::kinds[2] == runner_kind::thread);
  CHECK(mixed::runner_of(3) == 2);
}
