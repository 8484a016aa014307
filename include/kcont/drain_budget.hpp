// kcont/drain_budget.hpp — the drain vocabulary shared by every dispatcher,
// and `drain_budget`, how much one drain may do.
//
// Every dispatcher (manual_dispatcher in kcont/dispatcher.hpp,
// thread_dispatcher in kcont/thread_dispatcher.hpp) gives these words one
// meaning, written here once:
//
//   runner           — who drains a set of levels. In a thread_dispatcher
//                      the runner plan names it (kcont/runner.hpp): a level
//                      with no_runner is drained by the runner below it. A
//                      manual_dispatcher is the all-manual plan with one
//                      runner per level: each level is its own runner.
//   drain(level, b)  — on the calling thread, runs the work of the (manual)
//                      runner that drains `level`: every level of that
//                      runner, the highest non-empty one first (checked
//                      before every continuation), each continuation at its
//                      own level (current_level.hpp) with the obj/status its
//                      deferral saved, FIFO within a level, until those
//                      queues are empty or the budget `b` is spent. Work
//                      deferred to them meanwhile runs in the same call.
//   drain_all(b)     — the same over every level the caller drains (every
//                      level of a manual_dispatcher; the manual runners'
//                      levels of a thread_dispatcher), the highest non-empty
//                      level first across all of them.
//   budget           — a drain_budget (below): at most `count`
//                      continuations and, with a deadline, until that time
//                      point, checked before each one. The rest stays
//                      queued. The default is no limit.
//
// Both return how many continuations ran, and neither waits for work (a
// drain that finds nothing returns 0; thread_dispatcher::wait and wait_fd
// wait). A continuation that throws has run; the rest stays queued (each
// dispatcher says where the exception goes).
//
// Compared with Asio: drain is io_context::poll (run what is ready, do not
// block), drain(level, drain_budget::items(1)) is poll_one; a budget with a
// deadline has no Asio counterpart (run_for blocks).
//
// Usage:
//   d.drain(bsd_level::softnet, kcont::drain_budget::items(8));  // one slice
//   d.drain_all(kcont::drain_budget::for_time(std::chrono::milliseconds(1)));
#pragma once

#include <chrono>
#include <cstddef>
#include <limits>
#include <ratio>

namespace kcont {

// How much one drain may do: at most `count` continuations and, when a
// deadline is set, until that time point (checked before each one). The rest
// stays queued, and a manual runner's wake-up stays armed (its descriptor
// stays readable).
struct drain_budget {
  std::size_t count = std::numeric_limits<std::size_t>::max();
  std::chrono::steady_clock::time_point deadline =
      std::chrono::steady_clock::time_point::max();

  // Returns: a budget of n continuations.
  [[nodiscard]] static drain_budget items(std::size_t n) noexcept {
    return {n, std::chrono::steady_clock::time_point::max()};
  }
  // Returns: a budget of `d` from now. A `d` whose deadline the clock cannot
  //   hold (hours::max()) saturates to no deadline at all; a `d` of zero or
  //   less (or NaN) is already spent: drain() then runs nothing.
  template <class Rep, class Period>
  [[nodiscard]] static drain_budget for_time(
      std::chrono::duration<Rep, Period> d) noexcept {
    using clock = std::chrono::steady_clock;
    using in = std::chrono::duration<Rep, Period>;
    const auto now = clock::now();
    drain_budget b = items(std::numeric_limits<std::size_t>::max());
    if (!(d > in::zero())) {  // zero, negative or NaN
      b.deadline = now;
      return b;
    }
    // What is left of the clock. d is compared with it in the coarser of
    // the two units, so that the conversion only divides: converting d
    // itself to the clock's unit could overflow (hours::max()).
    const clock::duration room =
        now.time_since_epoch() < clock::duration::zero()
            ? clock::duration::max()
            : clock::time_point::max() - now;
    clock::duration span;
    if constexpr (std::chrono::treat_as_floating_point_v<Rep>) {
      const long double want =
          std::chrono::duration<long double, clock::period>(d).count();
      if (!(want < static_cast<long double>(room.count()))) return b;
      span = clock::duration(static_cast<clock::rep>(want));
    } else if constexpr (std::ratio_less_equal_v<Period, clock::period>) {
      span = std::chrono::duration_cast<clock::duration>(d);
      if (span >= room) return b;
    } else {
      if (d >= std::chrono::duration_cast<in>(room)) return b;
      span = std::chrono::duration_cast<clock::duration>(d);
    }
    b.deadline = now + span;
    return b;
  }

  // True when a deadline is set (drains read the clock only then).
  [[nodiscard]] bool timed() const noexcept {
    return deadline != std::chrono::steady_clock::time_point::max();
  }
};

}  // namespace kcont
