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
// real lock a drain takes the whole pending list at once (the batch table).
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
#include <thread>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/detail/intrusive_queue.hpp"

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
    while (locked_.exchange(true, std::memory_order_acquire)) {
      for (unsigned spins = 0; locked_.load(std::memory_order_relaxed); ++spins) {
        if (spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
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

// True when the push succeeded.
[[nodiscard]] constexpr bool pushed(push_result r) noexcept {
  return r != push_result::already_queued;
}

struct nothing {
  constexpr void operator()() const noexcept {}
};

// kc_hook's link, for intrusive_queue (a pointer to the private member
// cannot be named here: see kcont/detail/intrusive_queue.hpp).
inline constexpr kc_hook*& (*hook_next)(kc_hook&) noexcept = &hook_access::next;
// The FIFO under kcqueue and the MPSC queue's consumer batch.
using hook_queue = intrusive_queue<hook_next>;

// A per-thread address: which thread holds a kcqueue's batch.
inline thread_local const char thread_tag = 0;
inline const void* this_thread_tag() noexcept { return &thread_tag; }

// A cancel another thread asks a batch's drainer to make (the "cancel, in
// a batch" row of the batch table in kcqueue). Lives on the asker's stack.
struct batch_cancel {
  kc_hook* node;
  bool found = false;
  std::atomic<bool> done{false};
};

// What a drain is to a locked kcqueue's batch (begin_batch).
enum class batch_role : std::uint8_t {
  owner,   // took the pending list: end_batch gives back what is left
  nested,  // this thread's outer drain holds it: share it, do not end it
  other,   // another thread's drain holds it: pop one by one (pop_claimed)
};

// The batch side of a locked kcqueue; empty for no_lock.
struct kcqueue_batch {
  hook_queue list;                  // the drainer's alone
  const void* drainer = nullptr;             // under the lock
  batch_cancel* request = nullptr;           // under the lock
  std::atomic<bool> request_pending{false};  // set under the lock
  std::atomic<bool> nonempty{false};         // written by the drainer
};
struct no_batch {};
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
// The batch (real lock only): a drain takes the whole pending list with one
// lock acquisition and runs it outside the lock. Its state table:
//
//   list_ (pending) and batch_.drainer / .request: under the lock;
//   batch_.list: the drainer's private FIFO, older than list_, no lock.
//
//   operation     who                steps
//   begin_batch   a drain            under the lock: no drainer -> become it,
//                                    move list_ into the batch (owner); this
//                                    thread drains already -> nested; else
//                                    other (it pops list_ one by one)
//   pop_batch     the drainer        a cancel request pending (relaxed load)?
//                                    answer it under the lock. Pop the batch's
//                                    head, no lock; empty -> one lock: answer,
//                                    move list_ in again. The node stays
//                                    claimed (kc_hook.hpp's table: pop
//                                    claimed); popped(node) publishes it
//   end_batch     the owner          under the lock: answer; what is left
//                                    goes back to list_'s front, in order
//                                    (a budget's rest stays ahead of later
//                                    pushes); no drainer
//   cancel        any thread         under the lock: on list_ -> unlink. In
//   (erase_slow)                     the batch, drainer this thread (cancel
//                                    from a continuation it runs: the drain
//                                    is paused) -> unlink from the batch.
//                                    Drainer another thread -> post request,
//                                    wait for its answer: the drainer unlinks
//                                    it at its next step, under the lock
//
// Why cancel asks: the drainer walks its batch with no lock and no atomic
// read-modify-write per node, so only it may change the batch's links (a
// cancel unlinking the node it has just read as its next would hand back a
// node about to run). The price: that cancel waits for the current run.
template <class T = kc_hook, lock_policy Lock = no_lock>
class kcqueue {
  static_assert(std::derived_from<T, kc_hook>,
                "kcont::kcqueue<T>: T must be a continuation type (kc_hook, "
                "kc_base<...> or a type derived from them)");

  using access = detail::hook_access;
  static constexpr bool concurrent = !std::is_same_v<Lock, no_lock>;

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
    KCONT_EXPECTS(list_.empty(),
                  "kcqueue: destroyed while it still holds continuations "
                  "(rule 9: every continuation runs or is handed back)");
    // Release build: hand them back (see the lifetime contract). No other
    // thread may use a queue being destroyed: the list is read unlocked.
    if (!list_.empty())
      while (pop() != nullptr) {
      }
  }

  // Effects: appends n, unless n is already on a queue. `before_link` runs
  //   after n is claimed and before it becomes visible to poppers (defer uses
  //   it to save obj/status exactly once).
  // Returns: already_queued (and n untouched), first or queued.
  // Complexity: O(1). Never allocates.
  template <std::invocable<> BeforeLink = detail::nothing>
  [[nodiscard]] push_result push(T& n, BeforeLink&& before_link = {}) {
    std::lock_guard<Lock> g(lock_);
    if (access::set<concurrent>(n, access::queued_bit) & access::queued_bit)
      return push_result::already_queued;
    before_link();
    return list_.push_back(n) ? push_result::first : push_result::queued;
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
  //   called while the queue's lock is held, before the node becomes
  //   unreachable to erase_slow, so a dispatcher can publish "now running
  //   this" atomically with respect to cancel.
  // Returns: the node, or nullptr when empty. Complexity: O(1).
  template <class UnderLock>
    requires std::invocable<UnderLock&, T&>
  T* pop_claimed(UnderLock&& under_lock) noexcept(
      std::is_nothrow_invocable_v<UnderLock&, T&>) {
    std::lock_guard<Lock> g(lock_);
    kc_hook* n = list_.pop_front();
    if (n == nullptr) return nullptr;
    under_lock(*static_cast<T*>(n));
    return static_cast<T*>(n);
  }

  // Effects: moves every continuation of `other` to the back of this queue,
  //   keeping their order; `other` is left empty.
  // Complexity: O(1). Locks both queues (in address order, so two splices in
  //   opposite directions cannot deadlock).
  void splice(kcqueue& other) {
    if (&other == this) return;
    kcqueue* first = this < &other ? this : &other;
    kcqueue* second = this < &other ? &other : this;
    std::lock_guard<Lock> g1(first->lock_);
    std::lock_guard<Lock> g2(second->lock_);
    list_.append(other.list_);
  }

  // Effects: unlinks n if it is on this queue, or in the batch a drain
  //   took from it (the batch table above).
  // Returns: true when n was removed (it is then no longer queued).
  // Complexity: O(position of n). With a real lock, when another thread's
  //   drain holds a batch and n is not on the pending list, it waits until
  //   that drain's next step (the continuation it runs returns).
  bool erase_slow(T& n) noexcept {
    if constexpr (concurrent) {
      detail::batch_cancel ask{&n};
      for (;;) {
        std::unique_lock<Lock> g(lock_);
        if (list_.erase_slow(n)) {
          access::clear<true>(n, access::queued_bit);
          return true;
        }
        if (batch_.drainer == nullptr) return false;
        if (batch_.drainer == detail::this_thread_tag())
          return erase_from_batch(n);  // that drain waits for our return
        if (batch_.request == nullptr) {
          batch_.request = &ask;
          batch_.request_pending.store(true, std::memory_order_relaxed);
          g.unlock();
          while (!ask.done.load(std::memory_order_acquire))
            std::this_thread::yield();
          return ask.found;
        }
        g.unlock();
        std::this_thread::yield();  // one request at a time
      }
    } else {
      std::lock_guard<Lock> g(lock_);
      if (!list_.erase_slow(n)) return false;
      access::clear<false>(n, access::queued_bit);
      return true;
    }
  }

  // Effects (real lock only): starts a batch drain. As owner, takes every
  //   pending continuation into the drainer's private batch, one lock
  //   acquisition for all of them.
  // Returns: owner; nested (a drain on this thread holds the batch: share
  //   it through pop_batch, do not end it); other (another thread's drain
  //   holds it: pop one by one with pop_claimed).
  [[nodiscard]] detail::batch_role begin_batch() noexcept
    requires concurrent
  {
    std::lock_guard<Lock> g(lock_);
    if (batch_.drainer != nullptr)
      return batch_.drainer == detail::this_thread_tag() ? detail::batch_role::nested
                                                         : detail::batch_role::other;
    batch_.drainer = detail::this_thread_tag();
    take_pending();
    return detail::batch_role::owner;
  }

  // Effects (the batch's drainer): removes and returns the oldest
  //   continuation of the batch, claimed as pop_claimed leaves it, with no
  //   lock; an empty batch first takes the pending list again (one lock).
  //   `popped(node)` runs before any cancel is answered again.
  // Returns: the node, or nullptr when nothing is pending at all.
  template <class Popped>
  T* pop_batch(Popped&& popped) noexcept
    requires concurrent
  {
    if (batch_.request_pending.load(std::memory_order_relaxed)) [[unlikely]] {
      std::lock_guard<Lock> g(lock_);
      answer_request();
    }
    kc_hook* n = batch_.list.pop_front();
    if (n == nullptr) {
      {
        std::lock_guard<Lock> g(lock_);
        answer_request();
        take_pending();
      }
      n = batch_.list.pop_front();
      if (n == nullptr) return nullptr;
    }
    if (batch_.list.empty())
      batch_.nonempty.store(false, std::memory_order_release);
    popped(*static_cast<T*>(n));
    return static_cast<T*>(n);
  }

  // Effects (the batch's owner): answers a waiting cancel; puts the rest
  //   of the batch back in front, in order, ahead of later pushes.
  void end_batch() noexcept
    requires concurrent
  {
    std::lock_guard<Lock> g(lock_);
    answer_request();
    batch_.list.append(list_);
    list_ = batch_.list.take_all();
    batch_.nonempty.store(false, std::memory_order_relaxed);
    batch_.drainer = nullptr;
  }

  // True when the queue holds nothing (a batch counts). A snapshot.
  [[nodiscard]] bool empty() const noexcept {
    std::lock_guard<Lock> g(lock_);
    if constexpr (concurrent)
      if (batch_.nonempty.load(std::memory_order_acquire)) return false;
    return list_.empty();
  }

  // Effects: counts the queued continuations. Complexity: O(n).
  [[nodiscard]] std::size_t size_slow() const noexcept {
    std::lock_guard<Lock> g(lock_);
    return list_.size_slow();
  }

 private:
  template <class, lock_policy>
  friend struct detail::kcqueue_checker;

  // Under the lock: the pending list moves to the batch.
  void take_pending() noexcept {
    if (list_.empty()) return;
    batch_.nonempty.store(true, std::memory_order_release);
    batch_.list.append(list_);
  }
  // Under the lock, on the drainer's thread: n leaves the batch.
  bool erase_from_batch(kc_hook& n) noexcept {
    if (!batch_.list.erase_slow(n)) return false;
    if (batch_.list.empty()) batch_.nonempty.store(false, std::memory_order_release);
    access::clear<true>(n, access::queued_bit);
    return true;
  }
  // Under the lock, on the drainer's thread: answers a waiting cancel.
  void answer_request() noexcept {
    detail::batch_cancel* r = batch_.request;
    if (r == nullptr) return;
    batch_.request = nullptr;
    batch_.request_pending.store(false, std::memory_order_relaxed);
    r->found = erase_from_batch(*r->node);
    if (!r->found && list_.erase_slow(*r->node)) {
      access::clear<true>(*r->node, access::queued_bit);
      r->found = true;
    }
    r->done.store(true, std::memory_order_release);  // *r is the asker's: last
  }

  detail::hook_queue list_;
  [[no_unique_address]] mutable Lock lock_;
  [[no_unique_address]] std::conditional_t<concurrent, detail::kcqueue_batch,
                                           detail::no_batch> batch_;
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
    return last == q.list_.back();
  }
  // True while a cancel waits for the batch's drainer to answer it.
  static bool cancel_waiting(const kcqueue<T, Lock>& q) noexcept {
    return q.batch_.request_pending.load(std::memory_order_acquire);
  }
};
}  // namespace detail
}  // namespace kcont
