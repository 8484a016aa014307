// Case B: defer a batch of N = 1024 continuations to one level, then drain
// that level (kcont/run.hpp defer + kcont/dispatcher.hpp drain), next to the
// hand-written equivalents, in the same binary.
// Case G (push part): the cost of one deferral as a signal handler would do
// it. A spin lock is only signal-safe when the thread it interrupts never
// holds it (signals blocked around that thread's own pushes): the figure is
// the push; the signal-safe path is the lock-free queue (KcontLockFree below,
// and BM_SignalPush_Kcont in dispatch_benchmark.cpp, inside a real handler).
//
// B, one iteration = one batch: N deferrals (each saves obj = the i-th request
// and the status), then the drain runs every one of them in FIFO order; each
// run does record(*t, r, status). Per item therefore: one push, one pop, one
// call. The node storage (kc objects, raw nodes) is set up before the loop,
// as a caller-owned continuation is. Each batch is one out-of-line call of a
// `round_*` function taking the queue by reference: the queue lives in memory
// in every case (as a queue shared by the code that pushes and the code that
// drains does), and report.sh counts the instructions of exactly these
// functions with callgrind (round_* in this anonymous namespace), a figure the load on
// the machine cannot disturb.
//
//   BM_DeferDrain_DequeMutexFunction  std::deque<std::function<void()>> + std::mutex:
//                                     what a person writes by hand (lambda of 16
//                                     bytes, in std::function's small buffer);
//                                     the lock held for push and for pop, the
//                                     call made outside it
//   BM_DeferDrain_DequeMutexSwap      the same deque and mutex, drained by
//                                     swapping the whole deque out under one
//                                     lock, then calling each outside it
//   BM_DeferDrain_RawFifo             intrusive singly linked FIFO of nodes
//                                     {next, fn, obj, status, env}, no lock, no
//                                     state: the floor
//   BM_DeferDrain_RawFifoSpinLock     the same floor, push and pop each under
//                                     kcont::spin_lock (for the locked variants)
//   BM_DeferDrain_GuardedFifo         the floor plus kcont's guarantees, by hand:
//                                     refuse a queued node, save obj/status once,
//                                     queue per level, clear the state on run
//   BM_DeferDrain_Kcont<Lock>         kcont::defer to a manual_dispatcher<bsd_level,
//                                     Lock> + drain(softnet), Lock = no_lock,
//                                     spin_lock, std::mutex (a locked queue
//                                     drains in batches: one lock per batch)
//
// G, one iteration = N single deferrals timed by hand (manual time), then an
// untimed drain that checks them:
//   BM_DeferOne_RawFifoSpinLock       raw intrusive push under a spin_lock
//   BM_DeferOne_KcontSpinLock         kcont::defer to manual_dispatcher<..., spin_lock>
//   BM_DeferOne_KcontLockFree         kcont::defer to the signal-safe
//                                     thread_dispatcher (mpsc_queue + fd_wakeup,
//                                     level drained by hand)
#include <kcont/posix.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont_bench::record;
using kcont_bench::request;
using kcont_bench::tally;

constexpr std::size_t batch = 1024;
constexpr int status_value = 3;

// The i-th request has id i.
std::unique_ptr<request[]> make_requests(tally& t) {
  auto reqs = std::make_unique<request[]>(batch);
  for (std::size_t i = 0; i < batch; ++i) reqs[i] = request{i, &t};
  return reqs;
}

inline int fresh_status() noexcept {
  return kcont_bench::opaque(status_value);
}

void finish(benchmark::State& state, kcont_bench::item_check& check,
            const tally& t) {
  const auto rounds = static_cast<std::uint64_t>(state.iterations());
  check.finish(rounds * batch, t,
               kcont_bench::expected_sum(rounds, batch, status_value));
}

// ---------------------------------------------------------------- baselines

// Loop: N x (lock; emplace_back a 16-byte lambda into std::function; unlock),
// then until empty (lock; move the front out; pop_front; unlock; call).
// std::deque allocates a block every 512 bytes pushed and frees one every 512
// bytes popped, so this baseline allocates about sizeof(function)/512 per item.
[[gnu::noinline]] void round_deque(std::deque<std::function<void()>>& q,
                                   std::mutex& m, request* reqs) {
  for (std::size_t i = 0; i < batch; ++i) {
    request* r = &reqs[i];
    const int s = fresh_status();
    std::lock_guard<std::mutex> g(m);
    q.emplace_back([r, s] { record(*r->owner, r, s); });
  }
  for (;;) {
    std::function<void()> f;
    {
      std::lock_guard<std::mutex> g(m);
      if (q.empty()) break;
      f = std::move(q.front());
      q.pop_front();
    }
    f();
  }
}

