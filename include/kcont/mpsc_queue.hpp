// kcont/mpsc_queue.hpp — a lock-free, intrusive, multi-producer queue of
// continuations, drained in batches.
//
// Defines `mpsc_queue<T>`: what a dispatcher's level queue is when producers
// are other threads or POSIX signal handlers. Producers never lock: a push
// claims the node's queued bit, runs `before_link` (defer saves obj/status
// there, exactly once) and links the node onto an intrusive Treiber stack
// with one compare-and-swap, so it is wait-free in the absence of contention,
// allocation-free and async-signal-safe. The consumer takes the whole stack
// with one exchange and reverses it into a private FIFO batch, so the order
// seen by the consumer is the push order of each producer (and, across
// producers, the order their CASes succeeded).
//
// The private batch sits under a small consumer-side lock held only while a
// node is popped or erased, never while a continuation runs. That is what
// makes cancel possible: erase_slow takes the lock, moves the shared stack
// into the batch and unlinks O(n). Producers never see that lock. It is a
// spin_lock (one locked instruction per pop, where a std::mutex takes two,
// and the runner's pop bounds a stream's throughput), which yields when
// held long, as a cancel walking a long queue may. The batch is a
// detail::intrusive_queue; intrusive_queue::from_lifo reverses the stack.
//
// Compared with kcqueue<T, std::mutex> / kcqueue<T, spin_lock> (the other two
// queue policies a thread_dispatcher accepts): a spin_lock queue serialises
// producers with the consumer; a std::mutex queue's producers link onto a
// staged stack as here (no lock), but not from a signal handler; this one
// lets any number of producers and signal handlers push while the consumer
// pops. Compared with a Vyukov MPSC node queue: no
// stub node (a continuation may sit on one queue at a time, and an intrusive
// stub would need a hook of its own), at the price of the reversal, which is
// O(batch) once per exchange, i.e. O(1) amortised per node.
//
// The protocol: the state table.
//
//   part              held where                         written by
//   stack_            its own cache line: a Treiber      producers (CAS), the
//                     stack, newest first                consumer (exchange)
//   batch_            consumer side, oldest first        holders of the consumer lock
//   batch_nonempty_   consumer side, read without lock   holders of the consumer lock
//
//   operation     who                       steps and atomic operations
//   push          any thread, a signal      claim (fetch_or queued: kc_hook.hpp's
//                 handler                   table); before_link; next = old and
//                                           compare_exchange_weak(stack_), seq_cst,
//                                           retried under contention. Returns
//                                           `first` when the stack was empty (the
//                                           dispatcher then wakes the level's runner)
//   pop_claimed   the consumer(s), never    without the lock: batch_nonempty_ and
//                 a signal handler          stack_ (acquire) both empty -> return.
//                                           Else under the lock: batch empty ->
//                                           take_stack; unlink the head; under_lock
//   take_stack    under the consumer lock   batch_nonempty_ = true (seq_cst) FIRST,
//                                           then exchange(stack_, nullptr), reverse
//                                           into the batch: empty() may say "not
//                                           empty" a moment early, never "empty"
//                                           while nodes are in transit (a runner
//                                           believing that could sleep on work)
//   empty         any thread, a signal      batch_nonempty_ and stack_, seq_cst
//                 handler                   loads (the sleep/wake protocol of
//                                           kcont/wakeup.hpp relies on them)
//   erase_slow    any thread, never a       under the lock: take_stack, walk and
//                 signal handler            unlink (O(n)), fetch_and(~queued)
//
// Usage:
//   kcont::mpsc_queue<> q;                        // of kc_hook
//   (void)q.push(k);                               // any thread, or a signal handler
//   while (kcont::kc_hook* h = q.pop()) { ... }   // the consumer
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/kcqueue.hpp"

namespace kcont {

// A lock-free multi-producer queue of continuations, consumed in batches.
//
// Lifetime contract: the queue never owns its nodes; each node's owner keeps
// it alive while it is queued. It must be empty when destroyed (rule 9); a
// debug build aborts naming that rule.
// Thread-safety: push from any thread and from a signal handler (lock-free,
// no allocation, no errno change). pop, pop_claimed, erase_slow, empty and
// size_slow from any thread but not from a signal handler (they take the
// consumer lock); several consumers are allowed and serialise on it.
template <class T = kc_hook>
class mpsc_queue {
  static_assert(std::derived_from<T, kc_hook>,
                "kcont::mpsc_queue<T>: T must be a continuation type");
  static_assert(std::atomic<kc_hook*>::is_always_lock_free,
                "kcont::mpsc_queue needs lock-free pointer atomics");
  static_assert(std::atomic<std::uint8_t>::is_always_lock_free,
                "kcont::mpsc_queue needs lock-free byte atomics (the state "
                "bits are claimed from signal handlers)");

  using access = detail::hook_access;

 public:
  using value_type = T;
  // Capabilities: no size counter, erase is a walk.
  static constexpr bool constant_time_size = false;
  static constexpr bool constant_time_erase = false;
  // push may be called from a POSIX signal handler.
  static constexpr bool signal_safe_push = true;

  mpsc_queue() = default;
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;
  ~mpsc_queue() {
    KCONT_EXPECTS(stack_.load(std::memory_order_relaxed) == nullptr &&
                      batch_.empty(),
                  "mpsc_queue: destroyed while it still holds continuations "
                  "(rule 9: every continuation runs or is handed back)");
  }

