// kcont/event_loop.hpp — one thread's loop: a kqueue's blocking wait and a
// dispatcher's manual levels, driven together.
//
// Defines `event_loop<Kqueue, Dispatcher, N>` (what io_context::run() is to
// Asio) and `kqueue_schedule<Kqueue>`, the schedule policy of a
// manual_dispatcher whose levels such a loop drains. One round: run every
// continuation deferred to the dispatcher's levels (drain_all, highest level
// first), then wait in the kqueue (one system call with an fd_source: see
// kqueue::scan) and hand each event to the caller's handler. Work deferred
// by another thread while the loop sleeps wakes it: the dispatcher's
// schedule policy triggers a user event the loop registered in the kqueue,
// which is never handed to the handler.
//
// Usage (a one-thread server: no plumbing of its own):
//   using kq_t = kcont::kqueue<kcont::filters<kcont::read_filter<>,
//                              kcont::timer_filter<>, kcont::user_filter>>;
//   kcont::fd_source fds;  kcont::timer_source timers;  kq_t kq{fds, timers};
//   kcont::manual_dispatcher<kcont::bsd_level, std::mutex,
//                            kcont::kqueue_schedule<kq_t>> d{{&kq}};
//   kcont::event_loop loop{kq, d};
//   loop.run([&](const kq_t::kevent_type& ev) { ... });  // until loop.stop()
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "kcont/contract.hpp"
#include "kcont/kevent.hpp"
#include "kcont/kqueue.hpp"
#include "kcont/level.hpp"

namespace kcont {

// The schedule policy of a manual_dispatcher drained by an event_loop: when
// a level's queue turns non-empty, triggers the loop's user event (ident
// `wake_ident`) in the kqueue, so a loop asleep in kevent() wakes and drains.
// Thread-safety: any thread, not under the kqueue's lock (not from a
// filter's event); one kqueue change (no allocation) per empty-to-non-empty
// transition of a level queue.
template <class Kqueue>
struct kqueue_schedule {
  static constexpr std::uintptr_t wake_ident = ~std::uintptr_t{0};
  Kqueue* kq = nullptr;
  template <level_set L>
  void operator()(L) const noexcept {
    if (kq != nullptr)
      (void)kq->change({.ident = wake_ident, .filter = filter_id::user,
                        .fflags = note::trigger});
  }
};

// One thread's loop over a kqueue (with user_filter among its filters) and a
// dispatcher (manual_dispatcher, best with kqueue_schedule<Kqueue>).
// Lifetime contract: the kqueue and the dispatcher outlive the loop.
// Thread-safety: run / run_once on one thread at a time; stop and wake from
//   any thread.
template <class Kqueue, class Dispatcher, std::size_t N = 64>
class event_loop {
 public:
  using kevent_type = typename Kqueue::kevent_type;
  using duration = std::chrono::nanoseconds;
  static constexpr std::uintptr_t wake_ident = kqueue_schedule<Kqueue>::wake_ident;

  // Effects: registers the loop's user event (ident wake_ident, ev::clear).
  // Throws: std::bad_alloc (the kqueue's ev::add). A kqueue without
  //   user_filter: debug builds abort; release builds never wake for work
  //   deferred while the loop sleeps (use a timeout then).
  event_loop(Kqueue& kq, Dispatcher& d) : kq_(kq), d_(d) {
    [[maybe_unused]] const int err =
        kq_.change({.ident = wake_ident, .filter = filter_id::user, .flags = ev::add | ev::clear});
    KCONT_EXPECTS(err == 0, "event_loop: the kqueue needs user_filter");
  }
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;
  // Effects: deletes the loop's user event.
  ~event_loop() {
    (void)kq_.change({.ident = wake_ident, .filter = filter_id::user, .flags = ev::delete_});
  }

  // Effects: one round: runs every continuation queued on the dispatcher's
  //   levels (drain_all), then kevent() with `timeout` (zero when work is
  //   still queued: a continuation deferred more), and calls handler(ev)
  //   for each event but the loop's own wake-up, in the order reported.
  // Returns: continuations run plus events handled (0: the timeout ended
  //   with nothing to do, or a bare wake-up). Throws: what they throw.
  // Complexity: O(work done). No allocation of its own.
  template <class Handler>
  std::size_t run_once(Handler&& handler, std::optional<duration> timeout = std::nullopt) {
    std::size_t done = d_.drain_all();
    if (has_work() || stop_.load(std::memory_order_acquire)) timeout = duration::zero();
    const auto r = kq_.kevent({}, events_, timeout);
    for (int i = 0; i < r.ret; ++i) {
      const kevent_type& ev = events_[static_cast<std::size_t>(i)];
      if (ev.ident == wake_ident && ev.filter == filter_id::user) continue;
      handler(ev);
      ++done;
    }
    return done;
  }

  // Effects: run_once until stop() is called (by a handler, a continuation
  //   or another thread); the stop request is then cleared, so run may be
  //   called again. Returns: the work done (as run_once's, summed).
  template <class Handler>
  std::size_t run(Handler&& handler) {
    std::size_t done = 0;
    while (!stop_.load(std::memory_order_acquire)) done += run_once(handler);
    stop_.store(false, std::memory_order_relaxed);
    return done;
  }

  // Effects: makes run() return after its current round (wakes the loop).
  void stop() noexcept {
    stop_.store(true, std::memory_order_release);
    wake();
  }

  // Effects: wakes the loop if it sleeps in kevent() (the user event);
  //   what kqueue_schedule does. Thread-safety: any thread, not under the
  //   kqueue's lock.
  void wake() noexcept {
    (void)kq_.change({.ident = wake_ident, .filter = filter_id::user, .fflags = note::trigger});
  }

 private:
  // True when some level of the dispatcher holds work (a snapshot).
  bool has_work() const noexcept {
    using L = typename Dispatcher::level_type;
    for (std::size_t i = 0; i < level_count<L>; ++i)
      if (d_.has_work(level_at<L>(i))) return true;
    return false;
  }

  Kqueue& kq_;
  Dispatcher& d_;
  std::array<kevent_type, N> events_{};
  std::atomic<bool> stop_{false};
};

}  // namespace kcont
