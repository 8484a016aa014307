// kcont/detail/knote_state.hpp — the knote's state word: its state table,
// the BSD fields filters read and write, and the activation frames that let
// a continuation detach its own knote.
//
// Defines `detail::knote_core` (what every knote has, whatever its hint and
// level: fields, state word, field lock, klist links), `detail::knote_fields`,
// `detail::activation_frame` and `detail::knote_access`, kcont's door to
// the state word and the links (klist.hpp, detail/fire.hpp). Users never
// name these: they reach them through kcont::knote_base (kcont/knote.hpp).
//
// THE STATE TABLE. Every other comment about the state word refers here.
//
// One atomic 32-bit word, so that each rule-6 transition (docs/design.md) is
// one compare-and-swap:
//
//   bit   name      meaning
//   1     active    an event fired and no consumer has acknowledged it yet
//   2     queued    claimed by a consumer's queue of knotes (a kqueue's pending list: its own)
//   4     disabled  activation marks it active but runs nothing (rule 6)
//   8     attached  the filter's attach succeeded
//   16    detached  detach has begun: no new activation runs the continuation
//   8..31 pins      activations in flight: threads inside (or about to enter)
//                   the continuation through this knote
//
//   transition            performed by (operation)             atomic operation
//   --------------------  -----------------------------------  -------------------------------
//   → attached            the owner, one thread, no activation   fetch_and(~detached), fetch_or
//                         in flight (attach)                     (attached); on the filter's
//                                                                error fetch_and(~attached)
//   → active, +1 pin      any thread (activate; klist fire       CAS acq_rel: refused when
//                         with a lock: begin_activation)         detached; the pin only when
//                                                                not disabled (then it runs)
//   −1 pin                the activating thread, when run        fetch_add(−pin) acq_rel, by its
//                         returns (activation_frame)             activation_frame; none when
//                                                                the frame is released (below)
//   → active, no pin      a no_lock klist's fan-out (begin_      no write when active and
//                         activation<false>); a locked one's     enabled; else the same CAS
//                         for a knote that fires under its
//                         lock (any: hold_lock) or cursor runs
//   ±1 pin for a cursor   a locked klist's erase (+1), for that  fetch_add acq_rel under the list
//     of another thread   run; that fan-out after it (−1)        lock (the cursor table: klist_fanout)
//   → disabled            any thread (disable)                   fetch_or acq_rel
//   → enabled, +1 pin     any thread (enable: begin_enable)      CAS acq_rel: the pin (and the
//     when it was                                                run, cause enable) only when
//     disabled and active                                        it was disabled and active
//   ±active, −disabled    a kqueue under its own lock            fetch_or / fetch_and acq_rel
//                         (set_active, clear_active, ...)
//   → queued / −queued    a consumer under its queue's lock      fetch_or / fetch_and acq_rel:
//                         (try_queue / unqueue)                  only the claim that found it
//                                                                clear links it (rule 7)
//   → detached            any thread, the continuation itself    fetch_or acq_rel; if attached:
//                         included (detach: begin_detach,        the filter's detach, then
//                         then wait_unpinned)                    fetch_and(~attached)
//   pins → 0              the detaching thread (wait_unpinned)   its own frames' pins returned
//                                                                (fetch_add), then acquire
//                                                                loads, yielding, until 0
//
// Why it is safe. Activation and detach are read-modify-writes of one word,
// so one comes first: an activation after the detach sees `detached` and
// runs nothing; one before it holds a pin that detach waits for. The unpin's
// release pairs with detach's acquire load of a zero count, so everything the
// continuation did happens before detach returns and the owner frees the
// knote (rule 8). A continuation that detaches its own knote would wait for
// its own pin: its thread's activation frames (thread-local, on the stack of
// each pinned activation) are marked released and their pins returned, and
// a released frame never touches the knote again (it may be destroyed).
// A no_lock klist fan-out takes no pin: every detach erases from that list,
// so none runs on another thread during the fan-out. Nor does a locked
// klist's fan-out for a knote whose fused fire runs under the list lock
// (fires_under_lock_: a kqueue's, which never takes a klist lock; every
// knote of a hold_lock fan-out): detach's erase takes the list lock, so
// it comes after that fire, and the lock's release orders the fire before
// detach returns. Nor does a locked klist's cursor run: an erase from
// another thread pins it for that run (kcont/detail/klist_fanout.hpp).
//
// Mutual detach (contract checks only): kcont/detail/list_held.hpp's pin_wait.
// The fields (knote_fields, outside the state word): written by a filter in
// attach/event/touch, read by others through snapshot(), guarded as the
// policy says. list_guarded (the default): by its klist's lock (FreeBSD's
// knlist lock: every fan-out's filter event holds it, klist::guard() for
// others; contract checks catch them touched while linked without it), on
// a klist<..., no_lock> by its one thread. spin_lock: the field lock, any
// thread. no_lock (single_threaded()): every operation from one thread at a
// time, the same transitions with relaxed loads and plain stores.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

