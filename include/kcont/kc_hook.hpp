// kcont/kc_hook.hpp — the type-erased continuation every queue links, and
// its claim protocol.
//
// Defines `kc_hook`: one intrusive `next` link, one atomic state byte (the
// queued, deferred and autofree bits), the level and one trampoline. Queues
// and dispatchers hold continuations as kc_hook; `kc_base` (kcont/kc_base.hpp)
// adds the typed saved obj/status, `kc` (kcont/kc.hpp) the function. Also
// `dispose`, which hands back a continuation that will not run.
//
// THE STATE TABLE below is the one description of the claim protocol (the
// queued/deferred bits); every other comment refers to it.
#pragma once

#include <atomic>
#include <cstdint>

#include "kcont/contract.hpp"

namespace kcont {

namespace detail {
struct hook_access;

// What a queue or dispatcher asks of a type-erased continuation's trampoline.
enum class kc_op : std::uint8_t {
  resume,         // run with the saved obj/status; no other thread can touch it
  resume_shared,  // the same, claimed: other threads may push it concurrently
  discard,        // handed back without running: free it if the library owns it
  resume_cancelled,  // as resume_shared, with its Status's cancel_status
};
}  // namespace detail

// The claim protocol: the state table.
//
// One atomic byte, `state_`: queued (1), deferred (2), autofree (4: made by
// make_kc / allocate_kc, freed by the library right after its call; set at
// construction, never changed). With `no_lock` queues (one thread at a time)
// every read-modify-write below is a relaxed load and a store.
//
//   state        queued deferred  what it is
//   idle           0      0       the owner's; run takes its one-test fast path
//   listed         1      0       on an object's kcqueue (push, no deferral)
//   waiting        1      1       on its level's queue, obj/status saved (defer)
//   claimed        1     0/1      popped claimed, not started: queued to others
//   handed back    0      1       off every queue, still carrying its deferral
//
//   event (who)                   from -> to          atomic operation
//   push / defer (any producer;   idle, handed back   fetch_or(queued), acq_rel.
//     mpsc_queue: also a signal   -> listed/waiting   Queued already: refused,
//     handler)                                        nothing changes
//   save, in defer's before_link  claimed by this     relaxed load; deferred
//     (the thread whose claim     push -> waiting     clear: plain stores of obj,
//     won)                                            status, state|deferred.
//                                                     Set: nothing (rule 2).
//                                                     A kcqueue: its claim (a
//                                                     CAS from a value without
//                                                     queued) sets deferred
//                                                     too; obj/status stored
//                                                     after it when the value
//                                                     it replaced had none
//   pop claimed (the level's      listed, waiting     list changed under the
//     runner)                     -> claimed          queue's lock; bits kept;
//                                                     under_lock publishes the
//                                                     runner's slot (release).
//                                                     A locked kcqueue: the
//                                                     lock moves the staged
//                                                     stack and the list to
//                                                     its batch (still listed
//                                                     / waiting), then a CAS of
//                                                     the batch head claims
//                                                     the node (kcqueue.hpp's
//                                                     batch table)
//   pop (the queue's consumer)    listed, waiting     under the lock,
//                                 -> idle, handed     fetch_and(~queued)
//                                 back
//   take_saved (the claimer's     claimed -> idle     read obj/status, then
//     trampoline, just before     (function runs)     end_claim: release store
//     the function)                                   of state & ~(queued|
//                                                     deferred): a trampoline
//                                                     knows that value (its
//                                                     type's autofree bit),
//                                                     so it reads nothing
//   run (the owner)               idle -> ran;        acquire load (none at a
//                                 handed back -> ran  compile-time immediate
//                                 with saved values   level); deferred cleared by
//                                                     fetch_and
//   resume (the holder: a popper, claimed, handed     handed back: claimed first
//     a hand-back's receiver)     back -> ran         (fetch_or(queued); lost to
//                                                     a racing defer: refused);
//                                                     then as take_saved
//   cancel (any thread but a      listed, waiting     unlink under the queue's
//     signal handler)             -> idle, handed     lock (a batched node: with
//                                 back                the batch head held, a
//                                                     pop's few instructions at
//                                                     most, never a run), then
//                                                     fetch_and(~queued);
//                                                     deferred kept. Never
//                                                     waits for a run: a node
//                                                     it unlinked is never
//                                                     read again by a popper.
//                                                     A push claimed but not
//                                                     yet linked (mpsc_queue,
//                                                     a std::mutex kcqueue)
//                                                     is not found: the
//                                                     cancel comes first
//   hand-back stop (the stopper)  waiting -> listed   pop, then push onto `out`;
//                                 on `out`            deferred kept
//   hand-over (thread_dispatcher  claimed -> claimed  the continuation is not
//     pool thread, at its pop)    by the sibling      touched: a CAS on the
//                                 running it          sibling's slot
//   dispose (the owner)           handed back, idle   none; frees it if autofree
//   a racing defer / run / push   claimed, listed,    its fetch_or finds queued:
//     (any producer)              waiting             refused; the pending run,
//                                                     which has not read the
//                                                     saved values, absorbs it
//
// Why end_claim may be a plain store: while queued is set, the only other
// writes are failed claims (fetch_or of a bit already set), which store the
// value they read. Why a runner pops claimed: if the pop cleared queued and
// the trampoline read the values afterwards, a deferral could slip in
// between (claim, save new values) and be neither refused nor run with its
// own values. The hand-over: a thread_dispatcher never runs one
// continuation on two threads at once; a pool thread that pops a
// re-deferral of a continuation a sibling is still running leaves it
// claimed, on no queue, for that sibling to run again when its run returns
// (its owner keeps a claimed continuation alive, so rule 3 holds). A
// hand-over counts as popped: cancel no longer finds it, cancel_sync waits
// for that run too (or, called from inside the run, withdraws it).
//
// Why a claim stays a read-modify-write even under a queue's lock (a
// spin_lock kcqueue's push claims under it; a std::mutex one's claims with
// no lock at all): the lock orders the writers that hold it (pushes onto
// that queue, its pops and cancels), but not the others that may claim the
// same idle continuation at the same moment: a push onto another queue
// (another lock, an mpsc_queue, another dispatcher). A plain load and store there would let both claims
// win, and the one link would put the continuation on two queues
// (dispatcher.rule9_a_locked_defer_racing_a_push_elsewhere_claims_once).
// Arbitrating them with plain stores would need a store-load fence on both
// sides, which costs what the read-modify-write costs.
//
// The type-erased part every queue links. Not constructible on its own;
// derive through kc_base (or kc). Queues touch it only through
// detail::hook_access.
//
// Lifetime contract: the owner (the caller, or the library for an allocated
// continuation) keeps it alive while it is queued, claimed or deferred.
// Destroying it while queued is a contract violation caught in debug builds.
class kc_hook {
 public:
  kc_hook(const kc_hook&) = delete;
  kc_hook& operator=(const kc_hook&) = delete;

