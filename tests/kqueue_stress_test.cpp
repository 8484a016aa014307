// kqueue under concurrency (run under TSan in CI): activation from a klist,
// user triggers, scans, enable/disable and delete/re-add, all at once.
//   - no event lost: a set of knotes that are never deleted (only toggled)
//     must report, summed over all scans, exactly the events fired;
//   - none reported for a deleted knote: an event whose knote's delete had
//     returned before the scan began is a failure.
#include <kcont/kqueue.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "kq_support.hpp"

using namespace kq_test;
namespace note = kcont::note;

TEST_CASE("kqueue.stress_concurrent_activate_scan_toggle_delete") {
  fixture f;
  constexpr std::uintptr_t stable = 4;        // counter idents 0..3, never deleted
  constexpr std::uintptr_t churn_base = 100;  // idents 100..103, user and counter
  constexpr std::uintptr_t churn = 4;
  constexpr int churn_ops = 20000;
  constexpr int fires = 100000;

  for (std::uintptr_t i = 0; i < stable; ++i)
    REQUIRE(f.change(counter(i, ev::add | ev::clear, i)) == 0);

  // Generations: each churn add gets a fresh udata; deleted_at[g] is the
  // delete sequence number once its delete has returned.
  constexpr std::size_t max_gen = 2 * churn_ops + 16;
  std::vector<std::atomic<std::uint64_t>> deleted_at(max_gen);
  std::atomic<std::uint64_t> delete_seq{0};
  std::atomic<std::uintptr_t> next_gen{1};
  std::atomic<long> stable_reported[stable] = {};
  std::atomic<int> violations{0};
  std::atomic<long> churn_events{0};
  std::atomic<bool> stop{false};

  auto scanner = [&] {
    kev out[8];
    while (!stop.load()) {
      const std::uint64_t s0 = delete_seq.load();
      const std::size_t n = f.kq.scan(out, std::chrono::milliseconds(1));
      for (std::size_t i = 0; i < n; ++i) {
        const kev& e = out[i];
        if (e.ident < stable && e.filter == counter_filter::id) {
          stable_reported[e.ident].fetch_add(e.data);
        } else if (e.ident >= churn_base) {
          churn_events.fetch_add(1);
          const std::uint64_t d = deleted_at[e.udata].load();
          if (d != 0 && d <= s0) violations.fetch_add(1);
        }
      }
    }
  };

  std::thread s1(scanner), s2(scanner);
  std::thread firer([&] {
    for (int i = 0; i < fires; ++i) {
      f.cs.fire(1);
      if (i % 64 == 0) std::this_thread::yield();
    }
  });
  std::thread toggler([&] {
    std::mt19937 rng(7);
    for (int i = 0; i < churn_ops; ++i) {
      const std::uintptr_t id = rng() % stable;
      (void)f.change(counter(id, rng() % 2 ? ev::disable : ev::enable));
      (void)f.change(trigger(churn_base + rng() % churn, note::ffor | 1));
    }
  });
  std::thread churner([&] {
    std::mt19937 rng(11);
    std::uintptr_t live_gen[2][churn] = {};
    for (int i = 0; i < churn_ops; ++i) {
      const std::uintptr_t slot = rng() % churn;
      const int kind = static_cast<int>(rng() % 2);
      const std::uintptr_t id = churn_base + slot;
      kev c = kind == 0 ? user(id, ev::add) : counter(id, ev::add);
      if (live_gen[kind][slot] == 0) {
        const std::uintptr_t g = next_gen.fetch_add(1);
        c.udata = g;
        c.flags |= rng() % 2 ? ev::clear : ev::dispatch;
        if (rng() % 4 == 0) c.flags |= ev::oneshot;
        REQUIRE(f.change(c) == 0);
        live_gen[kind][slot] = g;
      } else {
        c.flags = ev::delete_;
        const int err = f.change(c);  // ENOENT when a oneshot already went
        CHECK((err == 0 || err == ENOENT));
        deleted_at[live_gen[kind][slot]].store(delete_seq.fetch_add(1) + 1);
        live_gen[kind][slot] = 0;
      }
    }
  });
  firer.join();
  toggler.join();
  churner.join();
  stop.store(true);
  s1.join();
  s2.join();

  // Quiesce: enable everything stable and drain.
  for (std::uintptr_t i = 0; i < stable; ++i) REQUIRE(f.change(counter(i, ev::enable)) == 0);
  for (;;) {
    auto e = f.scan(64);
    if (e.empty()) break;
    for (auto& x : e)
      if (x.ident < stable && x.filter == counter_filter::id)
        stable_reported[x.ident].fetch_add(x.data);
  }
  CHECK(violations.load() == 0);
  CHECK(churn_events.load() > 0);  // the scanners did overlap the churn
  for (std::uintptr_t i = 0; i < stable; ++i) CHECK(stable_reported[i].load() == fires);
}
