// kcont's kqueue against the independent FreeBSD reference model: a driver
// that feeds the same kevent() calls (batches of changes, small event lists)
// to `kcont::kqueue<filters<user_filter>>` and to `kqref::model`
// (kqueue_reference.hpp, written from sys/kern/kern_event.c by someone who
// had not read kcont's kqueue) and compares every outcome: C's return value,
// errno, each entry written (field by field, and nothing written past them),
// the registered and queued counts. Shared by the fixed-seed test
// (kqueue_differential_test.cpp) and the libFuzzer target (fuzz/fuzz_ops.cpp).
// The model covers EVFILT_USER only; klist-driven knotes are checked by the
// hand-written cases of kqueue_test.cpp and the stress test.
#pragma once

#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>

#include <array>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "kqueue_reference.hpp"

namespace kq_diff {

using kcont::ev;
namespace note = kcont::note;

inline kqref::kev to_ref(const kcont::kevent& e) {
  return kqref::kev{e.ident, static_cast<std::int16_t>(e.filter),
                    static_cast<std::uint16_t>(e.flags), e.fflags, e.data, e.udata};
}

inline std::string show(const kqref::kev& e) {
  std::ostringstream o;
  o << "{ident " << e.ident << " filter " << e.filter << " flags 0x" << std::hex << e.flags
    << " fflags 0x" << e.fflags << std::dec << " data " << e.data << " udata " << e.udata
    << "}";
  return o.str();
}

// Draws one change from pick(n) (a value in [0, n)): a handful of idents,
// mostly EVFILT_USER, every EV_* flag with its own odds (EV_SYSFLAGS bits and
// bits kcont has no name for now and then), every NOTE_FF* operation with
// user bits, NOTE_TRIGGER half the time, small data and random udata.
template <class Pick>
kcont::kevent draw_change(Pick& pick) {
  kcont::kevent c;
  c.ident = pick(4);
  const std::uint32_t f = pick(40);
  c.filter = f == 0   ? kcont::filter_id{}     // skipped by kqueue_kevent
             : f == 1 ? kcont::filter_id::timer  // a filter this kqueue lacks
                      : kcont::filter_id::user;
  struct odds {
    ev flag;
    std::uint32_t one_in;
  };
  static constexpr odds table[] = {
      {ev::add, 2},     {ev::delete_, 8},  {ev::enable, 5},   {ev::disable, 5},
      {ev::oneshot, 6}, {ev::clear, 3},    {ev::dispatch, 5}, {ev::receipt, 4},
      {ev::forceoneshot, 12}, {ev::keepudata, 10},
      {ev::eof, 25},    {ev::error, 25},   {static_cast<ev>(0x1000), 40},
      {static_cast<ev>(0x2000), 40},       {static_cast<ev>(0x0400), 40},
  };
  for (const auto& o : table)
    if (pick(o.one_in) == 0) c.flags |= o.flag;
  static constexpr std::uint32_t ctrl[] = {note::ffnop, note::ffand, note::ffor, note::ffcopy};
  c.fflags = ctrl[pick(4)] | pick(8);
  if (pick(8) == 0) c.fflags |= 0x00ff0000u;  // high user bits
  if (pick(2) == 0) c.fflags |= note::trigger;
  c.data = static_cast<std::int64_t>(pick(4)) - (pick(10) == 0 ? 5 : 0);
  c.udata = pick(1000);
  return c;
}

// Effects: runs `steps` kevent() calls drawn with pick(n) against a fresh
//   kqueue (lock policy Lock) and a fresh model.
// Returns: "" when every outcome agreed; else what differed first, with the
//   calls that led there. `entries_seen` counts the entries written.
template <class Lock = std::mutex, class Pick>
std::string run_kqueue_ops(Pick&& pick, int steps, std::size_t& entries_seen) {
  kcont::kqueue<kcont::filters<kcont::user_filter>, std::uintptr_t, Lock> kq;
  kqref::model m;
  std::ostringstream log;
  for (int step = 0; step < steps; ++step) {
    const std::size_t nchanges = pick(5);  // 0..4; 0 is a bare scan
    const std::size_t nevents = pick(4);   // 0..3
    std::vector<kcont::kevent> changes;
    std::vector<kqref::kev> ref_changes;
    for (std::size_t i = 0; i < nchanges; ++i) {
      changes.push_back(draw_change(pick));
      ref_changes.push_back(to_ref(changes.back()));
    }
    log << "kevent(";
    for (const auto& c : ref_changes) log << show(c);
    log << ", nevents " << nevents << ")";

    // Entries past those written must stay as they were: C writes no more.
    const kcont::kevent sentinel{0xdead, kcont::filter_id{77}, ev::none, 1, 2, 3};
    std::array<kcont::kevent, 3> out;
    out.fill(sentinel);
    const kcont::kevent_result got =
        kq.kevent(changes, std::span<kcont::kevent>(out.data(), nevents));
    const kqref::kevent_outcome want = m.kevent(ref_changes, nevents);
    entries_seen += got.count;

    std::ostringstream why;
    if (got.ret != want.ret || got.error != want.err)
      why << "returned " << got.ret << " errno " << got.error << ", want " << want.ret
          << " errno " << want.err;
    else if (got.count != want.out.size())
      why << "wrote " << got.count << " entries, want " << want.out.size();
    else if (got.ret >= 0 && got.count != static_cast<std::size_t>(got.ret) && got.ret != 0)
      why << "count " << got.count << " differs from ret " << got.ret;
    for (std::size_t i = 0; why.tellp() == 0 && i < got.count; ++i)
      if (to_ref(out[i]) != want.out[i])
        why << "entry " << i << " is " << show(to_ref(out[i])) << ", want "
            << show(want.out[i]);
    for (std::size_t i = got.count; why.tellp() == 0 && i < out.size(); ++i)
      if (out[i] != sentinel) why << "entry " << i << " written past the count";
    if (why.tellp() == 0 && (kq.size() != m.registered() || kq.pending() != m.queued()))
      why << "registered " << kq.size() << " queued " << kq.pending() << ", want "
          << m.registered() << " and " << m.queued();
    if (why.tellp() != 0) return log.str() + "\nstep " + std::to_string(step) + ": " + why.str();
    log << " -> " << want.ret;
    for (const auto& e : want.out) log << show(e);
    log << "\n";
  }
  return "";
}

}  // namespace kq_diff
