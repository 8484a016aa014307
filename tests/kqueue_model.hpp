// The kqueue reference model and its random-operation driver: a small model
// written from kqueue(2) and FreeBSD's kern_event.c, independently of the
// implementation, and a driver that applies the same random changes, fires
// and scans to a real kqueue and to the model. Shared by the fixed-seed test
// (kqueue_model_test.cpp) and the libFuzzer target (fuzz/fuzz_ops.cpp).
#pragma once

#include <kcont/kqueue.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "kq_support.hpp"

namespace kq_model {

using namespace kq_test;
namespace note = kcont::note;

// The model: plain data, no links, no atomics.
struct model {
  struct kn {
    ev flags = ev::none;  // oneshot / clear / dispatch
    std::uintptr_t udata = 0;
    bool disabled = false, active = false, queued = false;
    bool triggered = false;  // user
    std::uint32_t sfflags = 0;
    std::int64_t sdata = 0, data = 0;  // data: counter
  };
  using key = std::pair<std::uintptr_t, filter_id>;
  std::map<key, kn> knotes;
  std::deque<key> pending;
  std::vector<key> source_order;  // counter knotes in attach order

  static std::uint32_t apply(std::uint32_t saved, std::uint32_t in) {
    const std::uint32_t v = in & 0xffffff;
    switch (in & 0xc0000000u) {
      case 0x40000000u: return saved & v;
      case 0x80000000u: return saved | v;
      case 0xc0000000u: return v;
      default: return saved;
    }
  }
  static bool holds(const key& k, const kn& n) {
    return k.second == filter_id::user ? n.triggered : n.data != 0;
  }
  void unqueue(const key& k) {
    for (auto it = pending.begin(); it != pending.end(); ++it)
      if (*it == k) {
        pending.erase(it);
        break;
      }
    knotes[k].queued = false;
  }
  void enqueue_if_ready(const key& k) {
    kn& n = knotes[k];
    if (n.active && !n.disabled && !n.queued) {
      n.queued = true;
      pending.push_back(k);
    }
  }
  void after_change(const key& k) {
    kn& n = knotes[k];
    if (!n.disabled && holds(k, n)) n.active = true;
    enqueue_if_ready(k);
  }
  void erase(const key& k) {
    unqueue(k);
    knotes.erase(k);
    std::erase(source_order, k);
  }

  int change(const kev& c) {
    const key k{c.ident, c.filter};
    auto it = knotes.find(k);
    if (it == knotes.end()) {
      if (!kcont::has(c.flags, ev::add)) return ENOENT;
      kn n;
      n.flags = c.flags & (ev::oneshot | ev::clear | ev::dispatch);
      n.udata = c.udata;
      n.disabled = kcont::has(c.flags, ev::disable);
      if (c.filter == filter_id::user) {
        n.triggered = (c.fflags & note::trigger) != 0;
        n.sfflags = apply(0, c.fflags);
      } else {
        n.sfflags = c.fflags;
        source_order.push_back(k);
      }
      n.sdata = c.data;
      knotes[k] = n;
      after_change(k);
      return 0;
    }
    if (kcont::has(c.flags, ev::delete_)) {
      erase(k);
      return 0;
    }
    kn& n = it->second;
    if (kcont::has(c.flags, ev::add)) n.udata = c.udata;
    if (c.filter == filter_id::user) {
      if (c.fflags & note::trigger) n.triggered = true;
      n.sfflags = apply(n.sfflags, c.fflags);
      n.sdata = c.data;
      if (kcont::has(c.flags, ev::clear)) n.triggered = false;
    } else {
      n.sfflags = c.fflags;
      n.sdata = c.data;
    }
    if (kcont::has(c.flags, ev::disable)) {
      n.disabled = true;
      unqueue(k);
    } else if (kcont::has(c.flags, ev::add) || kcont::has(c.flags, ev::enable)) {
      n.disabled = false;
    }
    after_change(k);
    return 0;
  }

  void fire(long h) {
    for (const key& k : source_order) {
      kn& n = knotes[k];
      n.data += h;
      n.active = true;
      if (!n.disabled) enqueue_if_ready(k);
    }
  }

