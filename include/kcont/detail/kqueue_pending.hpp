// kcont/detail/kqueue_pending.hpp — the kqueue's pending list, its state
// table, and the knotes a closed source left behind.
//
// Defines `detail::kqueue_pending<Udata>`, the base of kqueue_core
// (kcont/detail/kqueue_core.hpp) that keeps the pending list (the knotes
// waiting for a scan), each knote's queued bit, the protocol of both (the
// state table below) and, at the list's front, the defunct knotes: those
// whose filter said their source is gone for good (a descriptor closed:
// FreeBSD's knote_fdclose), out of the table, waiting to be freed. Every
// member is used under the kqueue's lock (kqueue_core::lock_). Users never
// name this class; its contracts are kcont::kqueue's.
#pragma once

#include <atomic>
#include <cstddef>

#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/detail/kqueue_entry.hpp"

namespace kcont::detail {

template <class Udata>
class kqueue_pending {
 protected:
  using entry = kqueue_entry<Udata>;
  // The pending list (see the state table below) and the list of knotes to
  // free once the kqueue's lock is released, through the same link.
  using pending_list = intrusive_queue<&entry::pnext, &entry::pprev>;
  using drop_list = intrusive_queue<&entry::pnext>;

  // The pending list and the knote's queued bit: the state table.
  //
  // A knote is "pending" exactly when it is on pending_ and its knote's
  // queued bit (try_queue / unqueue below) is set: both change together,
  // under the kqueue's lock, only in push_pending, remove_pending, bury,
  // reap and collect (take, re-queue). pending_count_ counts the list; the
  // first defunct_ entries are defunct (FreeBSD's kq_count is the rest:
  // kqueue::pending). The one exception, "queued, in a batch": a fan-out's
  // batch (kqueue_node::fire_batched) sets the bit and links the knote on
  // its own pending_batch, moved onto pending_ before it releases the lock
  // (also when a filter throws): no other code sees the gap, as nothing
  // that reads pending_ runs meanwhile but bury, for the knote being fired,
  // which no batch has queued. An activation comes from any thread (a klist's
  // fan-out, a filter's event) through the kqueue's continuation,
  // on_activation or fire_kq; the others are kevent calls.
  //
  //   state    | event                                | action -> next state
  //   ---------+--------------------------------------+-------------------------------
  //   idle     | activation; not disabled, not        | try_queue, push_back, wake
  //            |   dropping                           |   scanners -> pending
  //   idle     | activation; disabled or dropping     | none -> idle (still active:
  //            |   or attaching                       |   enable's or the attach's
  //            |                                      |   post_change queues it)
  //   idle     | change (post_change): active and     | try_queue, push_back, wake
  //            |   enabled after the re-check, or     |   scanners -> pending
  //            |   ev::forceoneshot                   |
  //   pending  | activation, change                   | none: try_queue fails (rule 7)
  //   pending  | ev::disable                          | none -> pending, in place
  //   pending  | scan: disabled                       | pop, unqueue -> idle (active)
  //   pending  | scan: re-check fails                 | pop; unqueue and clear_active,
  //            |                                      |   one store -> idle
  //   pending  | scan: reported, clear or dispatch    | pop, unqueue, clear_active (the
  //            |                                      |   commonest, ev::clear alone: one
  //            |                                      |   store; dispatch: disable) -> idle
  //   pending  | scan: reported, level-triggered      | pop, unqueue, try_queue,
  //            |                                      |   push_back, no wake -> pending
  //   pending  | scan: ev::oneshot                    | pop, unqueue, report without
  //            |                                      |   re-check, drop
  //   any      | ev::delete_, destructor              | dropping = true; pop if pending;
  //            |                                      |   table erase; freed unlocked
  //   idle,    | a fan-out's event the filter refuses | bury: dropping = true, pop if
  //   pending  |   and then says defunct() (its       |   pending, table erase, disable,
  //            |   source is gone: fd_source::forget) |   try_queue, push_front, ++defunct_,
  //            |                                      |   wake scanners -> defunct
  //   attaching| the same                             | dropping = true; the attach's
  //            |                                      |   end buries it -> defunct
  //   defunct  | activation                           | none (dropping)
  //   defunct  | change                               | not in the table: ENOENT, or
  //            |                                      |   ev::add makes a new knote
  //   defunct  | change (reap, first), scan (pop: it  | pop, unqueue, --defunct_; freed
  //            |   is disabled), destructor           |   unlocked -> gone
  //
  // A pending knote is active (every row that queues one marks it active
  // first; the scan clears active only after it popped it, and a change
  // whose touch deactivates it takes it off the list), unless it is
  // defunct (then dropping: no activation looks at it); so an activation of
  // a pending knote changes no state (kqueue_node::fire_kq returns early).
  // A defunct knote is FreeBSD's knote_drop of knote_fdclose: never
  // reported, gone from the kqueue at once (the table, kqueue::size and
  // kqueue::pending), freed by the next change or scan. It waits at the
  // list's front, disabled, so that a scan frees it in the branch it takes
  // for a disabled knote (no test on the scan's path) and a change takes
  // the defunct_ first entries; its wake keeps "a scanner waits only on an
  // empty list" true (push_pending).
  // A scan takes at most the entries pending at its start (FreeBSD's
  // marker), so a level-triggered re-queue is not seen twice by one scan.
  // Blocked scanners are woken (cv_) by a push onto an empty list while any
  // waits (push_pending says why that is enough).

