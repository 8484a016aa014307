// kcont/knote.hpp — the knote: an event subscription whose activation runs a
// pluggable continuation.
//
// Defines `knote_base<Hint, Level>` (the type-erased subscription a klist
// links), `knote<Filter, Level, Lock>` (its filter inline, the continuation
// caller-owned; Lock: list_guarded, the default, FreeBSD's knlist discipline,
// the fields guarded by the klist's lock; spin_lock, a per-knote field lock;
// no_lock, single-threaded), `list_guarded` and `knote_cause`. The filter
// concept is kcont/filter.hpp; knote_closure and knote_method (a knote that
// embeds its continuation) kcont/knote_closure.hpp; the state word, with the
// state table every comment here refers to, kcont/detail/knote_state.hpp.
//
// This is the NetBSD patch's `kn_kcont`: activation (docs/design.md rule 6)
// marks the knote active and, unless it is disabled, runs its continuation
// through `kcont::run` with the knote as obj; enabling an active knote runs
// it then. The continuation may enqueue the knote on a kqueue (never
// included here), defer work, wake a thread. Detaching (rule 8) waits for
// activations in flight on other threads, lets a continuation detach its
// own knote, and cancels a deferred run, leaving the continuation clean.
//
// Compared with an observer list of std::function: nothing is allocated, and
// a subscriber may unsubscribe itself (or another) from its callback.
//
// Usage (link_filter: the one in kcont/filter.hpp's usage):
//   kcont::kc on{[](kcont::knote_base<long>* kn, int& seen, kcont::knote_cause) {
//                  seen += static_cast<int>(kn->data); },
//                0, kcont::bsd_level::softnet};
//   kcont::knote<link_filter> kn{link_filter{}, on, /*ident=*/3};
//   kn.attach();
//   kn.activate(dispatcher, kcont::bsd_level::softserial);   // deferred to softnet
//   kn.detach(dispatcher);            // cancels the deferred run if still queued
#pragma once

#include <cerrno>
#include <concepts>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/detail/fire.hpp"
#include "kcont/detail/knote_state.hpp"
#include "kcont/filter.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

// Why a knote's continuation runs: an event activated it (rule 6, first
// half), or it was enabled while active (rule 6, second half).
enum class knote_cause : std::uint8_t { event, enable };

// The default knote policy, FreeBSD's knlist discipline: kn_data/kn_sfflags
// are guarded by the knlist's lock (kl_lock), not by a lock of the knote's;
// the state word stays thread-safe. While linked, every access to the fields
// and filter (snapshot, filter_change, filter_report, filter()) holds the
// list's lock: on a locked klist, a fan-out's filter event, a hold_lock
// continuation, or klist::guard() (a plain fire runs continuations with the
// lock dropped, two fan-outs' at once: take guard(); the env is the caller's
// to synchronize; debug builds abort on a snapshot / change / report without
// it); on a klist<..., no_lock>, its one thread at a time (no field lock, no
// read-modify-write once active; guard() is a no-op). Fields touched from
// any thread without the list's lock: spin_lock. Filters no klist lock
// guards (timers) name their default (knote_policy, kcont/filter.hpp).
struct list_guarded {};

