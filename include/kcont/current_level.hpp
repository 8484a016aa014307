// kcont/current_level.hpp — the calling thread's current level (BSD curipl).
//
// Defines `current_level<L>()`, the level the calling thread runs at, one
// thread-local value per level set, and `level_guard<L>`, the RAII pair of
// the BSD splraise()/splx(): raise (or set) the level for a scope and restore
// the previous one when the scope ends. Runners (kcont/thread_dispatcher.hpp,
// manual_dispatcher::drain) set it while they run a level's continuations, so
// a continuation that asks for a lower level from inside a higher one is
// deferred, not nested.
//
// It also adds `run(d, k, obj, status)` and `run_all(d, q, obj, status)`
// without a level argument: they use current_level<level_type>(). `defer`
// never needed a level (it always queues).
//
// Compared with passing the level by hand (run.hpp's five-argument run): the
// level follows the thread, so code several calls below a runner does not
// need to thread it through; it costs one thread-local load. A thread starts
// at the lowest level (index 0, the "process" level).
//
// Usage:
//   {
//     auto g = kcont::raise_level(bsd_level::softnet);     // splraise(softnet)
//     kcont::run(d, k, &req, 0);   // softnet or above runs now, below defers
//   }                                                      // splx: restored
#pragma once

#include <concepts>
#include <cstddef>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

namespace detail {
// One slot per level set and thread. Constant-initialised, so reading it
// needs no guard (and is fine in a signal handler).
template <level_set L>
inline thread_local L current_level_slot = level_at<L>(0);
}  // namespace detail

// Returns: the calling thread's current level in set L (level 0 until a
//   guard or a runner changes it).
// Complexity: one thread-local load. Thread-safety: per thread by definition.
template <level_set L>
[[nodiscard]] inline L current_level() noexcept {
  return detail::current_level_slot<L>;
}

// Sets the calling thread's level for a scope and restores the previous one
// when destroyed (splx). Guards nest: each restores what it found.
//
// Lifetime contract: a guard belongs to the thread that made it and must be
// destroyed on that thread, in reverse order of creation (a scope object).
// Not copyable, not movable. Thread-safety: touches only the calling thread's
// slot.
template <level_set L>
class [[nodiscard]] level_guard {
 public:
  // Effects: sets the current level to exactly `l` (which may be lower than
  //   the current one: a runner draining `l` runs at `l`).
  // Precondition: l is a deferrable level or `immediate`.
  explicit level_guard(L l) noexcept : saved_(detail::current_level_slot<L>) {
    KCONT_EXPECTS(is_valid_level(l), "level_guard: not a level of its set");
    detail::current_level_slot<L> = l;
  }
  level_guard(const level_guard&) = delete;
  level_guard& operator=(const level_guard&) = delete;
  // Effects: restores the level found at construction.
  ~level_guard() { detail::current_level_slot<L> = saved_; }

  // The level in force before this guard.
  [[nodiscard]] L saved() const noexcept { return saved_; }

 private:
  L saved_;
};

// Effects: splraise: raises the calling thread's level to `l` unless it is
//   already higher, for the lifetime of the returned guard.
// Returns: the guard (guaranteed copy elision: bind it to a local).
template <level_set L>
[[nodiscard]] inline level_guard<L> raise_level(L l) noexcept {
  const L cur = current_level<L>();
  return level_guard<L>(cur < l ? l : cur);
}

// Effects: run (see run.hpp) at the calling thread's current level.
// Returns: ran, deferred or refused, as the five-argument run.
template <deferral_target D, class K>
  requires std::derived_from<K, kc_base<typename K::obj_type,
                                        typename K::status_type,
                                        typename D::level_type>>
run_result run(D& d, K& k, std::type_identity_t<typename K::obj_type> obj,
               std::type_identity_t<typename K::status_type> status) {
  return run(d, k, obj, status, current_level<typename D::level_type>());
}

// A continuation of another level set than the dispatcher's: named as such
// (run.hpp has the five-argument forms, and says why an undeduced kc is
// taken too).
template <deferral_target D, class K, class Obj, class Status>
  requires(detail::other_level_set<D, K> || detail::undeduced_kc<K>)
run_result run(D&, K&, Obj&&, Status&&) {
  static_assert(!detail::other_level_set<D, K>,
                "kcont::run: the continuation's level set is not the "
                "dispatcher's: a continuation of level set L runs through a "
                "dispatcher of L (manual_dispatcher<L>, thread_dispatcher<L>)");
  return run_result::refused;
}

// Effects: run_all (see run.hpp) at the calling thread's current level.
// Returns: how many continuations were popped.
template <deferral_target D, class Obj, class Status, lock_policy Lock>
std::size_t run_all(
    D& d, kcqueue<kc_base<Obj, Status, typename D::level_type>, Lock>& q,
    std::type_identity_t<Obj> obj, std::type_identity_t<Status> status) {
  return run_all(d, q, obj, status, current_level<typename D::level_type>());
}

}  // namespace kcont
