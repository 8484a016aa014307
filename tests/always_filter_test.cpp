// kcont::always_filter: an unconditional fan-out over a klist with no filter
// written by hand (issue 14, gap 4).
#include <kcont/always_filter.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/filter.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/kc.hpp>
#include <kcont/klist.hpp>
#include <kcont/knote.hpp>
#include <kcont/knote_closure.hpp>

#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kn_t = kcont::knote_base<long>;

struct count_fn {
  void operator()(kn_t* kn, std::vector<std::uintptr_t>*& seen, knote_cause) const {
    seen->push_back(kn->ident);
  }
};

}  // namespace

static_assert(kcont::filter_for<kcont::always_filter<kcont::klist<long>>, kn_t>);

TEST_CASE("always_filter.every_subscriber_runs_on_every_fire") {
  // An observer list, as a user writes it: N subscribers, each its own
  // knote_closure, all fired by any hint (0 included).
  using list_t = kcont::klist<long, bsd_level, kcont::no_lock>;
  using every = kcont::always_filter<list_t>;
  using sub_t = kcont::knote_closure<every, count_fn, std::vector<std::uintptr_t>*,
                                     kcont::static_level<bsd_level::immediate>,
                                     kcont::no_lock>;
  list_t subscribers;
  std::vector<std::uintptr_t> seen;
  std::deque<sub_t> subs;  // knotes are immovable: a deque builds them in place
  for (std::uintptr_t i = 0; i < 4; ++i) {
    subs.emplace_back(every{subscribers}, count_fn{}, &seen,
                      kcont::at<bsd_level::immediate>, i);
    CHECK(subs.back().attach() == 0);
  }
  kcont::immediate_target<bsd_level> now;
  CHECK(subscribers.fire(now, 1, now.lowest) == 4);
  CHECK(subscribers.fire(now, 0, now.lowest) == 4);
  CHECK(subscribers.fire(now, -7, now.lowest) == 4);
  CHECK(seen.size() == 12);
  CHECK(seen[0] == 0);
  CHECK(seen[3] == 3);
  CHECK(seen[11] == 3);

  CHECK(subs[1].detach());  // detached: no longer fired
  seen.clear();
  CHECK(subscribers.fire(now, 1, now.lowest) == 3);
  CHECK(seen == std::vector<std::uintptr_t>{0, 2, 3});
  for (auto& s : subs) (void)s.detach();
  CHECK(subscribers.fire(now, 1, now.lowest) == 0);
}

TEST_CASE("always_filter.thread_safe_knotes_deferred_to_their_level") {
  // The default knote (spin_lock) on a std::mutex klist, continuations at
  // softnet, fired from softserial: deferred, run by the dispatcher's drain.
  using list_t = kcont::klist<long, bsd_level, std::mutex>;
  list_t subscribers;
  std::vector<std::uintptr_t> seen;
  kcont::kc k1{count_fn{}, &seen, bsd_level::softnet};
  kcont::kc k2{count_fn{}, &seen, bsd_level::softnet};
  kcont::knote<kcont::always_filter<list_t>> a{kcont::always_filter{subscribers}, k1, 1};
  kcont::knote<kcont::always_filter<list_t>> b{kcont::always_filter{subscribers}, k2, 2};
  CHECK(a.attach() == 0);
  CHECK(b.attach() == 0);
  kcont::manual_dispatcher<bsd_level, std::mutex> d;
  CHECK(subscribers.fire(d, 5, bsd_level::softserial) == 2);
  CHECK(seen.empty());
  d.drain_all();
  CHECK(seen == std::vector<std::uintptr_t>{1, 2});
  CHECK(a.detach(d));
  CHECK(b.detach(d));
}
