// kcont/detail/kqueue_entry.hpp — what a kqueue keeps beside each knote.
//
// Defines, for kcont/kqueue.hpp only: the filters' contexts
// (`filter_contexts<F...>`: the timer_source a timer_filter is built from),
// the registration table's key (ident, filter), the per-knote `kqueue_entry`
// (the kevent's identity, flags and udata, and its pending-list links) and
// `kqueue_node<Owner, Fi, ...>`, which puts an entry and a knote of filter Fi
// embedding the kqueue's own continuation (the NetBSD patch's kq_func) in
// one allocation. Users never name these.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/detail/fire.hpp"
#include "kcont/filter.hpp"
#include "kcont/kevent.hpp"
#include "kcont/knote.hpp"
#include "kcont/knote_closure.hpp"
#include "kcont/level.hpp"

namespace kcont::detail {

// A filter's context: F::context_type when F names one (F is then built as
// F(context&)), else none.
template <class F>
struct filter_context {
  using pointer = std::nullptr_t;
  static constexpr bool needed = false;
};
template <class F>
  requires requires { typename F::context_type; }
struct filter_context<F> {
  using pointer = typename F::context_type*;
  static constexpr bool needed = true;
};

template <class F>
concept has_filter_id = requires {
  { F::id } -> std::convertible_to<filter_id>;
};

// The contexts given to a kqueue's constructor, one slot per filter.
template <class... F>
class filter_contexts {
  using slots = std::tuple<typename filter_context<F>::pointer...>;

 public:
  // True when C is some filter's context_type.
  template <class C>
  static constexpr bool is_context =
      (std::is_same_v<typename filter_context<F>::pointer, C*> || ...);

  // Effects: binds c to every filter whose context_type is C.
  template <class C>
  void bind(C& c) noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((bind_at<I>(c)), ...);
    }(std::index_sequence_for<F...>{});
  }

  // The context of the I-th filter (nullptr when none was bound).
  template <std::size_t I>
  [[nodiscard]] auto get() const noexcept {
    return std::get<I>(slots_);
  }

 private:
  template <std::size_t I, class C>
  void bind_at(C& c) noexcept {
    if constexpr (std::is_same_v<std::tuple_element_t<I, slots>, C*>)
      std::get<I>(slots_) = &c;
  }

  slots slots_{};
};

// The registration table's key: a knote is (ident, filter), as in BSD.
struct kqueue_key {
  std::uintptr_t ident;
  filter_id filter;
  bool operator==(const kqueue_key&) const = default;
};
struct kqueue_key_hash {
  std::size_t operator()(const kqueue_key& k) const noexcept {
    return std::hash<std::uintptr_t>{}(k.ident) ^
           (static_cast<std::size_t>(static_cast<std::uint16_t>(k.filter)) << 1);
  }
};

// What every knote of a kqueue has besides its knote: the kevent's identity, flags and udata, and
// the links of the pending list (or, while it is being freed, of the kqueue's drop list). Guarded
// by the kqueue's lock. `ops` reaches the filter of the typed node it is part of.
template <class Udata>
struct kqueue_entry {
  struct ops_type {
    bool (*recheck)(kqueue_entry&);
    void (*change)(kqueue_entry&, knote_change&);
    void (*destroy)(kqueue_entry&);
  };

  const ops_type* ops;
  knote_core* core = nullptr;
  kqueue_entry* pnext = nullptr;
  kqueue_entry* pprev = nullptr;
  std::uintptr_t ident;
  filter_id filter;
  ev flags;  // the creating change's flags but the actions (or_flags adds to them)
  Udata udata;
  bool dropping = false;  // being deleted: activations must not queue it
  // Its filter is being attached, lock_ dropped (kqueue::add_as): changes
  // wait, activations do not queue it (post_change does, after the attach).
  bool attaching = false;
  // ev::clear without ev::oneshot or ev::dispatch: the scan's commonest end, chosen on this byte,
  // which or_flags keeps, not on a test of the flags per event (kqueue_node::scan_step).
  bool plain_clear = false;
  void or_flags(ev f) noexcept {
    flags |= f;
    plain_clear = (flags & (ev::oneshot | ev::dispatch | ev::clear)) == ev::clear;
  }
};

