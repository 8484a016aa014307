// kcont/knote.hpp — the knote: an event subscription whose activation runs a
// pluggable continuation; and the filter concept that decides when it fires.
//
// Defines `knote_base<Hint, Level>` (the type-erased subscription a klist
// links), `knote<Filter, Level, Lock>` (a knote with its filter stored inline,
// the continuation caller-owned; Lock = spin_lock, the default, makes it
// thread-safe, Lock = no_lock single-threaded: no field lock, plain state
// updates, for no_lock klists and kqueues), `knote_closure<Filter, Fn, Env, LevelSpec>` and
// `knote_method<&C::f, Filter, LevelSpec>` (a knote that embeds its own
// continuation, after Fuchsia's WaitMethod), the `filter_for` concept, and
// `immediate_target<Level>`, a deferral target for callers that never defer.
//
// This is the NetBSD patch's `kn_kcont`: activation (docs/design.md rule 6) marks the knote
// active and, unless it is disabled, runs its continuation through
// `kcont::run`, with the knote itself as obj; enabling an active knote runs it
// then. What the continuation does is up to it: enqueue the knote on a kqueue
// (kcont/kqueue.hpp, which this header never includes), defer work to
// softnet, wake a thread. Detaching a knote (rule 8) waits for activations in
// flight on other threads, lets a continuation detach its own knote,
// cancels a continuation deferred on a dispatcher's level queue and leaves
// it clean (no saved deferral) for reuse.
//
// Compared with an observer list of std::function: nothing is allocated, a
// subscription is a caller-owned node, and a subscriber may unsubscribe itself
// (or another) from inside its callback while the fan-out runs (klist.hpp).
//
// Each concrete knote type also stores a fused fire function in the knote
// (knote_base::fire_fn): filter, activation and, when it may run at once,
// the continuation, in one call, which a klist<..., no_lock> fan-out makes
// per knote. knote_closure and knote_method know their continuation's type
// and call its function directly: one indirect call per subscriber.
//
// Usage:
//   struct link_filter {               // fires on hints with bit 1 set
//     int attach(kcont::knote_base<long>&) { return 0; }
//     void detach(kcont::knote_base<long>&) {}
//     bool event(kcont::knote_base<long>& kn, long hint) {
//       if (hint & 1) ++kn.data;
//       return kn.data != 0;
//     }
//   };
//   kcont::kc on{[](kcont::knote_base<long>* kn, int& seen, kcont::knote_cause) {
//                  seen += static_cast<int>(kn->data); },
//                0, kcont::bsd_level::softnet};
//   kcont::knote<link_filter> kn{link_filter{}, on, /*ident=*/3};
//   kn.attach();
//   kn.activate(dispatcher, kcont::bsd_level::softserial);   // deferred to softnet
//   ...
//   kn.detach(dispatcher);            // cancels the deferred run if still queued
#pragma once

#include <atomic>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

// Why a knote's continuation runs: an event activated it (rule 6, first
// half), or it was enabled while active (rule 6, second half).
enum class knote_cause : std::uint8_t { event, enable };

// What a knote's fused fire function (knote_base::fire_fn) did with one
// event of a single-threaded fan-out (klist<Hint, Level, no_lock>::fire).
enum class fire_outcome : std::uint8_t {
  skipped,    // not activated: the filter said no, or the knote is detached,
              // or it is disabled (then marked active, nothing run: rule 6)
  ran,        // activated and its continuation called: the knote may be
              // gone (detached and destroyed by its continuation, rule 8)
  needs_run,  // activated, continuation not called (it must be deferred,
              // is queued, or carries a deferral): the caller runs it
              // through kcont::run with its deferral target
};

// A change or a report as a filter's `touch` sees it: the owner's flags (for
// a kqueue, its EV_* bits; opaque here), the filter flags and the data.
struct knote_change {
  std::uint16_t flags = 0;
  std::uint32_t fflags = 0;
  std::int64_t data = 0;
};

// What `touch` is asked to do: apply a change to the knote's saved
// parameters (BSD EVENT_REGISTER), or fill a report from the knote's state
// (EVENT_PROCESS) and reset what the report consumes.
enum class touch_op : std::uint8_t { change, process };

// The per-knote fields of a BSD knote, read and written by filters. A filter
// touches them only inside attach/event/touch, which run with the knote's
// field lock held; anyone else reads them through knote_core::snapshot().
struct knote_fields {
  std::uintptr_t ident = 0;   // what the knote watches (fd, interface index...)
  std::uint16_t flags = 0;    // the owner's flags (kqueue: EV_*), opaque here
  std::uint32_t sfflags = 0;  // filter flags saved from the registration
  std::int64_t sdata = 0;     // filter data saved from the registration
  std::uint32_t fflags = 0;   // filter flags to report
  std::int64_t data = 0;      // filter data to report
};

class knote_core;

template <class Hint, level_set Level, lock_policy Lock>
class klist;

namespace detail {

struct knote_access;

// One activation in progress on this thread, on the stack of the activating
// call. A continuation that detaches its own knote marks its frame released,
// so the activation never touches the (possibly destroyed) knote afterwards.
struct activation_frame {
  knote_core* kn;
  activation_frame* prev;
  bool released = false;
  explicit activation_frame(knote_core* k) noexcept;
  ~activation_frame();
  activation_frame(const activation_frame&) = delete;
  activation_frame& operator=(const activation_frame&) = delete;
};

inline thread_local activation_frame* activation_frames = nullptr;

}  // namespace detail