  std::vector<kev> scan(std::size_t max) {
    std::vector<kev> out;
    std::size_t budget = pending.size();
    while (out.size() < max && budget-- > 0) {
      const key k = pending.front();
      pending.pop_front();
      kn& n = knotes[k];
      n.queued = false;
      const bool oneshot = kcont::has(n.flags, ev::oneshot);
      if (!oneshot && !holds(k, n)) {
        n.active = false;
        continue;
      }
      kev e{k.first, k.second, n.flags, 0, 0, n.udata};
      const bool clear = kcont::has(n.flags, ev::clear);
      if (k.second == filter_id::user) {
        e.fflags = n.sfflags;
        e.data = n.sdata;
        if (clear) n.triggered = false;
      } else {
        e.data = n.data;
        if (clear) n.data = 0;
      }
      out.push_back(e);
      if (oneshot) {
        erase(k);
      } else if (clear || kcont::has(n.flags, ev::dispatch)) {
        if (kcont::has(n.flags, ev::dispatch)) n.disabled = true;
        n.active = false;
      } else {
        n.queued = true;
        pending.push_back(k);
      }
    }
    return out;
  }
};

std::string show(const kev& e) {
  return "{ident " + std::to_string(e.ident) + " filter " +
         std::to_string(static_cast<int>(e.filter)) + " flags " +
         std::to_string(static_cast<int>(e.flags)) + " fflags " + std::to_string(e.fflags) +
         " data " + std::to_string(e.data) + " udata " + std::to_string(e.udata) + "}";
}

}  // namespace kq_model

namespace kq_model {

// Effects: runs `ops` random operations, each drawn with pick(n) (a value in
//   [0, n)), against a fresh kqueue fixture and the model.
// Returns: "" when every change result, every scan and the sizes agreed;
//   else what differed first. `events_seen` counts the events scanned.
template <class Pick>
std::string run_kqueue_ops(Pick&& pick, int ops, std::size_t& events_seen) {
  using namespace kq_test;
  namespace note = kcont::note;
  fixture f;
  model m;
  for (int op = 0; op < ops; ++op) {
    const std::uint32_t what = pick(10);
    if (what == 8) {
      const long h = 1 + pick(3);
      f.cs.fire(h);
      m.fire(h);
      continue;
    }
    if (what == 9) {
      const std::size_t max = 1 + pick(4);
      const auto got = f.scan(max);
      const auto want = m.scan(max);
      events_seen += got.size();
      if (got != want) {
        std::string g, w;
        for (auto& e : got) g += show(e);
        for (auto& e : want) w += show(e);
        return "op " + std::to_string(op) + " scan(" + std::to_string(max) +
               ")\n got:  " + g + "\n want: " + w;
      }
      continue;
    }
    kev c;
    c.ident = pick(3);
    c.filter = pick(3) == 0 ? counter_filter::id : kcont::filter_id::user;
    c.udata = pick(1000);
    static constexpr ev actions[] = {ev::add, ev::add, ev::delete_, ev::enable,
                                     ev::disable, ev::none, ev::none, ev::clear};
    c.flags = actions[what];
    if (kcont::has(c.flags, ev::add)) {
      if (pick(3) == 0) c.flags |= ev::clear;
      if (pick(6) == 0) c.flags |= ev::oneshot;
      if (pick(5) == 0) c.flags |= ev::dispatch;
      if (pick(6) == 0) c.flags |= ev::disable;
    }
    if (c.filter == kcont::filter_id::user) {
      static constexpr std::uint32_t ctrl[] = {note::ffnop, note::ffand, note::ffor,
                                               note::ffcopy};
      c.fflags = ctrl[pick(4)] | pick(16) | (pick(2) ? note::trigger : 0);
      c.data = pick(5);
    }
    const int got = f.change(c);
    const int want = m.change(c);
    if (got != want)
      return "op " + std::to_string(op) + " change " + show(c) + " got " +
             std::to_string(got) + " want " + std::to_string(want);
    if (f.kq.size() != m.knotes.size() || f.kq.pending() != m.pending.size())
      return "op " + std::to_string(op) + " after " + show(c) + ": size " +
             std::to_string(f.kq.size()) + "/" + std::to_string(m.knotes.size()) +
             " pending " + std::to_string(f.kq.pending()) + "/" +
             std::to_string(m.pending.size());
  }
  return "";
}

}  // namespace kq_model
