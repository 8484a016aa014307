// kcont's timer filter against the independent FreeBSD EVFILT_TIMER model: a
// driver that feeds the same random sequences (clock advances, ticks and
// kevent() calls) to `kcont::kqueue<filters<user_filter, timer_filter<S>>>`
// over `basic_timer_source<bsd_level, std::mutex, test_clock>` and to
// `kqref::timer_model` (timer_reference.hpp, written from
// sys/kern/kern_event.c without reading kcont's timer code) and compares
// every outcome: C's return value, errno, each entry written (field by field,
// and nothing written past them), the registered and queued counts.
//
// The time steps hit the interesting instants on purpose: exactly the next
// deadline, one nanosecond before it, several periods past it, and moving
// the clock without ticking (a kevent() then arms from the new time while a
// due timer waits for its tick).
//
// The driver takes the kqueue and the timer source as parameters, so it
// builds without kcont's timer source: timer_differential_test.cpp runs it on
// kcont's (when kcont/timer_source.hpp exists) and on a second model.
#pragma once

#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "timer_reference.hpp"

#include <kcont/kevent.hpp>

#include <chrono>
#include <ratio>
#include <span>

namespace timer_diff {

inline std::string show(const kqref::kev& e) {
  std::ostringstream o;
  o << "{ident " << e.ident << " filter " << e.filter << " flags 0x" << std::hex << e.flags
    << " fflags 0x" << e.fflags << std::dec << " data " << e.data << " udata " << e.udata
    << "}";
  return o.str();
}

// The clock never goes past this: deadlines saturate at INT64_MAX, which no
// tick reaches, and no sum of a time and a drawn period overflows.
inline constexpr std::int64_t time_limit = std::int64_t{1} << 62;

// Draws one change from pick(n) (a value in [0, n)): a handful of idents,
// mostly EVFILT_TIMER (now and then filter 0, skipped, or EVFILT_READ, which
// neither kqueue has), each EV_* flag with its own odds, a unit (nanoseconds
// and microseconds most, so timers fire within the drawn advances), sometimes
// NOTE_ABSTIME with a time around the model's now in that unit, and now and
// then invalid fflags; data 0, negative, small or huge.
template <class Pick>
kqref::kev draw_change(Pick& pick, const kqref::timer_model& m) {
  using namespace kqref;
  kev c;
  c.ident = pick(4);
  const std::uint32_t f = pick(50);
  c.filter = f == 0 ? std::int16_t{0} : f == 1 ? std::int16_t{-1} : EVFILT_TIMER;
  struct odds {
    std::uint16_t flag;
    std::uint32_t one_in;
  };
  static constexpr odds table[] = {
      {EV_DELETE, 9},    {EV_ENABLE, 6},          {EV_DISABLE, 6},
      {EV_ONESHOT, 6},  {EV_CLEAR, 4},     {EV_DISPATCH, 6},        {EV_RECEIPT, 4},
      {EV_FORCEONESHOT, 25}, {EV_KEEPUDATA, 25}, {EV_EOF, 40},      {EV_ERROR, 40},
  };
  if (pick(3) != 0) c.flags = EV_ADD;  // two in three: most changes register
  for (const auto& o : table)
    if (pick(o.one_in) == 0) c.flags = static_cast<std::uint16_t>(c.flags | o.flag);
  static constexpr std::uint32_t units[] = {NOTE_NSECONDS, NOTE_NSECONDS, NOTE_NSECONDS,
                                            NOTE_USECONDS, NOTE_USECONDS, NOTE_MSECONDS,
                                            0,             NOTE_SECONDS};
  c.fflags = units[pick(8)];
  if (pick(5) == 0) c.fflags |= NOTE_ABSTIME;
  const std::uint32_t bad = pick(40);
  if (bad == 0) c.fflags |= 0x20;                          // not a timer flag
  if (bad == 1) c.fflags |= NOTE_USECONDS | NOTE_SECONDS;  // two units
  const std::uint32_t d = pick(40);
  if (d < 5) {
    c.data = 0;
  } else if (d < 7) {
    c.data = -static_cast<std::int64_t>(pick(3)) - 1;
  } else if (d == 7) {
    c.data = INT64_MAX - pick(2);
  } else if (d == 8) {
    c.data = std::int64_t{1} << (40 + pick(20));
  } else if ((c.fflags & NOTE_ABSTIME) != 0) {
    // An absolute time near now in the unit: past, now, or a little ahead.
    const std::int64_t unit = timer2ns(1, c.fflags & NOTE_TIMER_PRECMASK);
    const std::int64_t here = unit > 0 ? m.now() / unit : 0;
    c.data = here + static_cast<std::int64_t>(pick(60)) - 10;
    if (c.data < 0) c.data = 0;
  } else {
    c.data = 1 + pick(50);
  }
  c.udata = pick(1000);
  return c;
}

// Draws the clock's next time (>= m.now(), <= time_limit): stay, a few
// nanoseconds, exactly the next deadline or one nanosecond before it, a few
// periods past it, or a big jump.
template <class Pick>
std::int64_t draw_time(Pick& pick, const kqref::timer_model& m) {
  const std::int64_t now = m.now();
  const std::int64_t next = m.next_deadline();
  const bool has_next = next < kqref::time_max && next > now;
  std::int64_t t = now;
  switch (pick(8)) {
    case 0:
      break;
    case 1:
    case 2:
      t = now + 1 + pick(100);
      break;
    case 3:
      t = has_next ? next : now + 1;
      break;
    case 4:
      t = has_next ? next - 1 : now;
      break;
    case 5:
      t = has_next ? kqref::sat_add(kqref::sat_add(next, kqref::sat_mul(next - now, pick(4))), pick(3))
                   : now + 1000;
      break;
    case 6:
      t = now + 1 + pick(200000);
      break;
    default:
      t = now + static_cast<std::int64_t>(pick(3000)) * 1000000;
      break;
  }
  return t > time_limit || t < now ? now : t;
}

// Effects: runs `steps` random operations on a fresh model alone, checking
//   what must hold whatever the kcont side does: after a tick no callout is
//   due (every due one fired, the re-armed ones are after now), the queue
//   holds at most the registered knotes, the armed callouts belong to
//   registered knotes, and a call writes what it returns.
// Returns: "" or what failed, with the steps that led there.
template <class Pick>
std::string run_model_ops(Pick&& pick, int steps, std::size_t& entries_seen) {
  kqref::timer_model m;
  std::ostringstream log;
  for (int step = 0; step < steps; ++step) {
    std::ostringstream why;
    const std::uint32_t op = pick(4);
    if (op == 0) {
      const std::int64_t t = draw_time(pick, m);
      log << "time " << t << (pick(4) == 0 ? " (no tick)\n" : "\n");
      m.set_time(t);
      m.tick();
      if (m.next_deadline() <= m.now()) why << "a due callout did not fire";
    } else {
      std::vector<kqref::kev> changes;
      const std::size_t nchanges = pick(5);
      const std::size_t nevents = pick(4);
      for (std::size_t i = 0; i < nchanges; ++i) changes.push_back(draw_change(pick, m));
      log << "kevent(";
      for (const auto& c : changes) log << show(c);
      log << ", nevents " << nevents << ")\n";
      const kqref::kevent_outcome r = m.kevent(changes, nevents);
      entries_seen += r.out.size();
      if (r.out.size() > nevents) why << "wrote past the event list";
      if (r.ret >= 0 && r.ret != 0 && static_cast<std::size_t>(r.ret) != r.out.size())
        why << "returned " << r.ret << " but wrote " << r.out.size();
    }
    if (m.queued() > m.registered() || m.armed() > m.registered())
      why << "queued " << m.queued() << " armed " << m.armed() << " registered "
          << m.registered();
    if (why.tellp() != 0) return log.str() + "step " + std::to_string(step) + ": " + why.str();
  }
  return "";
}

// The manual clock both sides read: kcont's timer source through now(), the
// model through set_time().
struct test_clock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<test_clock>;
  static constexpr bool is_steady = true;
  static inline std::int64_t now_ns = 0;
  static time_point now() noexcept { return time_point(duration(now_ns)); }
};