// The state every knote has, whatever its hint and level: the BSD fields, the
// state word (active / queued / disabled / attached / detached, plus a count
// of activations in flight, packed in one atomic word so that each rule-6
// transition is one compare-and-swap) and the field lock. Not constructible
// alone: derive through knote_base. Owners that keep knotes of several hint
// types in one container (a kqueue) reach their state through this class.
//
// Lifetime contract: as knote_base (it is one).
// Thread-safety: the state-word operations are atomic and may be called from
// any thread; the fields are guarded by the field lock. For a single-threaded
// knote (single_threaded(), made by knote<F, Level, no_lock>) the field lock
// is a no-op and the state word is written with plain loads and stores:
// every operation on it from one thread at a time.
// Usage:
//   kcont::knote_core& k = some_knote;
//   if (k.is_active() && !k.is_disabled() && k.try_queue()) my_queue.link(k);
class knote_core : public knote_fields {
 public:
  knote_core(const knote_core&) = delete;
  knote_core& operator=(const knote_core&) = delete;

  // State snapshots (another thread may change them at once).
  // Active: an event fired and no consumer has acknowledged it yet.
  [[nodiscard]] bool is_active() const noexcept { return test(active_bit); }
  // Queued: claimed by a consumer (a kqueue's pending list) with try_queue.
  [[nodiscard]] bool is_queued() const noexcept { return test(queued_bit); }
  // Disabled: activation marks it active but does not run the continuation.
  [[nodiscard]] bool is_disabled() const noexcept { return test(disabled_bit); }
  // Attached: the filter's attach succeeded and detach has not begun.
  [[nodiscard]] bool is_attached() const noexcept {
    const auto s = state_.load(std::memory_order_acquire);
    return (s & attached_bit) != 0 && (s & detached_bit) == 0;
  }
  // Detached: detach has begun; no new activation runs the continuation.
  [[nodiscard]] bool is_detached() const noexcept { return test(detached_bit); }

  // Effects: marks the knote disabled: later activations only mark it
  //   active (enable runs the continuation then: rule 6).
  // Complexity: O(1). Thread-safety: any thread.
  void disable() noexcept { (void)set(disabled_bit); }

  // True for a single-threaded knote (knote<F, Level, no_lock>): its field
  //   lock is a no-op and its state word is updated with plain loads and
  //   stores, so every operation on it must come from one thread at a time.
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

  explicit knote_core(std::uintptr_t id, bool single = false) noexcept : single_(single) {
    ident = id;
  }

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
  // A single-threaded knote writes its state word with a plain store (no
  // read-modify-write): nothing else touches it meanwhile.
  void store_plain(std::uint32_t v) noexcept {
    state_.store(v, std::memory_order_relaxed);
  }
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

  // The field lock, taken only by a thread-safe knote.
  struct field_guard {
    const knote_core& k;
    explicit field_guard(const knote_core& kn) noexcept : k(kn) {
      if (!k.single_) k.fields_lock_.lock();
    }
    ~field_guard() {
      if (!k.single_) k.fields_lock_.unlock();
    }
    field_guard(const field_guard&) = delete;
    field_guard& operator=(const field_guard&) = delete;
  };

  // How a caller that knows the knote's threading policy at compile time
  // (a concrete knote's fused fire function) tells the state-word code, so
  // that it tests no `single_` flag at run time.
  enum class threading : std::uint8_t { runtime, single, shared };

  // Rule 6, first half: marks the knote active and, unless it is disabled or
  // detached, pins it (one more activation in flight) so that a detach on
  // another thread waits for the continuation to return.
  // Returns: true when the caller must run the continuation (and unpin).
  // Pin = false: the same without the pin, for a caller that no detach can
  // race with (a klist with no_lock: detaching erases from that list, so it
  // happens on the firing thread or is serialized with the fan-out by the
  // owner); an active, enabled knote then needs no write at all.
  // T: the knote's policy when the caller knows it (it must match single_).
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

  // Rule 6, second half: clears disabled; pins when the knote was disabled
  // and active. Returns: true when the caller must run the continuation.
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

  // Rule 8: marks the knote detached so that no new activation runs its
  // continuation. Returns: the state before.
  std::uint32_t begin_detach() noexcept {
    if (single_) {
      const auto old = state_.load(std::memory_order_relaxed);
      store_plain(old | detached_bit);
      return old;
    }
    return state_.fetch_or(detached_bit, std::memory_order_acq_rel);
  }

