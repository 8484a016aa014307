// kcont/run.hpp — run a continuation now, or defer it to its level's queue.
//
// Defines `run` (one continuation: the NetBSD patch's kcont_run), `run_all` (drain an
// object's callback queue through run: kcont_run_all) and `defer`
// (kcont_defer), over any `deferral_target`: a dispatcher owning one queue per
// level (kcont/dispatcher.hpp has the manual one). The rules (docs/design.md):
//
//  1. requested level L runs at once when the caller's level is <= L or L is
//     immediate; otherwise it is deferred to L's queue and L is scheduled;
//  2. a deferral saves obj/status once; later deferrals keep them, and the
//     deferred continuation runs with the saved values;
//  3. after the function is called, kcont never touches the continuation;
//  4. run_all gives every continuation the caller's obj/status, unless that
//     continuation was itself deferred (the NetBSD patch overwrote its loop variable).
//
// In Asio's words, `kcont::run` is `asio::dispatch` (it runs k now when the
// current level allows it, else queues it), and `kcont::defer` is
// `asio::post`: it always queues k with obj/status saved and returns at
// once, never running k inline whatever the current level. It is not
// `asio::defer` (post plus a hint that the caller continues the current
// handler); kcont has no such hint. Nothing here allocates.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"

namespace kcont {

// What run and defer did.
enum class run_result : std::uint8_t {
  ran,       // the function was called (it may have destroyed the continuation)
  deferred,  // queued on its level's queue, obj/status saved
  refused,   // already queued somewhere, or immediate (nothing to defer to)
};

// A deferral target: owns a queue per level of `level_type`, and
// `push_deferred(hook, before_link)` queues a continuation on the queue of its
// own level, calling before_link after claiming it (see kcqueue::push), and
// schedules that level's runner. `concurrent` says whether other threads may
// touch its queues.
template <class D>
concept deferral_target =
    requires {
      typename D::level_type;
      { D::concurrent } -> std::convertible_to<bool>;
    } && level_set<typename D::level_type> &&
    requires(D& d, kc_hook& h, detail::nothing before_link) {
      { d.push_deferred(h, before_link) } -> std::same_as<push_result>;
    };

namespace detail {

// The "save" row of the state table in kcont/kc_hook.hpp: plain stores,
// whatever Concurrent says. (The one writer besides failed claims, a runner
// clearing the previous deferral's bit, wrote before our load whenever it
// sees the bit clear; when it sees it set we store nothing.)
template <bool Concurrent, class Obj, class Status, class Level>
void save_once(kc_base<Obj, Status, Level>& k, const Obj& o, const Status& s) {
  using A = detail::kc_base_access<Obj, Status, Level>;
  const std::uint8_t st =
      hook_access::state(k).load(std::memory_order_relaxed);
  if (st & hook_access::deferred_bit)
    return;  // rule 2: the first deferral's values stand
  A::saved_obj(k) = o;
  A::saved_status(k) = s;
  hook_access::state(k).store(
      static_cast<std::uint8_t>(st | hook_access::deferred_bit),
      std::memory_order_relaxed);
}

// The same row after a kcqueue's claim, which set the deferred bit with
// the queued one; `before` is the state that claim replaced.
template <class Obj, class Status, class Level>
void save_once_after(kc_base<Obj, Status, Level>& k, const Obj& o, const Status& s,
                     std::uint8_t before) {
  using A = detail::kc_base_access<Obj, Status, Level>;
  if (before & hook_access::deferred_bit) return;  // rule 2
  A::saved_obj(k) = o;
  A::saved_status(k) = s;
}

// The debug check behind "run a deferred continuation without a fresh obj":
// the caller passes Obj{} or the saved value itself. Types without == pass.
template <class Obj>
bool no_fresh_obj(const Obj& passed, const Obj& saved) {
  if constexpr (std::equality_comparable<Obj>)
    return passed == Obj{} || passed == saved;
  else
    return true;
}

}  // namespace detail

// Effects: queues k on the queue of k's level, saving obj and status unless an
//   earlier deferral saved them (rule 2), and schedules that level.
// Returns: deferred, or refused when k is already queued or k is immediate
//   (an immediate level has no queue to wait on). A refusal leaves k
//   untouched: not queued, no obj/status saved, still the caller's. This is
//   a result in every build, not a contract violation: code that picks a
//   continuation's level at run time may defer whatever it holds and run the
//   refused ones itself (run() runs an immediate one at once).
// Complexity: O(1); no allocation. Thread-safety: as the target's queues.
template <deferral_target D, class Obj, class Status>
run_result defer(D& d, kc_base<Obj, Status, typename D::level_type>& k,
                 std::type_identity_t<Obj> obj,
                 std::type_identity_t<Status> status) {
  if (!is_deferrable_level(k.level())) return run_result::refused;
  const push_result r = d.push_deferred(k, [&](auto... before_claim) {
    if constexpr (sizeof...(before_claim) == 0)
      detail::save_once<D::concurrent>(k, obj, status);
    else
      detail::save_once_after(k, obj, status, before_claim...);
  });
  return detail::pushed(r) ? run_result::deferred : run_result::refused;
}

namespace detail {

// How run reaches a continuation: a kc_base through its trampoline; a kc
// whose type is known directly, with its compile-time level when it has one.
template <class K>
struct run_traits;
template <class Obj, class Status, level_set L>
struct run_traits<kc_base<Obj, Status, L>> {
  using type = kc_base<Obj, Status, L>;
  static constexpr bool static_immediate = false;
  static L level(const type& k) noexcept { return k.level(); }
  static void call(type& k, const Obj& o, const Status& s) {
    detail::kc_base_access<Obj, Status, L>::invoke(k, o, s);
  }
};
template <class Fn, class Env, level_spec Spec, class Obj, class Status>
struct run_traits<kc<Fn, Env, Spec, Obj, Status>> {
  using type = kc<Fn, Env, Spec, Obj, Status>;
  using L = level_set_of_t<Spec>;
  static constexpr bool static_immediate = detail::is_static_immediate<Spec>();
  static L level(const type& k) noexcept {
    if constexpr (is_static_level_v<Spec>)
      return L{Spec::value};
    else
      return k.level();
  }
  static void call(type& k, const Obj& o, const Status& s) {
    kc_access<Fn, Env, Spec, Obj, Status>::call(k, o, s);
  }
};

// run's slow path, with the state word run_path read (queued or deferred).
template <deferral_target D, class K, class Obj, class Status>
run_result run_slow(D& d, K& k, Obj obj, Status status,
                    typename D::level_type current, std::uint8_t st) {
  using T = run_traits<K>;
  using A = detail::kc_base_access<Obj, Status, typename D::level_type>;
  // Queued already (deferred and not yet run, or on an object's list): this
  // request coalesces with the pending one.
  if (st & hook_access::queued_bit) return run_result::refused;
  if (!runs_now(T::level(k), current)) return defer(d, k, obj, status);
  if (st & hook_access::deferred_bit) {
    KCONT_EXPECTS(detail::no_fresh_obj(obj, A::saved_obj(k)),
                  "run: a deferred continuation runs with its saved obj; pass "
                  "Obj{} (the NetBSD patch's KASSERT(obj == NULL)), not a fresh one");
    obj = A::saved_obj(k);
    status = A::saved_status(k);
    hook_access::clear<D::concurrent>(k, hook_access::deferred_bit);
  }
  T::call(k, obj, status);
  return run_result::ran;
}

// THE fast path of run and of a knote's fire (try_run_now): when k is
// neither queued nor carrying a deferral (one test of the state word) and
// its level allows it at `current` (rule 1), calls its function with the
// fresh obj/status. At a compile-time `immediate` level there is no test at
// all: such a continuation is never deferred (defer refuses it), and running
// it while on a queue breaks run's precondition, checked in debug builds.
// Otherwise, with `Full` (run: d is the deferral target) it defers k or
// takes run_slow; without (try_run_now: d is null) it returns `refused`,
// having done nothing.
// Returns: ran (k may be gone), or what defer / run_slow returned.
template <bool Full, class D, class K, class Obj, class Status, level_set L>
run_result run_path(D* d, K& k, const Obj& obj, const Status& status,
                    L current) {
  using T = run_traits<K>;
  if constexpr (T::static_immediate) {
    KCONT_EXPECTS(!k.is_queued(),
                  "run: an immediate continuation is on a queue; pop it "
                  "before running it");
    (void)d;
    (void)current;
    T::call(k, obj, status);
    return run_result::ran;
  } else {
    const std::uint8_t st =
        hook_access::state(k).load(std::memory_order_acquire);
    if ((st & hook_access::busy_bits) == 0) [[likely]] {
      if (!runs_now(T::level(k), current)) {
        if constexpr (Full)
          return defer(*d, k, obj, status);
        else
          return run_result::refused;
      }
      T::call(k, obj, status);
      return run_result::ran;
    }
    if constexpr (Full)
      return run_slow(*d, k, obj, status, current, st);
    else
      return run_result::refused;
  }
}

}  // namespace detail

// Effects: calls k's function now with (obj, env, status) when its level
//   allows it at `current` (rule 1), else defers it. A continuation that
//   carries a deferral runs with its saved obj/status instead (rule 2); the
//   caller then passes Obj{} (a debug check catches a fresh obj, as the
//   NetBSD patch's KASSERT(obj == NULL) did).
// Returns: ran; deferred; or refused when k is queued already (a pending
//   deferral absorbs this request, as a pending kqueue event absorbs another
//   activation). After `ran`, k may no longer exist.
// Throws: what the function throws; k has then run (and is not re-queued).
template <deferral_target D, class Obj, class Status>
run_result run(D& d, kc_base<Obj, Status, typename D::level_type>& k,
               std::type_identity_t<Obj> obj,
               std::type_identity_t<Status> status,
               typename D::level_type current) {
  return detail::run_path<true>(&d, k, obj, status, current);
}

// The same for a caller-owned kc whose type is known: the function is called
// directly, with no trampoline; at a compile-time `immediate` level there is
// no test at all (an immediate continuation is never deferred).
// Precondition at a compile-time immediate level: k is not on a queue.
template <deferral_target D, class Fn, class Env, level_spec Spec, class Obj,
          class Status>
  requires std::same_as<level_set_of_t<Spec>, typename D::level_type>
run_result run(D& d, kc<Fn, Env, Spec, Obj, Status>& k,
               std::type_identity_t<Obj> obj,
               std::type_identity_t<Status> status,
               typename D::level_type current) {
  return detail::run_path<true>(&d, k, obj, status, current);
}

namespace detail {

// The part of run that needs no deferral target, for callers that cannot
// name one (a knote's fused fire function, which klist::fire calls through
// a pointer; its dispatcher is a template parameter of fire): run's fast
// path alone (run_path without Full).
// Returns: true when it called the function (k may be gone then); false
// when it did nothing: the caller must then take run's full path, which
// defers, refuses a queued continuation or resumes a saved deferral.
template <class Obj, class Status, level_set L>
bool try_run_now(kc_base<Obj, Status, L>& k, const Obj& obj,
                 const Status& status, L current) {
  return run_path<false, void>(nullptr, k, obj, status, current) ==
         run_result::ran;
}

// The same for a kc whose type is known: a direct call, and at a
// compile-time level no level test (none at all at `immediate`).
template <class Fn, class Env, level_spec Spec, class Obj, class Status>
bool try_run_now(kc<Fn, Env, Spec, Obj, Status>& k, const Obj& obj,
                 const Status& status, level_set_of_t<Spec> current) {
  return run_path<false, void>(nullptr, k, obj, status, current) ==
         run_result::ran;
}

}  // namespace detail

// Effects: pops the continuations queued on q when the call starts and runs
//   each (run above) with the caller's obj and status — the same values for
//   each, unless a continuation carries its own deferral (rule 4). One
//   pushed onto q while the call runs (a waiter re-arming itself) waits for
//   the next call: a call is bounded by the entries present when it
//   started, as FreeBSD's kqueue_scan bounds a scan with a marker. (It pops
//   at most that many: when one of them is erased meanwhile, one pushed
//   later may take its turn.)
// Returns: how many were popped (ran or deferred).
// Complexity: O(entries at the start): one walk to count them, one to run.
// Throws: what a function throws; the continuations not yet popped stay on q.
template <deferral_target D, class Obj, class Status, lock_policy Lock>
std::size_t run_all(D& d, kcqueue<kc_base<Obj, Status, typename D::level_type>, Lock>& q,
                    std::type_identity_t<Obj> obj,
                    std::type_identity_t<Status> status,
                    typename D::level_type current) {
  const std::size_t present = q.size_slow();
  std::size_t n = 0;
  while (n < present) {
    auto* k = q.pop();
    if (k == nullptr) break;
    ++n;
    // A continuation carrying its own deferral ignores the caller's obj
    // (rule 4); it is handed Obj{} so run's fresh-obj check stays quiet.
    (void)run(d, *k, k->is_deferred() ? Obj{} : obj, status, current);
  }
  return n;
}

// Misuse named by its cause: a continuation of another level set than the
// dispatcher's, or a current level from another level set, would otherwise
// be "no matching function" over every overload above. These take part only
// when no overload above can (the constraints exclude each other), so they
// change no valid call. They also take a kc whose obj and status types could
// not be deduced, without a word: its own static_assert has said why, and
// the overload failure that would follow is noise.
namespace detail {
template <class D, class K>
concept other_level_set =
    std::derived_from<K, kc_hook> && requires { typename K::level_type; } &&
    !std::same_as<typename K::level_type, typename D::level_type>;
template <class K>
concept undeduced_kc = requires { typename K::obj_type; } &&
                       std::same_as<typename K::obj_type, undeduced>;
template <class D, class K, class Current>
concept misused_levels =
    std::derived_from<K, kc_hook> &&
    (other_level_set<D, K> || undeduced_kc<K> ||
     !std::convertible_to<Current, typename D::level_type>);
}  // namespace detail

template <deferral_target D, class K, class Obj, class Status, class Current>
  requires detail::misused_levels<D, K, Current>
run_result run(D&, K&, Obj&&, Status&&, Current&&) {
  static_assert(!detail::other_level_set<D, K>,
                "kcont::run: the continuation's level set is not the "
                "dispatcher's: a continuation of level set L runs through a "
                "dispatcher of L (manual_dispatcher<L>, thread_dispatcher<L>)");
  static_assert(detail::other_level_set<D, K> || detail::undeduced_kc<K> ||
                    std::convertible_to<Current, typename D::level_type>,
                "kcont::run: the current level (the last argument) is not a "
                "level of the dispatcher's level set (D::level_type)");
  return run_result::refused;
}

template <deferral_target D, class K, class Obj, class Status>
  requires(detail::other_level_set<D, K> || detail::undeduced_kc<K>)
run_result defer(D&, K&, Obj&&, Status&&) {
  static_assert(!detail::other_level_set<D, K>,
                "kcont::defer: the continuation's level set is not the "
                "dispatcher's: a continuation of level set L is deferred to a "
                "dispatcher of L (manual_dispatcher<L>, thread_dispatcher<L>)");
  return run_result::refused;
}

template <deferral_target D, class K, class Lock, class Obj, class Status,
          class Current>
  requires detail::misused_levels<D, K, Current>
std::size_t run_all(D&, kcqueue<K, Lock>&, Obj&&, Status&&, Current&&) {
  static_assert(!detail::other_level_set<D, K>,
                "kcont::run_all: the queue's level set is not the "
                "dispatcher's: a queue of continuations of level set L is "
                "drained through a dispatcher of L");
  static_assert(detail::other_level_set<D, K> ||
                    std::convertible_to<Current, typename D::level_type>,
                "kcont::run_all: the current level (the last argument) is not "
                "a level of the dispatcher's level set (D::level_type)");
  return 0;
}

}  // namespace kcont