  // True while the continuation sits on a queue (a kcqueue or a level queue)
  // or is claimed. Thread-safety: a snapshot; another thread may change it.
  [[nodiscard]] bool is_queued() const noexcept {
    return (state_.load(std::memory_order_acquire) & queued_bit) != 0;
  }
  // True while obj/status are saved by a deferral that has not run yet.
  [[nodiscard]] bool is_deferred() const noexcept {
    return (state_.load(std::memory_order_acquire) & deferred_bit) != 0;
  }
  // True when the library allocated it and frees it right after its call.
  [[nodiscard]] bool is_autofree() const noexcept {
    return (state_.load(std::memory_order_relaxed) & autofree_bit) != 0;
  }

 protected:
  using op_fn = void (*)(kc_hook*, detail::kc_op);

  static constexpr std::uint8_t queued_bit = 1;
  static constexpr std::uint8_t deferred_bit = 2;
  static constexpr std::uint8_t autofree_bit = 4;

  constexpr kc_hook(op_fn op, std::uint8_t level, std::uint8_t state) noexcept
      : op_(op), state_(state), level_(level) {}

  ~kc_hook() {
    KCONT_EXPECTS((state_.load(std::memory_order_relaxed) & queued_bit) == 0,
                  "kc: a continuation was destroyed while queued "
                  "(its owner must keep it alive until it runs or is cancelled)");
  }