  // Rule 8: releases the pins this thread's own activations hold (a
  // continuation detaching its own knote), then waits until activations on
  // other threads have left the continuation. After it returns nothing runs
  // the continuation through this knote, except a deferral already queued.
  void wait_unpinned() noexcept {
    std::uint32_t mine = 0;
    for (auto* f = detail::activation_frames; f != nullptr; f = f->prev) {
      if (f->kn == this && !f->released) {
        f->released = true;
        ++mine;
      }
    }
    if (mine != 0) add(0u - mine * pin_one);
    auto pinned = [this] {
      return (state_.load(std::memory_order_acquire) >> pin_shift) != 0;
    };
    if (!pinned()) return;
    // With contract checks on, a thread inside another knote's activation
    // says so in this knote (pin_waiter_) before it waits, and aborts when a
    // thread inside this knote's activation waits for that knote: two
    // continuations detaching each other's knote would wait forever. seq_cst:
    // of two threads that begin at once, at least one sees the other.
    knote_core* inside = nullptr;
    if constexpr (contract_checks) {
      for (auto* f = detail::activation_frames; f != nullptr; f = f->prev)
        if (!f->released && f->kn != this) inside = f->kn;  // the outermost
      if (inside != nullptr) {
        pin_waiter_.store(inside, std::memory_order_seq_cst);
        [[maybe_unused]] bool cycle = false;
        for (auto* f = detail::activation_frames; f != nullptr; f = f->prev)
          if (!f->released && f->kn->pin_waiter_.load(std::memory_order_seq_cst) == this)
            cycle = true;
        KCONT_EXPECTS(!cycle,
                      "knote: detach waits for an activation that waits for "
                      "this thread's: two continuations detach each other's "
                      "knote (a deadlock)");
      }
    }
    // Another thread is inside the continuation: its call is short (the
    // continuation is a callback, not a loop), so yielding beats a futex.
    while (pinned()) std::this_thread::yield();
    if (inside != nullptr) pin_waiter_.store(nullptr, std::memory_order_relaxed);
  }

  mutable spin_lock fields_lock_;

 private:
  friend struct detail::knote_access;
  friend struct detail::activation_frame;

  std::atomic<std::uint32_t> state_{0};
  // The knote whose activation the thread waiting for this one's pins is in
  // (wait_unpinned, contract checks only).
  std::atomic<const knote_core*> pin_waiter_{nullptr};
  // Set for knote<F, Level, no_lock>: plain state updates, no field lock.
  const bool single_ = false;
  // klist links (guarded by the klist's lock).
  knote_core* next_ = nullptr;
  knote_core* prev_ = nullptr;
  bool linked_ = false;
};

namespace detail {

inline activation_frame::activation_frame(knote_core* k) noexcept
    : kn(k), prev(activation_frames) {
  activation_frames = this;
}

inline activation_frame::~activation_frame() {
  // `released` means the continuation detached this knote and may have
  // destroyed it: the pin was returned by detach, so do not touch it.
  if (!released)
    kn->add(0u - knote_core::pin_one);
  activation_frames = prev;
}

// kcont's own door to knote links and activation (klist.hpp).
struct knote_access {
  static knote_core*& next(knote_core& k) noexcept { return k.next_; }
  static knote_core*& prev(knote_core& k) noexcept { return k.prev_; }
  static bool& linked(knote_core& k) noexcept { return k.linked_; }
  static bool begin_activation(knote_core& k) noexcept {
    return k.begin_activation();
  }
  static bool begin_activation_unpinned(knote_core& k) noexcept {
    return k.begin_activation<false>();
  }
};

template <class F>
struct filter_hint {
  using type = long;
};
template <class F>
  requires requires { typename F::hint_type; }
struct filter_hint<F> {
  using type = typename F::hint_type;
};

}  // namespace detail

// The hint type a filter's `event` takes: F::hint_type, or long (BSD's
// `long hint`) when F does not say.
template <class F>
using filter_hint_t = typename detail::filter_hint<F>::type;

// The parts of the filter concept, one per member, so that a failed check
// names the missing member.
template <class F, class K>
concept filter_has_attach = requires(F& f, K& kn) {
  { f.attach(kn) } -> std::convertible_to<int>;
};
template <class F, class K>
concept filter_has_detach = requires(F& f, K& kn) { f.detach(kn); };
template <class F, class K>
concept filter_has_event =
    requires(F& f, K& kn, const typename K::hint_type& h) {
      { f.event(kn, h) } -> std::convertible_to<bool>;
    };
template <class F, class K>
concept filter_has_touch =
    requires(F& f, K& kn, knote_change& c, touch_op op) { f.touch(kn, c, op); };

// A filter for knotes of type K (a knote_base<Hint, Level>), the C++ form of
// BSD's filterops:
//   int  attach(K& kn)          start watching (link kn on a klist...); 0 or
//                               an errno value, reported by kqueue's EV_ERROR;
//   void detach(K& kn)          stop watching (unlink kn); never fails;
//   bool event(K& kn, Hint h)   an event with hint h happened: update kn's
//                               fields and say whether kn fires. A kqueue scan
//                               also calls it with Hint{} to ask "does the
//                               condition still hold?" (BSD's f_event(kn, 0));
//   void touch(K& kn, knote_change& c, touch_op op)   optional: apply a
//                               change (op == change) or fill a report
//                               (op == process); without it the owner saves
//                               fflags/data on a change and reports kn's
//                               fflags/data, resetting them on EV_CLEAR.
// event/touch run under the knote's field lock (a spin lock; a no-op for a
// single-threaded knote, which one thread drives): keep them
// short, never block, never activate, attach or detach knotes inside them.
// attach/detach run without it (they take the source's klist lock); attach
// may write the fields because nobody else sees the knote before it links it.
template <class F, class K>
concept filter_for =
    std::is_object_v<F> && std::default_initializable<typename K::hint_type> &&
    filter_has_attach<F, K> && filter_has_detach<F, K> && filter_has_event<F, K>;

