// kc: storage, deduction, binding flavours, the allocating maker.
#include <kcont/kc.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/kc_array.hpp>
#include <kcont/run.hpp>

#include <array>
#include <cstddef>
#include <deque>
#include <optional>
#include <memory_resource>
#include <stdexcept>
#include <system_error>
#include <type_traits>

#include "support.hpp"

namespace {

using kcont::bsd_level;

struct request {
  int id = 0;
};

struct empty_fn {
  void operator()(request*, kcont::no_env&, int) const noexcept {}
};

using base_t = kcont::kc_base<request*, int, bsd_level>;

// A stateless function and an empty environment cost no bytes.
static_assert(sizeof(kcont::kc<empty_fn, kcont::no_env, bsd_level>) ==
              sizeof(base_t));
// An environment costs its size (here one pointer) and nothing more.
struct env_fn {
  void operator()(request*, int*, int) const noexcept {}
};
static_assert(sizeof(kcont::kc<env_fn, int*, bsd_level>) ==
              sizeof(base_t) + sizeof(int*));

// Immovable: queues link continuations in place.
static_assert(!std::is_copy_constructible_v<base_t>);
static_assert(!std::is_move_constructible_v<
              kcont::kc<empty_fn, kcont::no_env, bsd_level>>);
static_assert(!std::is_move_assignable_v<
              kcont::kc<empty_fn, kcont::no_env, bsd_level>>);
static_assert(std::is_base_of_v<base_t,
                                kcont::kc<empty_fn, kcont::no_env, bsd_level>>);

// The continuation_function concept, positive and negative.
static_assert(kcont::continuation_function<empty_fn, request*, kcont::no_env, int>);
static_assert(!kcont::continuation_function<void (*)(request*, int), request*,
                                            kcont::no_env, int>,
              "two parameters is the wrong signature");
static_assert(!kcont::continuation_function<void (*)(int*, kcont::no_env&, int),
                                            request*, kcont::no_env, int>,
              "the wrong obj type is rejected");

// Deduction from the call operator and from function pointers.
static_assert(std::is_same_v<kcont::deduced_obj_t<empty_fn>, request*>);
static_assert(std::is_same_v<kcont::deduced_status_t<empty_fn>, int>);
static_assert(std::is_same_v<
              kcont::deduced_status_t<void (*)(request*, int, std::error_code)>,
              std::error_code>);

struct connection {
  int reads = 0;
  int last_status = 0;
  void on_read(request* r, int status) {
    reads += r->id;
    last_status = status;
  }
};

}  // namespace

TEST_CASE("kc.ctad_deduces_obj_status_and_level_set") {
  int sum = 0;
  kcont::kc k{[](request* r, int* s, int st) { *s += r->id + st; }, &sum,
              bsd_level::softnet};
  static_assert(std::is_same_v<decltype(k)::base_type, base_t>);
  static_assert(!decltype(k)::has_static_level);
  CHECK(k.level() == bsd_level::softnet);
  CHECK(*k.env() == 0);
  CHECK_FALSE(k.is_queued());
  CHECK_FALSE(k.is_deferred());
  CHECK_FALSE(k.is_autofree());
}

TEST_CASE("kc.static_level_in_the_type") {
  kcont::kc k{empty_fn{}, kcont::no_env{}, kcont::at<bsd_level::immediate>};
  static_assert(decltype(k)::has_static_level);
  CHECK(k.level() == bsd_level::immediate);
}

TEST_CASE("kc.generic_lambda_names_its_types") {
  kcont::manual_dispatcher<> d;
  int sum = 0;
  auto fn = [](auto r, int* s, auto st) { *s += r->id * st; };
  kcont::kc<decltype(fn), int*, bsd_level, request*, int> k{fn, &sum,
                                                           bsd_level::process};
  request r{3};
  CHECK(kcont::run(d, k, &r, 5, bsd_level::process) == kcont::run_result::ran);
  CHECK(sum == 15);
}

TEST_CASE("kc.method_binding") {
  kcont::manual_dispatcher<> d;
  connection c;
  kcont::kc k{kcont::method<&connection::on_read>, &c, bsd_level::softnet};
  static_assert(sizeof(k) == sizeof(base_t) + sizeof(connection*));
  request r{7};
  CHECK(kcont::run(d, k, &r, -1, bsd_level::softserial) ==
        kcont::run_result::deferred);
  CHECK(c.reads == 0);
  d.drain(bsd_level::softnet);
  CHECK(c.reads == 7);
  CHECK(c.last_status == -1);
}