// What the scan's step did with one knote it took off the pending list
// (kqueue_node::scan_step; the state table in kqueue_pending.hpp).
enum class scan_kind : std::uint8_t {
  disabled,  // unreported, unqueued, still active (the caller frees a defunct one)
  dropped,   // the re-check failed: unreported, no longer active
  cleared,   // reported; ev::clear or ev::dispatch: idle, not active
  level,     // reported; level-triggered: still queued, the caller re-links it
  oneshot,   // reported; the caller deletes it (ev::oneshot, or its filter's)
};

// The EV_EOF a filter set in the knote's flags (or its touch in a report's), reported with the
// entry's own flags: FreeBSD's filt_soread and filt_piperead set EV_EOF in kn_flags, which the scan
// copies out; and EV_ONESHOT, which knlist_clear sets with it (a pipe's reader gone).
inline ev kqueue_eof_of(std::uint16_t flags) noexcept {
  return static_cast<ev>(flags) & (ev::eof | ev::oneshot);
}

// Takes the kqueue's lock `l`, a spin lock's contended wait out of line: the activation and the
// scan that take it then save no registers for a call they rarely make.
template <class L>
[[gnu::cold, gnu::noinline]] void kqueue_lock_slow(L& l) {
  l.lock();
}
template <class L>
void kqueue_lock(L& l) {
  if constexpr (std::is_same_v<L, spin_lock>) {
    if (!l.try_lock()) [[unlikely]] kqueue_lock_slow(l);
  } else {
    l.lock();
  }
}

// The scan step (kqueue_node::scan_step) of e's node among Node...,
// chosen by filter id at compile time: inline, no indirect call.
template <class... Node, class Udata>
scan_kind scan_step_of(kqueue_entry<Udata>& e, basic_kevent<Udata>& out) {
  if constexpr (sizeof...(Node) == 1) {
    return (Node::scan_step(e, out), ...);
  } else {
    auto k = scan_kind::disabled;  // never: every entry is one of Node...
    (void)(((e.filter == Node::filter_type::id) && (k = Node::scan_step(e, out), true)) || ...);
    return k;
  }
}

// A knote of filter Fi owned by a kqueue (Owner), with the kqueue's continuation stored beside
// it: on activation it calls `owner->on_activation(entry)`, which queues the entry for a scan.
// Owner must make this class a friend if on_activation is private.
//
// The kqueue's lock serializes the knote (KnoteLock is no_lock: single-threaded, no field lock,
// plain state updates): every call of its filter (the fan-out's event, the scan's re-check and
// report, a change's touch) and every write of its state word runs under it, but for its attach,
// before it is linked on a source, and its detach, after the kqueue marked it dropping under its
// lock (from then on fire_kq leaves it alone); nothing outside the kqueue reaches the knote. So a
// fan-out takes the kqueue's lock once per batch of its knotes (fire_batched: event, activation,
// queueing), with no atomic read-modify-write of the knote, and a locked klist calls the fused
// fire under its own lock (the lock order is klist, then kqueue: the kqueue attaches a filter
// without its lock, kqueue::add_as), unpinned (knote_state.hpp's table: "→ active, no pin").
template <class Owner, class Fi, class Udata, level_set Level, class KnoteLock>
struct kqueue_node final : kqueue_entry<Udata> {
  using entry = kqueue_entry<Udata>;
  using filter_type = Fi;
  static constexpr bool single = std::is_same_v<KnoteLock, no_lock>;
  using base_type = typename knote<Fi, Level, KnoteLock>::base_type;

