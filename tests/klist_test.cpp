// klist: fan-out through filters, detach during the fan-out, lock policies.
#include <kcont/klist.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/knote_closure.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kn_t = kcont::knote_base<long>;

// An event source: a klist the filter links its knote on. Fires when the
// hint has any of the knote's interest bits (sfflags).
template <class Lock = kcont::no_lock>
struct source {
  kcont::klist<long, bsd_level, Lock> list;
};
template <class Lock = kcont::no_lock>
struct bits_filter {
  source<Lock>* src;
  int attach(kn_t& kn) {
    src->list.insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)src->list.erase(kn); }
  bool event(kn_t& kn, long hint) {
    if ((static_cast<std::uint32_t>(hint) & kn.sfflags) == 0) return false;
    kn.fflags |= static_cast<std::uint32_t>(hint) & kn.sfflags;
    return true;
  }
};

struct recorder {
  std::vector<std::uintptr_t> order;
};
struct record_fn {
  void operator()(kn_t* kn, recorder*& r, knote_cause) const {
    r->order.push_back(kn->ident);
  }
};
using rec_kc = kcont::kc<record_fn, recorder*, bsd_level>;

}  // namespace

TEST_CASE_TEMPLATE("klist.fire_runs_each_filter_and_activates_those_that_fire", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<> s;
  recorder r;
  rec_kc k1{record_fn{}, &r, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  rec_kc k3{record_fn{}, &r, bsd_level::softnet};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  kcont::knote<bits_filter<>, bsd_level, Pol> b{bits_filter<>{&s}, k2, 2};
  kcont::knote<bits_filter<>, bsd_level, Pol> c{bits_filter<>{&s}, k3, 3};
  a.sfflags = 0x1;
  b.sfflags = 0x2;
  c.sfflags = 0x3;
  for (auto* kn : {&a, &b, &c}) REQUIRE(kn->attach() == 0);
  CHECK(s.list.size_slow() == 3);

  CHECK(s.list.fire(d, 0x1, bsd_level::softserial) == 2);  // a now, c deferred
  CHECK(r.order == std::vector<std::uintptr_t>{1});
  CHECK(d.drain_all() == 1);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3});
  CHECK(!b.is_active());
  CHECK(c.snapshot().fflags == 0x1);

  b.disable();
  CHECK(s.list.fire(d, 0x2, bsd_level::process) == 1);  // b is disabled: only marked
  CHECK(b.is_active());
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3, 3});
  CHECK(s.list.fire(d, 0x4, bsd_level::process) == 0);
  for (auto* kn : {&a, &b, &c}) kn->detach(d);
  CHECK(s.list.empty());
}

TEST_CASE_TEMPLATE("klist.attach_twice_is_refused_and_fire_ends", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  // A second attach linked the knote after itself (its own successor), and
  // a release build's fire() then never ended. Refused: a contract violation
  // in a debug build; in release, attach returns EEXIST (the filter is not
  // called) and klist::insert returns false, the list unchanged.
  using kn_type = kcont::knote<bits_filter<>, bsd_level, Pol>;
  if constexpr (kcont::contract_checks) {
    CHECK(kcont_test::dies_with(
        [] {
          static source<> s;
          static recorder r;
          static rec_kc k{record_fn{}, &r, bsd_level::immediate};
          static kn_type a{bits_filter<>{&s}, k, 1};
          (void)a.attach();
          (void)a.attach();
        },
        "knote: attach on an attached knote"));
    CHECK(kcont_test::dies_with(
        [] {
          static source<> s;
          static recorder r;
          static rec_kc k{record_fn{}, &r, bsd_level::immediate};
          static kn_type a{bits_filter<>{&s}, k, 1};
          s.list.insert(a);
          s.list.insert(a);
        },
        "klist: insert of a knote already on a klist"));
  } else {
    kcont::manual_dispatcher<> d;
    source<> s;
    recorder r;
    rec_kc k{record_fn{}, &r, bsd_level::immediate};
    kn_type a{bits_filter<>{&s}, k, 1};
    a.sfflags = 0x1;
    REQUIRE(a.attach() == 0);
    REQUIRE(a.attach() == EEXIST);  // before: 0, and the list looped
    CHECK_FALSE(s.list.insert(a));
    CHECK(kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>::valid(s.list));
    CHECK(s.list.size_slow() == 1);
    CHECK(a.is_attached());
    CHECK(s.list.fire(d, 0x1, bsd_level::process) == 1);
    CHECK(r.order == std::vector<std::uintptr_t>{1});
    a.detach(d);
    CHECK(s.list.empty());
  }
}

namespace {
// A subscriber whose continuation detaches a victim (itself or another).
struct detacher_env {
  recorder* r;
  kn_t* victim;
};
struct detacher_fn {
  void operator()(kn_t* kn, detacher_env& e, knote_cause) const {
    e.r->order.push_back(kn->ident);
    if (e.victim != nullptr) {
      (void)e.victim->detach();
      e.victim = nullptr;
    }
  }
};
using det_kc = kcont::kc<detacher_fn, detacher_env, bsd_level>;
}  // namespace

