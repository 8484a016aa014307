// Dispatch benchmarks: kcont's thread_dispatcher against the hand-written
// baseline (std::mutex + std::condition_variable + std::deque<std::function>)
// in the same binary.
//
//   BM_CrossThread_{Kcont,Baseline}      throughput: the benchmark thread
//       posts a batch of 1024 tasks to one worker thread and waits until all
//       ran. Each iteration includes: 1024 posts (kcont: defer of a caller-
//       owned kc, no allocation; baseline: lock, push_back a std::function
//       holding a pointer, unlock, notify when the worker may sleep) and the
//       wait for the last one. items_per_second is tasks.
//   BM_WakeupLatency_{Kcont,Baseline}    one task, then wait until it ran,
//       back to back: every task wakes a sleeping worker. Each iteration is
//       one post + one wake-up + one run + the poster seeing it. Counters
//       p50_ns / p99_ns are percentiles of the individual round trips
//       (GBench aggregates only whole runs, so the samples are kept here).
//   BM_SignalPush_{Kcont,Empty}          raise(SIGUSR1) whose handler defers
//       one continuation with defer_from_signal (mpsc_queue + fd_wakeup), vs a
//       handler that does nothing: the difference is the signal-handler push
//       (claim + save + CAS + an eventfd write when the queue was empty).
//
// Registration (benchmarks/meson.build, owned by the benchmarks issue):
//   benchmark('dispatch', executable('dispatch_benchmark',
//     'dispatch_benchmark.cpp', dependencies: [kcont_dep, benchmark_dep, threads_dep]))
#include <benchmark/benchmark.h>

#include <kcont/kcont.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <signal.h>

namespace {

using kcont::bsd_level;
using clock_type = std::chrono::steady_clock;

// ---- the baseline: a mutex-protected deque of std::function, one worker ----
class baseline_worker {
 public:
  baseline_worker() : thread_([this] { loop(); }) {}
  ~baseline_worker() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void post(std::function<void()> f) {
    bool wake;
    {
      std::lock_guard<std::mutex> g(m_);
      wake = q_.empty();
      q_.push_back(std::move(f));
    }
    if (wake) cv_.notify_one();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;
      auto f = std::move(q_.front());
      q_.pop_front();
      lk.unlock();
      f();
      lk.lock();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::thread thread_;
};

struct counter_fn {
  void operator()(int, std::atomic<std::uint64_t>*& n, int) const {
    n->fetch_add(1, std::memory_order_release);
  }
};
using counter_kc = kcont::kc<counter_fn, std::atomic<std::uint64_t>*, bsd_level>;
using one_thread = kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>;

constexpr int batch = 1024;

void wait_for(const std::atomic<std::uint64_t>& n, std::uint64_t target) {
  while (n.load(std::memory_order_acquire) < target) std::this_thread::yield();
}

// ---- cross-thread throughput ----------------------------------------------
void BM_CrossThread_Kcont(benchmark::State& state) {
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  std::atomic<std::uint64_t> ran{0};
  auto nodes = std::make_unique<std::optional<counter_kc>[]>(batch);
  for (int i = 0; i < batch; ++i) nodes[i].emplace(counter_fn{}, &ran, bsd_level::softnet);
  std::uint64_t target = 0;
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) (void)kcont::defer(d, *nodes[i], 0, 0);
    target += batch;
    wait_for(ran, target);
  }
  state.SetItemsProcessed(state.iterations() * batch);
  d.stop();
}
BENCHMARK(BM_CrossThread_Kcont)->UseRealTime();

