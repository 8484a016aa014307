// knote: activation (rule 6), detach while in flight (rule 8), bindings,
// and the filter concept.
#include <kcont/knote.hpp>
#include <kcont/knote_closure.hpp>

#include <doctest/doctest.h>

#include <kcont/thread_dispatcher.hpp>

#include <kcont/dispatcher.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/klist.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kcont::run_result;
using kn_t = kcont::knote_base<long>;

// Fires on a non-zero hint; counts attach/detach.
struct count_filter {
  int* attached = nullptr;
  int attach(kn_t&) {
    if (attached) ++*attached;
    return 0;
  }
  void detach(kn_t&) {
    if (attached) --*attached;
  }
  bool event(kn_t& kn, long hint) {
    kn.data += hint;
    return hint != 0;
  }
};

struct failing_filter {
  int attach(kn_t&) { return 22; }
  void detach(kn_t&) {}
  bool event(kn_t&, long) { return true; }
};

struct log_entry {
  kn_t* kn;
  knote_cause cause;
  bool operator==(const log_entry&) const = default;
};
struct log_fn {
  void operator()(kn_t* kn, std::vector<log_entry>*& log, knote_cause c) const {
    log->push_back({kn, c});
  }
};

// Filters for the concept checks.
struct no_event_filter {
  int attach(kn_t&) { return 0; }
  void detach(kn_t&) {}
};
struct no_attach_filter {
  void detach(kn_t&) {}
  bool event(kn_t&, long) { return true; }
};
struct generic_filter {  // written for any knote type
  template <class K>
  int attach(K&) { return 0; }
  template <class K>
  void detach(K&) {}
  template <class K>
  bool event(K&, long) { return true; }
};
struct touch_filter : generic_filter {
  template <class K>
  void touch(K&, kcont::knote_change&, kcont::touch_op) {}
};
struct string_hint_filter {
  using hint_type = int;
  int attach(kcont::knote_base<int>&) { return 0; }
  void detach(kcont::knote_base<int>&) {}
  bool event(kcont::knote_base<int>&, int) { return true; }
};

}  // namespace

// Compile-time conformance: positive and negative filter types.
static_assert(kcont::filter_for<count_filter, kn_t>);
static_assert(kcont::filter_for<generic_filter, kn_t>);
static_assert(kcont::filter_for<generic_filter, kcont::knote_base<int, bsd_level>>);
static_assert(kcont::filter_for<string_hint_filter, kcont::knote_base<int>>);
static_assert(!kcont::filter_for<string_hint_filter, kn_t>);
static_assert(!kcont::filter_for<no_event_filter, kn_t>);
static_assert(!kcont::filter_for<no_attach_filter, kn_t>);
static_assert(!kcont::filter_for<int, kn_t>);
static_assert(!kcont::detail::filter_has_touch<generic_filter, kn_t>);
static_assert(kcont::detail::filter_has_touch<touch_filter, kn_t>);
static_assert(std::is_same_v<kcont::detail::filter_hint_t<count_filter>, long>);
static_assert(std::is_same_v<kcont::detail::filter_hint_t<string_hint_filter>, int>);
static_assert(!std::is_copy_constructible_v<kcont::knote<count_filter>>);
static_assert(!std::is_move_constructible_v<kcont::knote<count_filter>>);
static_assert(kcont::deferral_target<kcont::immediate_target<>>);
// The threading policy keeps the type filters and klists see.
static_assert(std::is_base_of_v<kn_t, kcont::knote<count_filter, bsd_level, kcont::no_lock>>);
static_assert(kcont::knote<count_filter, bsd_level, kcont::no_lock>::single_thread);
static_assert(!kcont::knote<count_filter>::single_thread);

TEST_CASE_TEMPLATE("knote.rule6_activation_runs_the_continuation_with_the_knote_as_obj", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  std::vector<log_entry> log;
  kcont::kc k{log_fn{}, &log, bsd_level::immediate};
  kcont::knote<count_filter, bsd_level, Pol> kn{count_filter{}, k, 7};
  CHECK(kn.ident == 7);
  CHECK(kn.single_threaded() == std::is_same_v<Pol, kcont::no_lock>);
  REQUIRE(kn.attach() == 0);
  CHECK(kn.is_attached());
  CHECK(kn.activate(d, bsd_level::softserial) == run_result::ran);
  CHECK(kn.is_active());
  CHECK(log == std::vector<log_entry>{{&kn, knote_cause::event}});
  kn.detach();
  CHECK(kn.is_detached());
}