#include "kcont/contract.hpp"
#include "kcont/detail/list_held.hpp"
#include "kcont/kcqueue.hpp"

namespace kcont::detail {

// The per-knote fields of a BSD knote, read and written by filters (see the
// field lock above).
struct knote_fields {
  std::uintptr_t ident = 0;   // what the knote watches (fd, interface index...)
  std::uint16_t flags = 0;    // the owner's flags (kqueue: EV_*), opaque here
  std::uint32_t sfflags = 0;  // filter flags saved from the registration
  std::int64_t sdata = 0;     // filter data saved from the registration
  std::uint32_t fflags = 0;   // filter flags to report
  std::int64_t data = 0;      // filter data to report
};

class knote_core;
struct knote_access;

// One pinned activation in progress on this thread, on the stack of the
// activating call (see the state table: −1 pin, self-detach); unpinned: a
// locked klist's cursor run, kept for the mutual-detach check only.
struct activation_frame {
  knote_core* kn;
  activation_frame* prev;
  bool released = false;
  bool pinned = true;
  explicit activation_frame(knote_core* k, bool pin = true) noexcept;
  ~activation_frame();
  activation_frame(const activation_frame&) = delete;
  activation_frame& operator=(const activation_frame&) = delete;
};

inline thread_local activation_frame* activation_frames = nullptr;

// The state every knote has, whatever its hint and level: the BSD fields, the
// state word (the table above) and the field lock. Not constructible alone:
// derive through knote_base. Owners that keep knotes of several hint types
// in one container (a kqueue) reach their state through this class.
//
// Lifetime contract: as knote_base (it is one).
// Thread-safety: the state-word operations may be called from any thread
// (for a single-threaded knote, from one thread at a time); the fields as
// the policy says (above).
// Usage:
//   kcont::detail::knote_core& k = some_knote;
//   if (k.is_active() && !k.is_disabled() && k.try_queue()) my_queue.link(k);
class knote_core : public knote_fields {
 public:
  knote_core(const knote_core&) = delete;
  knote_core& operator=(const knote_core&) = delete;

  // State snapshots (another thread may change them at once): the bits of
  // the state table. Attached: attached and detach has not begun.
  [[nodiscard]] bool is_active() const noexcept { return test(active_bit); }
  [[nodiscard]] bool is_queued() const noexcept { return test(queued_bit); }
  [[nodiscard]] bool is_disabled() const noexcept { return test(disabled_bit); }
  [[nodiscard]] bool is_attached() const noexcept {
    const auto s = state_.load(std::memory_order_acquire);
    return (s & attached_bit) != 0 && (s & detached_bit) == 0;
  }
  [[nodiscard]] bool is_detached() const noexcept { return test(detached_bit); }

  // Effects: marks the knote disabled: later activations only mark it
  //   active (enable runs the continuation then: rule 6).
  // Complexity: O(1). Thread-safety: any thread.
  void disable() noexcept { (void)set(disabled_bit); }

  // True for a single-threaded knote (knote<F, Level, no_lock>): every
  //   operation on it must come from one thread at a time.
  [[nodiscard]] bool single_threaded() const noexcept { return single_; }