template <class Hint, level_set Level, lock_policy Lock>
class klist;

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
// from any thread (the state table in kcont/detail/knote_state.hpp says
// how; single-threaded knotes, knote<F, Level, no_lock>: all operations
// from one thread at a time); the fields as the policy says (list_guarded:
// the klist's lock; spin_lock: any thread). A continuation deferred to a
// dispatcher level is cancelled by detach(d); with a dispatcher that runs
// levels on its own threads (thread_dispatcher), detach(d) also waits for
// a run a runner has already popped. With a manual_dispatcher drained by another thread of yours, the
// owner must synchronize with that drain before destroying the knote.
template <class Hint = long, level_set Level = bsd_level>
class knote_base : public detail::knote_core {
 public:
  using hint_type = Hint;
  using level_type = Level;
  using continuation_type = kc_base<knote_base*, knote_cause, Level>;
  // A knote's fused fire function (kcont/detail/fire.hpp), one per concrete
  //   knote type, stored in the knote; its batch: detail::fire_batch.
  using hint_arg = detail::fire_hint_arg<Hint>;
  using fire_fn = detail::fire_outcome (*)(knote_base&, hint_arg, Level, detail::fire_batch*);

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
  // Thread-safety: any thread (the field lock serializes the filter); this
  //   and the next two, list_guarded and linked: with its klist's lock held
  //   (on a no_lock klist: on the list's one thread).
  bool filter_event(const Hint& hint) {
    field_guard g(*this);
    return ops_->event(*this, hint);
  }

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
  //   knote; the state table's → detached and pins → 0), then cancels the
  //   continuation if it is deferred on `d`. When
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
             bool single = false, fire_fn fire = &fire_erased, bool by_list = false) noexcept
      : detail::knote_core(id, single, by_list), ops_(&ops), kc_(&k), fire_(fire) {}
  ~knote_base() = default;

  // The fused fire of a knote type that knows no more than knote_base: the unfused steps.
  static detail::fire_outcome fire_erased(knote_base& kn, hint_arg h, Level c, detail::fire_batch*) {
    if (!kn.filter_event(h) || !kn.template begin_activation<false>())
      return detail::fire_outcome::skipped;
    return detail::fire_run(*kn.kc_, kn, knote_cause::event, c);
  }

 private:
  template <class, level_set, lock_policy>
  friend class klist;
  friend struct detail::knote_fire_access;  // sources without a klist

  // The state table's pinned activation, after begin_activation or
  // begin_enable said the continuation runs.
  template <class D>
  run_result run_pinned(D& d, Level current, knote_cause cause) {
    detail::activation_frame frame(this);  // unpins on exit, unless released
    return kcont::run(d, *kc_, this, cause, current);
    // After run returns the knote may be gone (detached and destroyed by its
    // own continuation): only the frame, on this stack, is touched.
  }

  // One event of a klist<..., no_lock> fan-out, through the fused fire
  // function. After `ran` the knote may be gone.
  detail::fire_outcome fire_unpinned(hint_arg h, Level current, detail::fire_batch* b = nullptr) {
    return fire_(*this, h, current, b);
  }

  // For a klist with no_lock (the state table's "→ active, no pin"): no
  // activation frame. A continuation may detach (and destroy) its own knote:
  // nothing here touches it after run returns; detach finds no pin to wait for.
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
// Lock: list_guarded (the default, or F::knote_policy: kcont/filter.hpp; see
// above), spin_lock (a per-knote field lock: fields touched from any thread)
// or no_lock (single-threaded, for a klist<Hint, Level, no_lock> or a
// kqueue<..., no_lock>: no field lock, no atomic read-modify-write). Filters
// and klists see the same knote_base<Hint, Level> for all three (a flag).
//
// Lifetime contract: as knote_base; the continuation must outlive the knote's
// attachment. Thread-safety: as knote_base. With no_lock:
// every operation on the knote (attach, fire of its klist, activate, enable,
// disable, detach, snapshot, the kqueue's or caller's queue claim) from one
// thread at a time, the same thread or threads synchronized by the owner
// (never a klist with a real lock fired from several threads).
// Usage:
//   kcont::kc k{[](kcont::knote_base<long>* kn, int& n, kcont::knote_cause) { ++n; },
//               0, kcont::at<kcont::bsd_level::immediate>};
//   kcont::knote<my_filter> kn{my_filter{&source}, k};   // list_guarded
//   { auto g = source.list.guard(); long d = kn.snapshot().data; }
//   kcont::knote<my_filter, kcont::bsd_level, kcont::spin_lock> any{my_filter{&src}, k};
//   kcont::knote<my_filter, kcont::bsd_level, kcont::no_lock> fast{my_filter{&src}, k};
template <class F, level_set Level = bsd_level,
          class Lock = detail::filter_knote_policy_t<F, list_guarded>>
class knote : public knote_base<detail::filter_hint_t<F>, Level> {
  static_assert(std::is_same_v<Lock, spin_lock> || std::is_same_v<Lock, no_lock> ||
                    std::is_same_v<Lock, list_guarded>,
                "kcont::knote: the threading policy is list_guarded (its klist's "
                "lock), spin_lock (a field lock) or no_lock (single-threaded)");

