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

// What every knote of a kqueue has besides its knote: the kevent's
// identity, flags and udata, and the links of the pending list (or, while
// it is being freed, of the kqueue's drop list). Guarded by the kqueue's
// lock. `ops` reaches the filter of the typed node it is part of.
template <class Udata>
struct kqueue_entry {
  struct ops_type {
    bool (*recheck)(kqueue_entry&);
    // The scan's re-check and, when it holds, its report into `out`.
    bool (*recheck_report)(kqueue_entry&, std::uint16_t flags, bool clear,
                           knote_change& out);
    void (*change)(kqueue_entry&, knote_change&);
    void (*destroy)(kqueue_entry&);
  };

  const ops_type* ops;
  knote_core* core = nullptr;
  kqueue_entry* pnext = nullptr;
  kqueue_entry* pprev = nullptr;
  std::uintptr_t ident;
  filter_id filter;
  ev flags;  // the creating change's flags but the actions
  Udata udata;
  bool dropping = false;  // being deleted: activations must not queue it
  // Its filter is being attached, lock_ dropped (kqueue::add_as): changes
  // wait, activations do not queue it (post_change does, after the attach).
  bool attaching = false;
  // On the pending list (the state table in kcont/detail/kqueue_core.hpp).
  std::atomic<bool> queued{false};
};

// A knote of filter Fi owned by a kqueue (Owner), with the kqueue's
// continuation stored beside it: on activation it calls
// `owner->on_activation(entry)`, which queues the entry for a scan.
// Owner must make this class a friend if on_activation is private.
//
// The kqueue's lock serializes the knote (KnoteLock is no_lock: a
// single-threaded knote, no field lock, plain state updates): every call of
// its filter (the fan-out's event, the scan's re-check and report, a
// change's touch) and every write of its state word runs under the
// kqueue's lock, but for its attach, before it is linked on a source, and
// its detach, after the kqueue marked it dropping under its lock (from
// then on fire_kq leaves it alone); nothing outside the kqueue reaches the
// knote. So a fan-out takes one lock per activation (the kqueue's, for the
// event, the activation and the queueing at once), with no atomic
// read-modify-write of the knote, and a locked klist calls the fused fire
// under its own lock (the lock order is klist, then kqueue: the kqueue
// attaches a filter without its lock, kqueue::add_as), unpinned (the state
// table in kcont/detail/knote_state.hpp: "→ active, no pin").
template <class Owner, class Fi, class Udata, level_set Level, class KnoteLock>
struct kqueue_node final : kqueue_entry<Udata> {
  using entry = kqueue_entry<Udata>;
  using base_type = typename knote<Fi, Level, KnoteLock>::base_type;

  // The continuation of an activation that is not a fan-out's (knote::
  // activate or enable; the kqueue's own code never calls them, but the
  // knote is one like any other).
  struct kq_fn {
    void operator()(base_type*, kqueue_node*& self, knote_cause) const {
      self->owner->on_activation(*self);
    }
  };
  using closure_type =
      knote_closure<Fi, kq_fn, kqueue_node*, static_level<Level::immediate>, KnoteLock>;
  // The knote embeds the kqueue's continuation, and its fused fire is the
  // kqueue's own (fire_kq): the filter's event, the activation and the
  // queueing in one call under one lock.
  struct knote_type : closure_type {
    knote_type(Fi f, kqueue_node* self, std::uintptr_t id)
        : closure_type(std::move(f), kq_fn{}, self, at<Level::immediate>, id, &fire_kq,
                       /*under_lock=*/true) {}
  };

  // `kept`: the change's flags as the knote keeps them (the actions off).
  kqueue_node(Owner* q, Fi f, const basic_kevent<Udata>& c, ev kept)
      : entry{&ops, nullptr, nullptr, nullptr, c.ident, c.filter, kept, c.udata, false, false},
        owner(q),
        kn(std::move(f), this, c.ident) {
    this->core = &kn;
  }

  // One event of a fan-out (any klist, any thread), under the kqueue's
  // lock: the filter's event, rule 6's unpinned activation (a disabled
  // knote is marked active, not queued), and the kqueue state table's
  // activation (queued once: rule 7). After it returns nothing touches the
  // knote; a detach waits for it through the klist's lock (or, no_lock, it
  // runs on the fan-out's own thread).
  static fire_outcome fire_kq(base_type& b, typename base_type::hint_arg h, Level) {
    auto& k = static_cast<knote_type&>(b);
    kqueue_node& n = *k.env();
    Owner& q = *n.owner;
    lock_fast(q.lock_);
    std::lock_guard g(q.lock_, std::adopt_lock);
    // Dropping: its detach may be writing the state word, without lock_.
    if (n.dropping) return fire_outcome::skipped;
    if (!static_cast<bool>(k.filter().event(b, h))) {
      // Its source is gone (fd_source::forget): knote_fdclose drops it.
      if constexpr (filter_has_defunct<Fi>)
        if (k.filter().defunct()) [[unlikely]] q.bury(n);
      return fire_outcome::skipped;
    }
    if (!knote_access::begin_fire_activation<std::is_same_v<KnoteLock, no_lock>>(b))
      return fire_outcome::skipped;
    if (!n.attaching && Owner::try_queue(n)) q.push_pending(n);
    return fire_outcome::ran;
  }

  // A spin lock's contended wait out of line: the fused fire above then
  // saves no registers for it.
  template <class L>
  static void lock_fast(L& l) {
    if constexpr (std::is_same_v<L, spin_lock>) {
      if (!l.try_lock()) [[unlikely]] lock_slow(l);
    } else {
      l.lock();
    }
  }
  template <class L>
  [[gnu::cold, gnu::noinline]] static void lock_slow(L& l) { l.lock(); }

  static kqueue_node& self(entry& e) noexcept { return static_cast<kqueue_node&>(e); }
  // Under the kqueue's lock, which guards the fields (above).
  static bool do_recheck(entry& e) {
    knote_type& kn = self(e).kn;
    return static_cast<bool>(
        kn.filter().event(static_cast<base_type&>(kn), typename knote_type::hint_type{}));
  }
  // The scan's two filter calls in one indirect call (knote::filter_event
  // then knote::filter_report would reach the filter through the knote's
  // ops table twice): the filter's type is known here. Under the kqueue's
  // lock, which guards the fields (above).
  static bool do_recheck_report(entry& e, std::uint16_t flags, bool clear,
                                knote_change& out) {
    knote_type& kn = self(e).kn;
    using base_ref = base_type&;
    if (!static_cast<bool>(kn.filter().event(base_ref(kn), typename knote_type::hint_type{})))
      return false;
    out = knote_change{flags, 0, 0};
    if constexpr (filter_has_touch<Fi, base_type>) {
      kn.filter().touch(base_ref(kn), out, touch_op::process);
    } else {
      out.fflags = kn.fflags;
      out.data = kn.data;
      if (clear) {
        kn.fflags = 0;
        kn.data = 0;
      }
    }
    return true;
  }
  static void do_change(entry& e, knote_change& c) { self(e).kn.filter_change(c); }
  static void do_destroy(entry& e) {
    kqueue_node* n = &self(e);
    (void)n->kn.detach();
    delete n;
  }
  static constexpr typename entry::ops_type ops{&do_recheck, &do_recheck_report, &do_change,
                                                &do_destroy};

  Owner* owner;
  knote_type kn;
};

}  // namespace kcont::detail
