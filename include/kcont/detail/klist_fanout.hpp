// kcont/detail/klist_fanout.hpp — a locked klist's two fan-outs: the one
// that drops the list lock around each continuation (its cursor, with the
// cursor table), and the one that holds it throughout (kcont::hold_lock).
//
// Defines `detail::klist_cursor`, `detail::fire_locked` (one knote of the
// first), `detail::fire_held` (the second; its debug record is
// kcont/detail/list_held.hpp's held_fanout), and `detail::run_later`, the
// rare end of every fan-out step. Only kcont::klist (kcont/klist.hpp) uses them; users never name them.
//
// THE CURSOR TABLE (a locked klist; docs/protocols.md indexes it):
//   step                       by            under the list lock
//   visit kn, activate it      the fan-out   yes: filter event, → active
//     (unpinned)                               (no pin), current = &kn
//   run kn's continuation      the fan-out   no (dropped)
//   move on                    the fan-out   yes (retaken): current = null
//   erase kn                   any thread    yes: unlink kn; each cursor of
//                                            another thread with current ==
//                                            &kn: +1 pin on kn, pinned = true
//   move on, pinned            the fan-out   yes (retaken): −1 pin on kn
// Why it is safe: a fan-out visits kn only while it is linked, and sets
// current in the same hold, so an erase either comes first (kn is never
// visited) or finds current == &kn and pins kn for that run, so detach's
// wait for pins (after the filter's detach, outside any lock of its
// source) waits for it: the state table in kcont/detail/knote_state.hpp.
// A fan-out returns such a pin only after the run, with kn still alive
// (its detach is waiting); unpinned it never touches kn after the run
// (its continuation may have freed it). The calling thread's own cursors
// are not pinned: a continuation detaching its own knote waits for no
// run of its own. The last knote of a fan-out is pinned as it is
// activated (it runs after the cursor left the list).
//
// The held fan-out (hold_lock) keeps no cursor and pins nothing, as a
// kqueue's knotes under either fan-out: every erase of a knote it visits
// takes the list lock, so it waits for the fan-out's end, and the lock's
// release orders every run before the erase, hence before detach returns
// (the state table's "→ active, no pin"). A continuation of it that would
// insert, erase or fire on its list would take the held lock again; with
// contract checks the klist sees its own held_fanout and aborts instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/detail/fire.hpp"
#include "kcont/detail/knote_state.hpp"
#include "kcont/detail/list_held.hpp"
#include "kcont/knote.hpp"

