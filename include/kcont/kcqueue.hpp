// kcont/kcqueue.hpp — intrusive FIFO of continuations, with a lock policy.
//
// Defines `kcqueue<T, Lock>`: the NetBSD patch's kcq_t (a SIMPLEQ of struct kc), an
// intrusive singly linked FIFO through kc_hook's own link, so pushing and
// popping never allocate. T is kc_hook (any continuation) or a kc_base<...>
// (continuations of one signature: an object's callback list). Lock is any
// BasicLockable; kcont ships `no_lock` (the default: one thread), `spin_lock`,
// and std::mutex works as is.
//
// Unlike std::deque<std::function<void()>>, a node is the continuation: on
// one queue at a time; pushing a queued one is refused and reported. With a
// real lock, poppers take the whole pending list at once (the batch table).
//
// Usage:
//   kcont::kcqueue<kcont::kc_base<request*, int>> waiters;   // an object's callbacks
//   if (waiters.push(done) == kcont::push_result::already_queued) { ... }
//   kcont::run_all(dispatcher, waiters, &req, 0, bsd_level::softserial);
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/detail/kcqueue_shared.hpp"

namespace kcont {

// The lock policy concept: a BasicLockable (std::mutex, spin_lock, no_lock).
template <class L>
concept lock_policy = std::default_initializable<L> && requires(L& l) {
  l.lock();
  l.unlock();
};

// No locking: the queue is used by one thread at a time (the default).
struct no_lock {
  constexpr void lock() noexcept {}
  constexpr void unlock() noexcept {}
};

// A test-and-test-and-set spin lock, for short critical sections where a
// mutex's sleep is too dear. Fair it is not; hold it for a few instructions.
// A waiter that has spun for about a hundred pauses yields its CPU between
// tries: the holder may have been preempted, and on a machine with fewer
// CPUs than runnable threads it needs that CPU to finish.
class spin_lock {
 public:
  void lock() noexcept {
    if (locked_.exchange(true, std::memory_order_acquire)) [[unlikely]]
      lock_contended();
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  // Out of line: the wait (a yield is a call) holds no register of the caller.
  [[gnu::cold, gnu::noinline]] void lock_contended() noexcept {
    do {
      for (unsigned spins = 0; locked_.load(std::memory_order_relaxed); ++spins)
        detail::kcqueue_back_off(spins);
    } while (locked_.exchange(true, std::memory_order_acquire));
  }

  std::atomic<bool> locked_{false};
};

// What push reports.
enum class push_result : std::uint8_t {
  already_queued,  // refused: the continuation is on a queue already
  first,           // queued, and the queue was empty before
  queued,          // queued behind others
};

namespace detail {
template <class T, lock_policy Lock>
struct kcqueue_checker;
struct kcqueue_drain;  // a no_lock drain's pop (kcont/dispatcher.hpp)
// True when the push succeeded.
[[nodiscard]] constexpr bool pushed(push_result r) noexcept {
  return r != push_result::already_queued;
}

struct nothing {
  constexpr void operator()() const noexcept {}
};
}  // namespace detail

// An intrusive FIFO of continuations.
//
// Lifetime contract: the queue never owns its nodes; each node's owner keeps
// it alive while it is queued. The queue must be empty when destroyed (rule 9,
// nothing is lost); a debug build aborts naming that rule, and a release
// build hands each node still queued back to its owner, unrun, as erase_slow
// would: unlinked and no longer marked queued (a deferral's saved obj/status
// stay with it), so a later push or defer of it is not refused forever.
// Thread-safety: every member may be called from any thread when Lock is a
// real lock; with no_lock, from one thread at a time.
//
// The staged stack and the batch (real lock only). Producers never take the
// lock (but a spin_lock's: below): a push claims the node, runs before_link
// and links it onto the staged stack with one CAS, as mpsc_queue's push
// does. A holder of the lock
// about to look at the nodes first moves that stack, reversed, to the back of
// the pending list (list_): each producer's pushes keep their order. A pop
// takes the whole pending list with one lock acquisition, as a chain whose
// head is the batch head, older than the pending list; later pops take from
// that chain without the lock. A node on the stack, the list or the chain is
// still queued (the claim table in kcont/kc_hook.hpp: listed or waiting) and
// a cancel can still win it. The words (kcont/detail/kcqueue_shared.hpp):
//
//   word      value  meaning
//   staged    null   nothing staged (always, with spin_lock)
//             n      the stack n -> next ... -> null, newest first
//   head      null   no batch: pops take the pending list (list_, the lock)
//             n      the chain n -> next ... -> null, nobody inside it
//             held   one thread is inside the chain: a pop at its head, or
//                    an erase_slow walking it; the links are that thread's
//
//   step (who)              word: change       how
//   push (any producer,     staged: s -> n     claim (the claim table), then
//     no lock; spin_lock:                      before_link; next(n) = s, CAS
//     under it, onto list_)                    (seq_cst), retried. `first`
//                                              when s was null: said of every
//                                              push onto an empty queue, and
//                                              of some others (a spare wake-up,
//                                              never a missed one)
//   flush (a lock holder:   staged: s -> null  exchange (acquire), reversed,
//     take, cancel, splice,                    appended to list_. Only lock
//     the destructor)                          holders empty the stack: no
//                                              node is in transit outside it
//   take (a pop finding     head: null ->      under the lock: flush; CAS
//     null)                 front of list_     (release) from null; list_
//                                              emptied
//   pop (any popper)        head: n -> held    CAS n -> held (acquire);
//                           -> next(n)         under_lock(n); store next(n)
//                                              (release). n is popped
//                                              claimed: no cancel finds it
//   cancel (erase_slow,     head: n -> held    under the lock: flush; unlink
//     any thread)           -> n'              from list_, or CAS n -> held,
//                                              unlink from the chain, store the
//                                              head back; then fetch_and(
//                                              ~queued): the cancel won, the
//                                              owner may free the node: no
//                                              popper will read it again
//   empty (any thread)      none               staged or head not null: not
//                                              empty, without the lock. Else
//                                              under it (no transit then):
//                                              staged (seq_cst), list_, head
//
// A push between its claim and its link is on no list yet: a cancel then
// does not find it and comes first (false; the node is linked after), as
// with mpsc_queue. `first` is never missed: a push finding the stack
// non-empty shares it with the one that found it empty, and a take takes
// both; a runner's empty() (the sleep/wake protocol, kcont/wakeup.hpp)
// reads the stack seq_cst and never meets a node in transit.
//
// Nobody waits for a continuation to run: `held` lasts a pop's few
// instructions or a cancel's walk, never a call of user code, so a cancel
// from inside a continuation, or from a thread holding a lock that a running
// continuation needs, returns at once. Why a CAS per pop: a pop and a
// cancel racing for one node must agree on one winner, and a cancel that
// wins hands the node to an owner who may free it at once, so the popper
// must learn of its loss without touching the node: a read-modify-write of
// a word both read (the head), or Dekker's plain stores with a store-load
// fence on both sides, which costs the popper as much. A pop with the head
// held waits for that holder's few instructions (a spin, then yields).
// Why producers skip the lock: a push costs its claim and one CAS, where a
// mutex adds two read-modify-writes (lock, unlock). A spin_lock queue's
// pushes link under the lock (its stack stays empty): a spin_lock costs one
// read-modify-write and a plain store, what the CAS costs, and staging
// would add the take's reversal pass over the nodes.
template <class T = kc_hook, lock_policy Lock = no_lock>
class kcqueue {
  static_assert(std::derived_from<T, kc_hook>,
                "kcont::kcqueue<T>: T must be a continuation type (kc_hook, "
                "kc_base<...> or a type derived from them)");