TEST_CASE_TEMPLATE("knote.rule6_disabled_activation_marks_active_and_enable_runs_it", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  std::vector<log_entry> log;
  kcont::kc k{log_fn{}, &log, bsd_level::immediate};
  kcont::knote<count_filter, bsd_level, Pol> kn{count_filter{}, k};
  REQUIRE(kn.attach() == 0);
  kn.disable();
  CHECK(kn.activate(d, bsd_level::process) == run_result::refused);
  CHECK(kn.is_active());
  CHECK(log.empty());
  CHECK(kn.enable(d, bsd_level::process) == run_result::ran);
  CHECK(log == std::vector<log_entry>{{&kn, knote_cause::enable}});
  // Enabling an enabled knote, or an inactive one, runs nothing.
  CHECK(kn.enable(d, bsd_level::process) == run_result::refused);
  kn.clear_active();
  kn.disable();
  CHECK(kn.enable(d, bsd_level::process) == run_result::refused);
  CHECK(log.size() == 1);
  kn.detach();
}

TEST_CASE_TEMPLATE("knote.continuation_runs_at_its_own_level", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  std::vector<log_entry> log;
  kcont::kc k{log_fn{}, &log, bsd_level::softnet};
  kcont::knote<count_filter, bsd_level, Pol> kn{count_filter{}, k};
  REQUIRE(kn.attach() == 0);
  CHECK(kn.activate(d, bsd_level::softserial) == run_result::deferred);
  // A second activation before the level drains coalesces with the first.
  CHECK(kn.activate(d, bsd_level::softserial) == run_result::refused);
  CHECK(log.empty());
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK(log == std::vector<log_entry>{{&kn, knote_cause::event}});
  CHECK(kn.activate(d, bsd_level::softnet) == run_result::ran);
  CHECK(log.size() == 2);
  kn.detach(d);
}

TEST_CASE_TEMPLATE("knote.attach_error_leaves_it_unattached", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  std::vector<log_entry> log;
  kcont::kc k{log_fn{}, &log, bsd_level::immediate};
  kcont::knote<failing_filter, bsd_level, Pol> kn{failing_filter{}, k};
  CHECK(kn.attach() == 22);
  CHECK(!kn.is_attached());
}

TEST_CASE_TEMPLATE("knote.rule8_detach_cancels_a_deferred_continuation", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  std::vector<log_entry> log;
  int attached = 0;
  {
    auto k = std::make_unique<kcont::kc<log_fn, std::vector<log_entry>*, bsd_level>>(
        log_fn{}, &log, bsd_level::process);
    auto kn = std::make_unique<kcont::knote<count_filter, bsd_level, Pol>>(count_filter{&attached}, *k);
    REQUIRE(kn->attach() == 0);
    CHECK(attached == 1);
    CHECK(kn->activate(d, bsd_level::softnet) == run_result::deferred);
    CHECK(d.has_work(bsd_level::process));
    CHECK(kn->detach(d));
    CHECK(attached == 0);
    CHECK(!d.has_work(bsd_level::process));
    CHECK(!kn->detach(d));  // a second detach is a no-op
    // Activation after detach runs nothing.
    CHECK(kn->activate(d, bsd_level::process) == run_result::refused);
    kn.reset();
    k.reset();
  }
  CHECK(d.drain_all() == 0);  // nothing runs on freed memory (ASan checks)
  CHECK(log.empty());
}

namespace {
// A subscriber that detaches and destroys itself from its own continuation.
template <class Pol>
struct self_destroying {
  struct fn {
    void operator()(kn_t* kn, self_destroying*& self, knote_cause) const;
  };
  int* ran;
  kcont::kc<fn, self_destroying*, kcont::static_level<bsd_level::immediate>, kn_t*,
            knote_cause>
      k{fn{}, this, kcont::at<bsd_level::immediate>};
  kcont::knote<count_filter, bsd_level, Pol> kn{count_filter{}, k};
};
template <class Pol>
void self_destroying<Pol>::fn::operator()(kn_t* kn, self_destroying*& self,
                                          knote_cause) const {
  ++*self->ran;
  CHECK(kn->detach());
  delete self;  // the knote and its continuation are gone now
}
}  // namespace

