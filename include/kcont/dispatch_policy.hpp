// kcont/dispatch_policy.hpp — the policy knobs of a thread_dispatcher and
// their detection.
//
// A thread_dispatcher's policy (kcont/thread_dispatcher.hpp) is one optional
// struct; each knob is a member type, detected with `requires`, with the
// default in brackets:
//
//   queue        — a level queue of kc_hook          [mpsc_queue<>]
//                  mpsc_queue<> (lock-free producers, signal-safe),
//                  kcqueue<kc_hook, std::mutex>, kcqueue<kc_hook, spin_lock>
//   wakeup       — how runners sleep (wakeup.hpp)     [default_wakeup]
//                  atomic_wakeup, condvar_wakeup, fd_wakeup (signal-safe,
//                  pollable: wait_fd(); kcont/posix/fd_wakeup.hpp)
//   idle_spin    — how long a runner thread spins     [default_idle_spin]
//                  before it sleeps (wakeup.hpp)
//                  no_spin, spin_for_ns<N>: back-to-back work finds the
//                  runner awake (no wake-up syscall, no scheduler delay) at
//                  the price of at most N ns of CPU each time it runs dry;
//                  paced by a learnt hold-off, so a stream of work is taken
//                  in batches (kcont/detail/spin_hold_off.hpp)
//   on_exception — a continuation that throws         [terminate_on_exception]
//                  terminate_on_exception: std::terminate, as from a thread;
//                  rethrow_exceptions: out of drain()/stop() to their caller
//                    (only for plans without threads: enforced at compile
//                    time, a runner thread has no caller to rethrow to);
//                  any callable h(std::exception_ptr, Level): called on the
//                    runner's thread, then the runner goes on.
//                  Whichever: the continuation that threw has run (it is not
//                  re-queued) and every continuation not yet run stays queued.
//   on_stop      — what stop() does with pending work [drain_on_stop]
//                  drain_on_stop: runners finish their queues, then the
//                    caller of stop() runs whatever is left (work deferred
//                    across runners while they stopped, manual levels);
//                  hand_back_on_stop: runners stop after the continuation
//                    they are running; stop(out) moves the rest, unrun and
//                    with their saved obj/status, to the caller's kcqueue.
//   on_thread_start — called on each runner thread    [nothing]
//                  before it runs any work: pin it, name it, set up its
//                  thread_local state. Either a static member function
//                  `static void on_thread_start(Level level, unsigned
//                  thread)` or a member type `using on_thread_start = F;`
//                  (F default-constructed on that thread, then called as
//                  F{}(level, thread)). `level` is the lowest level of the
//                  thread's runner (its index in the plan), `thread` the
//                  thread's index in that runner (0 .. N-1 of a
//                  pool_runner<N>). Manual runners have no thread: never
//                  called for them. An exception leaving it ends the
//                  program, as from any std::thread.
//
// Knobs are orthogonal; a combination the dispatcher cannot honour fails to
// compile with a message naming the knob.
//
// Usage:
//   struct pollable : kcont::dispatch_defaults {
//     using wakeup = kcont::fd_wakeup;
//     using on_stop = kcont::hand_back_on_stop;
//   };
//   struct named : kcont::dispatch_defaults {   // each runner thread, first
//     static void on_thread_start(kcont::bsd_level level, unsigned thread) {
//       pthread_setname_np(pthread_self(), name_of(level, thread));
//     }
//   };
#pragma once

#include <chrono>
#include <concepts>
#include <exception>
#include <type_traits>

#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/mpsc_queue.hpp"
#include "kcont/wakeup.hpp"