  // The continuation of an activation that is not a fan-out's (knote::activate or enable; the
  // kqueue's own code never calls them, but the knote is one like any other).
  struct kq_fn {
    void operator()(base_type*, kqueue_node*& self, knote_cause) const {
      self->owner->on_activation(*self);
    }
  };
  using closure_type =
      knote_closure<Fi, kq_fn, kqueue_node*, static_level<Level::immediate>, KnoteLock>;
  // The knote embeds the kqueue's continuation, and its fused fire is the kqueue's own (fire_kq):
  // the filter's event, the activation and the queueing in one call under one lock.
  struct knote_type : closure_type {
    knote_type(Fi f, kqueue_node* self, std::uintptr_t id)
        : closure_type(std::move(f), kq_fn{}, self, at<Level::immediate>, id, &fire_kq,
                       /*under_lock=*/true) {}

    // The state word (kcont/detail/knote_state.hpp) with the kqueue's queued bit (kqueue_pending
    // .hpp) of a knote not dropping (the kqueue marks it so, under its lock, before its detach),
    // under the kqueue's lock, which serializes this single-threaded knote: one load, and plain
    // stores of what a step decided (→ active, no pin; −active; the queueing), release so that
    // on_activation's unlocked read sees a clear bit no earlier than the scan's report.
    std::uint32_t word() const noexcept {
      return knote_access::state(const_cast<knote_type&>(*this)).load(std::memory_order_relaxed);
    }
    void store(std::uint32_t v) noexcept {
      knote_access::state(*this).store(v, std::memory_order_release);
    }
    static constexpr std::uint32_t active = knote_type::active_bit;
    static constexpr std::uint32_t queued = knote_type::queued_bit;
    static constexpr std::uint32_t disabled = knote_type::disabled_bit;
    static constexpr std::uint32_t detached = knote_type::detached_bit;
  };
  static_assert(single, "kcont::kqueue: its knotes are single-threaded (kqueue.hpp: knote_lock)");

  // `kept`: the change's flags as the knote keeps them (the actions off).
  kqueue_node(Owner* q, Fi f, const basic_kevent<Udata>& c, ev kept)
      : entry{&ops, nullptr, nullptr, nullptr, c.ident, c.filter, ev{}, c.udata, false, false},
        owner(q),
        kn(std::move(f), this, c.ident) {
    this->core = &kn;
    this->or_flags(kept);
  }