// A deferral target for activations that must never defer: with `current` at
// the lowest level every continuation runs at once (rule 1), so nothing is
// ever pushed here. kqueue-owned knotes (immediate continuations) use it.
//
// Lifetime contract: stateless; make one where needed.
// Thread-safety: any thread.
// Usage:
//   kcont::immediate_target<> t;
//   source.list.fire(t, hint, t.lowest);   // every continuation runs now
template <level_set Level = bsd_level>
struct immediate_target {
  using level_type = Level;
  static constexpr bool concurrent = true;
  // The level at which running never defers.
  static constexpr Level lowest = level_at<Level>(0);

  template <class BeforeLink>
  push_result push_deferred(kc_hook&, BeforeLink&&) noexcept {
    KCONT_EXPECTS(false,
                  "immediate_target: a continuation was deferred; run it with "
                  "current = immediate_target::lowest or use a dispatcher");
    return push_result::already_queued;
  }
  bool cancel(kc_hook&) noexcept { return false; }
};

// The type-erased knote a klist links: fields, state, the filter's operations
// and a reference to the continuation, which is called as
//   fn(knote_base* kn, Env& env, knote_cause cause)
// at its own level (rule 1) through kcont::run.
//
// Lifetime contract: the owner keeps the knote and its continuation alive
// from attach() until detach() returns; then it may destroy both, even from
// inside the continuation. Destroying an attached knote is a contract
// violation (debug builds abort). Immovable: klists link it in place.
// Thread-safety: activate, enable, disable and detach may race each other
// from any thread (single-threaded knotes, knote<F, Level, no_lock>: all
// operations from one thread at a time; see knote). A continuation deferred to a dispatcher level is cancelled
// by detach(d); with a dispatcher that runs levels on its own threads
// (thread_dispatcher), detach(d) also waits for a run a runner has already
// popped. With a manual_dispatcher drained by another thread of yours, the
// owner must synchronize with that drain before destroying the knote.
template <class Hint = long, level_set Level = bsd_level>
class knote_base : public knote_core {
 public:
  using hint_type = Hint;
  using level_type = Level;
  using continuation_type = kc_base<knote_base*, knote_cause, Level>;
  // A knote's fused fire function: the filter's event with the hint, the
  //   unpinned activation (begin_activation<false>) and, when the
  //   continuation may run at `current` without a deferral target, the
  //   continuation, in one call through one pointer stored in the knote.
  //   Each concrete knote type supplies its own, with its filter, its
  //   threading policy and (knote_closure) its continuation statically
  //   typed. Only for fan-outs no detach on another thread can race with.
  //   The hint comes by value when it is small and trivially copyable (a
  //   long: in a register, not stored for the callee to load back).
  using hint_arg = std::conditional_t<std::is_trivially_copyable_v<Hint> &&
                                          sizeof(Hint) <= 2 * sizeof(void*),
                                      Hint, const Hint&>;
  using fire_fn = fire_outcome (*)(knote_base&, hint_arg, Level current);

  // The continuation activation runs.
  [[nodiscard]] continuation_type& continuation() const noexcept { return *kc_; }

  // Effects: starts the filter watching (the filter's attach); on success
  //   the knote is attached and a previous detach is forgotten.
  // Returns: 0, or the filter's errno value (then not attached); EEXIST,
  //   with nothing changed and the filter not called, when the knote is
  //   attached already (a second attach would link it twice on its source).
  // Precondition: not attached (debug builds abort; release builds refuse
  //   as above); no activation in flight.
  // Complexity: the filter's attach. Thread-safety: one thread per knote;
  //   activations of other knotes may run meanwhile.
  int attach() {
    const bool attached = is_attached();
    KCONT_EXPECTS(!attached, "knote: attach on an attached knote");
    if (attached) return EEXIST;
    (void)clear(detached_bit);
    (void)set(attached_bit);
    // Not under the field lock: attach links the knote on its source's klist
    // (taking that list's lock), and fire takes the list lock, then the field
    // lock; holding the field lock here would invert that order.
    const int err = ops_->attach(*this);
    if (err != 0) (void)clear(attached_bit);
    return err;
  }

