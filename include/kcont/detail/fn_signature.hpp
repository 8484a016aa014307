// kcont/detail/fn_signature.hpp — reads Obj and Status off a continuation
// function's signature fn(Obj, Env, Status), for kc's and make_kc's
// deduction (the public names are kcont::deduced_obj_t / deduced_status_t
// in kcont/kc.hpp). Nothing here is for users.
#pragma once

#include <type_traits>

namespace kcont::detail {

// Deduces Obj and Status from a callable whose call operator is not a
// template: fn(Obj, Env, Status).
struct undeduced {};

template <class Sig>
struct three_args {
  using obj = undeduced;
  using status = undeduced;
};
template <class R, class A, class E, class S>
struct three_args<R(A, E, S)> {
  using obj = std::remove_cvref_t<A>;
  using status = std::remove_cvref_t<S>;
};

template <class M>
struct member_call {
  using type = void;
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...)> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) const> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) noexcept> {
  using type = R(A...);
};
template <class R, class C, class... A>
struct member_call<R (C::*)(A...) const noexcept> {
  using type = R(A...);
};

// The number of parameters of Fn's call: -1 when it cannot be told (a
// template call operator, a generic lambda).
template <class Sig>
inline constexpr int arity_of = -1;
template <class R, class... A>
inline constexpr int arity_of<R(A...)> = static_cast<int>(sizeof...(A));
template <class Fn>
inline constexpr int fn_arity = -1;
template <class Fn>
  requires requires { &Fn::operator(); }
inline constexpr int fn_arity<Fn> =
    arity_of<typename member_call<decltype(&Fn::operator())>::type>;
template <class R, class... A>
inline constexpr int fn_arity<R (*)(A...)> = static_cast<int>(sizeof...(A));
template <class R, class... A>
inline constexpr int fn_arity<R (*)(A...) noexcept> = static_cast<int>(sizeof...(A));

template <class Fn>
struct fn_signature : three_args<void> {};
template <class Fn>
  requires requires { &Fn::operator(); }
struct fn_signature<Fn>
    : three_args<typename member_call<decltype(&Fn::operator())>::type> {};
template <class R, class A, class E, class S>
struct fn_signature<R (*)(A, E, S)> : three_args<R(A, E, S)> {};
template <class R, class A, class E, class S>
struct fn_signature<R (*)(A, E, S) noexcept> : three_args<R(A, E, S)> {};

}  // namespace kcont::detail