TEST_CASE_TEMPLATE("knote.rule8_a_continuation_may_detach_and_destroy_its_own_knote", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  int ran = 0;
  auto* s = new self_destroying<Pol>{&ran};
  REQUIRE(s->kn.attach() == 0);
  CHECK(s->kn.activate(d, bsd_level::process) == run_result::ran);
  CHECK(ran == 1);
}

namespace {
struct handler {
  std::vector<knote_cause> causes;
  void on_event(kn_t* kn, knote_cause c) {
    causes.push_back(c);
    CHECK(kn->ident == 5);
  }
};
}  // namespace

TEST_CASE_TEMPLATE("knote.method_and_closure_bindings", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  handler h;
  kcont::knote_method<&handler::on_event, count_filter,
                      kcont::static_level<bsd_level::immediate>, Pol>
      m{count_filter{}, &h, kcont::at<bsd_level::immediate>, 5};
  REQUIRE(m.attach() == 0);
  CHECK(m.activate(d, bsd_level::softserial) == run_result::ran);
  m.disable();
  CHECK(m.activate(d, bsd_level::softserial) == run_result::refused);
  CHECK(m.enable(d, bsd_level::softserial) == run_result::ran);
  CHECK(h.causes == std::vector<knote_cause>{knote_cause::event, knote_cause::enable});
  m.detach();

  kcont::knote_closure c{count_filter{},
                         [](kn_t* kn, int& n, knote_cause) { n += static_cast<int>(kn->ident); },
                         0, bsd_level::softclock, 3};
  REQUIRE(c.attach() == 0);
  CHECK(c.activate(d, bsd_level::softnet) == run_result::deferred);
  CHECK(c.env() == 0);
  d.drain_all();
  CHECK(c.env() == 3);
  c.detach(d);
}

namespace {
// The common handler shape that needs neither the knote nor the cause.
struct bell {
  int rings = 0;
  void ring() { ++rings; }
  void ring_quietly() noexcept { ++rings; }
};
}  // namespace

TEST_CASE_TEMPLATE("knote.method_binds_a_member_function_without_arguments", Pol,
                   kcont::list_guarded, kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  bell b;
  kcont::knote_method<&bell::ring, count_filter, kcont::static_level<bsd_level::immediate>, Pol>
      m{count_filter{}, &b, kcont::at<bsd_level::immediate>, 1};
  kcont::knote_method<&bell::ring_quietly, count_filter, bsd_level, Pol> q{
      count_filter{}, &b, bsd_level::softnet, 2};
  REQUIRE(m.attach() == 0);
  REQUIRE(q.attach() == 0);
  CHECK(m.activate(d, bsd_level::softserial) == run_result::ran);
  CHECK(q.activate(d, bsd_level::softserial) == run_result::deferred);
  CHECK(b.rings == 1);
  CHECK(d.drain_all() == 1);
  CHECK(b.rings == 2);
  m.detach();
  q.detach(d);
  // As a plain continuation: Obj and Status are the caller's to name.
  kcont::kc<kcont::method_fn<&bell::ring>, bell*, bsd_level, int*, int> k{
      kcont::method<&bell::ring>, &b, bsd_level::process};
  CHECK(kcont::run(d, k, nullptr, 0, bsd_level::process) == run_result::ran);
  CHECK(b.rings == 3);
}

namespace {
// A level set of the application's own, for knote_method's default LevelSpec.
enum class app_level : std::uint8_t { background, interactive, immediate };

struct app_filter {
  int attach(kcont::knote_base<long, app_level>&) { return 0; }
  void detach(kcont::knote_base<long, app_level>&) {}
  bool event(kcont::knote_base<long, app_level>&, long hint) { return hint != 0; }
};

// knote_method members that name their level once.
struct relay {
  std::vector<knote_cause> causes;
  int app_runs = 0;
  void on(kn_t*, knote_cause c) { causes.push_back(c); }
  void on_app(kcont::knote_base<long, app_level>*, knote_cause) { ++app_runs; }