  // Effects: rule 6: marks the knote active and, unless it is disabled or
  //   detached, runs its continuation with (this, knote_cause::event) through
  //   kcont::run at `current` (at once, or deferred to its level).
  // Returns: ran, deferred, or refused (disabled, detached, or the
  //   continuation is queued already: the pending run absorbs this one).
  // Complexity: O(1); no allocation. Thread-safety: any thread.
  // Reentrancy: the continuation may detach (even destroy) this knote.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  run_result activate(D& d, Level current) {
    if (!begin_activation()) return run_result::refused;
    return run_pinned(d, current, knote_cause::event);
  }

  // Effects: rule 6: clears disabled; when the knote was disabled and is
  //   active, runs its continuation then (cause knote_cause::enable).
  // Returns: as activate; refused when nothing had to run.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  run_result enable(D& d, Level current) {
    if (!begin_enable()) return run_result::refused;
    return run_pinned(d, current, knote_cause::enable);
  }

  // Effects: runs the filter's event with `hint` under the field lock.
  // Returns: whether the knote fires (the caller then activates it).
  // Thread-safety: any thread (the field lock serializes the filter).
  bool filter_event(const Hint& hint) {
    field_guard g(*this);
    return ops_->event(*this, hint);
  }

  // True when the filter has its own touch.
  [[nodiscard]] bool has_touch() const noexcept { return ops_->touch != nullptr; }

  // Effects: applies a change to the saved parameters under the field lock:
  //   the filter's touch, or by default sfflags = c.fflags, sdata = c.data.
  // Thread-safety: any thread.
  void filter_change(knote_change& c) {
    field_guard g(*this);
    if (ops_->touch != nullptr)
      ops_->touch(*this, c, touch_op::change);
    else {
      sfflags = c.fflags;
      sdata = c.data;
    }
  }

  // Effects: fills a report under the field lock: the filter's touch, or by
  //   default c.fflags = fflags, c.data = data, both reset when `clear`.
  // Returns: the report; c.flags carries `owner_flags` in.
  // Thread-safety: any thread.
  knote_change filter_report(std::uint16_t owner_flags, bool clear) {
    knote_change c{owner_flags, 0, 0};
    field_guard g(*this);
    if (ops_->touch != nullptr) {
      ops_->touch(*this, c, touch_op::process);
    } else {
      c.fflags = fflags;
      c.data = data;
      if (clear) {
        fflags = 0;
        data = 0;
      }
    }
    return c;
  }

  // Effects: rule 8: stops activations from running the continuation,
  //   detaches the filter, waits for activations in flight on other threads
  //   (not for the calling thread's own: a continuation may detach its own
  //   knote), then cancels the continuation if it is deferred on `d`. When
  //   `d` runs continuations on threads of its own (it has cancel_sync, as
  //   thread_dispatcher does), it also waits for a run of the continuation
  //   that a runner has already popped or is running, so nothing runs on the
  //   knote once this returns and the owner may free it. The continuation is
  //   left clean: neither queued nor carrying a deferral (its saved obj, this
  //   knote, is dropped), so it may serve another knote at once.
  // Returns: true when this call detached it (false: detached already).
  // Complexity: O(1) plus the waits when the continuation is not queued
  //   (with a thread_dispatcher, a look at each runner thread's slot); when
  //   it is queued, plus the dispatcher's cancel: O(length of its level
  //   queue), a walk under that queue's lock.
  // Thread-safety: any thread. Not from a runner nested inside this knote's
  //   own continuation (see thread_dispatcher::cancel_sync).
  // Contract: two continuations that detach each other's knote while both
  //   run (on two of a thread_dispatcher's threads, or inside activations
  //   on two threads of yours) would wait for each other forever; debug
  //   builds abort instead, naming it. Longer cycles (through the
  //   activations of several knotes nested on one thread) may go unseen:
  //   detach another knote from inside a continuation only when that
  //   knote's continuation cannot be detaching yours.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level> &&
             requires(D& d, kc_hook& h) { d.cancel(h); }
  bool detach(D& d) {
    const bool did = detach_filter();
    if constexpr (requires(D& dd, kc_hook& h) { dd.cancel_sync(h); }) {
      (void)d.cancel_sync(*kc_);
      // The run cancel_sync waited for may have deferred it again.
      if (kc_->is_queued()) (void)d.cancel_sync(*kc_);
    } else if (kc_->is_queued()) {
      (void)d.cancel(*kc_);
    }
    detail::hook_access::drop_saved_unless_queued(*kc_);
    return did;
  }

  // Effects: as detach(d), for a knote whose continuation is never deferred
  //   on a dispatcher (immediate, or always run at its level).
  // Precondition: the continuation is not queued.
  // Thread-safety: any thread.
  bool detach() {
    const bool did = detach_filter();
    KCONT_EXPECTS(!kc_->is_queued(),
                  "knote: detach() while its continuation is deferred; use "
                  "detach(dispatcher) to cancel it (rule 8)");
    detail::hook_access::drop_saved_unless_queued(*kc_);
    return did;
  }

 protected:
  // The filter's operations, one table per filter type (BSD's filterops).
  struct ops_table {
    int (*attach)(knote_base&);
    void (*detach)(knote_base&);
    bool (*event)(knote_base&, const Hint&);
    void (*touch)(knote_base&, knote_change&, touch_op);
  };

  // `fire`: the fused fire function (fire_fn); the default goes through
  // the ops table and the type-erased continuation.
  knote_base(const ops_table& ops, continuation_type& k, std::uintptr_t id,
             bool single = false, fire_fn fire = &fire_erased) noexcept
      : knote_core(id, single), ops_(&ops), kc_(&k), fire_(fire) {}
  ~knote_base() = default;

  // The fused fire function of a knote type that knows nothing more than
  // knote_base does: the same steps as the unfused fan-out.
  static fire_outcome fire_erased(knote_base& kn, hint_arg hint, Level current) {
    if (!kn.filter_event(hint) || !kn.template begin_activation<false>())
      return fire_outcome::skipped;
    knote_base* const obj = &kn;
    return detail::try_run_now(*kn.kc_, obj, knote_cause::event, current)
               ? fire_outcome::ran
               : fire_outcome::needs_run;
  }

 private:
  template <class, level_set, lock_policy>
  friend class klist;

  template <class D>
  run_result run_pinned(D& d, Level current, knote_cause cause) {
    detail::activation_frame frame(this);  // unpins on exit, unless released
    return kcont::run(d, *kc_, this, cause, current);
    // After run returns the knote may be gone (detached and destroyed by its
    // own continuation): only the frame, on this stack, is touched.
  }

  // One event of a klist<..., no_lock> fan-out, through the fused fire
  // function (one indirect call per knote where the unfused steps made up to
  // three). After `ran` the knote may be gone.
  fire_outcome fire_unpinned(hint_arg hint, Level current) {
    return fire_(*this, hint, current);
  }

  // For a klist with no_lock (see begin_activation<false>): no pin, no
  // activation frame. A continuation that detaches (and destroys) its own
  // knote is still safe: nothing here touches the knote after run returns,
  // and detach finds no pin of this activation to wait for.
  template <class D>
  run_result run_unpinned(D& d, Level current, knote_cause cause) {
    return kcont::run(d, *kc_, this, cause, current);
  }

  bool detach_filter() {
    const auto old = begin_detach();
    if (old & detached_bit) return false;
    if (old & attached_bit) {
      ops_->detach(*this);
      (void)clear(attached_bit);
    }
    wait_unpinned();
    return true;
  }

  const ops_table* ops_;
  continuation_type* kc_;
  // In the knote, not in ops_table: the fan-out loads it straight from the
  // knote it already holds, one dependent load less per subscriber.
  fire_fn fire_;
};

