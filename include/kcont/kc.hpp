// kcont/kc.hpp — the continuation itself.
//
// Defines `kc<Fn, Env, Level>`: a function, its environment and the level it
// must run at, stored inline in an object the caller owns (the BSD `struct kc`).
// The function is called as fn(obj, env, status) with typed arguments: `obj` is
// the object that completed (a request, a knote), `status` its result. Every
// kc derives from `kc_base<Obj, Status, Level>` (kcont/kc_base.hpp), which a
// queue or a dispatcher holds through one intrusive link (kc_hook,
// kcont/kc_hook.hpp); calling through it is one indirect call, with no
// virtual function and no allocation. Also `method` (a member function as
// the function), `no_env`, and the deduction of Obj and Status from Fn.
// This header includes kcont/make_kc.hpp (make_kc / allocate_kc: NetBSD's
// `kcont_malloc` + KC_AUTOFREE), so code that includes it keeps both.
//
// Compared with std::function / std::move_only_function: no heap, no copy, no
// move; the object is immovable because queues link it in place, and it can be
// deferred (obj and status saved inside it) and queued without any storage but
// its own.
//
// Usage:
//   struct request { int id; };
//   int total = 0;
//   kcont::kc done{[](request* r, int* sum, int status) { *sum += r->id + status; },
//                  &total, kcont::bsd_level::softnet};
//   // run it now or defer it: see kcont/run.hpp; resume a popped one:
//   // kcont/resume.hpp
//
// Holding N of them (immovable: built in place, never moved afterwards):
//   kcont::kc_array<K, N> ks{[&](std::size_t i) { return K{fn, env_i, level}; }};
//                                                    // kcont/kc_array.hpp
//   std::deque<K> ks;  ks.emplace_back(fn, env, level);  // grows; never moves
//   std::array<std::optional<K>, N> ks;  ks[i].emplace(fn, env, level);
//   struct conn { K on_read{...}; };  // a member: the usual way, one per owner
// std::vector<K> and a plain K[N] / std::array<K, N> do not compile (growth
// moves; an array needs a default constructor, a kc has none); a
// std::vector<std::unique_ptr<K>> works at one allocation each.
#pragma once

#include <concepts>
#include <type_traits>
#include <utility>

#include "kcont/detail/fn_signature.hpp"
#include "kcont/kc_base.hpp"
#include "kcont/kc_hook.hpp"
#include "kcont/level.hpp"
#include "kcont/make_kc.hpp"