  // In the type: a compile-time level; the constructor takes none.
  kcont::knote_method<&relay::on, count_filter, kcont::static_level<bsd_level::softnet>>
      fixed{count_filter{}, this, 7};
  // LevelSpec left out: a level chosen at run time, from the constructor, of
  // the handler's level set (bsd_level here, app_level below).
  kcont::knote_method<&relay::on, count_filter> chosen{count_filter{}, this,
                                                       bsd_level::softclock, 8};
  kcont::knote_method<&relay::on_app, app_filter> app{app_filter{}, this,
                                                      app_level::interactive};
  // The spelling that names it twice still compiles.
  kcont::knote_method<&relay::on, count_filter, kcont::static_level<bsd_level::softnet>>
      twice{count_filter{}, this, kcont::at<bsd_level::softnet>};
};
}  // namespace

static_assert(std::is_same_v<kcont::knote_method<&relay::on, count_filter>,
                             kcont::knote_method<&relay::on, count_filter, bsd_level>>);
static_assert(std::is_same_v<kcont::knote_method<&relay::on_app, app_filter>,
                             kcont::knote_method<&relay::on_app, app_filter, app_level>>);
static_assert(std::is_same_v<kcont::knote_method<&bell::ring, count_filter>,
                             kcont::knote_method<&bell::ring, count_filter, bsd_level>>);
// A static level in the type keeps the continuation's level in its type.
static_assert(sizeof(decltype(relay::fixed)) == sizeof(decltype(relay::twice)));

TEST_CASE("knote.method_names_its_level_once") {
  kcont::manual_dispatcher<> d;
  kcont::manual_dispatcher<app_level> da;
  relay r;
  CHECK(r.fixed.continuation().level() == bsd_level::softnet);
  CHECK(r.fixed.ident == 7);
  CHECK(r.chosen.continuation().level() == bsd_level::softclock);
  CHECK(r.chosen.ident == 8);
  CHECK(r.app.continuation().level() == app_level::interactive);
  REQUIRE(r.fixed.attach() == 0);
  REQUIRE(r.chosen.attach() == 0);
  REQUIRE(r.app.attach() == 0);
  CHECK(r.fixed.activate(d, bsd_level::softserial) == run_result::deferred);
  CHECK(r.chosen.activate(d, bsd_level::softnet) == run_result::deferred);
  CHECK(r.fixed.activate(d, bsd_level::process) == run_result::refused);  // queued
  CHECK(r.app.activate(da, app_level::background) == run_result::ran);
  CHECK(r.causes.empty());
  CHECK(d.drain_all() == 2);
  CHECK(r.causes == std::vector<knote_cause>{knote_cause::event, knote_cause::event});
  CHECK(r.app_runs == 1);
  r.fixed.detach(d);
  r.chosen.detach(d);
  r.app.detach(da);
}

TEST_CASE("knote.rule8_detach_waits_for_an_activation_in_flight_on_another_thread") {
  kcont::immediate_target<> t;
  std::atomic<int> phase{0};
  struct env_t {
    std::atomic<int>* phase;
  };
  kcont::kc k{[](kn_t*, env_t& e, knote_cause) {
                e.phase->store(1);
                while (e.phase->load() == 1) std::this_thread::yield();  // wait for detach to start
                // Not a wait for a state: the time a detach that does not
                // wait would take to return (and fail the check below).
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                e.phase->store(3);
              },
              env_t{&phase}, bsd_level::immediate};
  kcont::knote<count_filter> kn{count_filter{}, k};
  REQUIRE(kn.attach() == 0);
  std::thread activator([&] { (void)kn.activate(t, t.lowest); });
  while (phase.load() != 1) std::this_thread::yield();
  phase.store(2);
  kn.detach();  // must wait until the continuation has returned
  CHECK(phase.load() == 3);
  activator.join();
}

