// kcont/posix/signal_source.hpp — POSIX signals as an event source, and
// EVFILT_SIGNAL.
//
// Defines `basic_signal_source<Level>` (alias `signal_source`): one klist per
// signal number, fired from normal context by dispatch() with the number of
// deliveries counted since the last dispatch; and `signal_filter<Source>`,
// FreeBSD's EVFILT_SIGNAL (sys/kern/kern_sig.c: filt_sigattach,
// filt_sigdetach, filt_signal) for a kqueue or a standalone knote.
//
// How a delivery becomes an event: while a signal has a knote, the source's
// handler is its disposition (installed with sigaction(2) by the first
// knote's attach, the previous action saved and restored by the last
// knote's detach). The async-signal-safe handler adds 1 to the signal's
// atomic counter and, when nothing was pending, makes the source's
// descriptor (native_handle(): an eventfd on Linux, a pipe elsewhere)
// readable. A loop watches that descriptor (a kqueue's scan, poll(2), Asio,
// libuv) and calls dispatch(), which takes each counter (exchange with 0)
// and fires the signal's klist with the count as the hint: every knote
// then runs its own continuation at its own level.
//
// Why a handler and not Linux's signalfd(2): a signalfd reads only signals
// blocked in EVERY thread (an unblocked one takes the signal with its normal
// disposition), which a library cannot arrange for threads it did not
// create, and it is Linux's only. The handler works on every POSIX system
// whatever the threads' masks, so long as one thread leaves the signal
// unblocked. Both count the same: a standard signal sent again while still
// pending is merged by the kernel (POSIX); real-time signals queue.
//
// Differences from FreeBSD, where EVFILT_SIGNAL "coexists with signal() and
// sigaction() with a lower precedence" (kqueue(2)):
// - The program's own handler for a watched signal is REPLACED while the
//   signal has a knote (and restored after): its disposition is the source's
//   handler, so a signal that would terminate the process (SIG_DFL) is
//   counted instead, and an ignored one (SIG_IGN) is counted too, as FreeBSD
//   records it (tdsendsignal posts the knote before the ignore check).
//   A program that wants its own handler and deferral keeps it and calls
//   defer_from_signal (kcont/thread_dispatcher.hpp) for another signal: the
//   two live side by side.
// - One source owns a signal at a time (the disposition is process-wide): a
//   knote on a signal another source watches fails with EBUSY.
// - SIGKILL, SIGSTOP and numbers outside 1..signal_limit-1: EINVAL
//   (sigaction refuses them; FreeBSD accepts the knote, which never fires).
//
// A kqueue drives the source itself (kcont/detail/kqueue_wait.hpp): its
// scans dispatch() it (no system call when nothing was delivered) and its
// blocking scan sleeps in its fd_source's ONE wait, which watches this
// source's descriptor (or, without an fd_source, in poll(2) on it).
//
// Usage:
//   kcont::fd_source fds;  kcont::signal_source sigs;
//   kcont::kqueue<kcont::filters<kcont::read_filter<>, kcont::signal_filter<>>> kq{fds, sigs};
//   kq.change({.ident = SIGHUP, .filter = kcont::filter_id::signal,
//              .flags = kcont::ev::add});
//   kq.kevent({}, out, std::nullopt);  // sleeps; {SIGHUP, signal, data = deliveries}
#pragma once

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>

#include <poll.h>
#include <signal.h>

#include "kcont/contract.hpp"
#include "kcont/filter.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/kevent.hpp"
#include "kcont/klist.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/posix/fd_wakeup.hpp"

