// Case A: running a continuation immediately (kcont/run.hpp), each kcont case
// next to the baseline it must match, in the same binary.
//
// Every item (64 per iteration, see `batch`): the status is laundered through
// kcont_bench::opaque (so the compiler cannot fold the loop into a closed form
// and the tally is stored to memory every time, the same in every case), then
// one call of the handler `record(*t, r, status)` through the mechanism under
// test. run()'s result is discarded, as a caller that runs a continuation
// now usually does and as the baselines (which return nothing) do: passing it
// to benchmark::DoNotOptimize would cost kcont a register move per call that
// no baseline pays; the work itself (the tally in memory) cannot be elided.
// After the loop, item_check verifies the count and the checksum and reports
// allocations per item.
//
//   BM_ImmediateRun_Direct           the handler called directly, inlined, its env
//                                    read from an object (as a kc's): the floor
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

// Each iteration is one out-of-line round_* call running `batch` items (so
// report.sh can count the instructions of exactly those with callgrind, as
// for case B); the per-iteration harness cost is spread over the batch.
constexpr std::uint64_t batch = 64;

void finish(benchmark::State& state, kcont_bench::item_check& check,
            const tally& t) {
  const auto n = static_cast<std::uint64_t>(state.iterations()) * batch;
  check.finish(n, t, n * (request_id + status_value));
}

using base_type = kcont::kc_base<request*, int, bsd_level>;

// What a direct call binds: the handler's environment, held in an object the
// caller reaches by reference, as a kc holds its env (and as a completion
// object written by hand holds its own). Like for like with the kc: the kc
// case reads its env from the kc in memory on every call, because the
// laundered status (opaque's "memory" clobber) says memory may have changed;
// a direct call whose env is a parameter kept it in a register instead and
// saved that one load per call, which was where the env lived, not what kcont
// adds (the two loops were otherwise the same instructions).
struct direct_binding {
  tally* env;
};

// Loop: one inlined call of the handler per item, its env read from the
// binding. The floor for the compile-time kc.
[[gnu::noinline]] void round_direct(const direct_binding& b, request* req) {
  for (std::uint64_t i = 0; i < batch; ++i) on_done(req, b.env, fresh_status());
}
void BM_ImmediateRun_Direct(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  const direct_binding b{&t};
  kcont_bench::item_check check(state);
  for (auto _ : state) round_direct(b, &req);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_Direct)->Apply(kcont_bench::register_case);

// Loop: one indirect call per item through a function pointer laundered
// before the loop (opaque hides its value, so it cannot be devirtualized).
// The baseline for the runtime-level kc.
[[gnu::noinline]] void round_function_pointer(handler_ptr fp, request* req,
                                              tally* t) {
  for (std::uint64_t i = 0; i < batch; ++i) fp(req, t, fresh_status());
}
void BM_ImmediateRun_FunctionPointer(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  const handler_ptr fp =
      kcont_bench::opaque(static_cast<handler_ptr>(on_done_fn));
  kcont_bench::item_check check(state);
  for (auto _ : state) round_function_pointer(fp, &req, &t);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_FunctionPointer)->Apply(kcont_bench::register_case);

// Loop: std::function::operator() per item (an empty check plus one indirect
// call to the lambda's invoker). The function object's address is laundered.
[[gnu::noinline]] void round_std_function(
    const std::function<void(request*, tally*, int)>& f, request* req,
    tally* t) {
  for (std::uint64_t i = 0; i < batch; ++i) f(req, t, fresh_status());
}
void BM_ImmediateRun_StdFunction(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  std::function<void(request*, tally*, int)> f = on_done_fn;
  auto* const fp = kcont_bench::opaque(&f);
  kcont_bench::item_check check(state);
  for (auto _ : state) round_std_function(*fp, &req, &t);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_StdFunction)->Apply(kcont_bench::register_case);

// Loop: kcont::run per item on a kc whose level is kcont::at<immediate>
// (concrete type): no state test, no level test, the lambda inlined. Must
// match Direct.
using static_kc = kcont::kc<std::remove_const_t<decltype(on_done_fn)>, tally*,
                            kcont::static_level<bsd_level::immediate>>;
[[gnu::noinline]] void round_kc_static(kcont::manual_dispatcher<>& d,
                                       static_kc& k, request* req) {
  for (std::uint64_t i = 0; i < batch; ++i)
    (void)kcont::run(d, k, req, fresh_status(), bsd_level::softserial);
}
void BM_ImmediateRun_KcStaticLevel(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  static_kc k{on_done_fn, &t, kcont::at<bsd_level::immediate>};
  kcont_bench::item_check check(state);
  for (auto _ : state) round_kc_static(d, k, &req);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_KcStaticLevel)->Apply(kcont_bench::register_case);

// Loop: kcont::run per item through a kc_base& laundered once (what a queue
// or an object's callback list holds): load the state word, test
// queued/deferred, compare the level, one indirect call to the trampoline
// (lambda inlined there). Must match FunctionPointer.
[[gnu::noinline]] void round_kc_runtime(kcont::manual_dispatcher<>& d,
                                        base_type& k, request* req) {
  for (std::uint64_t i = 0; i < batch; ++i)
    (void)kcont::run(d, k, req, fresh_status(), bsd_level::softserial);
}
void BM_ImmediateRun_KcRuntimeLevel(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  kcont::kc k{on_done_fn, &t, bsd_level::immediate};
  base_type* const kb = kcont_bench::opaque<base_type*>(&k);
  kcont_bench::item_check check(state);
  for (auto _ : state) round_kc_runtime(d, *kb, &req);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_KcRuntimeLevel)->Apply(kcont_bench::register_case);

// Loop: per item, make_kc (one std::allocator allocation) + kcont::run
// through the returned kc_base& (indirect call; the library frees it right
// after the call). The one case that must show exactly 1 allocation per item.
[[gnu::noinline]] void round_make_kc(kcont::manual_dispatcher<>& d, tally* t,
                                     request* req) {
  for (std::uint64_t i = 0; i < batch; ++i) {
    auto& k = kcont::make_kc(on_done_fn, t, bsd_level::immediate);
    (void)kcont::run(d, k, req, fresh_status(), bsd_level::softserial);
  }
}
void BM_ImmediateRun_MakeKc(benchmark::State& state) {
  tally t;
  request req{request_id, &t};
  kcont::manual_dispatcher<> d;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_make_kc(d, &t, &req);
  finish(state, check, t);
}
BENCHMARK(BM_ImmediateRun_MakeKc)->Apply(kcont_bench::register_case);

}  // namespace