TEST_CASE_TEMPLATE("klist.a_subscriber_detaches_itself_during_the_fanout", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<> s;
  recorder r;
  rec_kc k1{record_fn{}, &r, bsd_level::immediate};
  rec_kc k3{record_fn{}, &r, bsd_level::immediate};
  det_kc k2{detacher_fn{}, {&r, nullptr}, bsd_level::immediate};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  auto b = std::make_unique<kcont::knote<bits_filter<>, bsd_level, Pol>>(bits_filter<>{&s}, k2, 2);
  kcont::knote<bits_filter<>, bsd_level, Pol> c{bits_filter<>{&s}, k3, 3};
  k2.env().victim = b.get();
  for (auto* kn : {&a, b.get(), &c}) {
    kn->sfflags = 1;
    REQUIRE(kn->attach() == 0);
  }
  CHECK(s.list.fire(d, 1, bsd_level::process) == 3);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 2, 3});
  CHECK(s.list.size_slow() == 2);
  CHECK(kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>::valid(s.list));
  b.reset();
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 2, 3, 1, 3});
  a.detach();
  c.detach();
}

TEST_CASE_TEMPLATE("klist.a_subscriber_detaches_the_next_one_during_the_fanout", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<> s;
  recorder r;
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  rec_kc k3{record_fn{}, &r, bsd_level::immediate};
  det_kc k1{detacher_fn{}, {&r, nullptr}, bsd_level::immediate};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  auto b = std::make_unique<kcont::knote<bits_filter<>, bsd_level, Pol>>(bits_filter<>{&s}, k2, 2);
  kcont::knote<bits_filter<>, bsd_level, Pol> c{bits_filter<>{&s}, k3, 3};
  k1.env().victim = b.get();
  for (auto* kn : {&a, b.get(), &c}) {
    kn->sfflags = 1;
    REQUIRE(kn->attach() == 0);
  }
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);  // b was skipped
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3});
  CHECK(kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>::valid(s.list));
  b.reset();
  a.detach();
  c.detach();
}

TEST_CASE_TEMPLATE("klist.nested_fire_from_a_continuation", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<> s;
  recorder r;
  struct env_t {
    recorder* r;
    source<>* s;
    kcont::manual_dispatcher<>* d;
  };
  kcont::kc k1{[](kn_t* kn, env_t& e, knote_cause) {
                 e.r->order.push_back(kn->ident);
                 (void)e.s->list.fire(*e.d, 2, bsd_level::process);
               },
               env_t{&r, &s, &d}, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  kcont::knote<bits_filter<>, bsd_level, Pol> b{bits_filter<>{&s}, k2, 2};
  a.sfflags = 1;
  b.sfflags = 2;
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 1);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 2});
  a.detach();
  b.detach();
}

TEST_CASE_TEMPLATE("klist.fanout_never_allocates", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<> s;
  long sum = 0;
  struct add_fn {
    void operator()(kn_t* kn, long*& s, knote_cause) const noexcept {
      *s += static_cast<long>(kn->ident);
    }
  };
  using add_kc = kcont::kc<add_fn, long*, bsd_level>;
  add_kc k1{add_fn{}, &sum, bsd_level::immediate};
  add_kc k2{add_fn{}, &sum, bsd_level::softnet};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  kcont::knote<bits_filter<>, bsd_level, Pol> b{bits_filter<>{&s}, k2, 2};
  a.sfflags = b.sfflags = 1;
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 1000; ++i) {
    (void)s.list.fire(d, 1, bsd_level::softserial);
    (void)d.drain_all();
  }
  CHECK(scope.count() == 0);
  CHECK(sum == 3000);
  a.detach(d);
  b.detach(d);
}