// A knote with its filter F stored inline and a caller-owned continuation.
// F is the per-knote filter state (BSD's kn_hook / kn_ptr and friends).
//
// Lock is the threading policy: spin_lock (the default) makes the thread-safe
// knote described at knote_base; no_lock makes a single-threaded knote, for a
// klist<Hint, Level, no_lock> or a kqueue<..., no_lock> (whose knotes are
// single-threaded): its field lock is a no-op and its state word is written
// with plain loads and stores, no atomic read-modify-write. The type filters
// and klists see is the same knote_base<Hint, Level> for both (the policy is
// a flag fixed at construction, knote_core::single_threaded()).
//
// Lifetime contract: as knote_base; the continuation must outlive the knote's
// attachment. Thread-safety: as knote_base with spin_lock. With no_lock:
// every operation on the knote (attach, fire of its klist, activate, enable,
// disable, detach, snapshot, the kqueue's or caller's queue claim) from one
// thread at a time, the same thread or threads synchronized by the owner
// (never a klist with a real lock fired from several threads).
// Usage:
//   kcont::kc k{[](kcont::knote_base<long>* kn, int& n, kcont::knote_cause) { ++n; },
//               0, kcont::at<kcont::bsd_level::immediate>};
//   kcont::knote<my_filter> kn{my_filter{&source}, k};
//   kcont::knote<my_filter, kcont::bsd_level, kcont::no_lock> fast{my_filter{&src}, k};
template <class F, level_set Level = bsd_level, lock_policy Lock = spin_lock>
class knote : public knote_base<filter_hint_t<F>, Level> {
  static_assert(std::is_same_v<Lock, spin_lock> || std::is_same_v<Lock, no_lock>,
                "kcont::knote: the threading policy is spin_lock (thread-safe) "
                "or no_lock (single-threaded)");

 public:
  using base_type = knote_base<filter_hint_t<F>, Level>;
  using filter_type = F;
  using lock_type = Lock;
  // True for the single-threaded policy (no_lock).
  static constexpr bool single_thread = std::is_same_v<Lock, no_lock>;
  using typename base_type::continuation_type;
  using typename base_type::hint_type;

  static_assert(std::is_object_v<F>, "kcont::knote: the filter must be an object type");
  static_assert(filter_has_attach<F, base_type>,
                "kcont::knote: the filter has no `int attach(knote_base<Hint, "
                "Level>&)` (return 0 or an errno value)");
  static_assert(filter_has_detach<F, base_type>,
                "kcont::knote: the filter has no `void detach(knote_base<Hint, "
                "Level>&)`");
  static_assert(filter_has_event<F, base_type>,
                "kcont::knote: the filter has no `bool event(knote_base<Hint, "
                "Level>&, Hint)`: it decides whether an event fires the knote");
  static_assert(std::default_initializable<hint_type>,
                "kcont::knote: the hint type must be default-constructible "
                "(Hint{} is the scan-time re-check)");

  // Effects: stores the filter; the knote is idle (not attached). `id`
  //   (stored in ident) is what the filter watches (its meaning is the
  //   filter's).
  knote(F filter, continuation_type& k, std::uintptr_t id = 0)
      : base_type(ops, k, id, single_thread, &fire_plain),
        filter_(std::move(filter)) {}

