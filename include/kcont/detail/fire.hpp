// kcont/detail/fire.hpp — the fused fire path: one knote's share of a
// single-threaded fan-out (klist<Hint, Level, no_lock>::fire), or of a
// locked one with its lock held throughout (kcont::hold_lock), in one call.
//
// Each concrete knote type stores a fused fire function in the knote
// (knote_base::fire_fn): the filter's event, the unpinned activation (the
// state table in kcont/detail/knote_state.hpp: "→ active, no pin") and, when
// the continuation may run at once, the continuation, with the filter's
// type, the threading policy and (knote_closure) the continuation's type
// known statically. The fan-out then makes one indirect call per knote, as a
// list of {next, fn, data} nodes does; only a continuation that must be
// deferred, is queued or carries a deferral goes back to the caller, which
// runs it through kcont::run with its deferral target.
//
// Only for fan-outs that no detach on another thread can race with (no pin
// is taken): a no_lock list's, or one under the list lock, which a detach's
// erase takes. Users never name anything here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "kcont/detail/knote_state.hpp"
#include "kcont/run.hpp"

namespace kcont::detail {

// What a knote's fused fire function did with one event.
enum class fire_outcome : std::uint8_t {
  skipped,    // not activated: the filter said no, or the knote is detached,
              // or it is disabled (then marked active, nothing run: rule 6)
  ran,        // activated and its continuation called: the knote may be
              // gone (detached and destroyed by its continuation, rule 8)
  needs_run,  // activated, continuation not called (it must be deferred,
              // is queued, or carries a deferral): the caller runs it
              // through kcont::run with its deferral target
};

// A fan-out's offer to a fused fire function: fire the knotes that follow
// the one it was called for too, in the same call (a batch), while they are
// its own kind (a kqueue's knotes of one kqueue: kcont/detail/kqueue_entry.hpp;
// knote_closures of one type at a compile-time immediate level) and it
// follows every unlink: a function that runs no continuation, called under
// the list lock or on a no_lock list's one thread, or one that reads `next`
// back after each continuation it runs (a knote that does not fire under a
// lock is offered a no_lock list's cursor, which an erase moves past a
// removed knote, or a hold_lock fan-out's, which no erase can touch). `next` is the knote after the one called
// for; a batch moves it past the knotes it fired and counts those it
// activated in `fired`. A fire function that does not batch ignores it; a
// caller with no list passes none. Why: one call, one lock hold and one set
// of loads per batch instead of per knote, in the fan-out of a source that
// many knotes of one kqueue (or of one kind) watch.
struct fire_batch {
  knote_core* next;
  std::size_t fired = 0;
};

// How a fire function takes the hint: by value when it is small and
// trivially copyable (a long: in a register, not stored for the callee to
// load back), else by reference.
template <class Hint>
using fire_hint_arg = std::conditional_t<std::is_trivially_copyable_v<Hint> &&
                                             sizeof(Hint) <= 2 * sizeof(void*),
                                         Hint, const Hint&>;

// A field lock another thread holds: wait for it (spin_lock's spin, then
// yields), away from the fused fire's uncontended path.
[[gnu::cold, gnu::noinline]] inline void lock_contended(spin_lock& l) noexcept { l.lock(); }

// The first two steps of the fused fire of a knote whose filter `filter` and
// threading policy (Single: knote<F, Level, no_lock>; FieldLock:
// knote<F, Level, spin_lock>) are known statically: the filter's event
// (under the field lock only for a thread-safe knote; a list_guarded one's
// klist holds its lock, every caller of a fused fire holds it or is the
// list's one thread: decided here at compile time) and the unpinned activation (a detached or
// disabled knote runs nothing; a disabled one is still marked active: rule
// 6). Returns: whether the continuation must run (then fire_run).
template <bool Single, bool FieldLock, class F, class Kn>
bool fire_event_and_activate(F& filter, Kn& kn, const typename Kn::hint_type& h) {
  bool fires;
  if constexpr (!FieldLock) {
    fires = static_cast<bool>(filter.event(kn, h));
  } else {
    // Uncontended: one load and one exchange, inline; the spin and its
    // yields out of line, so that this path saves no registers for them.
    spin_lock& l = knote_access::fields_lock(kn);
    if (!l.try_lock()) [[unlikely]]
      lock_contended(l);
    std::lock_guard<spin_lock> g(l, std::adopt_lock);
    fires = static_cast<bool>(filter.event(kn, h));
  }
  return fires && knote_access::begin_fire_activation<Single>(kn);
}

// The last step of every fused fire, after fire_event_and_activate: calls
// continuation `k` with (kn, cause) when it may run at `current` without a
// deferral target (a direct call when k's type is known: try_run_now).
// Returns: ran, or needs_run. After `ran` the knote may be gone: nothing
// here touches it.
template <class K, class Kn, class Cause>
fire_outcome fire_run(K& k, Kn& kn, const Cause& cause, typename Kn::level_type current) {
  Kn* const obj = &kn;
  return try_run_now(k, obj, cause, current) ? fire_outcome::ran : fire_outcome::needs_run;
}

// The door for an event source that fires knotes without a klist (the timer
// heap): a knote whose fused fire runs under its owner's lock (a kqueue's:
// knote_access::fires_under_lock) must be fired through it, never through
// filter_event + begin_activation (its fields have no lock of their own).
// The caller keeps a detach of the knote waiting until this returns, as a
// klist's lock does.
struct knote_fire_access {
  template <class Kn, class Hint>
  static fire_outcome fire_unpinned(Kn& kn, const Hint& hint, typename Kn::level_type current,
                                    fire_batch* batch = nullptr) {
    return kn.fire_unpinned(hint, current, batch);
  }
  // Whether kn's fused fire function is `fn` (a batch's test: kn is of the
  // batch's kind).
  template <class Kn, class Fn>
  static bool fires_with(const Kn& kn, Fn fn) noexcept {
    return kn.fire_ == fn;
  }
  // A locked klist's filter event, its lock held: a list_guarded knote's
  // fields are guarded by it (no check, no field lock).
  template <class Kn, class Hint>
  static bool event_held(Kn& kn, const Hint& hint) {
    const typename Kn::field_guard g(kn, /*held=*/true);
    return kn.ops_->event(kn, hint);
  }
  template <class Kn, class D, class Cause>
  static void run_unpinned(Kn& kn, D& d, typename Kn::level_type current, Cause cause) {
    (void)kn.run_unpinned(d, current, cause);
  }
};

}  // namespace kcont::detail