// N subscribers (Sub{&s, &runs, ident}, its knote in `kn`) attached to s;
// two threads call `fire` until this one has detached (detach_one(i, kn))
// and freed each, once the fan-outs are under way; the list ends empty and
// consistent. TSan and ASan watch for races and freed memory.
namespace {
template <class Sub, class Lock, class Fire, class Detach>
void fire_while_detaching(source<Lock>& s, std::atomic<long>& runs, int n, Fire fire,
                          Detach detach_one) {
  std::vector<std::unique_ptr<Sub>> subs;
  for (int i = 0; i < n; ++i) {
    subs.push_back(std::make_unique<Sub>(&s, &runs, static_cast<std::uintptr_t>(i)));
    REQUIRE(subs.back()->kn.attach() == 0);
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> firers;
  for (int f = 0; f < 2; ++f)
    firers.emplace_back([&] {
      while (!stop.load()) fire();
    });
  while (runs.load() < 4 * n) std::this_thread::yield();  // fan-outs are under way
  for (int i = 0; i < n; ++i) {
    auto& sp = subs[static_cast<std::size_t>(i)];
    detach_one(i, sp->kn);
    sp.reset();
    std::this_thread::yield();
  }
  stop.store(true);
  for (auto& th : firers) th.join();
  CHECK(s.list.empty());
  CHECK(kcont::detail::klist_checker<long, bsd_level, Lock>::valid(s.list));
}
}  // namespace

TEST_CASE_TEMPLATE("klist.concurrent_fire_and_detach_under_a_mutex", Pol,
                   kcont::list_guarded, kcont::spin_lock) {
  // Several threads fire while subscribers detach themselves or each other
  // and are destroyed; TSan and ASan watch for races and freed memory.
  using S = source<std::mutex>;
  using F = bits_filter<std::mutex>;
  kcont::immediate_target<> t;
  S s;
  constexpr int N = 32;
  std::atomic<long> runs{0};
  struct sub {
    std::atomic<long>* runs;
    kcont::kc<void (*)(kn_t*, std::atomic<long>*&, knote_cause), std::atomic<long>*,
              bsd_level>
        k;
    kcont::knote<F, bsd_level, Pol> kn;
    sub(S* s, std::atomic<long>* r, std::uintptr_t id)
        : runs(r),
          k([](kn_t*, std::atomic<long>*& c, knote_cause) { c->fetch_add(1); }, r,
            bsd_level::immediate),
          kn(F{s}, k, id) {
      kn.sfflags = 1;
    }
  };
  fire_while_detaching<sub>(s, runs, N, [&] { (void)s.list.fire(t, 1, t.lowest); },
                            [](int, kcont::knote<F, bsd_level, Pol>& kn) { kn.detach(); });
}

TEST_CASE_TEMPLATE("klist.no_lock_fire_of_an_active_knote_honours_disable_and_enable", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  // With no_lock the fan-out does not pin, and an active, enabled knote is
  // run without writing its state word: disable must still stop it.
  kcont::immediate_target<> t;
  source<> s;
  recorder r;
  rec_kc k1{record_fn{}, &r, bsd_level::immediate};
  kcont::knote<bits_filter<>, bsd_level, Pol> a{bits_filter<>{&s}, k1, 1};
  a.sfflags = 0x1;
  REQUIRE(a.attach() == 0);
  CHECK(s.list.fire(t, 0x1, t.lowest) == 1);
  CHECK(a.is_active());
  CHECK(s.list.fire(t, 0x1, t.lowest) == 1);  // active already: runs again
  CHECK(r.order == std::vector<std::uintptr_t>{1, 1});
  a.disable();
  CHECK(s.list.fire(t, 0x1, t.lowest) == 0);  // active and disabled: not run
  CHECK(r.order == std::vector<std::uintptr_t>{1, 1});
  CHECK(a.enable(t, t.lowest) == kcont::run_result::ran);  // rule 6, second half
  CHECK(s.list.fire(t, 0x1, t.lowest) == 1);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 1, 1, 1});
  (void)a.clear_active();
  CHECK(s.list.fire(t, 0x1, t.lowest) == 1);  // inactive: marked active again
  CHECK(a.is_active());
  a.detach();
  CHECK(s.list.fire(t, 0x1, t.lowest) == 0);
  CHECK(r.order.size() == 5);
  CHECK(kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>::valid(s.list));
}

#if defined(__cpp_exceptions)  // throwing filters need exceptions
namespace {
// A filter that throws while `armed` is set: a driver's bug, in the middle of
// a fan-out.
template <class Lock>
struct throwing_filter {
  source<Lock>* src;
  bool* armed;
  int attach(kn_t& kn) {
    src->list.insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)src->list.erase(kn); }
  bool event(kn_t&, long) {
    if (*armed) throw std::runtime_error("filter failed");
    return true;
  }
};
}  // namespace

TEST_CASE_TEMPLATE("klist.throwing_filter_propagates_and_leaves_the_list_intact",
                   Lock, kcont::no_lock, std::mutex) {
  // The exception reaches fire's caller; the subscribers before it ran, the
  // ones after it did not; the list, its fan-out cursor and the knotes' pins
  // are all released (detach does not wait forever), and the next fire works.
  kcont::manual_dispatcher<> d;
  source<Lock> s;
  recorder r;
  bool armed = true;
  rec_kc k1{record_fn{}, &r, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  rec_kc k3{record_fn{}, &r, bsd_level::immediate};
  kcont::knote<bits_filter<Lock>> a{bits_filter<Lock>{&s}, k1, 1};
  kcont::knote<throwing_filter<Lock>> b{throwing_filter<Lock>{&s, &armed}, k2, 2};
  kcont::knote<bits_filter<Lock>> c{bits_filter<Lock>{&s}, k3, 3};
  a.sfflags = c.sfflags = 0x1;
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  REQUIRE(c.attach() == 0);
  CHECK_THROWS_AS(s.list.fire(d, 1, bsd_level::softserial), std::runtime_error);
  CHECK(r.order == std::vector<std::uintptr_t>{1});
  CHECK(kcont::detail::klist_checker<long, bsd_level, Lock>::valid(s.list));
  armed = false;
  CHECK(s.list.fire(d, 1, bsd_level::softserial) == 3);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 1, 2, 3});
  CHECK(b.detach(d));
  CHECK(a.detach(d));
  CHECK(c.detach(d));
  CHECK(s.list.empty());
}
#endif  // __cpp_exceptions

// ------------------------------------------------------------ fused fire
// A klist<no_lock> fan-out calls each knote's fused fire function (filter,
// activation and, when it may run now, the continuation in one call). Every
// knote flavour has its own: knote (type-erased continuation), knote_closure
// and knote_method (continuation type known, called directly), each with
// both threading policies, at run-time and compile-time levels. The cases
// below hold each of them to the semantics of the unfused path.