TEST_CASE("knote.rule8_detach_waits_for_a_deferred_run_on_a_runner_thread") {
  // The continuation was deferred to softnet and a thread_dispatcher runner
  // has popped it and is running it when the owner detaches: detach(d) must
  // return only after that run has returned (then the knote may be freed).
  using plan = kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>;
  kcont::thread_dispatcher<bsd_level, plan> d;
  std::atomic<int> phase{0};
  struct env_t {
    std::atomic<int>* phase;
  };
  kcont::kc k{[](kn_t*, env_t& e, knote_cause) {
                e.phase->store(1);
                while (e.phase->load() == 1) std::this_thread::yield();
                // As above: room for a detach that does not wait to return.
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                e.phase->store(3);
              },
              env_t{&phase}, bsd_level::softnet};
  kcont::knote<count_filter> kn{count_filter{}, k};
  REQUIRE(kn.attach() == 0);
  CHECK(kn.activate(d, bsd_level::softserial) == kcont::run_result::deferred);
  while (phase.load() != 1) std::this_thread::yield();  // the runner is in it
  phase.store(2);
  kn.detach(d);
  CHECK(phase.load() == 3);
  d.stop();
}

TEST_CASE("knote.concurrent_activate_enable_disable_never_loses_the_enabled_run") {
  // Whatever the interleaving, an active knote that ends enabled has run its
  // continuation after the last activation (rule 6 both halves).
  kcont::immediate_target<> t;
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> runs{0};
    kcont::kc k{[](kn_t*, std::atomic<int>*& r, knote_cause) { r->fetch_add(1); }, &runs,
                bsd_level::immediate};
    kcont::knote<count_filter> kn{count_filter{}, k};
    REQUIRE(kn.attach() == 0);
    kn.disable();
    std::thread a([&] { (void)kn.activate(t, t.lowest); });
    std::thread b([&] { (void)kn.enable(t, t.lowest); });
    a.join();
    b.join();
    CHECK(runs.load() >= 1);
    kn.detach();
  }
}

TEST_CASE("knote.filter_missing_event_is_rejected_with_a_readable_message") {
  // See tests/compile_fail/filter_missing_event.cpp for the message itself.
  CHECK(!kcont::filter_for<no_event_filter, kn_t>);
}

TEST_CASE("knote.destroying_an_attached_knote_is_caught" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        kcont::kc k{[](kn_t*, int&, knote_cause) {}, 0, bsd_level::immediate};
        kcont::knote<count_filter> kn{count_filter{}, k};
        (void)kn.attach();
      },
      "destroyed while attached"));
}

namespace {
// The three binding flavours, each a knote whose continuation counts runs
// and causes at `immediate` (Fuchsia's harness idea: one body, every flavour).
struct counter_obj {
  int events = 0, enables = 0;
  void on(kn_t*, knote_cause c) { ++(c == knote_cause::event ? events : enables); }
};
struct lambda_flavour {
  counter_obj obj;
  kcont::kc<void (*)(kn_t*, counter_obj*&, knote_cause), counter_obj*, bsd_level> k{
      [](kn_t*, counter_obj*& o, knote_cause c) { o->on(nullptr, c); }, &obj,
      bsd_level::immediate};
  kcont::knote<count_filter> kn{count_filter{}, k};
};
struct method_flavour {
  counter_obj obj;
  kcont::kc<kcont::method_fn<&counter_obj::on>, counter_obj*, bsd_level> k{
      kcont::method<&counter_obj::on>, &obj, bsd_level::immediate};
  kcont::knote<count_filter> kn{count_filter{}, k};
};
struct closure_flavour {
  counter_obj obj;
  kcont::knote_method<&counter_obj::on, count_filter, kcont::static_level<bsd_level::immediate>>
      kn{count_filter{}, &obj, kcont::at<bsd_level::immediate>};
};
}  // namespace

// Matrix: lambda kc + knote, method kc + knote, knote_method (embedded kc).
TEST_CASE_TEMPLATE("knote.rule6_every_binding_flavour", T, lambda_flavour, method_flavour,
                   closure_flavour) {
  kcont::manual_dispatcher<> d;
  T t;
  REQUIRE(t.kn.attach() == 0);
  CHECK(t.kn.activate(d, bsd_level::softserial) == run_result::ran);
  t.kn.disable();
  CHECK(t.kn.activate(d, bsd_level::softserial) == run_result::refused);
  CHECK(t.kn.enable(d, bsd_level::softserial) == run_result::ran);
  CHECK(t.obj.events == 1);
  CHECK(t.obj.enables == 1);
  CHECK(t.kn.detach());
  CHECK(t.kn.activate(d, bsd_level::softserial) == run_result::refused);
  CHECK(t.obj.events == 1);
}