namespace {
struct quiet_connection {
  int reads = 0;
  void on_read(request* r, int) noexcept { reads += r->id; }
};
}  // namespace

// method<&C::f> with a noexcept f: once an ambiguous partial specialisation
// (the value pattern for R (C::*)(A, S) matched it as well).
TEST_CASE("kc.method_binding_of_a_noexcept_member") {
  kcont::manual_dispatcher<> d;
  quiet_connection c;
  kcont::kc k{kcont::method<&quiet_connection::on_read>, &c, bsd_level::process};
  request r{4};
  CHECK(kcont::run(d, k, &r, 0, bsd_level::process) == kcont::run_result::ran);
  CHECK(c.reads == 4);
}

TEST_CASE("kc.function_pointer_binding") {
  kcont::manual_dispatcher<> d;
  static int seen = 0;
  void (*fp)(request*, kcont::no_env&, int) = [](request* r, kcont::no_env&,
                                                 int st) { seen = r->id + st; };
  kcont::kc k{fp, kcont::no_env{}, bsd_level::process};
  request r{1};
  CHECK(kcont::run(d, k, &r, 1, bsd_level::process) == kcont::run_result::ran);
  CHECK(seen == 2);
}

TEST_CASE("kc.status_may_be_an_error_code") {
  kcont::manual_dispatcher<> d;
  std::error_code got;
  kcont::kc k{[](request*, std::error_code* out, std::error_code ec) { *out = ec; },
              &got, bsd_level::softclock};
  const auto ec = std::make_error_code(std::errc::timed_out);
  CHECK(kcont::run(d, k, nullptr, ec, bsd_level::softnet) ==
        kcont::run_result::deferred);
  d.drain(bsd_level::softclock);
  CHECK(got == ec);
}

TEST_CASE("kc.make_kc_frees_right_after_the_call") {
  kcont::manual_dispatcher<> d;
  int sum = 0;
  kcont_test::allocation_scope scope;
  auto& k = kcont::make_kc([](request* r, int* s, int st) { *s += r->id + st; },
                           &sum, bsd_level::process);
  CHECK(k.is_autofree());
  CHECK(scope.count() == 1);
  request r{2};
  CHECK(kcont::run(d, k, &r, 3, bsd_level::process) == kcont::run_result::ran);
  CHECK(sum == 5);
  // Freed: under ASan, any later touch of k would be reported.
}

TEST_CASE("kc.allocate_kc_with_pmr_deferred_then_freed") {
  kcont::manual_dispatcher<> d;
  struct counting : std::pmr::memory_resource {
    int live = 0;
    void* do_allocate(std::size_t n, std::size_t a) override {
      ++live;
      return std::pmr::new_delete_resource()->allocate(n, a);
    }
    void do_deallocate(void* p, std::size_t n, std::size_t a) override {
      --live;
      std::pmr::new_delete_resource()->deallocate(p, n, a);
    }
    bool do_is_equal(const memory_resource& o) const noexcept override {
      return this == &o;
    }
  } res;
  int sum = 0;
  std::pmr::polymorphic_allocator<std::byte> alloc(&res);
  auto& k = kcont::allocate_kc(
      alloc, [](request* r, int* s, int st) { *s += r->id * st; }, &sum,
      bsd_level::softclock);
  CHECK(res.live == 1);
  request r{4};
  CHECK(kcont::run(d, k, &r, 10, bsd_level::softnet) == kcont::run_result::deferred);
  CHECK(res.live == 1);
  CHECK(d.drain(bsd_level::softclock) == 1);
  CHECK(sum == 40);
  CHECK(res.live == 0);
}

#if defined(__cpp_exceptions)  // these need exceptions (-fno-exceptions skips them)
namespace {
using kcont_test::counting_resource;
}  // namespace

TEST_CASE("kc.allocated_freed_even_when_the_function_throws") {
  kcont::manual_dispatcher<> d;
  int dummy = 0;
  counting_resource res;
  auto& k = kcont::allocate_kc(
      std::pmr::polymorphic_allocator<std::byte>(&res),
      [](request*, int*, int) { throw std::runtime_error("boom"); }, &dummy,
      bsd_level::process);
  CHECK_THROWS_AS(kcont::run(d, k, nullptr, 0, bsd_level::process),
                  std::runtime_error);
  CHECK(res.live == 0);
}