namespace {

struct fused_log {
  std::vector<std::uintptr_t> ids;
  std::vector<knote_cause> causes;
  std::vector<kn_t*> objs;
};

// What a subscriber's continuation does besides logging: detach `victim`
// (itself or another), then call `destroy(owner)` (its own destruction).
struct fused_env {
  fused_log* log = nullptr;
  kn_t* victim = nullptr;
  void (*destroy)(void*) = nullptr;
  void* owner = nullptr;
};

void on_fused(kn_t* kn, fused_env& e, knote_cause cause) {
  e.log->ids.push_back(kn->ident);
  e.log->causes.push_back(cause);
  e.log->objs.push_back(kn);
  if (kn_t* v = std::exchange(e.victim, nullptr)) (void)v->detach();
  void (*destroy)(void*) = std::exchange(e.destroy, nullptr);
  if (destroy != nullptr) destroy(e.owner);  // e may be gone from here on
}

struct fused_fn {
  void operator()(kn_t* kn, fused_env& e, knote_cause cause) const { on_fused(kn, e, cause); }
};

template <bool Static, bsd_level L>
using spec_t = std::conditional_t<Static, kcont::static_level<L>, bsd_level>;
template <bool Static, bsd_level L>
constexpr spec_t<Static, L> spec_v() {
  if constexpr (Static)
    return kcont::at<L>;
  else
    return L;
}

// knote<F, Level, Pol> with a caller-owned kc beside it.
template <class Pol, bool Static, bsd_level L>
struct plain_sub {
  plain_sub(source<>& s, fused_log& log, std::uintptr_t id)
      : k(fused_fn{}, fused_env{&log}, spec_v<Static, L>()), node(bits_filter<>{&s}, k, id) {
    node.sfflags = 1;
  }
  kn_t& kn() { return node; }
  fused_env& env() { return k.env(); }
  kcont::kc<fused_fn, fused_env, spec_t<Static, L>> k;
  kcont::knote<bits_filter<>, bsd_level, Pol> node;
};

template <class Pol, bool Static, bsd_level L>
struct closure_sub {
  closure_sub(source<>& s, fused_log& log, std::uintptr_t id)
      : node(bits_filter<>{&s}, fused_fn{}, fused_env{&log}, spec_v<Static, L>(), id) {
    node.sfflags = 1;
  }
  kn_t& kn() { return node; }
  fused_env& env() { return node.env(); }
  kcont::knote_closure<bits_filter<>, fused_fn, fused_env, spec_t<Static, L>, Pol> node;
};

struct method_target {
  fused_env e;
  void on(kn_t* kn, knote_cause cause) { on_fused(kn, e, cause); }
};
template <class Pol, bool Static, bsd_level L>
struct method_sub {
  method_sub(source<>& s, fused_log& log, std::uintptr_t id)
      : target{fused_env{&log}}, node(bits_filter<>{&s}, &target, spec_v<Static, L>(), id) {
    node.sfflags = 1;
  }
  kn_t& kn() { return node; }
  fused_env& env() { return target.e; }
  method_target target;
  kcont::knote_method<&method_target::on, bits_filter<>, spec_t<Static, L>, Pol> node;
};

using fused_now_flavours = std::tuple<
    plain_sub<kcont::no_lock, false, bsd_level::immediate>,
    plain_sub<kcont::spin_lock, false, bsd_level::immediate>,
    plain_sub<kcont::no_lock, true, bsd_level::immediate>,
    closure_sub<kcont::no_lock, true, bsd_level::immediate>,
    closure_sub<kcont::spin_lock, true, bsd_level::immediate>,
    closure_sub<kcont::no_lock, false, bsd_level::process>,
    method_sub<kcont::no_lock, true, bsd_level::immediate>,
    method_sub<kcont::spin_lock, true, bsd_level::immediate>,
    // list_guarded, the default: its no_lock klist's one thread guards it.
    plain_sub<kcont::list_guarded, false, bsd_level::immediate>,
    closure_sub<kcont::list_guarded, true, bsd_level::immediate>,
    method_sub<kcont::list_guarded, true, bsd_level::immediate>>;

// Levels a fan-out at softserial must defer (softnet), at run time and at
// compile time.
using fused_deferred_flavours = std::tuple<
    plain_sub<kcont::no_lock, false, bsd_level::softnet>,
    plain_sub<kcont::spin_lock, true, bsd_level::softnet>,
    closure_sub<kcont::no_lock, false, bsd_level::softnet>,
    closure_sub<kcont::spin_lock, false, bsd_level::softnet>,
    closure_sub<kcont::no_lock, true, bsd_level::softnet>,
    closure_sub<kcont::spin_lock, true, bsd_level::softnet>,
    method_sub<kcont::no_lock, true, bsd_level::softnet>,
    method_sub<kcont::spin_lock, false, bsd_level::softnet>,
    plain_sub<kcont::list_guarded, true, bsd_level::softnet>,
    closure_sub<kcont::list_guarded, false, bsd_level::softnet>,
    method_sub<kcont::list_guarded, true, bsd_level::softnet>>;

using checker = kcont::detail::klist_checker<long, bsd_level, kcont::no_lock>;

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_filter_false_runs_nothing", Sub, fused_filter_false) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  REQUIRE(a.kn().attach() == 0);
  CHECK(s.list.fire(d, 0x2, bsd_level::process) == 0);  // no interest in 0x2
  CHECK(!a.kn().is_active());
  CHECK(log.ids.empty());
  CHECK(s.list.fire(d, 0x1, bsd_level::process) == 1);
  CHECK(log.ids == std::vector<std::uintptr_t>{1});
  CHECK(log.objs == std::vector<kn_t*>{&a.kn()});
  CHECK(log.causes == std::vector<knote_cause>{knote_cause::event});
  CHECK(a.kn().is_active());
  CHECK(a.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(fused_filter_false, fused_now_flavours);

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_disabled_marks_active_and_enable_runs_it", Sub,
                          fused_disabled) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  Sub b{s, log, 2};
  REQUIRE(a.kn().attach() == 0);
  REQUIRE(b.kn().attach() == 0);
  a.kn().disable();
  CHECK(s.list.fire(d, 1, bsd_level::process) == 1);  // rule 6: a only marked
  CHECK(a.kn().is_active());
  CHECK(log.ids == std::vector<std::uintptr_t>{2});
  CHECK(a.kn().enable(d, bsd_level::process) == kcont::run_result::ran);
  CHECK(log.ids == std::vector<std::uintptr_t>{2, 1});
  CHECK(log.causes.back() == knote_cause::enable);
  CHECK(log.objs.back() == &a.kn());
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{2, 1, 1, 2});
  CHECK(a.kn().detach(d));
  CHECK(s.list.fire(d, 1, bsd_level::process) == 1);  // detached: skipped
  CHECK(b.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(fused_disabled, fused_now_flavours);

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_continuation_detaches_and_destroys_its_knote", Sub,
                          fused_self_destroy) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  auto b = std::make_unique<Sub>(s, log, 2);
  Sub c{s, log, 3};
  b->env().victim = &b->kn();
  b->env().destroy = [](void* p) { static_cast<std::unique_ptr<Sub>*>(p)->reset(); };
  b->env().owner = &b;
  for (kn_t* kn : {&a.kn(), &b->kn(), &c.kn()}) REQUIRE(kn->attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 3);
  CHECK(b == nullptr);  // rule 8: gone, and the fan-out went on to c
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 3});
  CHECK(checker::valid(s.list));
  CHECK(s.list.size_slow() == 2);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 3, 1, 3});
  CHECK(a.kn().detach(d));
  CHECK(c.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(fused_self_destroy, fused_now_flavours);

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_continuation_detaches_the_next_knote", Sub,
                          fused_detach_next) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  Sub b{s, log, 2};
  Sub c{s, log, 3};
  a.env().victim = &b.kn();
  for (kn_t* kn : {&a.kn(), &b.kn(), &c.kn()}) REQUIRE(kn->attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);  // b skipped: erased
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 3});
  CHECK(!b.kn().is_attached());
  CHECK(checker::valid(s.list));
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 3, 1, 3});
  CHECK(a.kn().detach(d));
  CHECK(c.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(fused_detach_next, fused_now_flavours);

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_defers_through_the_dispatcher_and_coalesces", Sub,
                          fused_deferred) {
  // current (softserial) above the continuation's level (softnet): the
  // fused function cannot run it and fire takes kcont::run's path with the
  // dispatcher. While it is queued a second fan-out activates the knote but
  // its run coalesces with the pending one (rule 7); the drain runs it once,
  // with the knote as obj and cause event.
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  Sub b{s, log, 2};
  REQUIRE(a.kn().attach() == 0);
  REQUIRE(b.kn().attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::softserial) == 2);
  CHECK(log.ids.empty());
  CHECK(a.kn().continuation().is_queued());
  CHECK(s.list.fire(d, 1, bsd_level::softserial) == 2);  // refused: queued
  CHECK(d.drain_all() == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2});
  CHECK(log.objs == std::vector<kn_t*>{&a.kn(), &b.kn()});
  CHECK(log.causes == std::vector<knote_cause>{knote_cause::event, knote_cause::event});
  CHECK(!a.kn().continuation().is_queued());
  CHECK(!a.kn().continuation().is_deferred());
  // At or below its level it runs at once, in the fan-out.
  CHECK(s.list.fire(d, 1, bsd_level::softnet) == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 1, 2});
  CHECK(d.drain_all() == 0);
  // Deferred again, then cancelled by detach (rule 8): never run.
  CHECK(s.list.fire(d, 1, bsd_level::softserial) == 2);
  CHECK(a.kn().continuation().is_queued());
  CHECK(a.kn().detach(d));
  CHECK(b.kn().detach(d));
  CHECK(d.drain_all() == 0);
  CHECK(log.ids.size() == 4);
}
TEST_CASE_TEMPLATE_APPLY(fused_deferred, fused_deferred_flavours);