namespace kcont::detail {

// A fan-out's position: the next knote to visit (erase moves it on, and so
// does a fused fire that fires a batch: it is the fan-out's fire_batch), and
// with a real lock the knote whose continuation it runs with the lock
// dropped, and its thread (the cursor table above).
struct klist_cursor : fire_batch {
  klist_cursor(knote_core* n, klist_cursor* o) noexcept : fire_batch{n}, outer(o) {}
  klist_cursor* outer;
  knote_core* current = nullptr;
  const void* owner = nullptr;
  bool pinned = false;
};
// This thread's mark for its cursors (an address: no call to get it).
inline thread_local const char klist_thread_mark = 0;

// The rare end of a fan-out's step: a continuation the fused fire function
// could not run (to defer, queued, or carrying a deferral), run through
// kcont::run with `d`. Out of line, so that the common step has no taken
// branch around it.
template <class D, class Kn>
[[gnu::cold, gnu::noinline]] void run_later(D& d, typename Kn::level_type current, Kn& kn) {
  knote_fire_access::run_unpinned(kn, d, current, knote_cause::event);
}

// With contract checks, a record of a cursor's run (no pin) for the
// mutual-detach check (kcont/detail/knote_state.hpp).
inline auto make_frame(knote_core& kn) noexcept {
  if constexpr (contract_checks)
    return activation_frame(&kn, /*pin=*/false);
  else
    return 0;
}

// One knote of a fan-out under a real lock (held on entry, and on return
// but for `last`: c.next is null, no knote follows it).
enum class locked_step : std::uint8_t {
  skipped,  // not activated
  fired,    // activated, its continuation run
  last,     // activated and pinned, the last knote: the caller runs its
            // continuation once the cursor left the list
};
template <class D, class Kn, class Guard>
locked_step fire_locked(D& d, const typename Kn::hint_type& hint,
                        typename Kn::level_type current, Guard& g, klist_cursor& c,
                        Kn& kn) {
  if (knote_access::fires_under_lock(kn)) {
    // A knote whose fused fire may run under this lock (a kqueue's): as
    // with no_lock, unpinned: a detach erases it from this list under
    // the lock, so after this step (the state table's "→ active, no
    // pin"). It may fire a batch of the knotes after it (c.next moves on).
    const fire_outcome r = knote_fire_access::fire_unpinned(kn, hint, current, &c);
    if (r == fire_outcome::needs_run) [[unlikely]]
      run_later(d, current, kn);
    return r != fire_outcome::skipped ? locked_step::fired : locked_step::skipped;
  }
  if (!knote_fire_access::event_held(kn, hint)) return locked_step::skipped;
  if (c.next == nullptr) {
    // The last knote: pinned under the list lock (a detach on another
    // thread erases it and then waits for the pin), run by the caller
    // once the cursor left the list, with no lock retaken after it.
    return knote_access::begin_activation<true>(kn) ? locked_step::last : locked_step::skipped;
  }
  // Unpinned: published as the cursor's current knote, in this hold of
  // the list lock (the cursor table above).
  if (!knote_access::begin_activation<false>(kn)) return locked_step::skipped;
  c.current = &kn;
  c.pinned = false;
  {
    // With contract checks, a record of the run for the mutual-detach
    // check (no pin); after the run it is not read (kn may be gone).
    [[maybe_unused]] std::conditional_t<contract_checks, activation_frame, int> frame =
        make_frame(kn);
    g.unlock();
    knote_fire_access::run_unpinned(kn, d, current, knote_cause::event);
  }
  g.lock();
  c.current = nullptr;
  if (c.pinned) [[unlikely]] {
    knote_access::pin(kn, false);  // an erase pinned it: its detach waits for this
    c.pinned = false;
  }
  return locked_step::fired;
}

// The held fan-out over the knotes from `front` on, the list lock held by
// the caller: each knote's fused fire (the filter's event under its field
// lock, the unpinned activation, the continuation when it may run at once),
// `later(current, kn)` for one it could not run. Returns: how many fired.
template <class Kn, class RunLater>
std::size_t fire_held(const void* list, held_fanout::contains_fn contains,
                      knote_core* front, const typename Kn::hint_type& hint,
                      typename Kn::level_type current, RunLater later) {
  const held_fanout held(list, contains);
  if (front != nullptr && knote_access::next(*front) == nullptr) {
    // One knote: no batch to offer, none kept in memory.
    auto& kn = static_cast<Kn&>(*front);
    const fire_outcome r = knote_fire_access::fire_unpinned(kn, hint, current);
    if (r == fire_outcome::needs_run) [[unlikely]]
      later(current, kn);
    return r != fire_outcome::skipped ? 1 : 0;
  }
  // No erase can come (the lock is held), so a batch offered to each fused
  // fire (kcont/detail/fire.hpp) moves only by the knotes it fires.
  fire_batch batch{front};
  std::size_t n = 0;
  while (knote_core* core = batch.next) {
    auto& kn = static_cast<Kn&>(*core);
    batch.next = knote_access::next(*core);
    const fire_outcome r = knote_fire_access::fire_unpinned(kn, hint, current, &batch);
    if (r == fire_outcome::needs_run) [[unlikely]]
      later(current, kn);
    n += r != fire_outcome::skipped ? 1 : 0;
  }
  return n + batch.fired;
}

}  // namespace kcont::detail