 private:
  friend struct detail::hook_access;

  kc_hook* next_ = nullptr;
  op_fn op_;
  std::atomic<std::uint8_t> state_;
  std::uint8_t level_;
};

namespace detail {

// The one door to kc_hook's private state, for kcont's own queues and
// dispatchers (Asio's op_queue_access idea). Not for users. Every bit
// operation here is one row of the state table above.
struct hook_access {
  static kc_hook*& next(kc_hook& h) noexcept { return h.next_; }
  static kc_hook* next(const kc_hook& h) noexcept { return h.next_; }
  static std::atomic<std::uint8_t>& state(kc_hook& h) noexcept {
    return h.state_;
  }
  static std::uint8_t level(const kc_hook& h) noexcept { return h.level_; }
  static void op(kc_hook& h, detail::kc_op o) { h.op_(&h, o); }

  static constexpr std::uint8_t queued_bit = kc_hook::queued_bit;
  static constexpr std::uint8_t deferred_bit = kc_hook::deferred_bit;
  static constexpr std::uint8_t autofree_bit = kc_hook::autofree_bit;
  // Either set: run() leaves its one-test fast path.
  static constexpr std::uint8_t busy_bits = queued_bit | deferred_bit;

  // Clears bits. `Concurrent` selects an atomic read-modify-write; without it
  // the caller guarantees no other thread touches the state word.
  template <bool Concurrent = true>
  static void clear(kc_hook& h, std::uint8_t bits) noexcept {
    if constexpr (Concurrent) {
      h.state_.fetch_and(static_cast<std::uint8_t>(~bits),
                         std::memory_order_acq_rel);
    } else {
      h.state_.store(h.state_.load(std::memory_order_relaxed) &
                         static_cast<std::uint8_t>(~bits),
                     std::memory_order_relaxed);
    }
  }
  // Clears bits of a continuation this thread holds claimed: the
  // take_saved row of the state table (a plain release store, no
  // read-modify-write: why, below the table).
  static void end_claim(kc_hook& h, std::uint8_t bits) noexcept {
    h.state_.store(h.state_.load(std::memory_order_relaxed) &
                       static_cast<std::uint8_t>(~bits),
                   std::memory_order_release);
  }
  // Drops a deferral's saved obj/status (clears the deferred bit) unless
  // the continuation is queued: a claim racing with it either comes first
  // (the bit stays, the claimer's run uses it) or sees the bit clear and
  // saves its own values. For a continuation handed back by a cancel whose
  // saved values must never run (a detached knote: rule 8).
  static void drop_saved_unless_queued(kc_hook& h) noexcept {
    std::uint8_t st = h.state_.load(std::memory_order_acquire);
    while ((st & (queued_bit | deferred_bit)) == deferred_bit &&
           !h.state_.compare_exchange_weak(
               st, static_cast<std::uint8_t>(st & ~deferred_bit),
               std::memory_order_acq_rel, std::memory_order_acquire)) {
    }
  }
  template <bool Concurrent = true>
  static std::uint8_t set(kc_hook& h, std::uint8_t bits) noexcept {
    if constexpr (Concurrent) {
      return h.state_.fetch_or(bits, std::memory_order_acq_rel);
    } else {
      const std::uint8_t old = h.state_.load(std::memory_order_relaxed);
      h.state_.store(old | bits, std::memory_order_relaxed);
      return old;
    }
  }
};

}  // namespace detail

// Effects: hands back a continuation that will not run (cancelled or returned
//   at shutdown): frees it if the library allocated it, else does nothing.
// Precondition: not queued.
inline void dispose(kc_hook& h) {
  KCONT_EXPECTS(!h.is_queued(), "dispose: the continuation is still queued");
  detail::hook_access::op(h, detail::kc_op::discard);
}

}  // namespace kcont