void BM_DeferDrain_DequeMutexFunction(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  std::deque<std::function<void()>> q;
  std::mutex m;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_deque(q, m, reqs.get());
  finish(state, check, t);
}
BENCHMARK(BM_DeferDrain_DequeMutexFunction)->Apply(kcont_bench::register_case);

// Loop: N x (lock; emplace_back a 16-byte lambda into std::function;
// unlock), then until nothing is left (lock; swap the whole deque with a
// spare one; unlock; call each, in order, outside the lock; clear): the
// batch drain a person writes by hand. The spare deque lives across rounds,
// so its blocks are reused, as a long-lived worker's would be.
[[gnu::noinline]] void round_deque_swap(std::deque<std::function<void()>>& q,
                                        std::deque<std::function<void()>>& spare,
                                        std::mutex& m, request* reqs) {
  for (std::size_t i = 0; i < batch; ++i) {
    request* r = &reqs[i];
    const int s = fresh_status();
    std::lock_guard<std::mutex> g(m);
    q.emplace_back([r, s] { record(*r->owner, r, s); });
  }
  for (;;) {
    {
      std::lock_guard<std::mutex> g(m);
      q.swap(spare);
    }
    if (spare.empty()) break;
    for (auto& f : spare) f();
    spare.clear();
  }
}

void BM_DeferDrain_DequeMutexSwap(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  std::deque<std::function<void()>> q;
  std::deque<std::function<void()>> spare;
  std::mutex m;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_deque_swap(q, spare, m, reqs.get());
  finish(state, check, t);
}
BENCHMARK(BM_DeferDrain_DequeMutexSwap)->Apply(kcont_bench::register_case);

// The floor: an intrusive FIFO node carrying what a deferral saves.
struct raw_node {
  raw_node* next;
  void (*fn)(raw_node*) noexcept;
  request* obj;
  int status;
  tally* env;
};

void raw_handler(raw_node* n) noexcept { record(*n->env, n->obj, n->status); }

template <class Lock>
struct raw_fifo {
  raw_node* head = nullptr;
  raw_node* tail = nullptr;
  [[no_unique_address]] Lock lock;

  void push(raw_node* n, request* obj, int status) noexcept {
    std::lock_guard<Lock> g(lock);
    n->obj = obj;
    n->status = status;
    n->next = nullptr;
    if (tail == nullptr)
      head = n;
    else
      tail->next = n;
    tail = n;
  }
  raw_node* pop() noexcept {
    std::lock_guard<Lock> g(lock);
    raw_node* n = head;
    if (n == nullptr) return nullptr;
    head = n->next;
    if (head == nullptr) tail = nullptr;
    return n;
  }
  void drain() noexcept {
    while (raw_node* n = pop()) n->fn(n);
  }
};

std::unique_ptr<raw_node[]> make_raw_nodes(tally& t) {
  auto nodes = std::make_unique<raw_node[]>(batch);
  for (std::size_t i = 0; i < batch; ++i)
    nodes[i] = raw_node{nullptr, &raw_handler, nullptr, 0, &t};
  return nodes;
}

// Loop: N x (store obj/status/next, link at the tail), then until empty
// (unlink the head, one indirect call through the node's fn).
template <class Lock>
[[gnu::noinline]] void round_raw(raw_fifo<Lock>& q, raw_node* base,
                                 request* reqs) {
  for (std::size_t i = 0; i < batch; ++i)
    q.push(&base[i], &reqs[i], fresh_status());
  q.drain();
}

template <class Lock>
void defer_drain_raw(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  auto nodes = make_raw_nodes(t);
  raw_node* const base = kcont_bench::opaque(nodes.get());  // fn read at run time
  raw_fifo<Lock> q;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_raw(q, base, reqs.get());
  finish(state, check, t);
}
void BM_DeferDrain_RawFifo(benchmark::State& state) {
  defer_drain_raw<kcont::no_lock>(state);
}
BENCHMARK(BM_DeferDrain_RawFifo)->Apply(kcont_bench::register_case);
void BM_DeferDrain_RawFifoSpinLock(benchmark::State& state) {
  defer_drain_raw<kcont::spin_lock>(state);
}
BENCHMARK(BM_DeferDrain_RawFifoSpinLock)->Apply(kcont_bench::register_case);