TEST_CASE_TEMPLATE_DEFINE("klist.fused_fire_nested_fire_from_a_continuation", Sub,
                          fused_nested) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  Sub a{s, log, 1};
  Sub b{s, log, 2};
  bool nested = false;
  struct nest_target {
    source<>* s;
    kcont::manual_dispatcher<>* d;
    bool* nested;
  } nt{&s, &d, &nested};
  // a's continuation destroys nothing; its destroy hook fires the list again
  // once (the hook runs after logging, inside the fan-out).
  a.env().destroy = [](void* p) {
    auto* t = static_cast<nest_target*>(p);
    if (std::exchange(*t->nested, true)) return;
    (void)t->s->list.fire(*t->d, 1, bsd_level::process);
  };
  a.env().owner = &nt;
  REQUIRE(a.kn().attach() == 0);
  REQUIRE(b.kn().attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 2);
  // outer a, then the nested fan-out (a, b), then outer b
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 1, 2, 2});
  CHECK(checker::valid(s.list));
  CHECK(a.kn().detach(d));
  CHECK(b.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(fused_nested, fused_now_flavours);

// A list with one subscriber takes fire's short path (no cursor). Its
// continuation may still detach and destroy its own knote, or attach a new
// subscriber: that one is not visited by this fan-out (allowed: "may be
// visited"), and the next fan-out takes the general path over both.
TEST_CASE_TEMPLATE_DEFINE("klist.single_subscriber_fan_out", Sub, single_subscriber) {
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;

  auto a = std::make_unique<Sub>(s, log, 1);
  a->env().victim = &a->kn();
  a->env().destroy = [](void* p) { static_cast<std::unique_ptr<Sub>*>(p)->reset(); };
  a->env().owner = &a;
  REQUIRE(a->kn().attach() == 0);
  CHECK(s.list.fire(d, 0x2, bsd_level::process) == 0);  // filter: no interest
  CHECK(log.ids.empty());
  CHECK(s.list.fire(d, 0x1, bsd_level::process) == 1);
  CHECK(a == nullptr);  // detached and destroyed inside its own run
  CHECK(s.list.empty());
  CHECK(s.list.fire(d, 0x1, bsd_level::process) == 0);

  Sub b{s, log, 2};
  Sub c{s, log, 3};
  struct attach_target {
    Sub* c;
  } at{&c};
  b.env().destroy = [](void* p) { REQUIRE(static_cast<attach_target*>(p)->c->kn().attach() == 0); };
  b.env().owner = &at;
  REQUIRE(b.kn().attach() == 0);
  CHECK(s.list.fire(d, 0x1, bsd_level::process) == 1);  // c attached, not visited
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2});
  CHECK(s.list.size_slow() == 2);
  CHECK(s.list.fire(d, 0x1, bsd_level::process) == 2);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 2, 3});
  CHECK(checker::valid(s.list));
  CHECK(b.kn().detach(d));
  CHECK(c.kn().detach(d));
}
TEST_CASE_TEMPLATE_APPLY(single_subscriber, fused_now_flavours);