  // One event of a fan-out (any klist, any thread), under the kqueue's lock: the filter's event,
  // rule 6's unpinned activation (a disabled knote is marked active, not queued), and the kqueue
  // state table's activation (queued once: rule 7). After it returns nothing touches the knote; a
  // detach waits for it through the klist's lock (no_lock: it runs on the fan-out's thread).
  static fire_outcome fire_kq(base_type& b, typename base_type::hint_arg h, Level,
                              fire_batch* batch) {
    auto& lock = q_lock(b);
    if constexpr (std::is_same_v<decltype(q_lock(b)), spin_lock&>) {
      // Contended: out of line, so that this path saves no registers.
      if (!lock.try_lock()) [[unlikely]] return fire_contended(b, h, batch);
    } else {
      lock.lock();
    }
    return fire_owned(b, h, batch);
  }
  [[gnu::cold, gnu::noinline]] static fire_outcome fire_contended(
      base_type& b, typename base_type::hint_arg h, fire_batch* batch) {
    q_lock(b).lock();
    return fire_owned(b, h, batch);
  }
  // fire_kq's work once it holds the kqueue's lock, which this releases.
  [[gnu::always_inline]] static fire_outcome fire_owned(base_type& b,
                                                        typename base_type::hint_arg h,
                                                        fire_batch* batch) {
    if (batch != nullptr && batch->next != nullptr) return fire_batched(b, h, *batch);
    std::lock_guard g(q_lock(b), std::adopt_lock);
    return fire_held(b, h, [](Owner& q, entry& e) { q.push_pending(e); });
  }
  // The batch (kcont/detail/fire.hpp): b, then the knotes after b on its klist of this node type
  // and of b's kqueue, each one's fire_held under the lock fire_kq took (released here). Those it
  // queues go on a local list, moved onto the pending list at its end (kqueue_pending.hpp's
  // table), so the loop keeps the list's tail and count in registers, not in memory a store of a
  // knote may alias. Nothing unlinks them meanwhile: no continuation runs here (bury unlinks from
  // the kqueue only), and the klist's lock is held or its one thread is here. Out of line: a
  // knote fired alone (a timer's, a locked list's only one) saves no registers for its loop.
  [[gnu::noinline]] static fire_outcome fire_batched(base_type& b,
                                                     typename base_type::hint_arg h,
                                                     fire_batch& batch) {
    std::lock_guard g(q_lock(b), std::adopt_lock);
    Owner* const q = static_cast<knote_type&>(b).env()->owner;
    entry first{};  // the batch's chain starts at its link: never queued
    struct flush {  // before the unlock, also when a filter throws
      Owner& q;
      typename Owner::pending_batch queued;
      ~flush() { q.push_pending(queued); }
    } f{*q, {first}};
    const auto push = [&f](Owner&, entry& e) { f.queued.push(e); };
    const fire_outcome r = fire_held(b, h, push);
    // Fired: those it queued (counted by the batch) and `again`, those it did not (pending).
    const std::size_t queued_before = f.queued.n;
    std::size_t again = 0;
    knote_core* next = batch.next;
    while (next != nullptr) {
      auto& kb = static_cast<base_type&>(*next);
      if (!knote_fire_access::fires_with(kb, &fire_kq)) break;
      if (static_cast<knote_type&>(kb).env()->owner != q) break;  // another kqueue
      next = knote_access::next(*next);
      (void)fire_held(kb, h, push, &again);
    }
    batch.next = next;
    batch.fired += f.queued.n - queued_before + again;
    return r;
  }
  static auto& q_lock(base_type& b) noexcept {
    return static_cast<knote_type&>(b).env()->owner->lock_;
  }
  // fire_kq's work, under the kqueue's lock; push(q, n) queues n; ++*again when it ran unqueued.
  template <class Push>
  [[gnu::always_inline]] static fire_outcome fire_held(base_type& b, typename base_type::hint_arg h,
                                                       Push push, std::size_t* again = nullptr) {
    auto& k = static_cast<knote_type&>(b);
    kqueue_node& n = *k.env();
    Owner& q = *n.owner;
    // Dropping: its detach may be writing the state word, without lock_.
    if (n.dropping) [[unlikely]] return fire_outcome::skipped;
    if (!static_cast<bool>(k.filter().event(b, h))) {
      // Its source is gone (fd_source::forget): knote_fdclose drops it.
      if constexpr (filter_has_defunct<Fi>)
        if (k.filter().defunct()) [[unlikely]] q.bury(n);
      return fire_outcome::skipped;
    }
    // Pending already (rule 7): a queued knote is active (the state table in kqueue_pending.hpp),
    // so the activation changes nothing; it ran unless the knote was disabled while pending. The
    // queued and disabled bits come in the one load of the state word.
    const std::uint32_t v = k.word();
    const auto ran_unqueued = [again] {
      if (again != nullptr) ++*again;
      return fire_outcome::ran;
    };
    if ((v & k.queued) != 0) return (v & k.disabled) != 0 ? fire_outcome::skipped : ran_unqueued();
    KCONT_EXPECTS((v & k.detached) == 0, "kqueue: a detached knote activated");
    // Disabled: marked active only. Attaching (not with no_lock): its post_change queues it.
    if ((v & k.disabled) != 0 ||
        (!std::is_same_v<std::remove_reference_t<decltype(q_lock(b))>, no_lock> && n.attaching))
        [[unlikely]] {
      k.store(v | k.active);
      return (v & k.disabled) != 0 ? fire_outcome::skipped : ran_unqueued();
    }
    k.store(v | k.active | k.queued);
    push(q, n);
    return fire_outcome::ran;
  }