// The floor again, with what kcont's defer + drain guarantee on top, written
// by hand with plain fields (no atomics, nothing type-erased but the one
// function pointer): a continuation already queued is refused, obj/status
// are saved by the first deferral only, the queue is picked by the node's
// level at run time, and running it clears both states. The gap between this
// and RawFifo is the price of the guarantees; the gap between kcont and this
// is the price of kcont's implementation of them.
struct guarded_node {
  guarded_node* next;
  void (*fn)(guarded_node*) noexcept;
  request* obj;
  int status;
  std::uint8_t level;
  std::uint8_t state;  // 1: queued, 2: obj/status saved
  tally* env;
};

void guarded_handler(guarded_node* n) noexcept {
  record(*n->env, n->obj, n->status);
}

struct guarded_levels {
  struct fifo {
    guarded_node* head = nullptr;
    guarded_node* tail = nullptr;
  };
  std::array<fifo, kcont::level_count<bsd_level>> queues;

  bool defer(guarded_node* n, request* obj, int status) noexcept {
    if (n->state & 1) return false;  // already queued: refused
    if (!(n->state & 2)) {           // the first deferral's values stand
      n->obj = obj;
      n->status = status;
    }
    n->state = 3;
    fifo& f = queues[n->level];
    n->next = nullptr;
    if (f.tail == nullptr)
      f.head = n;
    else
      f.tail->next = n;
    f.tail = n;
    return true;
  }
  void drain(bsd_level level) noexcept {
    fifo& f = queues[kcont::level_index(level)];
    while (guarded_node* n = f.head) {
      f.head = n->next;
      if (f.head == nullptr) f.tail = nullptr;
      n->state = 0;  // neither queued nor saved once it runs
      n->fn(n);
    }
  }
};

// Loop: N x guarded defer (test queued, save once, pick the level's queue,
// link), then drain (unlink, clear the state, one indirect call).
[[gnu::noinline]] void round_guarded(guarded_levels& q, guarded_node* base,
                                     request* reqs) {
  for (std::size_t i = 0; i < batch; ++i)
    benchmark::DoNotOptimize(q.defer(&base[i], &reqs[i], fresh_status()));
  q.drain(bsd_level::softnet);
}

void BM_DeferDrain_GuardedFifo(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  auto nodes = std::make_unique<guarded_node[]>(batch);
  for (std::size_t i = 0; i < batch; ++i)
    nodes[i] = guarded_node{nullptr, &guarded_handler, nullptr, 0,
                            static_cast<std::uint8_t>(bsd_level::softnet), 0, &t};
  guarded_node* const base = kcont_bench::opaque(nodes.get());
  guarded_levels q;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_guarded(q, base, reqs.get());
  finish(state, check, t);
}
BENCHMARK(BM_DeferDrain_GuardedFifo)->Apply(kcont_bench::register_case);

// -------------------------------------------------------------------- kcont

constexpr auto kc_handler = [](request* r, tally* t, int status) noexcept {
  record(*t, r, status);
};
using softnet_kc = kcont::kc<std::remove_const_t<decltype(kc_handler)>, tally*,
                             bsd_level>;

// N caller-owned continuations at softnet, built before the loop, side by
// side in one array as a caller's own objects would hold them. A kc is
// immovable, so each is built in place in its slot (a union: an
// std::optional's engaged flag would add 8 bytes to every node, bytes no
// baseline's node carries, and so more cache lines per batch).
union kc_slot {
  kc_slot() noexcept {}
  kc_slot(const kc_slot&) = delete;
  kc_slot& operator=(const kc_slot&) = delete;
  ~kc_slot() { k.~softnet_kc(); }
  softnet_kc k;
};
std::unique_ptr<kc_slot[]> make_kcs(tally& t) {
  auto ks = std::make_unique<kc_slot[]>(batch);
  for (std::size_t i = 0; i < batch; ++i)
    std::construct_at(&ks[i].k, kc_handler, &t, bsd_level::softnet);
  return ks;
}