// A no_lock fan-out over knote_closures of one type at a compile-time
// immediate level fires a run of them in one call (a batch, read from the
// fan-out's cursor): it must visit exactly what the fan-out's own loop
// visits, stop at a knote of another type, skip one a continuation erased,
// visit one it attached behind the cursor, and count what fired.
TEST_CASE("klist.fused_fire_batch_of_one_closure_type_keeps_the_fan_out_semantics") {
  using A = closure_sub<kcont::no_lock, true, bsd_level::immediate>;
  using B = plain_sub<kcont::no_lock, false, bsd_level::immediate>;
  kcont::manual_dispatcher<> d;
  source<> s;
  fused_log log;
  A a1{s, log, 1};
  A a2{s, log, 2};
  B b3{s, log, 3};
  A a4{s, log, 4};
  A a5{s, log, 5};
  A a6{s, log, 6};
  for (kn_t* kn : {&a1.kn(), &a2.kn(), &b3.kn(), &a4.kn(), &a5.kn()})
    REQUIRE(kn->attach() == 0);
  CHECK(s.list.fire(d, 1, bsd_level::process) == 5);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 3, 4, 5});
  CHECK(log.objs == std::vector<kn_t*>{&a1.kn(), &a2.kn(), &b3.kn(), &a4.kn(), &a5.kn()});

  // a2's filter says no; a4's continuation attaches a6 behind the cursor
  // (visited, as by the loop) and a5's erases nothing but itself: fine.
  log = {};
  a2.kn().sfflags = 2;
  struct attach_target {
    A* a;
  } at{&a6};
  a4.env().destroy = [](void* p) { REQUIRE(static_cast<attach_target*>(p)->a->kn().attach() == 0); };
  a4.env().owner = &at;
  a5.env().victim = &a5.kn();
  CHECK(s.list.fire(d, 1, bsd_level::process) == 5);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 3, 4, 5, 6});
  CHECK(!a5.kn().is_attached());
  CHECK(checker::valid(s.list));
  CHECK(s.list.size_slow() == 5);

  // a1 (called by the loop) erases a4, two knotes ahead, past b3: skipped.
  log = {};
  a1.env().victim = &a4.kn();
  CHECK(s.list.fire(d, 1, bsd_level::process) == 3);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 3, 6});
  CHECK(checker::valid(s.list));

#if defined(__cpp_exceptions)
  // A continuation in a batch that throws ends the fan-out there; the list
  // and its cursor are left as before, and the next fan-out runs them all.
  log = {};
  a2.kn().sfflags = 1;
  a2.env().destroy = [](void*) { throw std::runtime_error("from a batch"); };
  CHECK_THROWS_AS(s.list.fire(d, 1, bsd_level::process), std::runtime_error);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2});
  CHECK(checker::valid(s.list));
  CHECK(s.list.fire(d, 1, bsd_level::process) == 4);
  CHECK(log.ids == std::vector<std::uintptr_t>{1, 2, 1, 2, 3, 6});