namespace kcont {

// on_exception: a throwing continuation ends the program (the default, and
// what an exception leaving a std::thread does anyway).
struct terminate_on_exception {};
// on_exception: the exception leaves drain() (or stop()) in the caller's
// thread; only for plans without runner threads.
struct rethrow_exceptions {};
// on_stop: pending work runs before stop() returns.
struct drain_on_stop {};
// on_stop: pending work is handed back to the caller of stop(out).
struct hand_back_on_stop {};

// The default policy: every knob at its default.
struct dispatch_defaults {};

namespace detail {

// What a level queue must offer a thread_dispatcher (mpsc_queue<> and
// kcqueue<kc_hook, Lock> do). Not a user extension point: a level queue
// takes part in the claim protocol of kc_hook (kc.hpp), which only kcont's
// own queues implement; it names what the dispatcher relies on.
template <class Q>
concept level_queue =
    std::default_initializable<Q> &&
    requires(Q& q, kc_hook& h, detail::nothing before_link,
             void (*under_lock)(kc_hook&) noexcept) {
      { q.push(h, before_link) } -> std::same_as<push_result>;
      { q.pop() } -> std::same_as<kc_hook*>;
      { q.pop_claimed(under_lock) } -> std::same_as<kc_hook*>;
      { q.erase_slow(h) } -> std::same_as<bool>;
      { q.empty() } -> std::same_as<bool>;
    };

template <class P>
struct policy_queue {
  using type = mpsc_queue<kc_hook>;
};
template <class P>
  requires requires { typename P::queue; }
struct policy_queue<P> {
  using type = typename P::queue;
};
template <class P>
struct policy_wakeup {
  using type = default_wakeup;
};
template <class P>
  requires requires { typename P::wakeup; }
struct policy_wakeup<P> {
  using type = typename P::wakeup;
};
template <class P>
struct policy_idle_spin {
  using type = default_idle_spin;
};
template <class P>
  requires requires { typename P::idle_spin; }
struct policy_idle_spin<P> {
  using type = typename P::idle_spin;
};
template <class P>
struct policy_on_exception {
  using type = terminate_on_exception;
};
template <class P>
  requires requires { typename P::on_exception; }
struct policy_on_exception<P> {
  using type = typename P::on_exception;
};
template <class P>
struct policy_on_stop {
  using type = drain_on_stop;
};
template <class P>
  requires requires { typename P::on_stop; }
struct policy_on_stop<P> {
  using type = typename P::on_stop;
};

// on_thread_start: a member type F (called as F{}(level, thread)), a static
// member function, or nothing.
template <class P, class Level>
struct policy_on_thread_start {
  // A member of that name that fits neither form (a non-static member
  // function, a wrong signature) would otherwise be ignored without a word.
  static_assert(!requires { &P::on_thread_start; },
                "kcont::thread_dispatcher: Policy::on_thread_start must be a "
                "static member function on_thread_start(Level level, unsigned "
                "thread), or a member type naming a default-constructible "
                "callable f(Level, unsigned)");
  static void call(Level, unsigned) noexcept {}
};
template <class P, class Level>
  requires requires { typename P::on_thread_start; }
struct policy_on_thread_start<P, Level> {
  using type = typename P::on_thread_start;
  static_assert(std::default_initializable<type> &&
                    std::invocable<type&, Level, unsigned>,
                "kcont::thread_dispatcher: Policy::on_thread_start must be a "
                "default-constructible callable f(Level level, unsigned "
                "thread), or a static member function of that signature");
  static void call(Level level, unsigned thread) {
    type f{};
    f(level, thread);
  }
};
template <class P, class Level>
  requires(!requires { typename P::on_thread_start; } &&
           requires(Level l, unsigned t) { P::on_thread_start(l, t); })
struct policy_on_thread_start<P, Level> {
  static void call(Level level, unsigned thread) {
    P::on_thread_start(level, thread);
  }
};

template <class Q>
inline constexpr bool signal_safe_queue = false;
template <class Q>
  requires requires { Q::signal_safe_push; }
inline constexpr bool signal_safe_queue<Q> = Q::signal_safe_push;

// Policy's knobs with their defaults applied and checked, for a dispatcher
// of level set Level whose plan starts threads or not.
template <class Policy, level_set Level, bool HasThreads>
struct dispatch_knobs {
  using queue = typename policy_queue<Policy>::type;
  using wakeup = typename policy_wakeup<Policy>::type;
  using idle_spin_type = typename policy_idle_spin<Policy>::type;
  using on_exception = typename policy_on_exception<Policy>::type;
  using on_stop = typename policy_on_stop<Policy>::type;