namespace kcont {

// One more than the largest signal number a source can watch (Linux: 65,
// signals 1..64 with the real-time ones; FreeBSD: 129).
#if defined(_SIG_MAXSIG)
inline constexpr int signal_limit = _SIG_MAXSIG + 1;
#else
inline constexpr int signal_limit = NSIG;
#endif

namespace detail {

// What the handler touches: per-signal counters, a pending bit per signal
// and the wake-up descriptor. Not a template, so that one handler serves
// every source type. Every member the handler uses is a lock-free atomic or
// one write(2): async-signal-safe.
struct signal_core {
  static constexpr int words = (signal_limit + 63) / 64;
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                    std::atomic<bool>::is_always_lock_free,
                "signal_source: the handler needs lock-free atomics");
  std::atomic<std::uint64_t> count[signal_limit] = {};
  std::atomic<std::uint64_t> pending[words] = {};
  mutable std::atomic<bool> written{false};  // H4: the descriptor may need a reset
  fd_wakeup wake;
  // Effects: H3 and H4 of the state table (basic_signal_source).
  void notify() const noexcept {
    wake.notify();
    written.store(true, std::memory_order_release);
  }
};

// The source that owns each signal's disposition now (nullptr: none), and
// the handler calls in progress (a detach waits for them before its source
// may go away).
inline std::atomic<signal_core*> signal_owner[signal_limit] = {};
inline std::atomic<int> signal_handlers_running{0};

// The disposition of a watched signal. Async-signal-safe: lock-free atomics
// and, for the first signal pending since the last dispatch, one write(2)
// (errno preserved by fd_wakeup::notify).
inline void signal_handler(int sig) noexcept {
  signal_handlers_running.fetch_add(1, std::memory_order_seq_cst);
  if (sig > 0 && sig < signal_limit) {
    if (signal_core* c = signal_owner[sig].load(std::memory_order_seq_cst)) {
      c->count[sig].fetch_add(1, std::memory_order_relaxed);
      const std::uint64_t bit = std::uint64_t{1} << (sig % 64);
      // Acq_rel: a dispatch that takes the bit sees the count. Only the
      // first signal pending since a dispatch's exchange writes to the
      // descriptor: see the state table at basic_signal_source for why none
      // is lost.
      if (c->pending[sig / 64].fetch_or(bit, std::memory_order_acq_rel) == 0) c->notify();
    }
  }
  signal_handlers_running.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace detail

// The event source of POSIX signals: a klist per signal number.
//
// signal_filter's attach calls attach(kn, sig): the first knote on a signal
// makes the source its owner and installs the handler (the previous action
// saved); the last detach restores that action. A delivery is counted by the
// handler on whatever thread the kernel picks; dispatch() (normal context,
// any thread) fires each signal's klist with the deliveries counted since
// the last dispatch. Nothing allocates: the klists and counters are members.
//
// The counters, the pending bits and the descriptor (the one place this
// protocol is written):
//
//   who      | step                                   | why
//   ---------+----------------------------------------+-------------------------------
//   handler  | H1 count[sig] += 1                     |
//   handler  | H2 old = pending[w].fetch_or(bit)      | publishes H1 to a dispatch
//   handler  | H3 old == 0: write(2) to the descriptor| the first bit since D2
//   handler  | H4 then written = true                 | after H3 (wake() too: H3, H4)
//   dispatch | D0 written == 0, every word 0: return | no system call (every scan)
//   dispatch | D1 written.exchange(0) == 1: reset    | only a written descriptor
//   dispatch | D2 pending[w].exchange(0)             | after D1
//   dispatch | D3 n = count[sig].exchange(0); fire n | n may hold later H1s: the
//            |                                        |   next D3 then finds 0, skips
//
// Nothing is lost: a bit set before a D2 is taken by it (and its count by
// the D3 after); a bit set after a D2 finds the word 0 only if no handler
// set one since, and then H3 makes the descriptor readable after D1, so the
// loop's next poll returns. A handler that finds the word non-zero relies
// on the handler that set it, whose H3 comes after its H2 (readable again
// after any D1 that precedes the D2 taking both). D0 skips only when no bit
// is set. Nothing spins: a reset erases the writes before it, a write after
// it is followed by its H4, so a readable descriptor (which a level-
// triggered poll reports again and again) has written == 1 (once its
// handler passed H4) and the next dispatch resets it. A readable descriptor
// with nothing to fire is possible and harmless.
//
// Lifetime contract: outlives every knote attached to it; no signal is
//   watched when it is destroyed (debug builds abort). Not copyable.
// Thread-safety: attach, detach, dispatch and poll from any thread, never
//   from a signal handler (the handler is the source's own); filters' event
//   calls run under the klist's lock.
template <level_set Level = bsd_level>
class basic_signal_source {
 public:
  using hint_type = std::int64_t;
  using level_type = Level;
  using list_type = klist<hint_type, Level, std::mutex>;
  using knote_type = knote_base<hint_type, Level>;

  basic_signal_source() = default;
  basic_signal_source(const basic_signal_source&) = delete;
  basic_signal_source& operator=(const basic_signal_source&) = delete;
  ~basic_signal_source() {
    for ([[maybe_unused]] std::uint32_t n : knotes_)
      KCONT_EXPECTS(n == 0, "signal_source: destroyed with signals watched (detach them)");
  }

  // The descriptor that is readable while a delivery waits for dispatch():
  //   for poll(2), an fd_source read knote, or another loop (-1 only
  //   without exceptions when it could not be created: see fd_wakeup).
  // Thread-safety: any thread.
  [[nodiscard]] int native_handle() const noexcept { return core_.wake.native_handle(); }

  // Effects: links kn on sig's klist; the first knote on sig makes this
  //   source its owner and installs the handler with sigaction(2)
  //   (SA_RESTART, nothing masked), saving the previous action.
  // Returns: 0, or EINVAL (sig outside 1..signal_limit-1, or sigaction
  //   refuses it: SIGKILL, SIGSTOP), EBUSY (another source watches sig),
  //   EEXIST (kn is on a klist already).
  // Complexity: O(1); a system call for a signal's first knote. No
  //   allocation. Thread-safety: any thread, not from a signal handler.
  int attach(knote_type& kn, int sig) {
    if (sig <= 0 || sig >= signal_limit) return EINVAL;
    std::lock_guard<std::mutex> g(lock_);
    const auto i = static_cast<std::size_t>(sig);
    if (knotes_[i] == 0) {
      detail::signal_core* expected = nullptr;
      if (!detail::signal_owner[i].compare_exchange_strong(expected, &core_)) return EBUSY;
      core_.count[i].store(0, std::memory_order_relaxed);
    }
    if (!lists_[i].insert(kn)) {
      if (knotes_[i] == 0) detail::signal_owner[i].store(nullptr);
      return EEXIST;
    }
    if (knotes_[i] == 0) {
      struct sigaction sa {};
      sa.sa_handler = &detail::signal_handler;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      if (::sigaction(sig, &sa, &saved_[i]) != 0) {
        const int err = errno;
        (void)lists_[i].erase(kn);
        detail::signal_owner[i].store(nullptr);
        return err;
      }
    }
    ++knotes_[i];
    return 0;
  }

  // Effects: unlinks kn from sig's klist; the last knote on sig restores the
  //   action attach saved, gives the signal up, waits for handler calls in
  //   progress (on any thread) and drops deliveries not yet dispatched. Once
  //   it returns, no fan-out of this source calls kn's filter.
  // Complexity: O(1) plus, for the last knote, a system call and the wait
  //   for running handlers. Thread-safety: any thread; not from a signal
  //   handler nor from inside the filter's event.
  void detach(knote_type& kn, int sig) noexcept {
    if (sig <= 0 || sig >= signal_limit) return;
    std::lock_guard<std::mutex> g(lock_);
    const auto i = static_cast<std::size_t>(sig);
    if (!lists_[i].erase(kn)) return;
    if (--knotes_[i] != 0) return;
    (void)::sigaction(sig, &saved_[i], nullptr);
    detail::signal_owner[i].store(nullptr, std::memory_order_seq_cst);
    // A handler that read this source as the owner has raised the count
    // of running handlers before it (both seq_cst): wait for it to finish.
    while (detail::signal_handlers_running.load(std::memory_order_seq_cst) != 0)
      std::this_thread::yield();
    core_.count[i].store(0, std::memory_order_relaxed);
  }

  // Effects: resets the descriptor if it was written, then fires the klist
  //   of each signal delivered since the last dispatch with the number of
  //   its deliveries (the state table above); each knote that fires runs its
  //   continuation at `current` through `d` (or defers it to its level).
  // Returns: how many knotes fired. Complexity: O(signal_limit / 64 +
  //   signals delivered + their knotes); with nothing delivered, a few
  //   atomic loads (what a kqueue's every scan calls: kqueue_wait.hpp). No
  //   allocation, no system call but the descriptor's reset.
  // Thread-safety: any thread (two dispatches share the counts out); not
  //   from a signal handler.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t dispatch(D& d, Level current) {
    if (!ready()) return 0;
    if (core_.written.exchange(false, std::memory_order_acq_rel)) core_.wake.reset();
    std::size_t fired = 0;
    for (int w = 0; w < detail::signal_core::words; ++w) {
      std::uint64_t bits = core_.pending[w].exchange(0, std::memory_order_acq_rel);
      while (bits != 0) {
        const int sig = w * 64 + std::countr_zero(bits);
        bits &= bits - 1;
        const std::uint64_t n =
            core_.count[sig].exchange(0, std::memory_order_acquire);
        if (n == 0) continue;
        constexpr auto most = static_cast<std::uint64_t>(std::numeric_limits<hint_type>::max());
        fired += lists_[static_cast<std::size_t>(sig)].fire(
            d, static_cast<hint_type>(n > most ? most : n), current);
      }
    }
    return fired;
  }
  // Effects: dispatch for knotes whose continuations all run at once.
  std::size_t dispatch() {
    immediate_target<Level> t;
    return dispatch(t, t.lowest);
  }

  // Effects: waits up to `timeout` (std::nullopt: without limit; rounded up
  //   to milliseconds, never early) until a delivery is pending (EINTR,
  //   which a delivery may cause, ends the wait), then dispatch(d, current).
  // Returns: how many knotes fired (0 when the time ran out).
  // Thread-safety: any thread; not from a signal handler.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t poll(D& d, std::optional<std::chrono::nanoseconds> timeout, Level current) {
    wait_readable(timeout);
    return dispatch(d, current);
  }
  // Effects: poll for knotes whose continuations all run at once.
  std::size_t poll(std::optional<std::chrono::nanoseconds> timeout) {
    immediate_target<Level> t;
    return poll(t, timeout, t.lowest);
  }