#endif
  for (kn_t* kn : {&a1.kn(), &a2.kn(), &b3.kn(), &a6.kn()}) CHECK(kn->detach(d));
  CHECK(s.list.empty());
}

// ----------------------------------------------------- kcont::hold_lock
// fire(d, hint, current, kcont::hold_lock): the list lock held across the
// whole fan-out (FreeBSD's KNOTE_LOCKED), for continuations that never touch
// their list.

TEST_CASE_TEMPLATE("klist.hold_lock_fire_runs_each_filter_and_activates_those_that_fire",
                   Lock, std::mutex, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  source<Lock> s;
  recorder r;
  rec_kc k1{record_fn{}, &r, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  rec_kc k3{record_fn{}, &r, bsd_level::softnet};
  // spin_lock: c's fields are read below, outside a fan-out, without guard().
  using kn_type = kcont::knote<bits_filter<Lock>, bsd_level, kcont::spin_lock>;
  kn_type a{bits_filter<Lock>{&s}, k1, 1};
  kn_type b{bits_filter<Lock>{&s}, k2, 2};
  kn_type c{bits_filter<Lock>{&s}, k3, 3};
  a.sfflags = 0x1;
  b.sfflags = 0x2;
  c.sfflags = 0x3;
  for (auto* kn : {&a, &b, &c}) REQUIRE(kn->attach() == 0);

  // a now, c deferred to softnet (rule 1), b's filter says no.
  CHECK(s.list.fire(d, 0x1, bsd_level::softserial, kcont::hold_lock) == 2);
  CHECK(r.order == std::vector<std::uintptr_t>{1});
  CHECK(d.drain_all() == 1);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3});
  CHECK(!b.is_active());
  CHECK(c.snapshot().fflags == 0x1);

  b.disable();  // rule 6: marked active, nothing run; enable runs it
  CHECK(s.list.fire(d, 0x2, bsd_level::process, kcont::hold_lock) == 1);
  CHECK(b.is_active());
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3, 3});
  CHECK(b.enable(d, bsd_level::process) == kcont::run_result::ran);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3, 3, 2});
  CHECK(s.list.fire(d, 0x4, bsd_level::process, kcont::hold_lock) == 0);
  c.detach(d);  // a detached knote is not visited
  CHECK(s.list.fire(d, 0x3, bsd_level::process, kcont::hold_lock) == 2);
  CHECK(r.order == std::vector<std::uintptr_t>{1, 3, 3, 2, 1, 2});
  CHECK(kcont::detail::klist_checker<long, bsd_level, Lock>::valid(s.list));
  a.detach(d);
  b.detach(d);
  CHECK(s.list.empty());
}