  // A continuation of another signature: rejected with the reason, rather
  // than with "no matching constructor".
  template <class K>
    requires(!std::is_convertible_v<K&, continuation_type&>)
  knote(F, K&, std::uintptr_t = 0) : base_type(ops, *static_cast<continuation_type*>(nullptr), 0) {
    static_assert(std::is_convertible_v<K&, continuation_type&>,
                  "kcont::knote: the continuation must take the knote: its "
                  "function is fn(knote_base<Hint, Level>*, Env&, "
                  "knote_cause), at a level of the knote's level set");
  }

  // The filter (its state is guarded by the field lock while attached: read
  //   it from another thread only when detached or with the owner's lock).
  [[nodiscard]] F& filter() noexcept { return filter_; }

 protected:
  using typename base_type::fire_fn;

  // For a derived knote that knows its continuation's type (knote_closure):
  // `fire` is its own fused fire function, built on event_and_activate.
  knote(F filter, continuation_type& k, std::uintptr_t id, fire_fn fire)
      : base_type(ops, k, id, single_thread, fire), filter_(std::move(filter)) {}

  // The first two steps of the fused fire, statically typed: the filter's
  // event (under the field lock only for a thread-safe knote, decided here
  // at compile time) and the unpinned activation (rule 6: a detached or
  // disabled knote runs nothing; a disabled one is still marked active).
  // Returns: whether the continuation must run.
  static bool event_and_activate(knote& self, const hint_type& h) {
    constexpr auto policy = single_thread ? base_type::threading::single
                                          : base_type::threading::shared;
    bool fires;
    if constexpr (single_thread) {
      fires = static_cast<bool>(self.filter_.event(static_cast<base_type&>(self), h));
    } else {
      std::lock_guard<spin_lock> g(self.fields_lock_);
      fires = static_cast<bool>(self.filter_.event(static_cast<base_type&>(self), h));
    }
    return fires && self.template begin_activation<false, policy>();
  }

 private:
  // The fused fire of a knote with a type-erased continuation: filter and
  // activation inline, the continuation through its trampoline.
  static fire_outcome fire_plain(base_type& b, typename base_type::hint_arg h,
                                 typename base_type::level_type current) {
    if (!event_and_activate(static_cast<knote&>(b), h)) return fire_outcome::skipped;
    base_type* const obj = &b;
    return detail::try_run_now(b.continuation(), obj, knote_cause::event, current)
               ? fire_outcome::ran
               : fire_outcome::needs_run;
  }

  static knote& self(base_type& b) noexcept { return static_cast<knote&>(b); }
  static int do_attach(base_type& b) {
    return static_cast<int>(self(b).filter_.attach(b));
  }
  static void do_detach(base_type& b) { self(b).filter_.detach(b); }
  static bool do_event(base_type& b, const hint_type& h) {
    return static_cast<bool>(self(b).filter_.event(b, h));
  }
  static void do_touch(base_type& b, knote_change& c, touch_op op) {
    if constexpr (filter_has_touch<F, base_type>) self(b).filter_.touch(b, c, op);
  }
  static constexpr typename base_type::ops_table ops{
      &do_attach, &do_detach, &do_event,
      filter_has_touch<F, base_type> ? &do_touch : nullptr};

  [[no_unique_address]] F filter_;
};

namespace detail {
// Holds a knote_closure's continuation in a base class, so it is constructed
// before the knote that refers to it.
template <class K>
struct closure_holder {
  K k_;
};

struct not_a_handler {};
// The class of a handler &C::f (on the pointer's type: see method_fn).
template <class MP>
struct method_class_of {
  static_assert(!std::is_same_v<MP, MP>,
                "kcont::knote_method: M is not a handler: it is &C::f with "
                "void C::f(kcont::knote_base<Hint, Level>*, "
                "kcont::knote_cause) or void C::f()");
  using type = not_a_handler;
};
template <class R, class C, class... A>
struct method_class_of<R (C::*)(A...)> {
  using type = C;
};
template <class R, class C, class... A>
struct method_class_of<R (C::*)(A...) noexcept> {
  using type = C;
};
template <auto M>
struct method_class : method_class_of<decltype(M)> {};

// Stands in for a handler that failed its check, so that the one message
// above is the only error (and no cascade through kc follows it).
struct rejected_handler {
  template <class... A>
  void operator()(A&&...) const noexcept {}
};

// knote_method's continuation function: method_fn<M>, checked against the
// knote `Kn` it serves before anything is built from it.
template <auto M, class Kn>
struct knote_method_fn {
  static constexpr bool fits =
      std::is_invocable_v<const method_fn<M>&, Kn*,
                          typename method_class<M>::type*&, knote_cause>;
  using type = std::conditional_t<fits, method_fn<M>, rejected_handler>;
  static_assert(fits || std::is_same_v<typename method_class<M>::type, not_a_handler>,
                "kcont::knote_method: the member function does not take this "
                "knote: its first parameter must be kcont::knote_base<Hint, "
                "Level>* with the filter's Hint and LevelSpec's level set "
                "(and its second kcont::knote_cause), or it takes none");
};
}  // namespace detail