// An Env whose move throws while the continuation is built in its storage:
// the storage goes back to the allocator before the exception leaves, for
// allocate_kc and try_allocate_kc alike (neither returns anything then).
TEST_CASE("kc.allocated_storage_given_back_when_building_it_throws") {
  counting_resource res;
  struct throws_on_move {
    throws_on_move() = default;
    throws_on_move(throws_on_move&&) { throw std::runtime_error("env move"); }
  };
  auto fn = [](request*, throws_on_move&, int) {};
  std::pmr::polymorphic_allocator<std::byte> alloc(&res);
  CHECK_THROWS_AS((void)kcont::allocate_kc(alloc, fn, throws_on_move{}, bsd_level::process),
                  std::runtime_error);
  CHECK(res.live == 0);
  CHECK_THROWS_AS((void)kcont::try_allocate_kc(alloc, fn, throws_on_move{}, bsd_level::process),
                  std::runtime_error);
  CHECK(res.live == 0);
}

TEST_CASE("kc.allocation_failure_reported_nothing_created") {
  struct failing : std::pmr::memory_resource {
    void* do_allocate(std::size_t, std::size_t) override {
      throw std::bad_alloc();
    }
    void do_deallocate(void*, std::size_t, std::size_t) override {}
    bool do_is_equal(const memory_resource& o) const noexcept override {
      return this == &o;
    }
  } res;
  int sum = 0;
  CHECK_THROWS_AS((void)kcont::allocate_kc(
                      std::pmr::polymorphic_allocator<std::byte>(&res),
                      [](request*, int* s, int) { ++*s; }, &sum,
                      bsd_level::process),
                  std::bad_alloc);
  CHECK(sum == 0);
}
#endif  // __cpp_exceptions

namespace {
// An allocator as code built without exceptions writes one: allocate()
// returns null when it is out of memory (here: always).
template <class T>
struct exhausted_allocator {
  using value_type = T;
  int* calls;
  explicit exhausted_allocator(int* c) noexcept : calls(c) {}
  template <class U>
  exhausted_allocator(const exhausted_allocator<U>& o) noexcept : calls(o.calls) {}
  T* allocate(std::size_t) noexcept {
    ++*calls;
    return nullptr;
  }
  void deallocate(T*, std::size_t) noexcept { *calls += 100; }  // never called
  template <class U>
  friend bool operator==(const exhausted_allocator&, const exhausted_allocator<U>&) {
    return true;
  }
};
}  // namespace

TEST_CASE("kc.try_allocate_kc_reports_allocation_failure_as_null") {
  int calls = 0;
  int sum = 0;
  auto* k = kcont::try_allocate_kc(exhausted_allocator<std::byte>(&calls),
                                   [](request*, int* s, int) { ++*s; }, &sum,
                                   bsd_level::process);
  CHECK(k == nullptr);
  CHECK(calls == 1);  // asked once, nothing to free
  CHECK(sum == 0);
}

TEST_CASE("kc.try_make_kc_reports_out_of_memory_as_null") {
  int sum = 0;
  const auto fn = [](request*, int* s, int) { ++*s; };
  if (kcont_test::fail_allocations(true)) {
    auto* k = kcont::try_make_kc(fn, &sum, bsd_level::process);
    kcont_test::fail_allocations(false);
    CHECK(k == nullptr);
  }
  // With memory: a continuation like make_kc's, freed after its call.
  kcont::manual_dispatcher<> d;
  auto* k = kcont::try_make_kc(fn, &sum, bsd_level::process);
  REQUIRE(k != nullptr);
  const kcont_test::allocation_scope none;
  CHECK(kcont::run(d, *k, nullptr, 0, bsd_level::process) == kcont::run_result::ran);
  CHECK(sum == 1);
  CHECK(none.count() == 0);
}

#if defined(__cpp_exceptions)
TEST_CASE("kc.try_allocate_kc_turns_bad_alloc_into_null") {
  struct failing : std::pmr::memory_resource {
    void* do_allocate(std::size_t, std::size_t) override { throw std::bad_alloc(); }
    void do_deallocate(void*, std::size_t, std::size_t) override {}
    bool do_is_equal(const memory_resource& o) const noexcept override {
      return this == &o;
    }
  } res;
  int sum = 0;
  CHECK(kcont::try_allocate_kc(std::pmr::polymorphic_allocator<std::byte>(&res),
                               [](request*, int* s, int) { ++*s; }, &sum,
                               bsd_level::process) == nullptr);
  CHECK(sum == 0);
}
#endif  // __cpp_exceptions

