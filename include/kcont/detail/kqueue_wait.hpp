// kcont/detail/kqueue_wait.hpp — what a blocking scan drives: the sources
// among a kqueue's filter contexts.
//
// Defines the two shapes of context a kqueue's scan drives itself, found by
// their members (the kqueue never includes a source's header: sources and
// the kqueue are peers, DESIGN.md):
//   wait_source     — sleeps in one system call until one of its events is
//                     ready, then fires what is ready (an fd_source:
//                     epoll_wait). Members: `wait_and_fire(timeout, woken)`
//                     (woken() runs once the system call returned, before
//                     anything fires), `wake()` (any thread: the wait
//                     returns soon) and `native_handle()` (a descriptor that
//                     is readable while the source has something to fire).
//   deadline_source — knows its next deadline on the steady clock and fires
//                     what is due (a timer_source: next_deadline(), tick()).
// and `kqueue_drive<F...>`, the kqueue's view of them through its contexts:
// the one wait source (the first context that is one), the earliest deadline
// of the deadline sources, and their tick. A source with a descriptor of its
// own (a signalfd) plugs into the same one system call by attaching a read
// knote on its descriptor to the fd_source, whose continuation drains the
// descriptor and fires the source's klist (tests/kqueue_wait_test.cpp:
// a_source_with_its_own_descriptor_plugs_into_the_one_wait); a kqueue with no
// fd_source can use such a source as its wait source instead.
// One waiter per wait source: a wake() ends ONE wait in it (the eventfd's
// edge is harvested once), so while a kqueue's scanner sleeps in an
// fd_source, no other thread should wait in that source (fds.poll() on
// another thread, or a blocking scan of a second kqueue sharing it): the
// wake-up meant for one may end the other's wait instead.
// Users never name these; the protocol of the wait is kqueue_core's.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>

#include "kcont/detail/kqueue_entry.hpp"
#include "kcont/kevent.hpp"

namespace kcont::detail {

// The callback a wait source is given (the concept's probe).
struct wait_woken_probe {
  void operator()() const noexcept {}
};

template <class C>
concept wait_source = requires(C& c, const C& cc,
                               std::optional<std::chrono::nanoseconds> timeout,
                               wait_woken_probe woken) {
  c.wait_and_fire(timeout, woken);
  cc.wake();
  { cc.native_handle() } -> std::convertible_to<int>;
};

template <class C>
concept deadline_source = requires(C& c, const C& cc) {
  { cc.next_deadline() }
      -> std::same_as<std::optional<std::chrono::steady_clock::time_point>>;
  c.tick();
};

// The context type of filter F (void when it has none).
template <class F>
using context_type_of = std::remove_pointer_t<typename filter_context<F>::pointer>;

// A kqueue's sources, seen through its filter contexts.
template <class... F>
class kqueue_drive {
  static constexpr std::size_t npos = sizeof...(F);
  static constexpr std::size_t waiter_index = [] {
    constexpr bool is[] = {wait_source<context_type_of<F>>...};
    for (std::size_t i = 0; i < sizeof...(F); ++i)
      if (is[i]) return i;
    return npos;
  }();

 public:
  // True when some filter's context is a wait source / a deadline source.
  static constexpr bool has_waiter = waiter_index != npos;
  static constexpr bool has_deadlines = (deadline_source<context_type_of<F>> || ...);
  // False: the scan is the plain condition-variable wait (no source to drive).
  static constexpr bool drives = has_waiter || has_deadlines;

  // True when filter `id`'s context is a deadline source: a change of one
  // of its knotes may move the next deadline (a sleeping scan re-reads it).
  static constexpr bool moves_deadlines(filter_id id) noexcept {
    return ((deadline_source<context_type_of<F>> && F::id == id) || ...);
  }

  explicit kqueue_drive(const filter_contexts<F...>& ctx) noexcept : ctx_(ctx) {}

  // The wait source, or nullptr (none, or the kqueue was built without it).
  [[nodiscard]] auto* waiter() const noexcept {
    if constexpr (has_waiter)
      return ctx_.template get<waiter_index>();
    else
      return static_cast<std::nullptr_t*>(nullptr);
  }

  // The earliest deadline of the bound deadline sources, if any is armed.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> next_deadline() const {
    std::optional<std::chrono::steady_clock::time_point> best;
    each_deadline_source([&](auto& s) {
      const auto t = s.next_deadline();
      if (t && (!best || *t < *best)) best = t;
    });
    return best;
  }

  // Effects: fires what is due in each bound deadline source (O(1) when
  //   nothing is). Call without the kqueue's lock: the firings take it.
  void tick() const {
    each_deadline_source([](auto& s) { (void)s.tick(); });
  }

  // Effects: what a scan that found events still owes its sources: a look
  //   at the descriptors that does not block (unless `waiter_busy`: another
  //   scanner sleeps in it) and the due timers, so that a descriptor that
  //   stays ready (level-triggered, reported by every scan) starves no other
  //   descriptor and no timer. Without the kqueue's lock.
  void poll_now(bool waiter_busy) const {
    if constexpr (has_waiter) {
      if (auto* w = waiter(); w != nullptr && !waiter_busy)
        w->wait_and_fire(std::chrono::steady_clock::duration::zero(), []() noexcept {});
    }
    tick();
  }

 private:
  template <class Fn>
  void each_deadline_source(Fn&& fn) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (
          [&] {
            if constexpr (deadline_source<context_type_of<F>>) {
              if (auto* s = ctx_.template get<I>()) fn(*s);
            }
          }(),
          ...);
    }(std::index_sequence_for<F...>{});
  }

  const filter_contexts<F...>& ctx_;
};

}  // namespace kcont::detail
