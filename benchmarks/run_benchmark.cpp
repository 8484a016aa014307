// Case A: running a continuation immediately (kcont/run.hpp), each kcont case
// next to the baseline it must match, in the same binary.
//
// Every loop iteration is one item: the status is laundered through
// kcont_bench::opaque (so the compiler cannot fold the loop into a closed form
// and the tally is stored to memory every time, the same in every case), then
// one call of the handler `record(*t, r, status)` through the mechanism under
// test; the kcont cases pass run()'s result to benchmark::DoNotOptimize.
// After the loop, item_check verifies the count and the checksum and reports
// allocations per item.
//
//   BM_ImmediateRun_Direct           the handler called directly, inlined: the floor
//   BM_ImmediateRun_FunctionPointer  through a fn(obj, env, status) pointer the
//                                    compiler cannot see through: one indirect call
//   BM_ImmediateRun_StdFunction      through std::function (lambda in its small buffer)
//   BM_ImmediateRun_KcStaticLevel    kc at kcont::at<immediate>, concrete type:
//                                    run() must compile to the direct call
//   BM_ImmediateRun_KcRuntimeLevel   kc with a runtime level, run through kc_base&
//                                    (as a queue holds it): state and level tests,
//                                    then one indirect call
//   BM_ImmediateRun_MakeKc           make_kc + run: the allocating maker, exactly
//                                    one allocation (and one free) per item
#include <kcont/kcont.hpp>

#include <benchmark/benchmark.h>

#include <functional>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont_bench::record;
using kcont_bench::request;
using kcont_bench::tally;

constexpr int status_value = 1;
constexpr std::uint64_t request_id = 7;

// The handler: a stateless lambda, what kc and std::function store. The
// function-pointer baseline calls the very same body through the lambda's
// conversion to a function pointer.
constexpr auto on_done_fn = [](request* r, tally* t, int status) noexcept {
  record(*t, r, status);
};
using handler_ptr = void (*)(request*, tally*, int) noexcept;

// The handler called directly (inlined).
inline void on_done(request* r, tally* t, int status) noexcept {
  on_done_fn(r, t, status);
}

// The status for one item, laundered: the compiler must assume it changed.
inline int fresh_status() noexcept {
  return kcont_bench::opaque(status_value);
}

void finish(benchmark::State& state, kcont_bench::item_check& check,
            const tally& t) {
  const auto n = static_cast<std::uint64_t>(state.iterations());
  check.finish(n, t, n * (request_id + status_value));
}

// Loop: one inlined call of the handler. The floor for the compile-time kc.
void BM_ImmediateRun_Direct(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont_bench::item_check check(state);
  for (auto _ : state) on_done(&req, &t, fresh_status());
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_Direct)->Apply(kcont_bench::register_case);

// Loop: one indirect call through a function pointer laundered once before
// the loop (opaque hides its value, so it cannot be devirtualized).
// The baseline for the runtime-level kc.
void BM_ImmediateRun_FunctionPointer(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  const handler_ptr fp = kcont_bench::opaque(static_cast<handler_ptr>(on_done_fn));
  kcont_bench::item_check check(state);
  for (auto _ : state) fp(&req, &t, fresh_status());
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_FunctionPointer)->Apply(kcont_bench::register_case);

// Loop: std::function::operator() (an empty check plus one indirect call to
// the lambda's invoker). The function object's address is laundered.
void BM_ImmediateRun_StdFunction(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  std::function<void(request*, tally*, int)> f = on_done_fn;
  auto* const fp = kcont_bench::opaque(&f);
  kcont_bench::item_check check(state);
  for (auto _ : state) (*fp)(&req, &t, fresh_status());
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_StdFunction)->Apply(kcont_bench::register_case);

// Loop: kcont::run on a kc whose level is kcont::at<immediate> (concrete
// type): no state test, no level test, the lambda inlined. Must match Direct.
void BM_ImmediateRun_KcStaticLevel(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  kcont::kc k{on_done_fn, &t, kcont::at<bsd_level::immediate>};
  kcont_bench::item_check check(state);
  for (auto _ : state)
    benchmark::DoNotOptimize(
        kcont::run(d, k, &req, fresh_status(), bsd_level::softserial));
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_KcStaticLevel)->Apply(kcont_bench::register_case);

// Loop: kcont::run through a kc_base& laundered once (what a queue or an
// object's callback list holds): load the state word, test queued/deferred,
// compare the level, one indirect call to the trampoline (lambda inlined
// there). Must match FunctionPointer.
void BM_ImmediateRun_KcRuntimeLevel(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  kcont::kc k{on_done_fn, &t, bsd_level::immediate};
  kcont::kc_base<request*, int, bsd_level>* const kb =
      kcont_bench::opaque<kcont::kc_base<request*, int, bsd_level>*>(&k);
  kcont_bench::item_check check(state);
  for (auto _ : state)
    benchmark::DoNotOptimize(
        kcont::run(d, *kb, &req, fresh_status(), bsd_level::softserial));
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_KcRuntimeLevel)->Apply(kcont_bench::register_case);

// Loop: make_kc (one std::allocator allocation) + kcont::run through the
// returned kc_base& (indirect call; the library frees it right after the
// call). The one case that must show exactly 1 allocation per item.
void BM_ImmediateRun_MakeKc(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    auto& k = kcont::make_kc(on_done_fn, &t, bsd_level::immediate);
    benchmark::DoNotOptimize(
        kcont::run(d, k, &req, fresh_status(), bsd_level::softserial));
  }
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_MakeKc)->Apply(kcont_bench::register_case);

}  // namespace