  using access = detail::hook_access;
  static constexpr bool concurrent = !std::is_same_v<Lock, no_lock>;
  // Pushes go to the staged stack (the batch table says why spin_lock's don't).
  static constexpr bool stages = concurrent && !std::is_same_v<Lock, spin_lock>;

 public:
  using value_type = T;
  using lock_type = Lock;
  // Capabilities: size is not kept (no counter on the hot path) and erase is
  // a walk of a singly linked list.
  static constexpr bool constant_time_size = false;
  static constexpr bool constant_time_erase = false;

  kcqueue() = default;
  kcqueue(const kcqueue&) = delete;
  kcqueue& operator=(const kcqueue&) = delete;
  ~kcqueue() {
    KCONT_EXPECTS(list_.empty() && shared_empty(),
                  "kcqueue: destroyed while it still holds continuations "
                  "(rule 9: every continuation runs or is handed back)");
    // Release build: hand them back (see the lifetime contract). No other
    // thread may use a queue being destroyed: the list is read unlocked.
    if (!list_.empty() || !shared_empty())
      while (pop() != nullptr) {
      }
  }

  // Effects: appends n, unless n is already on a queue. `before_link` runs
  //   after n is claimed and before it becomes visible to poppers (defer uses
  //   it to save obj/status exactly once). A before_link invocable with
  //   `std::uint8_t` is a deferral's save: the claim sets the queued and
  //   deferred bits in one step, and before_link gets the state it replaced
  //   (the save row of the state table in kcont/kc_hook.hpp).
  // Returns: already_queued (and n untouched), first or queued. With a
  //   real lock, first may also be said of a push onto a queue that was not
  //   empty (its staged stack was: the batch table), and is never missed.
  // Complexity: O(1). Never allocates. With a real lock other than
  //   spin_lock, takes no lock: a claim and one CAS (the push row).
  template <std::invocable<> BeforeLink = detail::nothing>
  [[nodiscard]] push_result push(T& n, BeforeLink&& before_link = {}) {
    if constexpr (stages) {
      if (!detail::claim_for_push<true>(n, before_link)) return push_result::already_queued;
      return shared_.stage(n) ? push_result::first : push_result::queued;
    } else {
      std::lock_guard<Lock> g(lock_);
      if (!detail::claim_for_push<concurrent>(n, before_link)) return push_result::already_queued;
      return list_.push_back(n) ? push_result::first : push_result::queued;
    }
  }