  // True when a delivery (or a wake()) waits for dispatch(): D0 of the
  //   state table. Complexity: signal_limit / 64 + 1 atomic loads.
  // Thread-safety: any thread, and from a signal handler.
  [[nodiscard]] bool ready() const noexcept {
    if (core_.written.load(std::memory_order_acquire)) return true;
    for (const auto& w : core_.pending)
      if (w.load(std::memory_order_acquire) != 0) return true;
    return false;
  }

  // The wait source's members (kcont/detail/kqueue_wait.hpp): a kqueue
  // with no fd_source sleeps in this source's poll(2).
  // Effects: wait_and_fire: unless ready(), poll(2) up to `timeout` (a
  //   delivery, EINTR or a wake() ends it); woken(); dispatch(). wake: a wait
  //   in progress, or the next one, returns (H3, H4). Async-signal-safe.
  //   Thread-safety: any thread; one waiter at a time (a wake ends one).
  template <class Woken>
  std::size_t wait_and_fire(std::optional<std::chrono::nanoseconds> timeout, Woken&& woken) {
    if (!ready()) wait_readable(timeout);
    woken();
    return dispatch();
  }
  void wake() const noexcept { core_.notify(); }

  // True while `sig` has a knote on this source (its handler installed).
  // Thread-safety: any thread (a snapshot).
  [[nodiscard]] bool watching(int sig) const {
    if (sig <= 0 || sig >= signal_limit) return false;
    std::lock_guard<std::mutex> g(lock_);
    return knotes_[static_cast<std::size_t>(sig)] != 0;
  }