 public:
  using base_type = knote_base<detail::filter_hint_t<F>, Level>;
  using filter_type = F;
  using lock_type = Lock;
  // True for the single-threaded policy (no_lock).
  static constexpr bool single_thread = std::is_same_v<Lock, no_lock>;
  static constexpr bool field_lock = std::is_same_v<Lock, spin_lock>;
  static constexpr bool by_list = std::is_same_v<Lock, list_guarded>;
  static_assert(!by_list || std::is_same_v<detail::filter_knote_policy_t<F, Lock>, Lock>,
                "kcont::knote: list_guarded on a filter that names another knote_policy "
                "(a timer's spin_lock): no klist lock you can take guards its fields");
  using typename base_type::continuation_type;
  using typename base_type::hint_type;

  static_assert(std::is_object_v<F>, "kcont::knote: the filter must be an object type");
  static_assert(detail::filter_has_attach<F, base_type>,
                "kcont::knote: the filter has no `int attach(knote_base<Hint, "
                "Level>&)` (return 0 or an errno value)");
  static_assert(detail::filter_has_detach<F, base_type>,
                "kcont::knote: the filter has no `void detach(knote_base<Hint, Level>&)`");
  static_assert(detail::filter_has_event<F, base_type>,
                "kcont::knote: the filter has no `bool event(knote_base<Hint, "
                "Level>&, Hint)`: it decides whether an event fires the knote");
  static_assert(std::default_initializable<hint_type>,
                "kcont::knote: the hint type must be default-constructible "
                "(Hint{} is the scan-time re-check)");

  // Effects: stores the filter; the knote is idle (not attached). `id` (in
  //   ident) is what the filter watches (its meaning is the filter's).
  knote(F filter, continuation_type& k, std::uintptr_t id = 0)
      : base_type(ops, k, id, single_thread, &fire_plain, by_list),
        filter_(std::move(filter)) {}

  // A continuation of another signature: rejected with the reason.
  template <class K>
    requires(!std::is_convertible_v<K&, continuation_type&>)
  knote(F, K&, std::uintptr_t = 0) : base_type(ops, *static_cast<continuation_type*>(nullptr), 0) {
    static_assert(std::is_convertible_v<K&, continuation_type&>,
                  "kcont::knote: the continuation must take the knote: its "
                  "function is fn(knote_base<Hint, Level>*, Env&, "
                  "knote_cause), at a level of the knote's level set");
  }

  // The filter, guarded as the fields are (list_guarded: the klist's lock;
  //   spin_lock: the field lock; or detached, or the owner's lock).
  [[nodiscard]] F& filter() noexcept { return filter_; }

 protected:
  using typename base_type::fire_fn;

  // For a derived knote that knows its continuation's type (knote_closure):
  // `fire` is its own fused fire function (kcont/detail/fire.hpp).
  knote(F filter, continuation_type& k, std::uintptr_t id, fire_fn fire)
      : base_type(ops, k, id, single_thread, fire, by_list), filter_(std::move(filter)) {}

 private:
  // The fused fire of a knote with a type-erased continuation: filter and
  // activation inline, the continuation through its trampoline.
  static detail::fire_outcome fire_plain(base_type& b, typename base_type::hint_arg h,
                                         Level current, detail::fire_batch*) {
    if (!detail::fire_event_and_activate<single_thread, field_lock>(self(b).filter_, b, h))
      return detail::fire_outcome::skipped;
    return detail::fire_run(b.continuation(), b, knote_cause::event, current);
  }

  static knote& self(base_type& b) noexcept { return static_cast<knote&>(b); }
  static int do_attach(base_type& b) { return static_cast<int>(self(b).filter_.attach(b)); }
  static void do_detach(base_type& b) { self(b).filter_.detach(b); }
  static bool do_event(base_type& b, const hint_type& h) {
    return static_cast<bool>(self(b).filter_.event(b, h));
  }
  static void do_touch(base_type& b, knote_change& c, touch_op op) {
    if constexpr (detail::filter_has_touch<F, base_type>) self(b).filter_.touch(b, c, op);
  }
  static constexpr typename base_type::ops_table ops{
      &do_attach, &do_detach, &do_event,
      detail::filter_has_touch<F, base_type> ? &do_touch : nullptr};

  [[no_unique_address]] F filter_;
};

}  // namespace kcont
