// current_level: the thread-local curipl, splraise/splx guards, and the run
// overloads that use it.
#include <kcont/current_level.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>

#include <thread>
#include <vector>

namespace {

using kcont::bsd_level;
using kcont::run_result;

enum class two_level : unsigned char { low, high, immediate };

struct record_level_fn {
  void operator()(int, std::vector<bsd_level>*& log, int) const {
    log->push_back(kcont::current_level<bsd_level>());
  }
};

}  // namespace

TEST_CASE("current_level.starts_at_level_zero_on_every_thread") {
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
  bsd_level seen = bsd_level::immediate;
  std::thread t([&] {
    auto g = kcont::raise_level(bsd_level::softnet);
    seen = kcont::current_level<bsd_level>();
  });
  t.join();
  CHECK(seen == bsd_level::softnet);
  // The other thread's guard did not touch this thread's level.
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
}

TEST_CASE("current_level.guards_nest_and_restore") {
  {
    kcont::level_guard g1(bsd_level::softnet);
    CHECK(kcont::current_level<bsd_level>() == bsd_level::softnet);
    {
      kcont::level_guard g2(bsd_level::softclock);  // exact set: may lower
      CHECK(g2.saved() == bsd_level::softnet);
      CHECK(kcont::current_level<bsd_level>() == bsd_level::softclock);
    }
    CHECK(kcont::current_level<bsd_level>() == bsd_level::softnet);
  }
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
}

TEST_CASE("current_level.raise_never_lowers") {
  auto g1 = kcont::raise_level(bsd_level::softserial);
  {
    auto g2 = kcont::raise_level(bsd_level::softclock);
    CHECK(kcont::current_level<bsd_level>() == bsd_level::softserial);
  }
  CHECK(kcont::current_level<bsd_level>() == bsd_level::softserial);
}

TEST_CASE("current_level.level_sets_are_independent") {
  auto g = kcont::raise_level(bsd_level::softserial);
  CHECK(kcont::current_level<two_level>() == two_level::low);
  kcont::level_guard g2(two_level::high);
  CHECK(kcont::current_level<bsd_level>() == bsd_level::softserial);
}

TEST_CASE("current_level.run_without_a_level_uses_the_current_one") {
  kcont::manual_dispatcher<> d;
  std::vector<bsd_level> log;
  kcont::kc k{record_level_fn{}, &log, bsd_level::softnet};
  CHECK(kcont::run(d, k, 0, 0) == run_result::ran);  // process <= softnet
  {
    auto g = kcont::raise_level(bsd_level::softserial);
    CHECK(kcont::run(d, k, 0, 0) == run_result::deferred);
  }
  CHECK(log == std::vector<bsd_level>{bsd_level::process});
  // The manual dispatcher's drain runs it at its own level.
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK(log == std::vector<bsd_level>{bsd_level::process, bsd_level::softnet});
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
}

TEST_CASE("current_level.run_all_without_a_level_uses_the_current_one") {
  kcont::manual_dispatcher<> d;
  std::vector<bsd_level> log;
  kcont::kcqueue<kcont::kc_base<int, int, bsd_level>> q;
  kcont::kc a{record_level_fn{}, &log, bsd_level::softclock};
  kcont::kc b{record_level_fn{}, &log, bsd_level::softserial};
  (void)q.push(a);
  (void)q.push(b);
  auto g = kcont::raise_level(bsd_level::softnet);
  CHECK(kcont::run_all(d, q, 0, 0) == 2);
  // b ran now (softserial >= softnet), a was deferred to softclock.
  CHECK(log == std::vector<bsd_level>{bsd_level::softnet});
  CHECK(d.has_work(bsd_level::softclock));
  CHECK(d.drain_all() == 1);
}