  // Effects: for owners that perform rule 6 themselves (a kqueue enabling a
  //   knote whose continuation is its own, under its own lock): set or clear
  //   a state bit without running anything.
  // Returns: whether the bit was set before.
  // Complexity: O(1). Thread-safety: any thread (one atomic operation).
  bool set_active() noexcept { return set(active_bit); }
  bool clear_active() noexcept { return clear(active_bit); }
  bool clear_disabled() noexcept { return clear(disabled_bit); }

  // Effects: claims the knote for a consumer's queue, the NetBSD patch's
  //   `if (!(kn_status & KN_QUEUED)) knote_enqueue(kn)`.
  // Returns: true when this call claimed it (it was not queued before): the
  //   caller links it; false when it is queued already (coalesced, rule 7).
  // Complexity: O(1). Thread-safety: any thread; the consumer serializes the
  //   claim with its own queue's lock.
  bool try_queue() noexcept { return !set(queued_bit); }
  // Effects: releases the consumer's claim (the knote left its queue).
  void unqueue() noexcept { (void)clear(queued_bit); }

  // Returns: a copy of the fields, read under the field lock (the way for a
  //   continuation to read data/fflags a filter may be updating).
  // Complexity: O(1). Thread-safety: any thread.
  [[nodiscard]] knote_fields snapshot() const noexcept {
    field_guard g(*this);
    return static_cast<const knote_fields&>(*this);
  }

 protected:
  static constexpr std::uint32_t active_bit = 1;
  static constexpr std::uint32_t queued_bit = 2;
  static constexpr std::uint32_t disabled_bit = 4;
  static constexpr std::uint32_t attached_bit = 8;
  static constexpr std::uint32_t detached_bit = 16;
  static constexpr std::uint32_t pin_shift = 8;
  static constexpr std::uint32_t pin_one = 1u << pin_shift;

  explicit knote_core(std::uintptr_t id, bool single = false, bool by_list = false) noexcept
      : single_(single), owner_(by_list ? by_list_bit : 0) { ident = id; }

  ~knote_core() {
    [[maybe_unused]] const auto s = state_.load(std::memory_order_acquire);
    KCONT_EXPECTS((s & attached_bit) == 0 || (s & detached_bit) != 0,
                  "knote: destroyed while attached (detach it first: rule 8)");
    KCONT_EXPECTS((s >> pin_shift) == 0,
                  "knote: destroyed while an activation runs its continuation");
  }

  [[nodiscard]] bool test(std::uint32_t bit) const noexcept {
    return (state_.load(std::memory_order_acquire) & bit) != 0;
  }
  // A single-threaded knote's write: a plain store, no read-modify-write.
  void store_plain(std::uint32_t v) noexcept { state_.store(v, std::memory_order_relaxed); }
  bool set(std::uint32_t bit) noexcept {
    if (single_) {
      const auto old = state_.load(std::memory_order_relaxed);
      if ((old & bit) == 0) store_plain(old | bit);
      return (old & bit) != 0;
    }
    return (state_.fetch_or(bit, std::memory_order_acq_rel) & bit) != 0;
  }
  bool clear(std::uint32_t bit) noexcept {
    if (single_) {
      const auto old = state_.load(std::memory_order_relaxed);
      if ((old & bit) != 0) store_plain(old & ~bit);
      return (old & bit) != 0;
    }
    return (state_.fetch_and(~bit, std::memory_order_acq_rel) & bit) != 0;
  }
  // Adds (or, wrapping, subtracts) `delta` to the state word (the pin count).
  void add(std::uint32_t delta) noexcept {
    if (single_)
      store_plain(state_.load(std::memory_order_relaxed) + delta);
    else
      state_.fetch_add(delta, std::memory_order_acq_rel);
  }

  // spin_lock: takes the field lock; list_guarded: the caller holds the
  // klist's lock (`held`: a fan-out's event; else checked, unless no_lock's).
  struct field_guard {
    const knote_core& k;
    explicit field_guard(const knote_core& kn, [[maybe_unused]] bool held = false) noexcept
        : k(kn) {
      if (k.owner_ & by_list_bit)
        KCONT_EXPECTS(held || !k.linked_ || (k.owner_ & unlocked_list_bit) ||
                          held_fanout::holds_knote(&k),
                      "knote: a list_guarded knote's fields touched without its "
                      "klist's lock (take klist::guard() first)");
      else if (!k.single_)
        k.fields_lock_.lock();
    }
    ~field_guard() { if (!k.single_ && !(k.owner_ & by_list_bit)) k.fields_lock_.unlock(); }
    field_guard(const field_guard&) = delete;
    field_guard& operator=(const field_guard&) = delete;
  };

