// Zero heap allocation on every caller-owned path: kc, kcqueue (every lock
// policy), run, defer, run_all, drain, drain_all, cancel, splice, and a
// klist<no_lock> fan-out over knote_closure and knote (the fused fire path).
#include <kcont/kcont.hpp>

#include <doctest/doctest.h>

#include <mutex>

#include "support.hpp"

namespace {
using kcont::bsd_level;

struct count_fn {
  void operator()(int* obj, long& sum, int status) const noexcept {
    sum += *obj + status;
  }
};
using base_t = kcont::kc_base<int*, int, bsd_level>;
}  // namespace

TEST_CASE_TEMPLATE("alloc.caller_owned_paths_never_allocate", Lock,
                   kcont::no_lock, kcont::spin_lock, std::mutex) {
  kcont::manual_dispatcher<bsd_level, Lock> d;
  kcont::kcqueue<base_t, Lock> q, other;
  int obj = 1;
  kcont_test::allocation_scope scope;
  {
    kcont::kc a{count_fn{}, 0L, bsd_level::process};
    kcont::kc b{count_fn{}, 0L, bsd_level::softnet};
    kcont::kc c{count_fn{}, 0L, kcont::at<bsd_level::immediate>};
    kcont::kc s{count_fn{}, 0L, kcont::at<bsd_level::softclock>};
    for (int round = 0; round < 1000; ++round) {
      (void)kcont::run(d, a, &obj, 1, bsd_level::process);          // now
      (void)kcont::run(d, b, &obj, 2, bsd_level::softserial);       // deferred
      (void)kcont::run(d, c, &obj, 3, bsd_level::softserial);       // direct
      (void)kcont::run(d, s, &obj, 4, bsd_level::softnet);          // deferred
      (void)q.push(a);
      (void)other.push(static_cast<base_t&>(c));
      q.splice(other);
      (void)kcont::run_all(d, q, &obj, 5, bsd_level::softserial);  // a defers
      (void)kcont::defer(d, s, &obj, 6);  // refused: already queued
      CHECK(d.cancel(s));
      (void)kcont::defer(d, s, &obj, 6);
      d.drain(bsd_level::softnet);
      d.drain_all();
    }
    CHECK(a.env() == 1000 * (2 + 6));
    CHECK(b.env() == 1000 * 3);
    CHECK(c.env() == 1000 * (4 + 6));
    CHECK(s.env() == 1000 * 5);
  }
  CHECK(scope.count() == 0);
}

TEST_CASE("alloc.make_kc_allocates_exactly_once_and_frees") {
  kcont::manual_dispatcher<> d;
  int obj = 1;
  long sum = 0;
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 100; ++i) {
    auto& k = kcont::make_kc(
        [](int* o, long* s, int st) { *s += *o + st; }, &sum, bsd_level::process);
    (void)kcont::run(d, k, &obj, 1, bsd_level::softnet);
  }
  CHECK(scope.count() == 100);
  d.drain_all();
  CHECK(sum == 200);
}

namespace {
using kn_t = kcont::knote_base<long>;
using fan_list = kcont::klist<long, bsd_level, kcont::no_lock>;
struct list_filter {
  fan_list* list;
  int attach(kn_t& kn) {
    list->insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)list->erase(kn); }
  bool event(kn_t& kn, long hint) {
    kn.data = hint;
    return hint != 0;
  }
};
struct sum_fn {
  void operator()(kn_t* kn, long*& sum, kcont::knote_cause) const noexcept { *sum += kn->data; }
};
}  // namespace

TEST_CASE_TEMPLATE("alloc.knote_closure_fanout_never_allocates", Pol, kcont::no_lock,
                   kcont::spin_lock) {
  // The fused fire path of knote_closure and knote on a klist<no_lock>: run
  // now (compile-time immediate, run-time process), deferred (softnet at
  // softserial), coalesced while queued, drained, filter false, disabled.
  kcont::manual_dispatcher<> d;
  fan_list list;
  long sum = 0;
  kcont_test::allocation_scope scope;
  {
    kcont::knote_closure<list_filter, sum_fn, long*, kcont::static_level<bsd_level::immediate>, Pol>
        now{list_filter{&list}, sum_fn{}, &sum, kcont::at<bsd_level::immediate>};
    kcont::knote_closure<list_filter, sum_fn, long*, bsd_level, Pol> later{
        list_filter{&list}, sum_fn{}, &sum, bsd_level::softnet};
    kcont::kc k{sum_fn{}, &sum, bsd_level::process};
    kcont::knote<list_filter, bsd_level, Pol> plain{list_filter{&list}, k};
    kcont::knote_closure<list_filter, sum_fn, long*, bsd_level, Pol> off{
        list_filter{&list}, sum_fn{}, &sum, bsd_level::immediate};
    for (kn_t* kn : {static_cast<kn_t*>(&now), static_cast<kn_t*>(&later),
                     static_cast<kn_t*>(&plain), static_cast<kn_t*>(&off)})
      REQUIRE(kn->attach() == 0);
    off.disable();
    for (int round = 0; round < 1000; ++round) {
      (void)list.fire(d, 0, bsd_level::softserial);  // filter false
      (void)list.fire(d, 1, bsd_level::softserial);  // now; later, plain deferred
      (void)list.fire(d, 1, bsd_level::softserial);  // later, plain coalesced
      (void)d.drain_all();
    }
    CHECK(sum == 1000 * (2 + 1 + 1));  // now twice; later, plain once each
    (void)now.detach(d);
    (void)later.detach(d);
    (void)plain.detach(d);
    (void)off.detach(d);
  }
  CHECK(scope.count() == 0);
}