TEST_CASE("kc.dispose_frees_an_allocated_continuation_unrun") {
  kcont::manual_dispatcher<> d;
  int sum = 0;
  auto& k = kcont::make_kc([](request*, int* s, int) { ++*s; }, &sum,
                           bsd_level::process);
  CHECK(kcont::defer(d, k, nullptr, 1) == kcont::run_result::deferred);
  CHECK(d.cancel(k));
  kcont::dispose(k);  // freed without running (ASan would report a leak)
  CHECK(sum == 0);
  CHECK_FALSE(d.has_work(bsd_level::process));
}

TEST_CASE("kc.destroyed_while_queued_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        kcont::kcqueue<base_t>* q = new kcont::kcqueue<base_t>;
        {
          kcont::kc k{empty_fn{}, kcont::no_env{}, bsd_level::process};
          (void)q->push(k);
        }
      },
      "destroyed while queued"));
}

TEST_CASE("kc.n_of_them_in_a_deque_and_an_array_of_optionals") {
  // kc is immovable and has no default constructor: N of them are built in
  // place, in a container that never moves its elements.
  struct tally {
    int sum = 0;
    int calls = 0;
  };
  auto add = [](int obj, tally& t, int status) {
    t.sum += obj * status;
    ++t.calls;
  };
  using K = kcont::kc<decltype(add), tally, bsd_level>;
  static_assert(!std::is_move_constructible_v<K>);
  static_assert(!std::is_default_constructible_v<K>);  // hence no K[N]

  constexpr int n = 8;
  std::deque<K> grown;  // emplace_back never moves the others
  for (int i = 0; i < n; ++i) grown.emplace_back(add, tally{}, bsd_level::softnet);
  std::array<std::optional<K>, n> fixed;  // no allocation at all
  for (auto& slot : fixed) slot.emplace(add, tally{}, bsd_level::softclock);

  kcont::manual_dispatcher<> d;
  for (int i = 0; i < n; ++i) {
    CHECK(kcont::defer(d, grown[static_cast<std::size_t>(i)], i, 2) ==
          kcont::run_result::deferred);
    CHECK(kcont::defer(d, *fixed[static_cast<std::size_t>(i)], i, 3) ==
          kcont::run_result::deferred);
  }
  d.drain_all();
  for (int i = 0; i < n; ++i) {
    const auto u = static_cast<std::size_t>(i);
    CHECK(grown[u].env().calls == 1);
    CHECK(grown[u].env().sum == i * 2);
    CHECK(fixed[u]->env().calls == 1);
    CHECK(fixed[u]->env().sum == i * 3);
  }
}

TEST_CASE("kc.kc_array_builds_n_in_place_and_runs_each") {
  struct conn {
    int id = 0;
    int last_status = 0;
    int calls = 0;
  };
  auto on_read = [](int status, conn*& c, int) {
    c->last_status = status;
    ++c->calls;
  };
  using K = kcont::kc<decltype(on_read), conn*, bsd_level>;
  std::array<conn, 6> conns{};
  kcont::kc_array<K, 6> reads{[&](std::size_t i) {
    conns[i].id = static_cast<int>(i);
    return K{on_read, &conns[i], bsd_level::softnet};
  }};
  static_assert(sizeof(reads) == 6 * sizeof(K));  // no flag, no pointer
  CHECK(reads.size() == 6);
  CHECK(reads[2].env() == &conns[2]);

  kcont::manual_dispatcher<> d;
  int i = 0;
  for (K& k : reads) {
    CHECK(kcont::defer(d, k, 100 + i, 0) == kcont::run_result::deferred);
    ++i;
  }
  d.drain_all();
  for (std::size_t j = 0; j < conns.size(); ++j) {
    CHECK(conns[j].calls == 1);
    CHECK(conns[j].last_status == 100 + static_cast<int>(j));
  }
}

#if defined(__cpp_exceptions)
TEST_CASE("kc.kc_array_a_throwing_factory_destroys_what_it_built") {
  static int destroyed = 0;
  struct counted_env {
    int* alive;
    ~counted_env() { ++destroyed; }
  };
  auto fn = [](int, counted_env&, int) {};
  using K = kcont::kc<decltype(fn), counted_env, bsd_level>;
  destroyed = 0;
  int dummy = 0;
  const auto build = [&] {
    kcont::kc_array<K, 5> ks{[&](std::size_t i) {
      if (i == 3) throw std::runtime_error("no fourth");
      return K{fn, counted_env{&dummy}, bsd_level::softnet};
    }};
  };
  const int before = destroyed;  // temporaries' destructors count too
  CHECK_THROWS_AS(build(), std::runtime_error);
  // Three built, three destroyed (each counted_env temporary also counts
  // once: the env is moved into the kc, so 3 temporaries + 3 elements).
  CHECK(destroyed - before == 6);
}
#endif