namespace {
// A continuation that waits, from inside the fan-out, for another thread to
// take the list's lock (empty()), up to `patience`: whether it could.
struct lock_probe {
  std::atomic<bool> inside{false};
  std::atomic<bool> got_lock{false};
  bool seen_free = false;
  std::chrono::milliseconds patience{0};
};
struct probe_fn {
  void operator()(kn_t*, lock_probe*& p, knote_cause) const {
    p->inside.store(true);
    const auto until = std::chrono::steady_clock::now() + p->patience;
    while (!p->got_lock.load() && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    p->seen_free = p->got_lock.load();
  }
};

// Fires `s` (with hold_lock when Held) while another thread waits for the
// first continuation to start, then calls s.list.empty(). Returns: whether
// that thread took the lock while the continuation ran.
template <bool Held>
bool lock_taken_inside(source<std::mutex>& s, lock_probe& p) {
  p.inside.store(false);
  p.got_lock.store(false);
  std::thread other([&] {
    while (!p.inside.load()) std::this_thread::yield();
    (void)s.list.empty();
    p.got_lock.store(true);
  });
  kcont::immediate_target<> t;
  if constexpr (Held)
    CHECK(s.list.fire(t, 1, t.lowest, kcont::hold_lock) == 2);
  else
    CHECK(s.list.fire(t, 1, t.lowest) == 2);
  other.join();
  return p.seen_free;
}
}  // namespace

TEST_CASE("klist.hold_lock_keeps_the_lock_across_every_continuation") {
  // The plain fan-out drops the lock around each continuation (the cursor
  // table in kcont/detail/klist_fanout.hpp); hold_lock holds it from the
  // first filter to the last continuation: another thread waits.
  source<std::mutex> s;
  lock_probe p;
  recorder r;
  kcont::kc<probe_fn, lock_probe*, bsd_level> k1{probe_fn{}, &p, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  kcont::knote<bits_filter<std::mutex>> a{bits_filter<std::mutex>{&s}, k1, 1};
  kcont::knote<bits_filter<std::mutex>> b{bits_filter<std::mutex>{&s}, k2, 2};
  a.sfflags = b.sfflags = 1;
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  p.patience = std::chrono::milliseconds(5000);  // it comes: the lock is free
  CHECK(lock_taken_inside<false>(s, p));
  p.patience = std::chrono::milliseconds(50);  // it cannot come: held
  CHECK_FALSE(lock_taken_inside<true>(s, p));
  CHECK(r.order == std::vector<std::uintptr_t>{2, 2});
  a.detach();
  b.detach();
}

namespace {
// A continuation that announces it runs, then waits until another thread
// has begun detaching its knote (and a little more), then says it finished.
struct slow_run {
  std::atomic<bool> started{false};
  std::atomic<bool> detaching{false};
  std::atomic<bool> finished{false};
};
struct slow_fn {
  void operator()(kn_t*, slow_run*& s, knote_cause) const {
    if (s->finished.load()) return;  // later fan-outs: nothing to wait for
    s->started.store(true);
    while (!s->detaching.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s->finished.store(true);
  }
};
}  // namespace

TEST_CASE("klist.hold_lock_detach_on_another_thread_waits_for_the_fanout") {
  // Rule 8 without a pin: the detach's erase takes the held list lock, so
  // detach returns only after the fan-out (this continuation's run) ended;
  // the owner then frees the knote (ASan sees any later touch).
  source<std::mutex> s;
  slow_run sr;
  recorder r;
  kcont::kc<slow_fn, slow_run*, bsd_level> k1{slow_fn{}, &sr, bsd_level::immediate};
  rec_kc k2{record_fn{}, &r, bsd_level::immediate};
  using kn_type = kcont::knote<bits_filter<std::mutex>>;
  auto a = std::make_unique<kn_type>(bits_filter<std::mutex>{&s}, k1, 1);
  kn_type b{bits_filter<std::mutex>{&s}, k2, 2};
  a->sfflags = b.sfflags = 1;
  REQUIRE(a->attach() == 0);
  REQUIRE(b.attach() == 0);
  bool finished_at_detach = false;
  std::thread other([&] {
    while (!sr.started.load()) std::this_thread::yield();
    sr.detaching.store(true);
    (void)a->detach();
    finished_at_detach = sr.finished.load();
    a.reset();
  });
  kcont::immediate_target<> t;
  CHECK(s.list.fire(t, 1, t.lowest, kcont::hold_lock) == 2);
  other.join();
  CHECK(finished_at_detach);
  CHECK(r.order == std::vector<std::uintptr_t>{2});
  CHECK(s.list.fire(t, 1, t.lowest, kcont::hold_lock) == 1);  // b only
  CHECK(kcont::detail::klist_checker<long, bsd_level, std::mutex>::valid(s.list));
  b.detach();
}

TEST_CASE_TEMPLATE("klist.hold_lock_concurrent_fire_and_detach_under_a_mutex", Pol,
                   kcont::list_guarded, kcont::spin_lock) {
  // Several threads fire with hold_lock while the owner detaches and frees
  // the subscribers; TSan and ASan watch for races and freed memory.
  using S = source<std::mutex>;
  using F = bits_filter<std::mutex>;
  kcont::immediate_target<> t;
  S s;
  constexpr int N = 32;
  std::atomic<long> runs{0};
  using count_kc = kcont::kc<void (*)(kn_t*, std::atomic<long>*&, knote_cause),
                             std::atomic<long>*, bsd_level>;
  struct sub {
    count_kc k;
    kcont::knote<F, bsd_level, Pol> kn;
    sub(S* s, std::atomic<long>* r, std::uintptr_t id)
        : k([](kn_t* kn, std::atomic<long>*& c, knote_cause) {
              c->fetch_add(1);
              // Under the list lock: list_guarded's guard; spin_lock's
              // field lock taken inside it.
              (void)kn->snapshot();
            },
            r, bsd_level::immediate),
          kn(F{s}, k, id) {
      kn.sfflags = 1;
    }
  };
  fire_while_detaching<sub>(s, runs, N,
                            [&] { (void)s.list.fire(t, 1, t.lowest, kcont::hold_lock); },
                            [](int i, kcont::knote<F, bsd_level, Pol>& kn) {
                              if (i % 2 == 0) kn.disable();  // a state change from another thread
                              kn.detach();
                            });
}

TEST_CASE("klist.hold_lock_continuation_that_touches_its_list_is_caught" *
          doctest::skip(!kcont::contract_checks)) {
  // The promise hold_lock makes: no continuation inserts, erases or fires on
  // the list (it would take the held lock again: a deadlock). Debug builds
  // abort, naming it, instead of hanging.
  CHECK(kcont_test::dies_with(
      [] {
        static source<std::mutex> s;
        static kcont::kc k{[](kn_t* kn, int&, knote_cause) { (void)kn->detach(); }, 0,
                           bsd_level::immediate};
        static kcont::knote<bits_filter<std::mutex>> a{bits_filter<std::mutex>{&s}, k, 1};
        a.sfflags = 1;
        (void)a.attach();
        kcont::immediate_target<> t;
        (void)s.list.fire(t, 1, t.lowest, kcont::hold_lock);
      },
      "its own hold_lock fan-out"));
  CHECK(kcont_test::dies_with(
      [] {
        static source<kcont::spin_lock> s;
        static kcont::kc k{[](kn_t*, int&, knote_cause) {
                             kcont::immediate_target<> t;
                             (void)s.list.fire(t, 2, t.lowest);
                           },
                           0, bsd_level::immediate};
        static kcont::knote<bits_filter<kcont::spin_lock>> a{
            bits_filter<kcont::spin_lock>{&s}, k, 1};
        a.sfflags = 1;
        (void)a.attach();
        kcont::immediate_target<> t;
        (void)s.list.fire(t, 1, t.lowest, kcont::hold_lock);
      },
      "its own hold_lock fan-out"));
}