  // Effects: removes and returns the oldest continuation, or nullptr.
  // Complexity: O(1).
  T* pop() noexcept {
    // The claim ends under the lock, as the node leaves the queue.
    return pop_claimed(
        [](T& n) noexcept { access::clear<concurrent>(n, access::queued_bit); });
  }

  // Effects: removes the oldest continuation like pop, but leaves its queued
  //   bit set: the caller holds the claim until it resumes the continuation
  //   (kc_base::take_saved ends it) or clears the bit. `under_lock(node)` is
  //   called while cancels are shut out (the lock; with a real lock, the
  //   batch head held: the batch table), before the node becomes
  //   unreachable to erase_slow, so a dispatcher can publish "now running
  //   this" atomically with respect to cancel. With a real lock it must not
  //   throw, and it must not touch this queue.
  // Returns: the node, or nullptr when empty. Complexity: O(1); with a real
  //   lock, one lock acquisition per batch (all that was pending) and one
  //   CAS per node.
  template <class UnderLock>
    requires std::invocable<UnderLock&, T&>
  T* pop_claimed(UnderLock&& under_lock) noexcept(
      std::is_nothrow_invocable_v<UnderLock&, T&>) {
    if constexpr (concurrent) {
      static_assert(std::is_nothrow_invocable_v<UnderLock&, T&>,
                    "kcqueue::pop_claimed: under_lock runs with the batch "
                    "head held, so it must not throw");
      kc_hook* const held = detail::kcqueue_batch::held();
      for (unsigned spins = 0;; ++spins) {
        kc_hook* n = shared_.head.load(std::memory_order_relaxed);
        if (n == nullptr) {
          if (!take_pending()) return nullptr;
        } else if (n != held && shared_.head.compare_exchange_weak(
                                    n, held, std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
          // Its link is reset, as a node leaving any queue (resume checks it).
          kc_hook* const after = std::exchange(access::next(*n), nullptr);
          // The next pop's CAS is a full barrier: have that node's line
          // (its link, and its state for take_saved) here before then.
          if (after != nullptr) __builtin_prefetch(after, 1);
          under_lock(*static_cast<T*>(n));
          shared_.head.store(after, std::memory_order_release);
          return static_cast<T*>(n);
        } else {
          detail::kcqueue_back_off(spins);
        }
      }
    } else {
      T* n = static_cast<T*>(list_.pop_front());
      if (n != nullptr) under_lock(*n);
      return n;
    }
  }

  // Effects: moves every continuation of `other` to the back of this queue,
  //   keeping their order; `other` is left empty.
  // Complexity: O(1), plus the length of other's batch when a pop has taken
  //   one (the batch table). Locks both queues (in address order, so two
  //   splices in opposite directions cannot deadlock).
  void splice(kcqueue& other) {
    if (&other == this) return;
    kcqueue* first = this < &other ? this : &other;
    kcqueue* second = this < &other ? &other : this;
    std::lock_guard<Lock> g1(first->lock_);
    std::lock_guard<Lock> g2(second->lock_);
    if constexpr (concurrent) {
      // Pushed before the splice: each queue's staged nodes join its list.
      if constexpr (stages) {
        shared_.flush(list_);
        other.shared_.flush(other.list_);
      }
      // other's batch is older than its pending list: it goes first.
      kc_hook* chain = other.shared_.hold();
      list_.append(detail::hook_queue::from_chain(chain));
      other.shared_.head.store(nullptr, std::memory_order_release);
    }
    list_.append(other.list_);
  }

  // Effects: unlinks n if it is on this queue (its pending list or its
  //   batch: the batch table's cancel row). Never waits for a continuation
  //   to run.
  // Returns: true when n was removed (it is then no longer queued, and no
  //   popper will touch it again: its owner may free it).
  // Complexity: O(position of n).
  bool erase_slow(T& n) noexcept {
    std::lock_guard<Lock> g(lock_);
    if constexpr (stages) shared_.flush(list_);
    bool found = list_.erase_slow(n);
    if constexpr (concurrent) {
      if (!found && shared_.head.load(std::memory_order_relaxed) != nullptr) {
        kc_hook* head = shared_.hold();
        if (head == &n) {
          head = std::exchange(access::next(n), nullptr);
          found = true;
        } else {
          for (kc_hook* p = head; p != nullptr; p = access::next(*p)) {
            if (access::next(*p) != &n) continue;
            access::next(*p) = std::exchange(access::next(n), nullptr);
            found = true;
            break;
          }
        }
        shared_.head.store(head, std::memory_order_release);
      }
    }
    if (found) access::clear<concurrent>(n, access::queued_bit);
    return found;
  }

  // True when the queue holds nothing (a batch counts). With a real lock, a
  // snapshot, sequentially consistent as the sleep/wake protocol of
  // kcont/wakeup.hpp needs (the empty row).
  [[nodiscard]] bool empty() const noexcept {
    if (!shared_empty()) return false;
    std::lock_guard<Lock> g(lock_);
    return list_.empty() && shared_empty();
  }

  // Effects: counts the queued continuations. Complexity: O(n).
  [[nodiscard]] std::size_t size_slow() const noexcept {
    std::lock_guard<Lock> g(lock_);
    std::size_t n = list_.size_slow();
    if constexpr (concurrent) {
      if constexpr (stages) n += shared_.staged_size();
      kc_hook* head = shared_.hold();
      for (kc_hook* p = head; p != nullptr; p = access::next(*p)) ++n;
      shared_.head.store(head, std::memory_order_release);
    }
    return n;
  }

 private:
  template <class, lock_policy>
  friend struct detail::kcqueue_checker;
  friend struct detail::kcqueue_drain;

  bool shared_empty() const noexcept {  // nothing staged, no batch (not list_)
    if constexpr (concurrent)
      return shared_.lock_free_parts_empty();
    else
      return true;
  }

  // The take row: under the lock, staged stack and pending list become the
  // batch. Returns: false when there was nothing to take and no batch.
  bool take_pending() noexcept {
    std::lock_guard<Lock> g(lock_);
    if constexpr (stages) shared_.flush(list_);
    kc_hook* expected = nullptr;
    if (list_.empty()) return shared_.head.load(std::memory_order_relaxed) != nullptr;
    if (shared_.head.compare_exchange_strong(expected, list_.front(),
                                             std::memory_order_release,
                                             std::memory_order_relaxed))
      (void)list_.take_all();
    return true;
  }

  detail::hook_queue list_;
  [[no_unique_address]] mutable Lock lock_;
  [[no_unique_address]] mutable std::conditional_t<
      stages, detail::kcqueue_staged,
      std::conditional_t<concurrent, detail::kcqueue_batch, detail::no_batch>> shared_;
};

namespace detail {
// Validates a queue's links (fbl's checker idea): every node is marked
// queued, the tail is the last node and has no successor. For tests.
template <class T, lock_policy Lock>
struct kcqueue_checker {
  static bool valid(const kcqueue<T, Lock>& q) noexcept {
    using access = detail::hook_access;
    std::lock_guard<Lock> g(q.lock_);
    if ((q.list_.front() == nullptr) != (q.list_.back() == nullptr)) return false;
    kc_hook* last = nullptr;
    for (kc_hook* p = q.list_.front(); p != nullptr; p = access::next(*p)) {
      if ((access::state(*p).load() & access::queued_bit) == 0) return false;
      last = p;
    }
    bool batch_ok = true;
    if constexpr (!std::is_same_v<Lock, no_lock>) {
      if constexpr (kcqueue<T, Lock>::stages)  // the staged stack
        for (kc_hook* p = q.shared_.staged.load(); p != nullptr; p = access::next(*p))
          batch_ok = batch_ok && (access::state(*p).load() & access::queued_bit) != 0;
      kc_hook* head = q.shared_.hold();
      for (kc_hook* p = head; p != nullptr; p = access::next(*p))
        if ((access::state(*p).load() & access::queued_bit) == 0) batch_ok = false;
      q.shared_.head.store(head, std::memory_order_release);
    }
    return batch_ok && last == q.list_.back();
  }
};
}  // namespace detail
}  // namespace kcont
