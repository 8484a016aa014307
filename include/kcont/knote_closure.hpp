// kcont/knote_closure.hpp — knotes that embed their own continuation.
//
// Defines `knote_closure<F, Fn, Env, LevelSpec, Lock>` (a knote<F> and its
// continuation kc<Fn, Env, LevelSpec> in one object, Fuchsia's Wait with a
// closure) and `knote_method<&C::f, F, LevelSpec, Lock>` (the same bound to a
// member function with the object pointer as environment, Fuchsia's
// WaitMethod). Prefer them to a knote<F> with a separate kc when the
// subscription owns its handler: one object, and the fused fire path
// (kcont/detail/fire.hpp) calls the handler directly, so a
// klist<..., no_lock> fan-out costs one indirect call per subscriber. Lock
// defaults as knote's: list_guarded (FreeBSD's knlist discipline: the
// klist's lock guards the fields; on a no_lock klist, no field lock at all);
// write kcont::spin_lock for fields read from any thread without it.
//
// Usage:
//   kcont::knote_closure sub{my_filter{&src}, [](auto* kn, int& n, auto) {...},
//                            0, kcont::at<kcont::bsd_level::immediate>};
//   kcont::knote_closure<my_filter, handler, int, kcont::bsd_level, kcont::spin_lock>
//       any{my_filter{&src}, handler{}, 0, kcont::bsd_level::softnet};  // field lock
//   struct router {
//     void on_link(kcont::knote_base<long>* kn, kcont::knote_cause);
//     kcont::knote_method<&router::on_link, link_filter,
//                         kcont::static_level<kcont::bsd_level::softnet>>
//         sub{link_filter{}, this};   // the level: named once, in the type
//   };
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kcont/detail/fire.hpp"
#include "kcont/filter.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

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