  // Effects: pushes n unless it is already on a queue. `before_link` runs
  //   after n is claimed and before it becomes visible to the consumer.
  // Returns: already_queued (n untouched), first (the shared stack was empty:
  //   the consumer may need waking) or queued.
  // Complexity: O(1) plus CAS retries under contention; lock-free.
  // Thread-safety: any thread; async-signal-safe when before_link is.
  template <std::invocable<> BeforeLink = detail::nothing>
  push_result push(T& n, BeforeLink&& before_link = {}) {
    if (access::set<true>(n, access::queued_bit) & access::queued_bit)
      return push_result::already_queued;
    before_link();
    return detail::push_onto_stack(stack_, n) ? push_result::first : push_result::queued;
  }

  // Effects: removes and returns the oldest continuation (clearing its queued
  //   bit), or nullptr when the queue is empty.
  // Complexity: O(1) amortised. Thread-safety: consumers; not signal-safe.
  T* pop() noexcept {
    T* n = pop_claimed([](T&) noexcept {});
    if (n != nullptr) access::clear<true>(*n, access::queued_bit);
    return n;
  }

  // Effects: as pop, but leaves the queued bit set (the caller holds the
  //   claim; kc_base::take_saved ends it) and calls under_lock(node) while
  //   the consumer lock is held, so a concurrent erase_slow either finds the
  //   node or runs after under_lock published it.
  // Returns: the node, or nullptr when empty. Complexity: O(1) amortised.
  template <class UnderLock>
    requires std::invocable<UnderLock&, T&>
  T* pop_claimed(UnderLock&& under_lock) noexcept(
      std::is_nothrow_invocable_v<UnderLock&, T&>) {
    // Cheap exit without the lock: nothing in the batch and nothing pushed.
    if (!batch_nonempty_.load(std::memory_order_acquire) &&
        stack_.load(std::memory_order_acquire) == nullptr)
      return nullptr;
    std::lock_guard<spin_lock> g(consumer_);
    if (batch_.empty()) take_stack();
    kc_hook* n = batch_.pop_front();
    if (n == nullptr) return nullptr;
    if (batch_.empty()) batch_nonempty_.store(false, std::memory_order_release);
    under_lock(*static_cast<T*>(n));
    return static_cast<T*>(n);
  }

  // Effects: unlinks n if it is on this queue (in the batch or still on the
  //   shared stack), clearing its queued bit.
  // Returns: true when n was removed before anyone popped it.
  // Complexity: O(n). Thread-safety: not from a signal handler.
  bool erase_slow(T& n) noexcept {
    std::lock_guard<spin_lock> g(consumer_);
    take_stack();
    if (!batch_.erase_slow(n)) return false;
    if (batch_.empty())
      batch_nonempty_.store(false, std::memory_order_release);
    access::clear<true>(n, access::queued_bit);
    return true;
  }

  // Effects: asks the memory system for the newest pushed node, for
  //   writing, without waiting: a consumer that has just seen the queue turn
  //   non-empty calls it before it pops, so the node's transfer overlaps the
  //   pop's own. A hint: changes nothing; the node may be gone at once.
  // Thread-safety: any thread (one load; a prefetch never faults).
  void prefetch_newest() const noexcept {
    if (const kc_hook* n = stack_.load(std::memory_order_relaxed)) prefetch_for_write(n);
  }

  // True when the queue holds nothing. A snapshot (producers may push at
  // once); sequentially consistent, which the sleep protocol relies on.
  // Thread-safety: any thread, lock-free; async-signal-safe.
  [[nodiscard]] bool empty() const noexcept {
    return !batch_nonempty_.load(std::memory_order_seq_cst) &&
           stack_.load(std::memory_order_seq_cst) == nullptr;
  }

  // Effects: counts the queued continuations. Complexity: O(n).
  [[nodiscard]] std::size_t size_slow() noexcept {
    std::lock_guard<spin_lock> g(consumer_);
    take_stack();
    return batch_.size_slow();
  }

 private:
  // A prefetch for writing where the target has one (x86-64 built with
  // -mprfchw or an -march that has PREFETCHW, AArch64's PRFM PSTL1KEEP); on
  // a baseline x86-64 build the compiler emits a read prefetch, which still
  // starts the transfer early. Not the PREFETCHW instruction by hand: it
  // was measured to change nothing here, and old x86-64 CPUs may lack it.
  static void prefetch_for_write(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 1, 3);
#else
    (void)p;
#endif
  }

  // Moves the shared stack (newest first) to the back of the batch, oldest
  // first. Called with consumer_ held.
  void take_stack() noexcept {
    if (stack_.load(std::memory_order_relaxed) == nullptr) return;
    // Flag the batch first: empty() may then say "not empty" a moment too
    // early, never "empty" while nodes are in transit from stack to batch
    // (a runner that believed that could go to sleep on work). Only holders
    // of consumer_ empty the stack, so it is still non-empty below.
    batch_nonempty_.store(true, std::memory_order_seq_cst);
    kc_hook* s = stack_.exchange(nullptr, std::memory_order_acquire);
    // Each node was written last by its producer, and will be written here
    // (its link) and by its trampoline (take_saved): start its transfer
    // now, for writing where the target can (prefetch_for_write).
    batch_.append(detail::hook_queue::from_lifo(
        s, [](kc_hook& n) noexcept { prefetch_for_write(&n); }));
  }

  // Shared with producers: the Treiber stack, newest first. Its own cache
  // line, away from the consumer's batch.
  alignas(64) std::atomic<kc_hook*> stack_{nullptr};
  // Consumer side, under consumer_: the FIFO batch.
  alignas(64) spin_lock consumer_;
  detail::hook_queue batch_;
  // !batch_.empty(), readable without the lock (empty() and the fast path).
  std::atomic<bool> batch_nonempty_{false};
};

}  // namespace kcont
