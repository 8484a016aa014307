// kcont/detail/kcqueue_shared.hpp — the parts of a locked kcqueue that
// other threads reach without its lock: the staged stack producers push
// onto and the batch head poppers claim from.
//
// Defines `detail::kcqueue_batch` (every real lock), `detail::kcqueue_staged`
// (a std::mutex queue: the batch and the staged stack), a push's claim and
// the FIFO (`detail::hook_queue`) that kcqueue and mpsc_queue keep under
// their locks. The protocol is described
// once, by kcqueue's batch table (kcont/kcqueue.hpp); the rows named here
// are that table's. Not thread-safe beyond what each member says: the
// caller holds the queue's lock where a member asks for it.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "kcont/kc_hook.hpp"
#include "kcont/detail/intrusive_queue.hpp"

namespace kcont::detail {

// kc_hook's link, for intrusive_queue (a pointer to the private member
// cannot be named here: see kcont/detail/intrusive_queue.hpp).
inline constexpr kc_hook*& (*hook_next)(kc_hook&) noexcept = &hook_access::next;
// The FIFO under kcqueue and the MPSC queue's consumer batch.
using hook_queue = intrusive_queue<hook_next>;

// Waits a little for a holder of a word to let go: a pause, then, after
// about a hundred of them, a yield (the holder may have been preempted).
[[gnu::cold, gnu::noinline]] inline void kcqueue_back_off(unsigned spins) noexcept {
  if (spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

// A Treiber stack's push, newest on top: the staged stack's and the MPSC
// queue's link. seq_cst: P0 of the sleep/wake protocol (kcont/wakeup.hpp):
// a runner's "is it empty" (S3) must not miss this link once the producer's
// P1 has read "nobody asleep".
// Returns: true when the stack was empty (a push's `first`).
// Thread-safety: any thread, no lock; async-signal-safe (lock-free).
[[gnu::always_inline]] inline bool push_onto_stack(std::atomic<kc_hook*>& top, kc_hook& n) noexcept {
  kc_hook* old = top.load(std::memory_order_relaxed);
  do {
    hook_access::next(n) = old;
  } while (!top.compare_exchange_weak(old, &n, std::memory_order_seq_cst, std::memory_order_relaxed));
  return old == nullptr;
}

// A kcqueue push's claim (the claim table in kcont/kc_hook.hpp), then
// before_link; Concurrent: a read-modify-write (a real lock). A before_link
// invocable with the state byte is a deferral's save: the claim sets the
// queued and deferred bits in one step and hands it the state it replaced.
// Returns: false when n was queued already (n untouched).
template <bool Concurrent, class BeforeLink>
[[gnu::always_inline]] inline bool claim_for_push(kc_hook& n, BeforeLink& before_link) {
  using access = hook_access;
  if constexpr (std::invocable<BeforeLink&, std::uint8_t>) {
    constexpr auto bits = static_cast<std::uint8_t>(access::queued_bit | access::deferred_bit);
    auto& state = access::state(n);
    std::uint8_t st = state.load(std::memory_order_relaxed);
    do {
      if (st & access::queued_bit) return false;
      if constexpr (!Concurrent) state.store(st | bits, std::memory_order_relaxed);
    } while (Concurrent && !state.compare_exchange_weak(st, st | bits, std::memory_order_acq_rel));
    before_link(st);
  } else {
    if (access::set<Concurrent>(n, access::queued_bit) & access::queued_bit) return false;
    before_link();
  }
  return true;
}

struct no_batch {};  // no_lock: one thread, no lock-free word

// A locked kcqueue's batch head (every real lock). One cache line with the
// queue's lock and list: a kcqueue is embedded in users' objects (a callback
// list), and a line per word would multiply its size; mpsc_queue is the
// queue that keeps its producers' word apart.
struct kcqueue_batch {
  // The head's value while one thread is inside the chain.
  static kc_hook* held() noexcept { return reinterpret_cast<kc_hook*>(std::uintptr_t{1}); }

  // The head of the chain taken from the pending list, or null, or held().
  std::atomic<kc_hook*> head{nullptr};

  // True when there is no batch (the pending list is the caller's to check).
  bool lock_free_parts_empty() const noexcept {
    return head.load(std::memory_order_acquire) == nullptr;
  }

  // Holds the head (waiting out a pop's few instructions); returns the
  // chain. The caller stores a head back (release).
  kc_hook* hold() noexcept {
    for (unsigned spins = 0;; ++spins) {
      kc_hook* n = head.load(std::memory_order_relaxed);
      if (n != held() && head.compare_exchange_weak(n, held(), std::memory_order_acquire,
                                                    std::memory_order_relaxed))
        return n;
      kcqueue_back_off(spins);
    }
  }
};

// A std::mutex kcqueue's words: the batch head and the staged stack.
struct kcqueue_staged : kcqueue_batch {
  // The staged stack (newest first): the push row links here.
  std::atomic<kc_hook*> staged{nullptr};

  // The push row's link: n (claimed, its before_link done) goes on top.
  // Returns: true when the stack was empty (push's `first`).
  // Thread-safety: any thread, no lock.
  bool stage(kc_hook& n) noexcept { return push_onto_stack(staged, n); }

  // The flush row: moves the staged stack to the back of `list`, oldest
  // first, so each producer's pushes keep their order.
  // Precondition: the caller holds the queue's lock (only its holders
  // empty the stack, so nodes are never in transit outside it).
  void flush(hook_queue& list) noexcept {
    if (staged.load(std::memory_order_relaxed) == nullptr) return;
    kc_hook* s = staged.exchange(nullptr, std::memory_order_acquire);
    list.append(hook_queue::from_lifo(s, [](kc_hook&) noexcept {}));
  }

  // Counts the staged nodes without moving them. Precondition: the queue's
  // lock is held (producers only add on top; nodes below it stay put).
  std::size_t staged_size() const noexcept {
    std::size_t count = 0;
    for (kc_hook* p = staged.load(std::memory_order_acquire); p != nullptr;
         p = hook_access::next(*p))
      ++count;
    return count;
  }

  // True when neither the staged stack nor a batch holds anything.
  bool lock_free_parts_empty() const noexcept {
    return staged.load(std::memory_order_seq_cst) == nullptr &&
           kcqueue_batch::lock_free_parts_empty();
  }
};

}  // namespace kcont::detail
