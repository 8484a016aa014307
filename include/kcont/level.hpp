// kcont/level.hpp — priority levels (the BSD IPL), as a type-level policy.
//
// A level set is a scoped enum whose enumerators are the deferrable levels in
// increasing priority, numbered 0, 1, 2, ..., followed by `immediate`. A
// continuation requested at level L runs at once when the caller is at or
// below L, or when L is `immediate`; otherwise it is deferred to L's queue
// (docs/design.md rule 1). The NetBSD patch's set is `bsd_level`; define your own with
//
//   enum class my_level : std::uint8_t { background, interactive, realtime, immediate };
//
// and every kcont template accepts it. Levels of different sets never mix: a
// `my_level` cannot be passed where a `bsd_level` continuation is expected,
// and a non-enum is rejected by the `level_set` concept at compile time.
//
// Unlike a runtime priority (std::priority_queue, Taskflow's priority), the
// number of levels is a compile-time constant, so a dispatcher owns an array of
// queues and a level known at compile time costs no comparison at all.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace kcont {

// The NetBSD patch's levels: process < softclock < softnet < softserial, plus
// `immediate` (KC_IPL_IMMED: run at once whatever the caller's level).
enum class bsd_level : std::uint8_t {
  process,
  softclock,
  softnet,
  softserial,
  immediate
};

// A level set: a scoped enum with an `immediate` enumerator greater than zero
// and at most 254; the deferrable levels are the values 0 .. immediate-1.
template <class L>
concept level_set =
    std::is_enum_v<L> && !std::is_convertible_v<L, std::underlying_type_t<L>> &&
    requires {
      { L::immediate } -> std::same_as<L>;
    } &&
    (static_cast<long long>(L::immediate) > 0) &&
    (static_cast<long long>(L::immediate) < 255);

// Number of deferrable levels (queues) in the set L.
template <level_set L>
inline constexpr std::size_t level_count =
    static_cast<std::size_t>(L::immediate);

// Effects: the queue index of a deferrable level. Precondition: l != immediate.
template <level_set L>
[[nodiscard]] constexpr std::size_t level_index(L l) noexcept {
  return static_cast<std::size_t>(l);
}

// Effects: the level of queue index i. Precondition: i < level_count<L>.
template <level_set L>
[[nodiscard]] constexpr L level_at(std::size_t i) noexcept {
  return static_cast<L>(i);
}

// True when `l` names one of the set's levels (deferrable or immediate).
template <level_set L>
[[nodiscard]] constexpr bool is_valid_level(L l) noexcept {
  return static_cast<long long>(l) >= 0 &&
         static_cast<long long>(l) <= static_cast<long long>(L::immediate);
}

// True when `l` is one of the set's deferrable levels: a level with a queue
// (not `immediate`, and not a value outside the set). Dispatchers refuse any
// other level where a queue level is expected.
template <level_set L>
[[nodiscard]] constexpr bool is_deferrable_level(L l) noexcept {
  return static_cast<long long>(l) >= 0 &&
         static_cast<long long>(l) < static_cast<long long>(L::immediate);
}

// docs/design.md rule 1: a continuation requested at `requested` runs at once when
// the caller's `current` level is at or below it, or when it is immediate.
template <level_set L>
[[nodiscard]] constexpr bool runs_now(L requested, L current) noexcept {
  return requested == L::immediate || current <= requested;
}

// A level fixed at compile time. `kc k{fn, env, kcont::at<bsd_level::softnet>}`
// bakes the level into the continuation's type: at `immediate`, running it is a
// direct call with no test at all.
template <auto V>
  requires level_set<decltype(V)> && (is_valid_level(V))
struct static_level {
  using level_type = decltype(V);
  static constexpr level_type value = V;
  constexpr operator level_type() const noexcept { return V; }
};

// The compile-time level tag: `kcont::at<bsd_level::immediate>`.
template <auto V>
  requires level_set<decltype(V)> && (is_valid_level(V))
inline constexpr static_level<V> at{};

template <class T>
inline constexpr bool is_static_level_v = false;
template <auto V>
inline constexpr bool is_static_level_v<static_level<V>> = true;

// What a continuation's level argument may be: a level (chosen at run time)
// or a `static_level` (chosen at compile time).
template <class T>
concept level_spec = level_set<T> || is_static_level_v<T>;

namespace detail {
template <class T>
struct level_set_of {
  using type = T;
};
template <auto V>
struct level_set_of<static_level<V>> {
  using type = decltype(V);
};

// True for a compile-time `immediate` level: running it is a direct call.
template <class S>
[[nodiscard]] consteval bool is_static_immediate() noexcept {
  if constexpr (is_static_level_v<S>)
    return S::value == decltype(S::value)::immediate;
  else
    return false;
}
}  // namespace detail

// The level set a level spec belongs to.
template <level_spec S>
using level_set_of_t = typename detail::level_set_of<S>::type;

}  // namespace kcont