namespace kcont {

// The obj and status types deduced from Fn (undeduced for a generic lambda).
template <class Fn>
using deduced_obj_t = typename detail::fn_signature<Fn>::obj;
template <class Fn>
using deduced_status_t = typename detail::fn_signature<Fn>::status;

// No environment: an empty struct that costs no bytes.
struct no_env {};

// Binds a member function `void C::f(Obj, Status)` as a continuation
// function, with the object pointer as the environment:
//   kc k{kcont::method<&conn::on_read>, this, bsd_level::softnet};
// Prefer it to a lambda for fixed member handlers: it names the handler in
// the type and stores nothing but the pointer.
// Specialised on the member pointer's type, not its value: a value pattern
// R (C::*)(A, S) also matches a noexcept function (noexcept converts away),
// which made method<&C::f> ambiguous for a noexcept f.
template <auto M, class = decltype(M)>
struct method_fn;
template <auto M, class R, class C, class A, class S>
struct method_fn<M, R (C::*)(A, S)> {
  void operator()(A a, C* self, S s) const { (self->*M)(a, s); }
};
template <auto M, class R, class C, class A, class S>
struct method_fn<M, R (C::*)(A, S) noexcept> {
  void operator()(A a, C* self, S s) const noexcept { (self->*M)(a, s); }
};
// A handler that needs neither obj nor status: `void C::f()`. Obj and Status
// are then the user's to name (kc<method_fn<&C::f>, C*, Level, Obj,
// Status>); a knote_method knows them.
template <auto M, class R, class C>
struct method_fn<M, R (C::*)()> {
  template <class A, class S>
  void operator()(A&&, C* self, S&&) const { (self->*M)(); }
};
template <auto M, class R, class C>
struct method_fn<M, R (C::*)() noexcept> {
  template <class A, class S>
  void operator()(A&&, C* self, S&&) const noexcept { (self->*M)(); }
};
template <auto M>
inline constexpr method_fn<M> method{};

namespace detail {
template <class Fn, class Env, level_spec LevelSpec, class Obj, class Status>
struct kc_access;
}  // namespace detail

// A caller-owned continuation: Fn and Env stored inline, the level either a
// runtime value of a level set or a compile-time `static_level`.
//
// Lifetime contract: the caller owns it. It must stay alive while queued or
// deferred; once its function has been called kcont never touches it again,
// so the function may destroy it (or the object it is a member of). It is
// neither copyable nor movable: queues link it in place.
//
// Obj and Status are deduced from Fn's call operator; name them for a
// generic lambda: kc<decltype(fn), Env, bsd_level, request*, int>.
template <class Fn, class Env, level_spec LevelSpec,
          class Obj = deduced_obj_t<Fn>, class Status = deduced_status_t<Fn>>
class kc final
    : public kc_base<Obj, Status, level_set_of_t<LevelSpec>> {
  // One message per mistake, the first error a person reads: each assert
  // holds when an earlier one already failed.
  static constexpr int fn_arity = detail::fn_arity<Fn>;
  static_assert(fn_arity == -1 || fn_arity == 3,
                "kcont::kc: Fn does not take three parameters: a continuation "
                "function is fn(obj, env, status), the environment second "
                "(is the env parameter missing? [](request* r, Env& env, int "
                "status) {...})");
  static_assert(fn_arity != -1 || !std::is_same_v<Obj, detail::undeduced>,
                "kcont::kc: cannot deduce the obj and status types: Fn must be "
                "callable as fn(Obj, Env&, Status) with a non-template call "
                "operator; for a generic lambda name them, as in "
                "kc<decltype(fn), Env, Level, Obj, Status>");
  static_assert(std::is_same_v<Obj, detail::undeduced> ||
                    continuation_function<Fn, Obj, Env, Status>,
                "kcont::kc: Fn is not callable as fn(obj, env, status) with "
                "this environment: its second parameter must accept an Env& "
                "(take the environment by reference, pointer or value)");

 public:
  using base_type = kc_base<Obj, Status, level_set_of_t<LevelSpec>>;
  using level_type = level_set_of_t<LevelSpec>;
  // True when the level is fixed in the type (`kcont::at<...>`).
  static constexpr bool has_static_level = is_static_level_v<LevelSpec>;

  // Effects: stores fn and env; the continuation is idle (neither queued nor
  //   deferred). Throws: whatever moving Fn or Env throws.
  constexpr kc(Fn fn, Env env, LevelSpec level)
      : base_type(&detail::kc_trampoline<kc>::op,
                  &detail::kc_trampoline<kc>::invoke,
                  static_cast<level_type>(level), 0),
        fn_(std::move(fn)),
        env_(std::move(env)) {}

  // A level other than the one fixed in the type (static_level<L>): rejected
  // with the reason, rather than with "no matching constructor".
  template <level_spec Other>
    requires(is_static_level_v<LevelSpec> && !std::same_as<Other, LevelSpec>)
  constexpr kc(Fn fn, Env env, Other)
      : kc(std::move(fn), std::move(env), LevelSpec{}) {
    static_assert(std::same_as<Other, LevelSpec>,
                  "kcont::kc: the level argument differs from the level in the "
                  "type: kc<Fn, Env, static_level<L>> takes kcont::at<L>, the "
                  "same L (or let the constructor deduce the type: kc k{fn, "
                  "env, kcont::at<L>})");
  }

  kc(const kc&) = delete;
  kc& operator=(const kc&) = delete;

  // The environment passed to every call.
  [[nodiscard]] Env& env() noexcept { return env_; }
  [[nodiscard]] const Env& env() const noexcept { return env_; }

 private:
  template <class, class, level_spec, class, class>
  friend struct detail::kc_access;
  friend struct detail::kc_trampoline<kc>;
  static constexpr bool autofree = false;

  void call(Obj o, Status s) { fn_(o, env_, s); }

  [[no_unique_address]] Fn fn_;
  [[no_unique_address]] Env env_;
};

template <class Fn, class Env, level_spec LevelSpec>
kc(Fn, Env, LevelSpec) -> kc<Fn, Env, LevelSpec>;

namespace detail {
// kcont's own door to a concrete kc (run.hpp calls the function directly when
// the type is known, with no trampoline).
template <class Fn, class Env, level_spec LevelSpec, class Obj, class Status>
struct kc_access {
  using type = kc<Fn, Env, LevelSpec, Obj, Status>;
  static void call(type& k, Obj o, Status s) { k.call(o, s); }
};
}  // namespace detail

}  // namespace kcont
