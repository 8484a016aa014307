// kcont/runner.hpp — who drains each level: the runner plan, chosen at
// compile time.
//
// Defines the runner kinds and `runner_plan<R...>`, one entry per deferrable
// level of a level set, lowest level first:
//
//   manual_runner    — the caller's own loop drains it (thread_dispatcher::
//                      drain, or a poll loop watching its descriptor);
//   thread_runner    — one dedicated thread;
//   pool_runner<N>   — N threads (0: std::thread::hardware_concurrency());
//   no_runner        — none of its own: the level falls back to the runner of
//                      the next level below it (the NetBSD patch punted soft levels
//                      to process context). Level 0 must have a runner.
//
// A runner shared by several levels (its own and the no_runner levels above
// it) always runs the highest non-empty level first, checked before every
// continuation. Compared with Asio's one io_context per priority, or a
// runtime priority queue: the mapping is fixed in the type, so an unsupported
// plan (level 0 without a runner, the wrong number of entries) fails to
// compile, and finding a level's runner is a constant-table lookup.
//
// Usage:
//   // process: 4 workers; softclock falls back to them; softnet and
//   // softserial share one dedicated thread (softserial first).
//   using plan = kcont::runner_plan<kcont::pool_runner<4>, kcont::no_runner,
//                                   kcont::thread_runner, kcont::no_runner>;
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kcont/level.hpp"

namespace kcont {

namespace detail {
// What kind of runner a plan entry is (thread_dispatcher's own switch).
enum class runner_kind : std::uint8_t { none, manual, thread, pool };
}  // namespace detail

// The caller drains the level (no thread is started).
struct manual_runner {
  static constexpr detail::runner_kind kind = detail::runner_kind::manual;
  static constexpr unsigned threads = 0;
};
// One dedicated thread drains the level (FIFO order within a level holds).
struct thread_runner {
  static constexpr detail::runner_kind kind = detail::runner_kind::thread;
  static constexpr unsigned threads = 1;
};
// N threads drain the level; 0 means std::thread::hardware_concurrency() (at
// least 1). Continuations of one level may run concurrently and finish out
// of order; each still runs once per deferral, and never on two threads at
// once: a deferral made while it runs is run after that run, on the same
// thread (the claim protocol, kc.hpp's kc_hook).
template <unsigned N = 0>
struct pool_runner {
  static constexpr detail::runner_kind kind = detail::runner_kind::pool;
  static constexpr unsigned threads = N;
};
// No runner of its own: falls back to the next runner below.
struct no_runner {
  static constexpr detail::runner_kind kind = detail::runner_kind::none;
  static constexpr unsigned threads = 0;
};

namespace detail {
// A runner plan entry: one of the four above.
template <class R>
concept runner_spec = requires {
  { R::kind } -> std::convertible_to<runner_kind>;
  { R::threads } -> std::convertible_to<unsigned>;
};
}  // namespace detail

// The runner of each deferrable level, lowest level first.
template <detail::runner_spec... R>
struct runner_plan {
  static constexpr std::size_t size = sizeof...(R);
  static_assert(size > 0, "kcont::runner_plan: a plan needs one entry per level");

  // The kind and configured thread count of each entry.
  static constexpr std::array<detail::runner_kind, size> kinds{R::kind...};
  static constexpr std::array<unsigned, size> threads{R::threads...};

  static_assert(kinds[0] != detail::runner_kind::none,
                "kcont::runner_plan: the lowest level must have a runner "
                "(no_runner falls back to the level below, and there is none)");

  // Returns: the level index whose runner drains level index i (i itself,
  //   or the nearest lower entry that is not no_runner).
  [[nodiscard]] static constexpr std::size_t runner_of(std::size_t i) noexcept {
    while (kinds[i] == detail::runner_kind::none) --i;
    return i;
  }
  // Returns: the highest level index drained by the runner at `base`.
  [[nodiscard]] static constexpr std::size_t top_of(std::size_t base) noexcept {
    std::size_t top = base;
    while (top + 1 < size && kinds[top + 1] == detail::runner_kind::none) ++top;
    return top;
  }
  // True when the plan starts at least one thread.
  static constexpr bool has_threads =
      ((R::kind == detail::runner_kind::thread || R::kind == detail::runner_kind::pool) || ...);
};

// A runner_plan<...> whose size matches the level set L.
template <class P, class L>
concept runner_plan_for =
    level_set<L> && requires {
      { P::size } -> std::convertible_to<std::size_t>;
      P::kinds;
    } && (P::size == level_count<L>);

namespace detail {
template <class First, class Rest, class Seq>
struct make_plan;
template <class First, class Rest, std::size_t... I>
struct make_plan<First, Rest, std::index_sequence<0, I...>> {
  template <std::size_t>
  using rest = Rest;
  using type = runner_plan<First, rest<I>...>;
};
}  // namespace detail

// A plan of L's size: `First` at level 0, `Rest` at every level above.
//   plan_for<bsd_level, pool_runner<>, no_runner>  — the NetBSD patch's punting
//   plan_for<bsd_level, thread_runner, thread_runner> — a thread per level
//   plan_for<bsd_level, manual_runner, manual_runner> — all by hand
template <level_set L, detail::runner_spec First, detail::runner_spec Rest>
using plan_for = typename detail::make_plan<
    First, Rest, std::make_index_sequence<level_count<L>>>::type;

}  // namespace kcont