  // How a caller that knows the knote's threading policy at compile time
  // (a fused fire function) says so, so that no `single_` is tested.
  enum class threading : std::uint8_t { runtime, single, shared };

  // The state table's activation: → active, plus a pin when Pin and not
  // disabled. Returns: true when the caller must run the continuation (and,
  // when Pin, unpin through an activation_frame). T must match single_.
  template <bool Pin = true, threading T = threading::runtime>
  bool begin_activation() noexcept {
    KCONT_EXPECTS(T == threading::runtime || single_ == (T == threading::single),
                  "knote: activation with the wrong threading policy");
    auto old = state_.load(std::memory_order_acquire);
    if constexpr (!Pin) {
      // No store when nothing changes, even single-threaded: a fan-out is
      // bound by its stores (the filter's, the cursor's, the handler's).
      if ((old & (active_bit | disabled_bit | detached_bit)) == active_bit) [[likely]]
        return true;  // active already: the state word stays as it is
    }
    for (;;) {
      if (old & detached_bit) return false;
      const bool runs = (old & disabled_bit) == 0;
      const std::uint32_t next = (old | active_bit) + (Pin && runs ? pin_one : 0);
      if (T == threading::runtime ? single_ : T == threading::single) {
        if (next != old) store_plain(next);
        return runs;
      }
      if (state_.compare_exchange_weak(old, next, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return runs;
    }
  }

  // The state table's enable. Returns: true when the caller must run the
  // continuation (it was disabled and active: pinned).
  bool begin_enable() noexcept {
    auto old = state_.load(std::memory_order_acquire);
    for (;;) {
      if (old & detached_bit) return false;
      const bool runs = (old & disabled_bit) != 0 && (old & active_bit) != 0;
      const std::uint32_t next = (old & ~disabled_bit) + (runs ? pin_one : 0);
      if (single_) {
        store_plain(next);
        return runs;
      }
      if (state_.compare_exchange_weak(old, next, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return runs;
    }
  }

  // The state table's → detached. Returns: the state before.
  std::uint32_t begin_detach() noexcept {
    if (single_) {
      const auto old = state_.load(std::memory_order_relaxed);
      store_plain(old | detached_bit);
      return old;
    }
    return state_.fetch_or(detached_bit, std::memory_order_acq_rel);
  }

  // The state table's pins → 0: returns this thread's own pins, then waits
  // for other threads' activations to leave the continuation (and, with
  // contract checks, catches a mutual detach).
  void wait_unpinned() noexcept {
    std::uint32_t mine = 0;
    for (auto* f = activation_frames; f != nullptr; f = f->prev) {
      if (f->kn == this && !f->released) {
        f->released = true;
        mine += f->pinned ? 1 : 0;
      }
    }
    if (mine != 0) add(0u - mine * pin_one);
    auto pinned = [this] {
      return (state_.load(std::memory_order_acquire) >> pin_shift) != 0;
    };
    if (!pinned()) return;
    pin_wait w{this, nullptr, nullptr};
    if constexpr (contract_checks) {
      for (auto* f = activation_frames; f != nullptr; f = f->prev)
        if (!f->released && f->kn != this) w.inside = f->kn;  // the outermost
      if (w.inside != nullptr) {
        [[maybe_unused]] bool cycle = false;
        std::lock_guard<spin_lock> g(pin_waits_lock);
        for (const pin_wait* o = pin_waits; o != nullptr; o = o->next)
          for (auto* f = activation_frames; f != nullptr; f = f->prev)
            if (!f->released && o->waits_for == f->kn && o->inside == this) cycle = true;
        w.next = pin_waits;
        pin_waits = &w;
        KCONT_EXPECTS(!cycle,
                      "knote: detach waits for an activation that waits for "
                      "this thread's: two continuations detach each other's "
                      "knote (a deadlock)");
      }
    }
    // Another thread is inside the continuation: its call is short (the
    // continuation is a callback, not a loop), so yielding beats a futex.
    while (pinned()) std::this_thread::yield();
    if (w.inside != nullptr) {
      std::lock_guard<spin_lock> g(pin_waits_lock);
      pin_wait** p = &pin_waits;
      while (*p != &w) p = &(*p)->next;
      *p = w.next;
    }
  }

  // The field lock; it, three bytes and the state word fill one 8-byte slot.
  mutable spin_lock fields_lock_;

 private:
  friend struct knote_access;
  friend struct activation_frame;

  // Set for knote<F, Level, no_lock>: plain state updates, no field lock.
  const bool single_ = false;
  // On a klist (guarded by the klist's lock): insert refuses a second link.
  bool linked_ = false;
  // under_lock_bit: its fused fire may run under a locked klist's lock (a
  // kqueue's, set before attach: "→ active, no pin"); by_list_bit:
  // list_guarded; unlocked_list_bit: that, linked on a klist<..., no_lock>.
  static constexpr std::uint8_t under_lock_bit = 1, by_list_bit = 2, unlocked_list_bit = 4;
  std::uint8_t owner_ = 0;
  // The state word (the state table above): every knote.
  std::atomic<std::uint32_t> state_{0};
  // klist links (guarded by the klist's lock): a knote is made to be linked.
  knote_core* next_ = nullptr;
  knote_core* prev_ = nullptr;
};

inline activation_frame::activation_frame(knote_core* k, bool pin) noexcept
    : kn(k), prev(activation_frames), pinned(pin) { activation_frames = this; }

inline activation_frame::~activation_frame() {
  // Released: the continuation detached this knote and may have destroyed
  // it; detach returned the pin (see the state table).
  if (!released && pinned) kn->add(0u - knote_core::pin_one);
  activation_frames = prev;
}

// kcont's own door to knote links and activation (klist.hpp, detail/fire.hpp).
struct knote_access {
  static knote_core*& next(knote_core& k) noexcept { return k.next_; }
  static knote_core*& prev(knote_core& k) noexcept { return k.prev_; }
  static bool& linked(knote_core& k) noexcept { return k.linked_; }
  // A locked klist's fan-out: the pinned activation (Pin) or its cursor's
  // unpinned one, and the pin an erase takes for that run and its return.
  template <bool Pin = true>
  static bool begin_activation(knote_core& k) noexcept { return k.begin_activation<Pin>(); }
  static void pin(knote_core& k, bool on) noexcept { k.add(on ? k.pin_one : 0u - k.pin_one); }
  // The unpinned activation of a fused fire, for a knote whose threading
  // policy is known at compile time (Single: knote<F, Level, no_lock>).
  template <bool Single>
  static bool begin_fire_activation(knote_core& k) noexcept {
    return k.begin_activation<false, Single ? knote_core::threading::single
                                            : knote_core::threading::shared>();
  }
  // The word itself: a kqueue's plain updates of its single-threaded knotes, under its lock.
  static std::atomic<std::uint32_t>& state(knote_core& k) noexcept { return k.state_; }
  static spin_lock& fields_lock(knote_core& k) noexcept { return k.fields_lock_; }
  // Whether a locked klist runs the knote's fused fire under its lock.
  static bool fires_under_lock(const knote_core& k) noexcept { return k.owner_ & k.under_lock_bit; }
  static void set_fires_under_lock(knote_core& k) noexcept { k.owner_ |= k.under_lock_bit; }
  // list_guarded (and `on` a klist<..., no_lock>: its insert and erase).
  static bool list_guarded(const knote_core& k) noexcept { return k.owner_ & k.by_list_bit; }
  static void on_unlocked_list(knote_core& k, bool on) noexcept {
    if (list_guarded(k))
      k.owner_ = static_cast<std::uint8_t>(on ? k.owner_ | k.unlocked_list_bit
                                              : k.owner_ & ~k.unlocked_list_bit);
  }
};

}  // namespace kcont::detail