 private:
  // One poll(2) on the descriptor (EINTR: returns; the caller dispatches).
  void wait_readable(std::optional<std::chrono::nanoseconds> timeout) const {
    ::pollfd p{native_handle(), POLLIN, 0};
    if (p.fd >= 0) (void)::poll(&p, 1, timeout_ms(timeout));
  }

  static int timeout_ms(std::optional<std::chrono::nanoseconds> t) noexcept {
    if (!t) return -1;
    if (*t <= std::chrono::nanoseconds::zero()) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*t).count();
    return ms > 0x7fffffff ? -1 : static_cast<int>(ms);
  }

  detail::signal_core core_;
  mutable std::mutex lock_;                  // knotes_, saved_, the owner table
  list_type lists_[signal_limit];
  std::uint32_t knotes_[signal_limit] = {};  // knotes per signal
  struct sigaction saved_[signal_limit] = {};  // the actions the handler replaced
};

// The signal source with the BSD levels.
using signal_source = basic_signal_source<>;

// EVFILT_SIGNAL (FreeBSD sys/kern/kern_sig.c):
// - ident is the signal number (attach: EINVAL outside 1..signal_limit-1,
//   for SIGKILL and SIGSTOP; EBUSY when another source watches it).
// - attach sets ev::clear on the knote, whatever the change said
//   (filt_sigattach: `kn->kn_flags |= EV_CLEAR; /* automatically set */`).
// - event: a dispatch's hint (deliveries, >= 1) adds to data and fires;
//   the scan's re-check (hint 0) fires while data != 0 (filt_signal:
//   `if (kn->kn_id == hint) kn->kn_data++; return (kn->kn_data != 0);`).
// - A report's data is the deliveries since the last report, reset by the
//   report (EV_CLEAR; kqueue(2): "the number of times the signal has occurred
//   since the last call to kevent()"). fflags is always 0.
// - A knote attached to a signal that another knote already watches may
//   count, in its first report, deliveries that arrived just before its
//   attach but were not dispatched yet (the counter is the signal's, not
//   the knote's); FreeBSD counts only later ones.
// Standalone (a plain knote, any continuation: `knote<signal_filter<>> kn{
// signal_filter<>{sigs}, k, SIGUSR1}`): each dispatch adds its count to the
// knote's data and runs the continuation, which reads data and may zero it.
// Thread-safety: as every filter (kcont/filter.hpp).
template <class Source = signal_source>
class signal_filter {
 public:
  static constexpr filter_id id = filter_id::signal;
  using context_type = Source;
  using hint_type = typename Source::hint_type;
  // A plain knote's policy: a field lock (the signal's klist is the source's).
  using knote_policy = spin_lock;

  // Effects: a filter on `source` (a kqueue passes its context).
  explicit signal_filter(Source& source) noexcept : source_(&source) {}

  // The filter_for members (kcont/filter.hpp).
  // attach: filt_sigattach: links the knote, sets EV_CLEAR.
  template <class K>
  int attach(K& kn) {
    if (kn.ident == 0 || kn.ident >= static_cast<std::uintptr_t>(signal_limit)) return EINVAL;
    const int err = source_->attach(kn, static_cast<int>(kn.ident));
    if (err != 0) return err;
    kn.flags = static_cast<std::uint16_t>(kn.flags | static_cast<std::uint16_t>(ev::clear));
    return 0;
  }
  // detach: filt_sigdetach.
  template <class K>
  void detach(K& kn) { source_->detach(kn, static_cast<int>(kn.ident)); }
  // event: filt_signal (see above); data saturates instead of overflowing.
  template <class K>
  static bool event(K& kn, hint_type deliveries) {
    if (deliveries > 0) {
      constexpr hint_type most = std::numeric_limits<hint_type>::max();
      kn.data = kn.data > most - deliveries ? most : kn.data + deliveries;
    }
    return kn.data != 0;
  }

 private:
  Source* source_;
};

}  // namespace kcont
