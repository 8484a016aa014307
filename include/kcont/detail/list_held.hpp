// kcont/detail/list_held.hpp — which klists' locks this thread holds, for
// debug builds' checks only.
//
// Defines `detail::held_fanout`: a record, on the stack of a klist member
// that holds the list lock across calls into user code (a hold_lock
// fan-out, klist::guard()), linked on this thread's list only with
// contract checks (it costs nothing otherwise) and a real lock (a
// klist<..., no_lock>'s guard() holds nothing: its list is null). Two checks
// read it: a klist member that would take a lock this thread already holds
// (a deadlock: `expect_none`), and a list_guarded knote whose fields are
// touched without its locked list's lock (`holds_knote`:
// kcont/detail/knote_state.hpp's field_guard; a knote on a no_lock list is
// its one thread's, not checked). And `detail::pin_wait`, the mutual-detach
// check's record.
// Only kcont's own headers use them; users never name them.
//
// Mutual detach (contract checks only): a thread that waits for a knote's
// pins while inside another knote's activation links a pin_wait {this
// knote, the knote it is inside} on a global list under a spin lock, after
// looking there for a record of a thread that waits for a knote this
// thread is inside and is inside this knote: two continuations detaching
// each other's knote would wait forever, and of two threads that begin at
// once the second to take the lock sees the first, so debug builds abort
// instead (knote_core::wait_unpinned, kcont/detail/knote_state.hpp).
#pragma once

#include "kcont/contract.hpp"
#include "kcont/kcqueue.hpp"

namespace kcont::detail {

class knote_core;

// A thread waiting for a knote's pins from inside another knote's
// activation, on its stack, linked on pin_waits while it waits: no knote
// pays for a debug check, nor depends on NDEBUG.
struct pin_wait {
  const knote_core* waits_for;
  const knote_core* inside;
  pin_wait* next;
};
inline spin_lock pin_waits_lock;
inline pin_wait* pin_waits = nullptr;

struct held_fanout {
  // Whether the list `list` links the knote `kn` (called with its lock held).
  using contains_fn = bool (*)(const void* list, const void* kn) noexcept;
  const void* list;  // null: nothing held (not linked)
  contains_fn contains;
  held_fanout* prev = nullptr;
  held_fanout(const void* l, contains_fn c) noexcept;
  ~held_fanout();
  held_fanout(const held_fanout&) = delete;
  held_fanout& operator=(const held_fanout&) = delete;
  // With contract checks: aborts when this thread holds the lock of
  // `list` through a record (taking it again would deadlock).
  static void expect_none(const void* list) noexcept;
  // With contract checks: whether this thread holds, through a record, the
  // lock of a list that links `kn` (without them: true).
  static bool holds_knote(const void* kn) noexcept;
};
inline thread_local held_fanout* held_fanouts = nullptr;
inline held_fanout::held_fanout(const void* l, contains_fn c) noexcept : list(l), contains(c) {
  if constexpr (contract_checks) {
    if (list == nullptr) return;
    prev = held_fanouts;
    held_fanouts = this;
  }
}
inline held_fanout::~held_fanout() {
  if constexpr (contract_checks)
    if (list != nullptr) held_fanouts = prev;
}
inline void held_fanout::expect_none([[maybe_unused]] const void* list) noexcept {
  if constexpr (contract_checks) {
    bool held = false;
    for (const held_fanout* f = held_fanouts; f != nullptr; f = f->prev)
      held = held || f->list == list;
    KCONT_EXPECTS(!held,
                  "klist: insert, erase, fire, guard or detach on a klist from "
                  "inside its own hold_lock fan-out or guard() (its lock is held: "
                  "a deadlock)");
  }
}
inline bool held_fanout::holds_knote([[maybe_unused]] const void* kn) noexcept {
  if constexpr (contract_checks) {
    for (const held_fanout* f = held_fanouts; f != nullptr; f = f->prev)
      if (f->contains(f->list, kn)) return true;
    return false;
  }
  return true;
}

}  // namespace kcont::detail
