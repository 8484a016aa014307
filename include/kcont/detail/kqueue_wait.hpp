// kcont/detail/kqueue_wait.hpp — what a blocking scan drives: the sources
// among a kqueue's filter contexts.
//
// Defines the three shapes of context a kqueue's scan drives itself, found
// by their members (the kqueue never includes a source's header: sources
// and the kqueue are peers, DESIGN.md):
//   wait_source     — sleeps in one system call until one of its events is
//                     ready, then fires what is ready (an fd_source:
//                     epoll_wait). Members: `wait_and_fire(timeout, woken)`
//                     (woken() runs once the system call returned, before
//                     anything fires; EINTR is a wake), `wake()` (any
//                     thread: the wait returns soon) and `native_handle()`
//                     (a descriptor that is readable while the source has
//                     something to fire). One that also has `watch(fd)` and
//                     `unwatch(fd)` (the fd_source) watches other sources'
//                     descriptors in its wait: a watching source.
//   deadline_source — knows its next deadline on the steady clock and fires
//                     what is due (a timer_source: next_deadline(), tick()).
//   ready_source    — has a descriptor that is readable while it has
//                     something to fire, and `dispatch()`, which fires it and
//                     costs no system call when there is nothing (a
//                     signal_source: a few atomic loads). Not a watching
//                     source.
// and `kqueue_drive<F...>`, the kqueue's view of them through its contexts:
// the one wait source (the first watching source; with none, the first wait
// source: a signal_source sleeps in poll(2) on its own descriptor), the
// earliest deadline of the deadline sources, and tick(): the due timers and
// each ready source's dispatch(), after every wait and every look. Its
// `watches` (a member of the kqueue, from its construction to its
// destruction) has the watching wait source watch each ready source's
// descriptor, so a signal ends the ONE system call the scan sleeps in, and
// the same scan reports it. Another source with a descriptor of its own
// can instead attach a read knote on it to the fd_source, whose
// continuation drains it (tests/kqueue_wait_test.cpp:
// a_source_with_its_own_descriptor_plugs_into_the_one_wait).
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
#include <tuple>
#include <type_traits>
#include <utility>
#if defined(__cpp_exceptions)
#include <system_error>
#endif

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

template <class C>
concept watching_source = wait_source<C> && requires(C& c, int fd) {
  { c.watch(fd) } -> std::convertible_to<int>;
  c.unwatch(fd);
};

template <class C>
concept ready_source = !watching_source<C> && requires(C& c, const C& cc) {
  { cc.native_handle() } -> std::convertible_to<int>;
  c.dispatch();
};

// The context type of filter F (void when it has none).
template <class F>
using context_type_of = std::remove_pointer_t<typename filter_context<F>::pointer>;

// A kqueue's sources, seen through its filter contexts.
template <class... F>
class kqueue_drive {
  static constexpr std::size_t npos = sizeof...(F);
  template <class Is>
  static constexpr std::size_t first(Is is) {
    for (std::size_t i = 0; i < sizeof...(F); ++i)
      if (is[i]) return i;
    return npos;
  }
  static constexpr bool watching[] = {watching_source<context_type_of<F>>..., false};
  static constexpr bool waiting[] = {wait_source<context_type_of<F>>..., false};
  static constexpr std::size_t waiter_index =
      first(watching) != npos ? first(watching) : first(waiting);
  // The wait source's type (void: none).
  using waiter_type = std::tuple_element_t<waiter_index, std::tuple<context_type_of<F>..., void>>;