// knote_method's default LevelSpec: the level set of the handler's knote
// parameter (knote_base<Hint, Level>*), bsd_level for a handler without one.
template <class MP>
struct method_level_of {
  using type = bsd_level;
};
template <class R, class C, class H, level_set L, class... A>
struct method_level_of<R (C::*)(knote_base<H, L>*, A...)> {
  using type = L;
};
template <class R, class C, class H, level_set L, class... A>
struct method_level_of<R (C::*)(knote_base<H, L>*, A...) noexcept> {
  using type = L;
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
// (list_guarded, the default: its klist's lock guards the fields; spin_lock:
// a field lock; no_lock: single-threaded).
// Its fused fire function calls Fn directly; at a compile-time immediate
// level that call is not preceded by any test of the continuation's state,
// as kcont::run's own overload for such a continuation: never put it on a
// queue (debug builds check).
// Usage:
//   kcont::knote_closure sub{my_filter{&src}, [](auto* kn, int& n, auto) {...},
//                            0, kcont::at<kcont::bsd_level::immediate>};
template <class F, class Fn, class Env, level_spec LevelSpec,
          class Lock = detail::filter_knote_policy_t<F, list_guarded>>
class knote_closure
    : private detail::closure_holder<
          kc<Fn, Env, LevelSpec, knote_base<detail::filter_hint_t<F>, level_set_of_t<LevelSpec>>*,
             knote_cause>>,
      public knote<F, level_set_of_t<LevelSpec>, Lock> {
  using holder = detail::closure_holder<
      kc<Fn, Env, LevelSpec, knote_base<detail::filter_hint_t<F>, level_set_of_t<LevelSpec>>*,
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

 protected:
  using base_type = typename knote_type::base_type;
  using fire_fn = typename base_type::fire_fn;

  // For kcont's own knotes that fuse their continuation into a fire
  // function of their own (the kqueue's: kcont/detail/kqueue_entry.hpp):
  // `fire` replaces fire_closure; with `under_lock` a locked klist calls it
  // under the list lock, unpinned (the state table in
  // kcont/detail/knote_state.hpp: "→ active, no pin").
  knote_closure(F filter, Fn fn, Env env, LevelSpec level, std::uintptr_t id, fire_fn fire,
                bool under_lock)
      : holder{{std::move(fn), std::move(env), level}},
        knote_type(std::move(filter), holder::k_, id, fire) {
    if (under_lock) detail::knote_access::set_fires_under_lock(*this);
  }

 private:

  // The fused fire with the continuation's type known: its function is
  // called directly (no trampoline; at a compile-time level no level test).
  // At a compile-time immediate level (the continuation always runs here)
  // it takes a fan-out's batch too: b and the knotes after it of this very
  // type, each fired inline, so that a fan-out over many subscribers of one
  // kind makes one indirect call, not one per subscriber.
  static detail::fire_outcome fire_closure(base_type& b, typename base_type::hint_arg h,
                                           typename base_type::level_type current,
                                           [[maybe_unused]] detail::fire_batch* batch) {
    if constexpr (detail::is_static_immediate<LevelSpec>()) {
      if (batch != nullptr && batch->next != nullptr) [[unlikely]]
        return fire_batched(b, h, current, *batch);
    }
    return fire_one(b, h, current);
    // After `ran` the closure may be gone (rule 8): nothing touches it.
  }

  static detail::fire_outcome fire_one(base_type& b, typename base_type::hint_arg h,
                                       typename base_type::level_type current) {
    auto& self = static_cast<knote_closure&>(b);
    if (!detail::fire_event_and_activate<knote_type::single_thread, knote_type::field_lock>(
            self.filter(), b, h))
      return detail::fire_outcome::skipped;
    return detail::fire_run(self.holder::k_, b, knote_cause::event, current);
  }

  // The batch (kcont/detail/fire.hpp): b, then the knotes after it of this
  // type. A batch offered to a knote that does not fire under a lock is a
  // no_lock klist's cursor, which an erase moves past a removed knote, or a
  // hold_lock fan-out's, which no erase can touch; so `next` is read back
  // from it after each continuation (which may have detached and destroyed
  // any knote, its own included: rule 8), as the klist's own loop does. Out
  // of line: a knote fired alone keeps fire_closure's short path.
  [[gnu::noinline]] static detail::fire_outcome fire_batched(
      base_type& b, typename base_type::hint_arg h, typename base_type::level_type current,
      detail::fire_batch& batch) {
    const detail::fire_outcome r = fire_one(b, h, current);
    std::size_t fired = 0;
    while (detail::knote_core* core = batch.next) {
      auto& kn = static_cast<base_type&>(*core);
      if (!detail::knote_fire_access::fires_with(kn, &fire_closure)) break;
      batch.next = detail::knote_access::next(*core);
      if (fire_one(kn, h, current) == detail::fire_outcome::ran) ++fired;
    }
    batch.fired += fired;
    return r;
  }
};

// A knote bound to a member function `void C::on_event(knote_base<Hint,
// Level>*, knote_cause)` (or `void C::on_event()`), with the object pointer
// as environment (Fuchsia's WaitMethod<Class, &Class::Method>). Prefer it to
// a lambda for fixed member handlers: the handler is named in the type and
// only `this` is stored.
//
// The level is named once: in the type, as static_level<L> (a compile-time
// level: the constructor takes none), or, with LevelSpec left out, in the
// constructor (a level chosen at run time, of the handler's level set:
// bsd_level for a handler that takes no knote). The spelling that names a
// static level in both places, sub{filter, this, kcont::at<L>}, is accepted.
// Usage:
//   struct router {
//     void on_link(kcont::knote_base<long>* kn, kcont::knote_cause);
//     kcont::knote_method<&router::on_link, link_filter,
//                         kcont::static_level<kcont::bsd_level::softnet>>
//         sub{link_filter{}, this};
//     kcont::knote_method<&router::on_link, link_filter> late{
//         link_filter{}, this, kcont::bsd_level::softclock};
//   };
template <auto M, class F,
          level_spec LevelSpec = typename detail::method_level_of<decltype(M)>::type,
          class Lock = detail::filter_knote_policy_t<F, list_guarded>>
class knote_method
    : public knote_closure<
          F,
          typename detail::knote_method_fn<
              M, knote_base<detail::filter_hint_t<F>, level_set_of_t<LevelSpec>>>::type,
          typename detail::method_class<M>::type*, LevelSpec, Lock> {
  using C = typename detail::method_class<M>::type;
  using handler = typename detail::knote_method_fn<
      M, knote_base<detail::filter_hint_t<F>, level_set_of_t<LevelSpec>>>::type;
  using base = knote_closure<F, handler, C*, LevelSpec, Lock>;

 public:
  // Effects: binds M to `self`, at `level`; the knote is idle (not
  //   attached).
  knote_method(F filter, C* self, LevelSpec level, std::uintptr_t id = 0)
      : base(std::move(filter), handler{}, self, level, id) {}

  // Effects: as above, at the level the type fixes (LevelSpec static_level<L>).
  knote_method(F filter, C* self, std::uintptr_t id = 0)
    requires is_static_level_v<LevelSpec>
      : base(std::move(filter), handler{}, self, LevelSpec{}, id) {}

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
