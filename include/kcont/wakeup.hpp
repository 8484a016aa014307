// kcont/wakeup.hpp — how a runner sleeps and is woken: the wake-up policies.
//
// Defines the wake-up policies a thread_dispatcher chooses from at compile
// time (the portable two here; the POSIX one in kcont/posix/fd_wakeup.hpp):
//
//   atomic_wakeup  — std::atomic::wait/notify on a ticket (a futex on Linux).
//                    No syscall on the producer side unless a runner is
//                    actually asleep.
//   condvar_wakeup — std::mutex + std::condition_variable, for platforms
//                    where atomic waits are not trustworthy, or to compare.
//   default_wakeup — what a thread_dispatcher uses unless told otherwise:
//                    atomic_wakeup where std::atomic::wait sleeps on the
//                    kernel's own address wait, condvar_wakeup elsewhere.
//   fd_wakeup      — (kcont/posix/fd_wakeup.hpp) an eventfd (Linux) or a
//                    non-blocking pipe (other POSIX systems): the only
//                    async-signal-safe notify (a write(2)), and a
//                    descriptor a poll/epoll/Asio/libuv loop can watch.
//
// All of them implement the one sleep/wake protocol below, and a producer
// never takes the sleeper's lock on its fast path: a push that finds the
// runner awake costs one load (unlike a bare condition variable).
//
// ---- The runner's sleep/wake protocol (the one description; the code in
// kcont/detail/level_runners.hpp (thread_main), kcont/detail/spin_hold_off.hpp
// and the policies here refers to it) ----------------------------------------
//
// A runner thread of a thread_dispatcher moves through these states:
//
//   state     | what it does                        | leaves when      | a producer pays
//   ----------+-------------------------------------+------------------+---------------
//   running   | pops the highest non-empty level of | its queues are   | the push
//             | its levels (claimed) and runs it    | empty: hold-off  |
//   hold-off  | a learnt number of pauses before    | it is over:      | the push
//             | its first look, so that streamed    | spinning         |
//             | work gathers into batches           |                  |
//   spinning  | looks at its queues and the stop    | work or stop:    | the push
//             | flag (loads only) for at most       | running; time    |
//             | idle_spin; skipped with no_spin and | up: announced    |
//             | on a machine with one CPU           |                  |
//   announced | S1, S2, S3 below                    | S3 sees ready(): | the push, and
//             |                                     | running; else    | P2 if P1 sees
//             |                                     | asleep           | it (a wake-up)
//   asleep    | S4: the policy's wait               | woken: announced | as announced
//   stopped   | leaves the loop (after its queues   | -                | -
//             | are empty under drain_on_stop, at   |                  |
//             | once under hand_back_on_stop) and   |                  |
//             | passes the stop on (notify_all)     |                  |
//
// The steps, all sequentially consistent (ready() = stop requested, or work
// in one of the runner's queues):
//
//   step | side     | operation
//   -----+----------+---------------------------------------------------------
//   P0   | producer | push the continuation on its level queue
//   P1   | producer | only when P0 made the queue non-empty: sleepers_ > 0?
//        |          |   0: done, nothing written
//   P2   | producer | ticket_ += 1, then wake one sleeper (futex wake,
//        |          |   condvar notify; fd_wakeup: one write(2))
//   S1   | sleeper  | sleepers_ += 1 (announce)
//   S2   | sleeper  | t = ticket_ (fd_wakeup: reset() empties the descriptor)
//   S3   | sleeper  | ready()? yes: sleepers_ -= 1, running
//   S4   | sleeper  | sleep while ticket_ == t, then sleepers_ -= 1 and
//        |          |   back to S1 (fd_wakeup: poll(2) until readable, then
//        |          |   back to S2)
//
// Why no wake-up is lost (a Dekker pair): if P1 reads 0, P1 precedes S1, so
// P0 precedes S3 and the sleeper sees the work. Otherwise the producer moves
// the ticket after its push: if S2 read the old ticket, S4 does not sleep (or
// is woken); if it read the new one, P0 precedes S3 again. A producer that
// finds nobody asleep only reads a line the awake runner never writes.
// Around the protocol: stop() sets the stop flag (seq_cst), then
// notify_all() moves the ticket for every sleeper; a pool worker that pops
// and sees more work waiting wakes a sibling, so one wake-up per
// empty-to-non-empty transition keeps every worker busy; a manual runner's
// waiter may be a poll loop that never announces itself, so its producers
// always notify() (P2 without P1), and drain() resets the descriptor first
// and re-arms it when work is left.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace kcont {

// What a runner asks of a wake-up policy.
//   notify()     — a queue turned non-empty: wake one sleeper (may be spurious).
//   notify_all() — stop: wake every sleeper.
//   wait(ready)  — sleep until ready() is true; returns with ready() observed
//                  true (no lost wake-up: ready() is re-checked after the
//                  sleeper is announced).
//   signal_safe  — whether notify() may be called from a signal handler.
// Optionally wake_sleeper(): like notify(), but free when nobody sleeps in
// wait() (a runner thread); notify() must also reach waiters that do not go
// through wait() (a poll loop watching a descriptor).
template <class W>
concept wakeup_policy =
    std::default_initializable<W> && requires(W& w, bool (*ready)()) {
      w.notify();
      w.notify_all();
      w.wait(ready);
      { W::signal_safe } -> std::convertible_to<bool>;
    };