 public:
  // True when some filter's context is a wait source / a ready source.
  static constexpr bool has_waiter = waiter_index != npos;
  static constexpr bool has_ready = (ready_source<context_type_of<F>> || ...);
  // True when every wait owes the sources a tick(): due timers (deadline
  // sources) or deliveries to dispatch (ready sources).
  static constexpr bool has_ticks =
      (deadline_source<context_type_of<F>> || ...) || has_ready;
  // False: the scan is the plain condition-variable wait (no source to drive).
  static constexpr bool drives = has_waiter || has_ticks;

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
    each<is_deadline>([&](auto& s) {
      const auto t = s.next_deadline();
      if (t && (!best || *t < *best)) best = t;
    });
    return best;
  }

  // Effects: fires what is due in each bound deadline source (O(1) when
  //   nothing is) and what each bound ready source has (its dispatch(): no
  //   system call when it has nothing). Call without the kqueue's lock: the
  //   firings take it.
  void tick() const {
    each<is_deadline>([](auto& s) { (void)s.tick(); });
    each<is_ready>([](auto& s) { (void)s.dispatch(); });
  }

  // Effects: what a scan that found events still owes its sources: a look
  //   at the descriptors that does not block (unless `waiter_busy`: another
  //   scanner sleeps in it; or the waiter is a ready source, which the tick
  //   dispatches without a system call), the due timers and the ready
  //   sources' deliveries, so that a descriptor that stays ready
  //   (level-triggered, reported by every scan) starves no other
  //   descriptor, no timer and no signal. Without the kqueue's lock.
  void poll_now(bool waiter_busy) const {
    if constexpr (has_waiter && !ready_source<waiter_type>) {
      if (auto* w = waiter(); w != nullptr && !waiter_busy)
        w->wait_and_fire(std::chrono::steady_clock::duration::zero(), []() noexcept {});
    }
    tick();
  }

  // The ready sources' descriptors the watching wait source watches, from
  // watch() (the kqueue's constructor) to the destructor (the kqueue's).
  // Empty when the wait source is no watching source (or there is none) or
  // no context is a ready source.
  class watch_list {
   public:
    watch_list() = default;
    watch_list(const watch_list&) = delete;
    watch_list& operator=(const watch_list&) = delete;
    // Effects: the unwatch of each descriptor watch() watched.
    ~watch_list() {
      for (std::size_t i = 0; i < count_; ++i) waiter_->unwatch(fds_[i]);
    }
    // Effects: the bound watching wait source watches the descriptor of
    //   each bound ready source (a system call each; may allocate).
    // Throws: std::system_error when the wait source refuses (without
    //   exceptions that source's deliveries are still dispatched by each
    //   scan's tick, but do not end a wait).
    void watch(const filter_contexts<F...>& ctx) {
      const kqueue_drive d(ctx);
      waiter_ = d.waiter();
      if (waiter_ == nullptr) return;
      d.template each<is_ready>([&](auto& s) {
        const int fd = s.native_handle();
        if (fd < 0) return;
        if (const int err = waiter_->watch(fd); err != 0) {
#if defined(__cpp_exceptions)
          throw std::system_error(err, std::system_category(), "kqueue: watch a source");
#else
          return;
#endif
        }
        fds_[count_++] = fd;
      });
    }

   private:
    waiter_type* waiter_ = nullptr;
    int fds_[sizeof...(F)] = {};
    std::size_t count_ = 0;
  };
  struct no_watch {
    void watch(const filter_contexts<F...>&) noexcept {}
  };
  using watches = std::conditional_t<watching_source<waiter_type> && has_ready, watch_list,
                                     no_watch>;

 private:
  template <class C>
  struct is_deadline : std::bool_constant<deadline_source<C>> {};
  template <class C>
  struct is_ready : std::bool_constant<ready_source<C>> {};

  // fn(source) for each bound context whose type satisfies Is.
  template <template <class> class Is, class Fn>
  void each(Fn&& fn) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (
          [&] {
            if constexpr (Is<context_type_of<F>>::value) {
              if (auto* s = ctx_.template get<I>()) fn(*s);
            }
          }(),
          ...);
    }(std::index_sequence_for<F...>{});
  }

  const filter_contexts<F...>& ctx_;
};

}  // namespace kcont::detail