  static constexpr bool rethrows = std::is_same_v<on_exception, rethrow_exceptions>;
  static constexpr bool terminates =
      std::is_same_v<on_exception, terminate_on_exception>;
  static constexpr bool hands_back = std::is_same_v<on_stop, hand_back_on_stop>;
  // True when a push is async-signal-safe: a lock-free queue and a write(2)
  // wake-up.
  static constexpr bool signal_safe = signal_safe_queue<queue> && wakeup::signal_safe;

  static_assert(level_queue<queue>,
                "kcont::thread_dispatcher: Policy::queue must be a level queue "
                "of kc_hook (mpsc_queue<>, kcqueue<kc_hook, std::mutex>, "
                "kcqueue<kc_hook, spin_lock>)");
  static_assert(!std::is_same_v<queue, kcqueue<kc_hook, no_lock>>,
                "kcont::thread_dispatcher: a queue without a lock is not safe "
                "across threads; use mpsc_queue<> or a real lock");
  static_assert(wakeup_policy<wakeup>,
                "kcont::thread_dispatcher: Policy::wakeup must be a wake-up "
                "policy (atomic_wakeup, condvar_wakeup, fd_wakeup)");
  static_assert(idle_spin_policy<idle_spin_type>,
                "kcont::thread_dispatcher: Policy::idle_spin must be no_spin, "
                "spin_for_ns<N> or a type with a constexpr duration");
  static constexpr std::chrono::nanoseconds idle_spin =
      std::chrono::duration_cast<std::chrono::nanoseconds>(idle_spin_type::duration);
  static_assert(std::same_as<on_stop, drain_on_stop> || hands_back,
                "kcont::thread_dispatcher: Policy::on_stop must be "
                "drain_on_stop or hand_back_on_stop");
  static_assert(rethrows || terminates ||
                    std::invocable<on_exception&, std::exception_ptr, Level>,
                "kcont::thread_dispatcher: Policy::on_exception must be "
                "terminate_on_exception, rethrow_exceptions or a callable "
                "h(std::exception_ptr, Level)");
  static_assert(!(rethrows && HasThreads),
                "kcont::thread_dispatcher: rethrow_exceptions needs a caller to "
                "rethrow to, and a runner thread has none: use a handler "
                "h(std::exception_ptr, Level) or terminate_on_exception");

  // Effects: the policy's on_thread_start(level, thread), if any; called
  //   first on each runner thread (the thread's entry in
  //   kcont/detail/level_runners.hpp).
  static void thread_start(Level level, unsigned thread) {
    policy_on_thread_start<Policy, Level>::call(level, thread);
  }

  // An exception reaching this noexcept frame calls std::terminate.
  static void resume_or_terminate(kc_hook& h) noexcept {
    hook_access::op(h, detail::kc_op::resume_shared);
  }

  // Effects: runs h (popped claimed) at `level`, handling what it throws as
  //   on_exception says. Throws: only with rethrow_exceptions.
  static void resume(kc_hook& h, on_exception& handler, Level level) {
    if constexpr (rethrows) {
      hook_access::op(h, detail::kc_op::resume_shared);
    } else if constexpr (terminates) {
      resume_or_terminate(h);
    } else {
#if defined(__cpp_exceptions)
      try {
        hook_access::op(h, detail::kc_op::resume_shared);
      } catch (...) {
        handler(std::current_exception(), level);
      }
#else
      hook_access::op(h, detail::kc_op::resume_shared);  // cannot throw
#endif
    }
    (void)handler;
    (void)level;
  }
};

}  // namespace detail
}  // namespace kcont