// Loop: N x kcont::defer (claim the queued bit, save obj/status once, link,
// schedule hook on first), then drain(softnet) (pop, clear queued, one
// indirect call to the trampoline, which takes the saved obj/status and calls
// the lambda inlined).
template <class Lock>
[[gnu::noinline]] void round_kcont(kcont::manual_dispatcher<bsd_level, Lock>& d,
                                   kc_slot* ks, request* reqs) {
  for (std::size_t i = 0; i < batch; ++i)
    benchmark::DoNotOptimize(kcont::defer(d, ks[i].k, &reqs[i], fresh_status()));
  benchmark::DoNotOptimize(d.drain(bsd_level::softnet));
}

template <class Lock>
void defer_drain_kcont(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  auto ks = make_kcs(t);
  kcont::manual_dispatcher<bsd_level, Lock> d;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_kcont(d, ks.get(), reqs.get());
  finish(state, check, t);
}
void BM_DeferDrain_KcontNoLock(benchmark::State& state) {
  defer_drain_kcont<kcont::no_lock>(state);
}
BENCHMARK(BM_DeferDrain_KcontNoLock)->Apply(kcont_bench::register_case);
void BM_DeferDrain_KcontSpinLock(benchmark::State& state) {
  defer_drain_kcont<kcont::spin_lock>(state);
}
BENCHMARK(BM_DeferDrain_KcontSpinLock)->Apply(kcont_bench::register_case);
void BM_DeferDrain_KcontMutex(benchmark::State& state) {
  defer_drain_kcont<std::mutex>(state);
}
BENCHMARK(BM_DeferDrain_KcontMutex)->Apply(kcont_bench::register_case);

// ------------------------------------------------------ G: one deferral

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Loop (timed by hand): N x one raw intrusive push under a spin_lock, as a
// signal handler would do it. Untimed: the drain that checks them.
void BM_DeferOne_RawFifoSpinLock(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  auto nodes = make_raw_nodes(t);
  raw_node* const base = kcont_bench::opaque(nodes.get());
  raw_fifo<kcont::spin_lock> storage;  // in memory, as in defer_drain_raw
  raw_fifo<kcont::spin_lock>& q = *kcont_bench::opaque(&storage);
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < batch; ++i)
      q.push(&base[i], &reqs[i], fresh_status());
    state.SetIterationTime(seconds_since(start));
    q.drain();
  }
  finish(state, check, t);
}
BENCHMARK(BM_DeferOne_RawFifoSpinLock)
    ->UseManualTime()
    ->Apply(kcont_bench::register_case);

// Loop (timed by hand): N x one kcont::defer to the level queue of a
// dispatcher whose queues take a spin_lock (no syscall, no allocation; see
// the signal-safety note at the top). Untimed: the drain that checks them.
template <class Dispatcher>
void defer_one_kcont(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  auto ks = make_kcs(t);
  Dispatcher d;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < batch; ++i)
      benchmark::DoNotOptimize(
          kcont::defer(d, ks[i].k, &reqs[i], fresh_status()));
    state.SetIterationTime(seconds_since(start));
    (void)d.drain(bsd_level::softnet);
  }
  finish(state, check, t);
}
void BM_DeferOne_KcontSpinLock(benchmark::State& state) {
  defer_one_kcont<kcont::manual_dispatcher<bsd_level, kcont::spin_lock>>(state);
}
BENCHMARK(BM_DeferOne_KcontSpinLock)
    ->UseManualTime()
    ->Apply(kcont_bench::register_case);

// Loop (timed by hand): N x one kcont::defer to the lock-free level queue
// (mpsc_queue: claim the queued bit, save obj/status, one CAS) of the
// signal-safe dispatcher, the one a signal handler defers to with
// defer_from_signal (BM_SignalPush_Kcont, dispatch_benchmark.cpp): fd_wakeup,
// the level drained by hand. The first push of each batch makes the queue
// non-empty and writes the eventfd once (a syscall per N pushes, inside the
// timing). Untimed: the drain that checks them.
struct signal_safe_policy {
  using wakeup = kcont::fd_wakeup;
};
using lock_free_dispatcher = kcont::thread_dispatcher<
    bsd_level, kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>,
    signal_safe_policy>;
static_assert(lock_free_dispatcher::signal_safe);

void BM_DeferOne_KcontLockFree(benchmark::State& state) {
  defer_one_kcont<lock_free_dispatcher>(state);
}
BENCHMARK(BM_DeferOne_KcontLockFree)
    ->UseManualTime()
    ->Apply(kcont_bench::register_case);

}  // namespace