  static kqueue_node& self(entry& e) noexcept { return static_cast<kqueue_node&>(e); }
  // Under the kqueue's lock, which guards the fields (above).
  static bool do_recheck(entry& e) {
    knote_type& kn = self(e).kn;
    return static_cast<bool>(
        kn.filter().event(static_cast<base_type&>(kn), typename knote_type::hint_type{}));
  }
  // The scan's step for one knote it took off the pending list, FreeBSD's kqueue_scan from the
  // EV_DISABLE test on: a disabled knote is left alone; an ev::oneshot one is reported as its
  // knote stands, without the re-check and without the filter's touch (`*kevp = kn->kn_kevent`:
  // the knote's own fflags and data); any other is re-checked (the filter's event with Hint{},
  // f_event(kn, 0)), reported into `out` (the filter's touch, or fflags/data, reset with
  // ev::clear) and, with ev::clear or ev::dispatch, made idle. Called with the filter's type known
  // (kqueue::scan_step): its event and touch inline. Under the kqueue's lock (above).
  static scan_kind scan_step(entry& e, basic_kevent<Udata>& out) {
    knote_type& kn = self(e).kn;
    base_type& b = kn;
    // Single-threaded under the kqueue's lock: only the steps below write it (a filter's event
    // does not: kcont/filter.hpp), so it is read once. The knote is off the pending list (collect):
    // each end clears its queued bit in the store it makes anyway, but for a re-queued one.
    const std::uint32_t seen = kn.word();
    const std::uint32_t idle = seen & ~(kn.active | kn.queued);
    if ((seen & kn.disabled) != 0) [[unlikely]] {
      kn.store(seen & ~kn.queued);  // still active
      return scan_kind::disabled;
    }
    const ev flags = e.flags;
    // The commonest end (ev::clear alone, no touch) is taken first, on one byte's test, past every
    // other end's test; those choose on the bits in `kind`.
    const ev kind = flags & (ev::oneshot | ev::dispatch | ev::clear);
    // Rare: a knote is pending because its condition held a moment ago.
    const auto gone = [&] {
      if (static_cast<bool>(kn.filter().event(b, typename knote_type::hint_type{}))) [[likely]]
        return false;
      kn.store(idle);
      return true;
    };
    if (!filter_has_touch<Fi, base_type> && e.plain_clear) [[likely]] {
      if (gone()) [[unlikely]] return scan_kind::dropped;
      out = {e.ident, e.filter, flags, kn.fflags, kn.data, e.udata};
      kn.fflags = 0;
      kn.data = 0;
      kn.store(idle);
      return scan_kind::cleared;
    }
    kn.store(seen & ~kn.queued);  // before a touch, the filter's own code
    if (has(kind, ev::oneshot)) [[unlikely]] {
      out = {e.ident, e.filter, flags | kqueue_eof_of(kn.flags), kn.fflags, kn.data, e.udata};
      return scan_kind::oneshot;
    }
    if (gone()) [[unlikely]] return scan_kind::dropped;
    if constexpr (filter_has_touch<Fi, base_type>) {
      knote_change r{static_cast<std::uint16_t>(flags), 0, 0};
      kn.filter().touch(b, r, touch_op::process);
      out = {e.ident, e.filter, flags | kqueue_eof_of(r.flags), r.fflags, r.data, e.udata};
      // Made one-shot by its filter (a pipe's reader gone: knlist_clear).
      if (has(static_cast<ev>(r.flags), ev::oneshot)) return scan_kind::oneshot;
    } else {
      out = {e.ident, e.filter, flags, kn.fflags, kn.data, e.udata};
      if (has(kind, ev::clear)) {  // with ev::dispatch
        kn.fflags = 0;
        kn.data = 0;
      }
    }
    // After a touch (the filter's own code) or disable: read again.
    if (kind == ev{}) {
      kn.store(kn.word() | kn.queued);  // the caller re-queues it
      return scan_kind::level;
    }
    if (has(kind, ev::dispatch)) [[unlikely]]
      kn.disable();
    kn.store(kn.word() & ~kn.active);
    return scan_kind::cleared;
  }
  static void do_change(entry& e, knote_change& c) { self(e).kn.filter_change(c); }
  static void do_destroy(entry& e) {
    kqueue_node* n = &self(e);
    (void)n->kn.detach();
    delete n;
  }
  static constexpr typename entry::ops_type ops{&do_recheck, &do_change, &do_destroy};

  Owner* owner;
  knote_type kn;
};

}  // namespace kcont::detail