TEST_CASE("knote.closure_accepts_a_generic_lambda") {
  kcont::manual_dispatcher<> d;
  kcont::knote_closure c{count_filter{}, [](auto* kn, int& n, auto cause) {
                           n += static_cast<int>(kn->ident) +
                                (cause == knote_cause::enable ? 100 : 0);
                         },
                         0, kcont::at<bsd_level::immediate>, 2};
  REQUIRE(c.attach() == 0);
  (void)c.activate(d, bsd_level::process);
  CHECK(c.env() == 2);
  c.detach();
}

TEST_CASE_TEMPLATE("knote.activation_never_allocates", Pol, kcont::list_guarded,
                   kcont::spin_lock, kcont::no_lock) {
  kcont::manual_dispatcher<> d;
  long n = 0;
  kcont::kc k1{[](kn_t*, long& c, knote_cause) noexcept { ++c; }, 0L, bsd_level::immediate};
  kcont::kc k2{[](kn_t*, long*& c, knote_cause) noexcept { ++*c; }, &n, bsd_level::softnet};
  kcont::knote<count_filter, bsd_level, Pol> a{count_filter{}, k1};
  kcont::knote<count_filter, bsd_level, Pol> b{count_filter{}, k2};
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 1000; ++i) {
    (void)a.activate(d, bsd_level::softserial);
    (void)b.activate(d, bsd_level::softserial);
    (void)b.activate(d, bsd_level::softserial);  // coalesced
    b.disable();
    (void)b.enable(d, bsd_level::softserial);  // active: deferred again? already queued
    d.drain_all();
  }
  CHECK(scope.count() == 0);
  CHECK(k1.env() == 1000);
  CHECK(n == 1000);
  a.detach(d);
  b.detach(d);
}

namespace {
// A knote type derived from knote_base directly, with its own ops table and
// no fused fire function of its own: a klist<no_lock> fan-out uses the
// default (knote_base::fire_erased), through the ops table and the
// type-erased continuation.
struct bare_knote : kn_t {
  using list_type = kcont::klist<long, bsd_level, kcont::no_lock>;
  bare_knote(list_type& l, continuation_type& k) : kn_t(ops, k, 7), list(&l) {}
  static int do_attach(kn_t& b) {
    static_cast<bare_knote&>(b).list->insert(b);
    return 0;
  }
  static void do_detach(kn_t& b) { (void)static_cast<bare_knote&>(b).list->erase(b); }
  static bool do_event(kn_t& b, const long& h) {
    b.data = h;
    return h > 0;
  }
  static constexpr ops_table ops{&do_attach, &do_detach, &do_event, nullptr};
  list_type* list;
};
}  // namespace

TEST_CASE("knote.a_knote_without_its_own_fused_fire_fans_out_through_the_default") {
  kcont::manual_dispatcher<> d;
  bare_knote::list_type list;
  std::vector<log_entry> log;
  kcont::kc k{log_fn{}, &log, bsd_level::softnet};
  bare_knote kn{list, k};
  REQUIRE(kn.attach() == 0);
  CHECK(list.fire(d, 0, bsd_level::process) == 0);  // filter false
  CHECK(list.fire(d, 1, bsd_level::process) == 1);  // runs now
  CHECK(log == std::vector<log_entry>{{&kn, knote_cause::event}});
  CHECK(list.fire(d, 1, bsd_level::softserial) == 1);  // deferred
  CHECK(list.fire(d, 1, bsd_level::softserial) == 1);  // coalesced
  CHECK(log.size() == 1);
  CHECK(d.drain_all() == 1);
  CHECK(log.size() == 2);
  kn.disable();
  CHECK(list.fire(d, 1, bsd_level::process) == 0);  // rule 6: marked, not run
  CHECK(kn.enable(d, bsd_level::process) == run_result::ran);
  CHECK(log.back() == log_entry{&kn, knote_cause::enable});
  CHECK(kn.detach(d));
  CHECK(list.empty());
}