// How long a runner thread keeps looking for work after its queues ran dry,
// before it announces itself and sleeps: the `idle_spin` knob of a
// thread_dispatcher policy (thread_dispatcher.hpp), whatever the wake-up.
//
// While a runner spins (the "spinning" state of the table above), a
// producer finds no sleeper: its push costs no futex wake or write(2), and
// the runner picks the work up within a cache-line transfer instead of a
// scheduler wake-up. Back-to-back work (a request and the next one, a batch
// and the next batch) thus never sleeps. The price is at most `duration` of
// CPU each time a runner runs dry; a runner does not spin on a machine with
// one CPU (the producer it waits for would need that CPU). The first look
// comes after a learnt hold-off (kcont/detail/spin_hold_off.hpp), so that a
// runner takes streamed work in batches instead of pulling each push's cache
// line away from its producer.
//
//   no_spin               sleep at once
//   spin_for_ns<N>        spin at most N nanoseconds
//   default_idle_spin     spin_for_ns<2000>: covers the round trip of a
//                         producer that posts again as soon as it sees its
//                         previous work done, also when that producer's
//                         thread is briefly preempted (benchmarks/README.md
//                         has the measurements with and without)
template <std::uint32_t Nanoseconds>
struct spin_for_ns {
  static constexpr std::chrono::nanoseconds duration{Nanoseconds};
};
using no_spin = spin_for_ns<0>;
using default_idle_spin = spin_for_ns<2000>;

// An idle_spin knob: a type with a constexpr `duration`.
template <class S>
concept idle_spin_policy = requires {
  { S::duration } -> std::convertible_to<std::chrono::nanoseconds>;
};

namespace detail {
// One spin-wait step: tells the core the thread is spinning (x86 pause,
// Arm yield), which frees resources for its SMT sibling and saves power.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}
}  // namespace detail

// std::atomic::wait/notify on a 32-bit ticket (a futex on Linux).
//
// Implements the steps P1, P2 and S1..S4 of the sleep/wake protocol at the
// top of this header, with std::atomic::wait as S4.
//
// Thread-safety: all members from any thread; none from a signal handler.
class atomic_wakeup {
 public:
  static constexpr bool signal_safe = false;

  // Effects: wakes one sleeper if any is announced (moving the ticket).
  // Complexity: one load; with a sleeper, one RMW and a futex wake.
  void notify() noexcept {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    ticket_.fetch_add(1, std::memory_order_seq_cst);
    ticket_.notify_one();
  }
  // Effects: moves the ticket and wakes every sleeper.
  void notify_all() noexcept {
    ticket_.fetch_add(1, std::memory_order_seq_cst);
    ticket_.notify_all();
  }
  // Effects: blocks until ready() returns true. Never allocates.
  template <class Ready>
  void wait(Ready&& ready) {
    while (!ready()) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      const std::uint32_t t = ticket_.load(std::memory_order_seq_cst);
      if (!ready()) ticket_.wait(t, std::memory_order_seq_cst);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

 private:
  std::atomic<std::uint32_t> ticket_{0};
  std::atomic<std::uint32_t> sleepers_{0};
};

// std::mutex + std::condition_variable. The same protocol (top of this
// header), S1..S4 under the mutex; the producer takes the mutex only when a
// sleeper is announced (after P2), and then only to order its notify after
// the sleeper's wait began.
//
// Thread-safety: all members from any thread; none from a signal handler.
class condvar_wakeup {
 public:
  static constexpr bool signal_safe = false;

  // Effects: wakes one sleeper if any is announced (moving the ticket).
  void notify() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    ticket_.fetch_add(1, std::memory_order_seq_cst);
    { std::lock_guard<std::mutex> g(m_); }
    cv_.notify_one();
  }
  // Effects: moves the ticket and wakes every sleeper.
  void notify_all() {
    ticket_.fetch_add(1, std::memory_order_seq_cst);
    { std::lock_guard<std::mutex> g(m_); }
    cv_.notify_all();
  }
  // Effects: blocks until ready() returns true.
  template <class Ready>
  void wait(Ready&& ready) {
    while (!ready()) {
      std::unique_lock<std::mutex> lk(m_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      const std::uint32_t t = ticket_.load(std::memory_order_seq_cst);
      if (!ready())
        cv_.wait(lk, [&] { return ticket_.load(std::memory_order_seq_cst) != t; });
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

 private:
  std::atomic<std::uint32_t> ticket_{0};
  std::atomic<std::uint32_t> sleepers_{0};
  std::mutex m_;
  std::condition_variable cv_;
};

// The wake-up a thread_dispatcher uses by default.
//
// atomic_wakeup is only as good as the standard library's std::atomic::wait.
// On Linux libstdc++ and libc++ put a futex under it, libc++ elsewhere the
// OS's address wait, and MSVC's STL WaitOnAddress. libstdc++ on other systems
// (MinGW-w64 among them) falls back to a shared table of condition variables
// that, in GCC 12, can lose a notify: a runner would sleep on work that is
// already queued. There condvar_wakeup, which keeps its own mutex and
// condition variable, is the safe choice.
#if defined(__linux__) || defined(_LIBCPP_VERSION) || defined(_MSC_VER)
using default_wakeup = atomic_wakeup;
#else
using default_wakeup = condvar_wakeup;
#endif

}  // namespace kcont