void BM_CrossThread_Baseline(benchmark::State& state) {
  std::atomic<std::uint64_t> ran{0};
  std::uint64_t target = 0;
  {
    baseline_worker w;
    for (auto _ : state) {
      for (int i = 0; i < batch; ++i)
        w.post([&ran] { ran.fetch_add(1, std::memory_order_release); });
      target += batch;
      wait_for(ran, target);
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_CrossThread_Baseline)->UseRealTime();

// ---- wake-up latency ---------------------------------------------------------
void set_percentiles(benchmark::State& state, std::vector<double>& ns) {
  if (ns.empty()) return;
  std::sort(ns.begin(), ns.end());
  state.counters["p50_ns"] = ns[ns.size() / 2];
  state.counters["p99_ns"] = ns[ns.size() * 99 / 100];
}

template <class Wakeup>
struct wakeup_policy {
  using wakeup = Wakeup;
};

template <class Wakeup>
void BM_WakeupLatency_Kcont(benchmark::State& state) {
  kcont::thread_dispatcher<bsd_level, one_thread, wakeup_policy<Wakeup>> d;
  std::atomic<std::uint64_t> ran{0};
  counter_kc k{counter_fn{}, &ran, bsd_level::softnet};
  std::vector<double> ns;
  ns.reserve(1 << 20);
  std::uint64_t target = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    (void)kcont::defer(d, k, 0, 0);
    wait_for(ran, ++target);
    if (ns.size() < ns.capacity())
      ns.push_back(std::chrono::duration<double, std::nano>(clock_type::now() - t0).count());
  }
  set_percentiles(state, ns);
  d.stop();
}
BENCHMARK_TEMPLATE(BM_WakeupLatency_Kcont, kcont::atomic_wakeup)->UseRealTime();
BENCHMARK_TEMPLATE(BM_WakeupLatency_Kcont, kcont::condvar_wakeup)->UseRealTime();
BENCHMARK_TEMPLATE(BM_WakeupLatency_Kcont, kcont::fd_wakeup)->UseRealTime();

void BM_WakeupLatency_Baseline(benchmark::State& state) {
  std::atomic<std::uint64_t> ran{0};
  std::vector<double> ns;
  ns.reserve(1 << 20);
  std::uint64_t target = 0;
  {
    baseline_worker w;
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      w.post([&ran] { ran.fetch_add(1, std::memory_order_release); });
      wait_for(ran, ++target);
      if (ns.size() < ns.capacity())
        ns.push_back(std::chrono::duration<double, std::nano>(clock_type::now() - t0).count());
    }
  }
  set_percentiles(state, ns);
}
BENCHMARK(BM_WakeupLatency_Baseline)->UseRealTime();

// ---- signal-handler push -----------------------------------------------------
struct signal_policy {
  using wakeup = kcont::fd_wakeup;
};
// A manual runner: nothing drains during the loop, so each handler call
// pushes; the queue is drained between batches, outside the timing.
using signal_dispatcher =
    kcont::thread_dispatcher<bsd_level,
                             kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>,
                             signal_policy>;
signal_dispatcher* sig_d = nullptr;
std::optional<counter_kc>* sig_nodes = nullptr;
int sig_next = 0;

void push_handler(int) {
  (void)kcont::defer_from_signal(*sig_d, *sig_nodes[sig_next++], 0, 0);
}
void empty_handler(int) { benchmark::ClobberMemory(); }

void install(void (*h)(int)) {
  struct sigaction sa {};
  sa.sa_handler = h;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
}

void BM_SignalPush_Kcont(benchmark::State& state) {
  signal_dispatcher d;
  std::atomic<std::uint64_t> ran{0};
  auto nodes = std::make_unique<std::optional<counter_kc>[]>(batch);
  for (int i = 0; i < batch; ++i) nodes[i].emplace(counter_fn{}, &ran, bsd_level::softnet);
  sig_d = &d;
  sig_nodes = nodes.get();
  install(push_handler);
  for (auto _ : state) {
    if (sig_next == batch) {
      state.PauseTiming();
      (void)d.drain(bsd_level::softnet);
      sig_next = 0;
      state.ResumeTiming();
    }
    raise(SIGUSR1);
  }
  install(SIG_DFL);
  (void)d.drain(bsd_level::softnet);
  sig_next = 0;
}
BENCHMARK(BM_SignalPush_Kcont);

void BM_SignalPush_Empty(benchmark::State& state) {
  install(empty_handler);
  for (auto _ : state) raise(SIGUSR1);
  install(SIG_DFL);
}
BENCHMARK(BM_SignalPush_Empty);

}  // namespace

BENCHMARK_MAIN();