inline kcont::kevent to_kcont(const kqref::kev& e) {
  kcont::kevent k;
  k.ident = e.ident;
  k.filter = static_cast<kcont::filter_id>(e.filter);
  k.flags = static_cast<kcont::ev>(e.flags);
  k.fflags = e.fflags;
  k.data = e.data;
  k.udata = e.udata;
  return k;
}

inline kqref::kev to_ref(const kcont::kevent& e) {
  return kqref::kev{e.ident, static_cast<std::int16_t>(e.filter),
                    static_cast<std::uint16_t>(e.flags), e.fflags, e.data, e.udata};
}

// Effects: runs `steps` random operations against `kq` (kevent(changes,
//   events), size(), pending()) over `timers` (tick()) and a fresh model, on
//   the same manual clock test_clock (reset to 0; kq and timers must be fresh
//   too): a quarter move the clock (three in four of them then tick both
//   sides), the rest are kevent() calls with 0-4 changes and an event list
//   of 0-3.
//   With `kevent_ticks` the model also ticks before each kevent() (for a
//   kqueue whose kevent() runs the due timers itself); by default only the
//   clock steps tick, so a kevent() can meet a due timer that has not fired.
// Returns: "" when every outcome agreed; else what differed first, with the
//   operations that led there. `entries_seen` counts the entries written,
//   `fired` the callouts the model fired.
template <class Kqueue, class Source, class Pick>
std::string run_timer_ops(Kqueue& kq, Source& timers, Pick&& pick, int steps,
                          std::size_t& entries_seen, std::size_t& fired,
                          bool kevent_ticks = false) {
  test_clock::now_ns = 0;
  kqref::timer_model m;
  std::ostringstream log;
  for (int step = 0; step < steps; ++step) {
    std::ostringstream why;
    if (pick(4) == 0) {
      const std::int64_t t = draw_time(pick, m);
      const bool tick = pick(4) != 0;
      log << "time " << t << (tick ? ", tick" : ", no tick");
      test_clock::now_ns = t;
      m.set_time(t);
      if (tick) {
        static_cast<void>(timers.tick());  // whatever it returns
        const std::size_t n = m.tick();
        fired += n;
        log << " (model fired " << n << ")";
      }
      log << "\n";
    } else {
      const std::size_t nchanges = pick(5);  // 0..4; 0 is a bare scan
      const std::size_t nevents = pick(4);   // 0..3
      std::vector<kqref::kev> ref_changes;
      std::vector<kcont::kevent> changes;
      for (std::size_t i = 0; i < nchanges; ++i) {
        ref_changes.push_back(draw_change(pick, m));
        changes.push_back(to_kcont(ref_changes.back()));
      }
      if (kevent_ticks) fired += m.tick();
      log << "at " << m.now() << " kevent(";
      for (const auto& c : ref_changes) log << show(c);
      log << ", nevents " << nevents << ")";

      // Entries past those written must stay as they were: C writes no more.
      const kcont::kevent sentinel{0xdead, kcont::filter_id{77}, kcont::ev::none, 1, 2, 3};
      std::array<kcont::kevent, 3> out;
      out.fill(sentinel);
      const kcont::kevent_result got =
          kq.kevent(changes, std::span<kcont::kevent>(out.data(), nevents));
      const kqref::kevent_outcome want = m.kevent(ref_changes, nevents);
      entries_seen += got.count;

      if (got.ret != want.ret || got.error != want.err)
        why << "returned " << got.ret << " errno " << got.error << ", want " << want.ret
            << " errno " << want.err;
      else if (got.count != want.out.size())
        why << "wrote " << got.count << " entries, want " << want.out.size();
      for (std::size_t i = 0; why.tellp() == 0 && i < got.count; ++i)
        if (to_ref(out[i]) != want.out[i])
          why << "entry " << i << " is " << show(to_ref(out[i])) << ", want "
              << show(want.out[i]);
      for (std::size_t i = got.count; why.tellp() == 0 && i < out.size(); ++i)
        if (out[i] != sentinel) why << "entry " << i << " written past the count";
      if (why.tellp() == 0) {
        log << " -> " << want.ret;
        for (const auto& e : want.out) log << show(e);
      }
      log << "\n";
    }
    if (why.tellp() == 0 && (kq.size() != m.registered() || kq.pending() != m.queued()))
      why << "registered " << kq.size() << " queued " << kq.pending() << ", want "
          << m.registered() << " and " << m.queued();
    if (why.tellp() != 0) return log.str() + "step " + std::to_string(step) + ": " + why.str();
  }
  return "";
}


}  // namespace timer_diff
