// Shared by the kqueue tests: a klist-driven counting filter (a user-defined
// filter with a context, as a device driver would write one) and helpers.
#pragma once

#include <kcont/immediate_target.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/timer_filter.hpp>
#include <kcont/klist.hpp>
#include <kcont/kqueue.hpp>

#include <chrono>
#include <mutex>
#include <vector>

namespace kq_test {

using kcont::bsd_level;
using kcont::ev;
using kcont::filter_id;

// An event source: each fire(n) adds n to the data of every attached knote.
struct counter_source {
  kcont::klist<long, bsd_level, std::mutex> list;
  std::size_t fire(long n) {
    kcont::immediate_target<> t;
    return list.fire(t, n, t.lowest);
  }
};

// A user-defined filter: data counts the events since the last report
// (reset on report only with ev::clear: without it the knote stays
// level-triggered while data != 0).
struct counter_filter {
  static constexpr filter_id id{100};
  using context_type = counter_source;
  counter_source* src;
  explicit counter_filter(counter_source& s) : src(&s) {}
  int attach(kcont::knote_base<long>& kn) {
    src->list.insert(kn);
    return 0;
  }
  void detach(kcont::knote_base<long>& kn) { (void)src->list.erase(kn); }
  bool event(kcont::knote_base<long>& kn, long hint) {
    if (hint > 0) {
      kn.data += hint;
      return true;
    }
    return kn.data != 0;
  }
};

// A clock the test sets by hand (timers arm from its now()).
struct manual_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<manual_clock>;
  static constexpr bool is_steady = true;
  static inline time_point now_{};
  static time_point now() noexcept { return now_; }
  static void set(time_point t) noexcept { now_ = t; }
};
using test_timer_source = kcont::basic_timer_source<bsd_level, std::mutex, manual_clock>;
using test_timer_filter = kcont::timer_filter<test_timer_source>;

using kev = kcont::kevent;
template <class Lock>
using basic_kq_t = kcont::kqueue<kcont::filters<kcont::user_filter, counter_filter, test_timer_filter>,
                                 std::uintptr_t, Lock>;
using kq_t = kcont::kqueue<kcont::filters<kcont::user_filter, counter_filter, test_timer_filter>>;
static_assert(std::is_same_v<kq_t, basic_kq_t<std::mutex>>);

inline const manual_clock::time_point t0{std::chrono::hours(1)};

// Sets the manual clock to t0 (a fixture's first member).
struct clock_at_t0 {
  clock_at_t0() noexcept { manual_clock::set(t0); }
};

// Lock: the kqueue's lock; with no_lock its knotes are single-threaded
// (knote<F, Level, no_lock>), for the single-threaded cases.
template <class Lock = std::mutex>
struct basic_fixture {
  clock_at_t0 clock_reset;
  counter_source cs;
  test_timer_source ts;
  basic_kq_t<Lock> kq{cs, ts};

  // Sets the manual clock to `t` and ticks the timers there.
  std::size_t tick(manual_clock::time_point t) {
    manual_clock::set(t);
    return ts.tick();
  }

  int change(kev c) { return kq.change(c); }
  std::vector<kev> scan(std::size_t max = 16) {
    std::vector<kev> out(max);
    out.resize(kq.scan(out));
    return out;
  }
};
using fixture = basic_fixture<>;

inline kev user(std::uintptr_t id, ev flags, std::uint32_t fflags = 0,
                std::int64_t data = 0, std::uintptr_t udata = 0) {
  return kev{id, filter_id::user, flags, fflags, data, udata};
}
inline kev counter(std::uintptr_t id, ev flags, std::uintptr_t udata = 0) {
  return kev{id, counter_filter::id, flags, 0, 0, udata};
}
inline kev trigger(std::uintptr_t id, std::uint32_t fflags = 0) {
  return user(id, ev::none, kcont::note::trigger | fflags);
}

}  // namespace kq_test