// A knote that embeds its continuation kc<Fn, Env, LevelSpec>, so one object
// is the whole subscription (Fuchsia's Wait with a closure). Fn is called as
// fn(knote_base<Hint, Level>*, Env&, knote_cause).
//
// Lifetime contract: as knote_base. The function may destroy the whole
// knote_closure after detaching it. Thread-safety: as knote<F, Level, Lock>
// (Lock = no_lock: single-threaded).
// Its fused fire function (knote_base::fire_fn) calls Fn directly: a
// klist<..., no_lock> fan-out costs one indirect call per knote_closure.
// At a compile-time immediate level that call is not preceded by any test
// of the continuation's state, as kcont::run's own overload for such a
// continuation: never put it on a queue (debug builds check).
// Usage:
//   kcont::knote_closure sub{my_filter{&src}, [](auto* kn, int& n, auto) {...},
//                            0, kcont::at<kcont::bsd_level::immediate>};
template <class F, class Fn, class Env, level_spec LevelSpec, lock_policy Lock = spin_lock>
class knote_closure
    : private detail::closure_holder<
          kc<Fn, Env, LevelSpec, knote_base<filter_hint_t<F>, level_set_of_t<LevelSpec>>*,
             knote_cause>>,
      public knote<F, level_set_of_t<LevelSpec>, Lock> {
  using holder = detail::closure_holder<
      kc<Fn, Env, LevelSpec, knote_base<filter_hint_t<F>, level_set_of_t<LevelSpec>>*,
         knote_cause>>;

 public:
  using knote_type = knote<F, level_set_of_t<LevelSpec>, Lock>;

  // Effects: builds the continuation from fn/env/level and the knote around
  //   it; the knote is idle (not attached).
  knote_closure(F filter, Fn fn, Env env, LevelSpec level, std::uintptr_t id = 0)
      : holder{{std::move(fn), std::move(env), level}},
        knote_type(std::move(filter), holder::k_, id, &fire_closure) {}

  // A level other than the one fixed in the type: rejected with the reason.
  template <level_spec Other>
    requires(is_static_level_v<LevelSpec> && !std::same_as<Other, LevelSpec>)
  knote_closure(F filter, Fn fn, Env env, Other, std::uintptr_t id = 0)
      : knote_closure(std::move(filter), std::move(fn), std::move(env), LevelSpec{}, id) {
    static_assert(std::same_as<Other, LevelSpec>,
                  "kcont::knote_closure: the level argument differs from the "
                  "level in the type: LevelSpec static_level<L> takes "
                  "kcont::at<L>, the same L");
  }

  // The continuation's environment.
  [[nodiscard]] Env& env() noexcept { return holder::k_.env(); }

 private:
  using base_type = typename knote_type::base_type;

  // The fused fire with the continuation's type known: its function is
  // called directly (no trampoline; at a compile-time level no level test),
  // so a fan-out costs one indirect call per subscriber, as a list of
  // {next, fn, data} nodes does.
  static fire_outcome fire_closure(base_type& b, typename base_type::hint_arg h,
                                   typename base_type::level_type current) {
    auto& self = static_cast<knote_closure&>(b);
    if (!knote_type::event_and_activate(self, h)) return fire_outcome::skipped;
    base_type* const obj = &b;
    return detail::try_run_now(self.holder::k_, obj, knote_cause::event, current)
               ? fire_outcome::ran
               : fire_outcome::needs_run;
    // After `ran` the closure may be gone (rule 8): nothing touches it.
  }
};

// A knote bound to a member function `void C::on_event(knote_base<Hint,
// Level>*, knote_cause)`, with the object pointer as environment (Fuchsia's
// WaitMethod<Class, &Class::Method>). Prefer it to a lambda for fixed member
// handlers: the handler is named in the type and only `this` is stored.
// Usage:
//   struct router {
//     void on_link(kcont::knote_base<long>* kn, kcont::knote_cause);
//     kcont::knote_method<&router::on_link, link_filter,
//                         kcont::static_level<kcont::bsd_level::softnet>>
//         sub{link_filter{}, this, kcont::at<kcont::bsd_level::softnet>};
//   };
template <auto M, class F, level_spec LevelSpec, lock_policy Lock = spin_lock>
class knote_method
    : public knote_closure<
          F,
          typename detail::knote_method_fn<
              M, knote_base<filter_hint_t<F>, level_set_of_t<LevelSpec>>>::type,
          typename detail::method_class<M>::type*, LevelSpec, Lock> {
  using C = typename detail::method_class<M>::type;
  using handler = typename detail::knote_method_fn<
      M, knote_base<filter_hint_t<F>, level_set_of_t<LevelSpec>>>::type;
  using base = knote_closure<F, handler, C*, LevelSpec, Lock>;

 public:
  // Effects: binds M to `self`; the knote is idle (not attached).
  knote_method(F filter, C* self, LevelSpec level, std::uintptr_t id = 0)
      : base(std::move(filter), handler{}, self, level, id) {}

  // A level other than the one fixed in the type: rejected with the reason
  // (not "could not convert brace-enclosed initializer list").
  template <level_spec Other>
    requires(is_static_level_v<LevelSpec> && !std::same_as<Other, LevelSpec>)
  knote_method(F filter, C* self, Other, std::uintptr_t id = 0)
      : knote_method(std::move(filter), self, LevelSpec{}, id) {
    static_assert(std::same_as<Other, LevelSpec>,
                  "kcont::knote_method: the level argument differs from the "
                  "level in the type: LevelSpec static_level<L> takes "
                  "kcont::at<L>, the same L");
  }
};

}  // namespace kcont