  // The entry's queued flag, the NetBSD patch's KN_QUEUED: the queued bit of
  // its knote's state word (kcont/detail/knote_state.hpp), which the kqueue's
  // knotes leave to it. Their word is written only under the kqueue's lock
  // (plain stores: the knotes are single-threaded, kqueue_entry.hpp), so the
  // bit costs no read-modify-write, and the hot paths (the fan-out's fire,
  // the scan's step) test it in the load of the word they make anyway; read
  // without the lock by on_activation's early return.
  static bool try_queue(entry& e) noexcept { return e.core->try_queue(); }
  static void unqueue(entry& e) noexcept { e.core->unqueue(); }
  static bool is_queued(const entry& e) noexcept { return e.core->is_queued(); }

  // pending -> idle.
  void remove_pending(entry& e) noexcept {
    pending_.erase(e);
    --pending_count_;
    unqueue(e);
  }

  // The knotes one batch of a fan-out queues (kqueue_node::fire_batched),
  // chained here and moved onto pending_ at its end, within the one hold of
  // the kqueue's lock (the table's "queued, in a batch" note). The chain's
  // last link is stored once, at the end: each push stores only the links
  // the next one does not overwrite (a store per knote less), and it starts
  // at the link of `head`, the caller's local entry (never queued, apart
  // from the batch so that its tail and count stay in registers): no push
  // tests for a first knote.
  struct pending_batch {
    entry& head;
    entry* tail = &head;
    std::size_t n = 0;
    void push(entry& e) noexcept {
      pending_list::prev(e) = tail;
      pending_list::next(*tail) = &e;
      tail = &e;
      ++n;
    }
  };
  // Moves b's knotes to the back of pending_ (b must not be empty).
  // Returns: whether the list was empty (the caller wakes scanners then).
  bool append_pending(pending_batch& b) noexcept {
    pending_list::next(*b.tail) = nullptr;
    const bool was_empty = pending_.append_chain(*pending_list::next(b.head), *b.tail);
    pending_count_ += b.n;
    return was_empty;
  }

  // -> defunct, for bury (kqueue_core), once e left the table and the list.
  // Returns: whether the list was empty (the caller wakes scanners then).
  bool push_defunct(entry& e) noexcept {
    const bool was_empty = pending_count_ == 0;
    e.core->disable();
    (void)try_queue(e);
    pending_.push_front(e);
    ++pending_count_;
    ++defunct_;
    return was_empty;
  }

  // defunct -> gone: every defunct knote onto `drops`, to free unlocked.
  void reap(drop_list& drops) noexcept {
    for (; defunct_ != 0; --defunct_) {
      entry* e = pending_.pop_front();
      if (e == nullptr) [[unlikely]] break;  // never; for g++ -O3 (see collect)
      --pending_count_;
      unqueue(*e);
      drops.push_front(*e);
    }
  }

  static void destroy_all(drop_list& drops) {
    while (entry* e = drops.pop_front()) e->ops->destroy(*e);
  }

  pending_list pending_;
  std::size_t pending_count_ = 0;
  std::size_t defunct_ = 0;  // the first entries of pending_ that are defunct
};

}  // namespace kcont::detail
