// Cases F and G (signal part): kcont's thread_dispatcher next to the
// hand-written equivalents, in the same binary.
//
// F. Cross-thread (real time: several threads take part).
//
//   Throughput, one iteration = one batch of N = 1024 tasks: the benchmark
//   thread posts them to a runner thread and waits until the last one ran.
//   The iteration includes the N posts, the runner's N pops and calls, and
//   the waiting for the batch (so the runner's sleep between batches and the
//   wake-up of the first post of the next batch are in it too).
//     BM_CrossThread_MutexCondvar   std::deque<std::function<void()>> +
//                                   std::mutex + std::condition_variable: the
//                                   hand-written worker queue (16-byte lambda
//                                   in std::function's small buffer; the
//                                   producer notifies only when it made the
//                                   queue non-empty; the worker pops one task
//                                   per lock and calls it outside the lock)
//     BM_CrossThread_Kcont          kcont::defer of caller-owned continuations
//                                   to a thread_dispatcher with one
//                                   thread_runner, default policy (mpsc_queue
//                                   + atomic_wakeup + default_idle_spin)
//     BM_CrossThread_KcontNoSpin    the same with idle_spin = no_spin
//   BM_CrossThreadTwoProducers_{MutexCondvar,Kcont}: the same batch posted
//   half by the benchmark thread and half by a second producer thread.
//
//   Back-to-back wake-up latency, one iteration = one task: post it, wait
//   until it ran, post the next at once. Each round trip is timed (steady
//   clock) and kept; p50_ns / p99_ns are the percentiles of the kept samples
//   of one repetition (Google Benchmark aggregates whole repetitions only).
//     BM_Wakeup_Kcont               thread_dispatcher, default policy
//     BM_Wakeup_KcontNoSpin         the same with idle_spin = no_spin
//     BM_Wakeup_KcontCondvarWakeup  the same with condvar_wakeup
//     BM_Wakeup_KcontFdWakeup       the same with fd_wakeup
//     BM_Wakeup_MutexCondvar        the hand-written worker queue above
//     BM_Wakeup_SpinningThread      the machine's floor: a thread spinning on
//                                   a sequence number, no queue, no sleep
//
// G. Deferral from a signal handler, one iteration = N raise(SIGUSR1) timed by
//   hand (manual time); the handler does one item; untimed, the drain that
//   checks them.
//     BM_SignalPush_EmptyHandler    the handler runs the item's work itself
//                                   (two adds): the cost of raising and
//                                   delivering a signal
//     BM_SignalPush_Kcont           the handler defers one continuation with
//                                   defer_from_signal (mpsc_queue + fd_wakeup,
//                                   manual runner: one eventfd write(2) per
//                                   batch, when the queue turns non-empty)
//
// Every item does the same work in every case: record() into the shared
// tally, then, every `publish_every`-th item, a release store of the count
// the waiting thread polls (one plain store, not a read-modify-write).
#include <kcont/posix.hpp>

#include <benchmark/benchmark.h>

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
#include <type_traits>
#include <vector>

#include <signal.h>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont_bench::record;
using kcont_bench::request;
using kcont_bench::tally;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t batch = 1024;
constexpr int status_value = 3;

// The tally of a cross-thread case: written by the runner, polled by the
// benchmark thread through `ran` (own cache line).
struct shared_tally : tally {
  std::uint64_t publish_mask = 0;  // publish when (count & mask) == 0
  // Latency cases: the item reads the clock first thing (one-way wake-up
  // latency = started - post time).
  bool stamp = false;
  alignas(64) std::atomic<std::uint64_t> ran{0};
  // Written before `ran` is published, read with it: on ran's cache line,
  // so the poster's read does not pull the tally's line off the runner.
  clock_type::time_point started{};
};

// The item's work in every F case: record, and publish the count every
// (mask + 1)-th item (every item for the latency cases, the last of each
// batch for the throughput cases).
inline void record_and_publish(const request* r, int s) noexcept {
  auto& t = static_cast<shared_tally&>(*r->owner);
  if (t.stamp) t.started = clock_type::now();
  record(t, r, s);
  if ((t.count & t.publish_mask) == 0)
    t.ran.store(t.count, std::memory_order_release);
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until `ran` reaches target: spins about 2 us (75 pauses of about 27 ns
// on the EPYC this was written on; a round trip to an awake runner is well
// under that), then yields the core, which the runner may need: a longer spin
// kept a runner woken onto this core off it (p50 ~ 43 us with 2000 pauses).
void await(const std::atomic<std::uint64_t>& ran, std::uint64_t target) {
  for (int i = 0; i < 75; ++i) {
    if (ran.load(std::memory_order_acquire) >= target) return;
    cpu_relax();
  }
  while (ran.load(std::memory_order_acquire) < target) std::this_thread::yield();
}

std::unique_ptr<request[]> make_requests(tally& t) {
  auto reqs = std::make_unique<request[]>(batch);
  for (std::size_t i = 0; i < batch; ++i) reqs[i] = request{i, &t};
  return reqs;
}

inline int fresh_status() noexcept { return kcont_bench::opaque(status_value); }

// ------------------------------------------------ the hand-written baseline
// A worker thread over std::deque<std::function<void()>>, std::mutex and
// std::condition_variable, as it is usually written, with the usual care:
// notify only when the queue was empty (the worker sleeps only then), notify
// outside the lock, run each task outside the lock.
class mutex_condvar_worker {
 public:
  mutex_condvar_worker() : thread_([this] { loop(); }) {}
  mutex_condvar_worker(const mutex_condvar_worker&) = delete;
  mutex_condvar_worker& operator=(const mutex_condvar_worker&) = delete;
  ~mutex_condvar_worker() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  template <class F>
  void post(F&& f) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> g(m_);
      was_empty = q_.empty();
      q_.emplace_back(std::forward<F>(f));
    }
    if (was_empty) cv_.notify_one();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;  // stop_, and nothing left
      std::function<void()> f = std::move(q_.front());
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

inline void post_one(mutex_condvar_worker& w, request* r) {
  const int s = fresh_status();
  w.post([r, s] { record_and_publish(r, s); });  // 16 bytes: no allocation
}

// ------------------------------------------------------------------- kcont
constexpr auto kc_handler = [](request* r, tally*, int status) noexcept {
  record_and_publish(r, status);
};
using task_kc =
    kcont::kc<std::remove_const_t<decltype(kc_handler)>, tally*, bsd_level>;

std::unique_ptr<std::optional<task_kc>[]> make_kcs(tally& t, std::size_t n) {
  auto ks = std::make_unique<std::optional<task_kc>[]>(n);
  for (std::size_t i = 0; i < n; ++i)
    ks[i].emplace(kc_handler, &t, bsd_level::softnet);
  return ks;
}

// One runner thread for every level (level 0's thread_runner; the others fall
// back to it): the kcont counterpart of the one worker thread.
using one_thread =
    kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>;
template <class Wakeup, class Spin>
struct policy_is {
  using wakeup = Wakeup;
  using idle_spin = Spin;
};
template <class Wakeup = kcont::atomic_wakeup,
          class Spin = kcont::default_idle_spin>
using runner_dispatcher =
    kcont::thread_dispatcher<bsd_level, one_thread, policy_is<Wakeup, Spin>>;

// ------------------------------------------------- F: throughput, 1 producer

// Loop: N x (lock, emplace_back, unlock, maybe notify); wait for the batch.
void BM_CrossThread_MutexCondvar(benchmark::State& state) {
  shared_tally t;
  t.publish_mask = batch - 1;
  auto reqs = make_requests(t);
  std::uint64_t rounds = 0;
  std::optional<kcont_bench::item_check> check;
  {
    mutex_condvar_worker w;
    check.emplace(state);  // after the threads' start-up
    for (auto _ : state) {
      for (std::size_t i = 0; i < batch; ++i) post_one(w, &reqs[i]);
      await(t.ran, ++rounds * batch);
    }
  }  // joined: the tally is the benchmark thread's again
  check->finish(rounds * batch, t,
                kcont_bench::expected_sum(rounds, batch, status_value));
}
BENCHMARK(BM_CrossThread_MutexCondvar)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

// Loop: N x kcont::defer (claim, save obj/status, one CAS onto the runner's
// queue; the first of a batch also moves the wake-up ticket and, if the
// runner sleeps, wakes it); wait for the batch.
template <class Spin>
void cross_thread_kcont(benchmark::State& state) {
  shared_tally t;
  t.publish_mask = batch - 1;
  auto reqs = make_requests(t);
  auto ks = make_kcs(t, batch);
  std::uint64_t rounds = 0;
  std::optional<kcont_bench::item_check> check;
  {
    runner_dispatcher<kcont::atomic_wakeup, Spin> d;
    check.emplace(state);  // after the threads' start-up
    for (auto _ : state) {
      for (std::size_t i = 0; i < batch; ++i)
        (void)kcont::defer(d, *ks[i], &reqs[i], fresh_status());
      await(t.ran, ++rounds * batch);
    }
    d.stop();
  }
  check->finish(rounds * batch, t,
                kcont_bench::expected_sum(rounds, batch, status_value));
}
void BM_CrossThread_Kcont(benchmark::State& state) {
  cross_thread_kcont<kcont::default_idle_spin>(state);
}
BENCHMARK(BM_CrossThread_Kcont)->UseRealTime()->Apply(kcont_bench::register_case);
// The same with Policy::idle_spin = no_spin: the runner sleeps as soon as a
// batch is done, and the first post of the next batch wakes it.
void BM_CrossThread_KcontNoSpin(benchmark::State& state) {
  cross_thread_kcont<kcont::no_spin>(state);
}
BENCHMARK(BM_CrossThread_KcontNoSpin)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

// ------------------------------------------------ F: throughput, 2 producers

// A second producer thread: posts items [batch/2, batch) of each round when
// the benchmark thread starts the round (it posts [0, batch/2) itself).
class second_producer {
 public:
  template <class Post>
  explicit second_producer(Post post)
      : thread_([this, post] {
          std::uint64_t seen = 0;
          for (;;) {
            std::uint64_t g;
            while ((g = go_.load(std::memory_order_acquire)) == seen)
              std::this_thread::yield();
            if (g == stop_round) return;
            seen = g;
            for (std::size_t i = batch / 2; i < batch; ++i) post(i);
          }
        }) {}
  second_producer(const second_producer&) = delete;
  second_producer& operator=(const second_producer&) = delete;
  ~second_producer() {
    go_.store(stop_round, std::memory_order_release);
    thread_.join();
  }
  void start_round(std::uint64_t round) noexcept {
    go_.store(round, std::memory_order_release);
  }

 private:
  static constexpr std::uint64_t stop_round = ~std::uint64_t{0};
  alignas(64) std::atomic<std::uint64_t> go_{0};
  std::thread thread_;
};

// Loop: start the round; N/2 posts here and N/2 on the second producer, at
// the same time; wait for the batch.
void BM_CrossThreadTwoProducers_MutexCondvar(benchmark::State& state) {
  shared_tally t;
  t.publish_mask = batch - 1;
  auto reqs = make_requests(t);
  std::uint64_t rounds = 0;
  std::optional<kcont_bench::item_check> check;
  {
    mutex_condvar_worker w;
    {
      second_producer p([&w, r = reqs.get()](std::size_t i) { post_one(w, &r[i]); });
      check.emplace(state);  // after the threads' start-up
      for (auto _ : state) {
        p.start_round(++rounds);
        for (std::size_t i = 0; i < batch / 2; ++i) post_one(w, &reqs[i]);
        await(t.ran, rounds * batch);
      }
    }
  }
  check->finish(rounds * batch, t,
                kcont_bench::expected_sum(rounds, batch, status_value));
}
BENCHMARK(BM_CrossThreadTwoProducers_MutexCondvar)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

void BM_CrossThreadTwoProducers_Kcont(benchmark::State& state) {
  shared_tally t;
  t.publish_mask = batch - 1;
  auto reqs = make_requests(t);
  auto ks = make_kcs(t, batch);
  std::uint64_t rounds = 0;
  std::optional<kcont_bench::item_check> check;
  {
    runner_dispatcher<> d;
    {
      second_producer p([&d, k = ks.get(), r = reqs.get()](std::size_t i) {
        (void)kcont::defer(d, *k[i], &r[i], fresh_status());
      });
      check.emplace(state);  // after the threads' start-up
      for (auto _ : state) {
        p.start_round(++rounds);
        for (std::size_t i = 0; i < batch / 2; ++i)
          (void)kcont::defer(d, *ks[i], &reqs[i], fresh_status());
        await(t.ran, rounds * batch);
      }
    }
    d.stop();
  }
  check->finish(rounds * batch, t,
                kcont_bench::expected_sum(rounds, batch, status_value));
}
BENCHMARK(BM_CrossThreadTwoProducers_Kcont)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

// --------------------------------------------- F: back-to-back wake-up latency

// The samples of one run: reserved before the loop (no allocation in it),
// percentiles set as counters after it. Two per round:
//   wake_p50_ns / wake_p99_ns  the wake-up latency proper: from just before
//                              the post to the item's first instruction on
//                              the runner (the item stamps the clock; one
//                              system-wide steady clock, so the two threads'
//                              readings compare)
//   p50_ns / p99_ns            the whole round trip: the wake-up, the item,
//                              and the news of its completion reaching the
//                              poster (another cache-line transfer back)
class latency_samples {
 public:
  latency_samples() {
    round_trip_.reserve(capacity);
    wake_.reserve(capacity);
  }
  // Called after the round ended: t.started was published with t.ran.
  void add(clock_type::time_point t0, const shared_tally& t) noexcept {
    const auto now = clock_type::now();
    if (round_trip_.size() < capacity) {
      round_trip_.push_back(std::chrono::duration<double, std::nano>(now - t0).count());
      wake_.push_back(std::chrono::duration<double, std::nano>(t.started - t0).count());
    }
  }
  void report(benchmark::State& state) {
    if (round_trip_.empty()) return;
    put(state, round_trip_, "p50_ns", "p99_ns");
    put(state, wake_, "wake_p50_ns", "wake_p99_ns");
  }

 private:
  static void put(benchmark::State& state, std::vector<double>& v,
                  const char* p50, const char* p99) {
    std::sort(v.begin(), v.end());
    state.counters[p50] = v[v.size() / 2];
    state.counters[p99] = v[v.size() * 99 / 100];
  }
  static constexpr std::size_t capacity = std::size_t{1} << 20;
  std::vector<double> round_trip_;
  std::vector<double> wake_;
};

// Loop: post one task (lock, emplace_back, unlock, notify: the worker is
// asleep or about to be), wait until it ran.
void BM_Wakeup_MutexCondvar(benchmark::State& state) {
  shared_tally t;  // publish_mask 0: every item
  t.stamp = true;
  auto reqs = make_requests(t);
  latency_samples samples;
  std::uint64_t n = 0;
  std::optional<kcont_bench::item_check> check;
  {
    mutex_condvar_worker w;
    check.emplace(state);  // after the threads' start-up
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      post_one(w, &reqs[0]);
      await(t.ran, ++n);
      samples.add(t0, t);
    }
  }
  check->finish(n, t, kcont_bench::expected_sum(n, 1, status_value));
  samples.report(state);
}
BENCHMARK(BM_Wakeup_MutexCondvar)->UseRealTime()->Apply(kcont_bench::register_case);

// The floor of a cross-thread round trip on this machine: no queue, no
// wake-up, no sleeping. A thread spins (pause; a yield after about 2 us, as
// await() does) on a sequence number the benchmark thread bumps after it
// wrote the item (request, status) into the same cache line, then runs the
// item. Each round trip is two cache-line transfers at the least (the item
// there, the published count back), plus the timing.
class spinning_thread {
 public:
  spinning_thread() : thread_([this] { loop(); }) {}
  spinning_thread(const spinning_thread&) = delete;
  spinning_thread& operator=(const spinning_thread&) = delete;
  ~spinning_thread() {
    stop_.store(true, std::memory_order_release);
    thread_.join();
  }
  void post(request* r, int s) noexcept {
    r_ = r;
    s_ = s;
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

 private:
  void loop() {
    std::uint64_t seen = 0;
    for (int idle = 0;;) {
      const std::uint64_t q = seq_.load(std::memory_order_acquire);
      if (q != seen) {
        seen = q;
        idle = 0;
        record_and_publish(r_, s_);
        continue;
      }
      if (stop_.load(std::memory_order_acquire)) return;
      if (++idle < 75)
        cpu_relax();
      else
        std::this_thread::yield();
    }
  }

  alignas(64) std::atomic<std::uint64_t> seq_{0};
  request* r_ = nullptr;  // written before seq_, read after it
  int s_ = 0;
  alignas(64) std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Loop: write the item and bump the sequence number, wait until it ran.
void BM_Wakeup_SpinningThread(benchmark::State& state) {
  shared_tally t;  // publish_mask 0: every item
  t.stamp = true;
  auto reqs = make_requests(t);
  latency_samples samples;
  std::uint64_t n = 0;
  std::optional<kcont_bench::item_check> check;
  {
    spinning_thread w;
    check.emplace(state);
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      w.post(&reqs[0], fresh_status());
      await(t.ran, ++n);
      samples.add(t0, t);
    }
  }
  check->finish(n, t, kcont_bench::expected_sum(n, 1, status_value));
  samples.report(state);
}
BENCHMARK(BM_Wakeup_SpinningThread)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

// Loop: kcont::defer of one continuation to the runner (the queue turns
// non-empty: move the ticket, wake the runner if it sleeps), wait until it ran.
template <class Wakeup, class Spin = kcont::default_idle_spin>
void wakeup_kcont(benchmark::State& state) {
  shared_tally t;  // publish_mask 0: every item
  t.stamp = true;
  auto reqs = make_requests(t);
  auto ks = make_kcs(t, 1);
  latency_samples samples;
  std::uint64_t n = 0;
  std::optional<kcont_bench::item_check> check;
  {
    runner_dispatcher<Wakeup, Spin> d;
    check.emplace(state);  // after the threads' start-up
    for (auto _ : state) {
      const auto t0 = clock_type::now();
      (void)kcont::defer(d, *ks[0], &reqs[0], fresh_status());
      await(t.ran, ++n);
      samples.add(t0, t);
    }
    d.stop();
  }
  check->finish(n, t, kcont_bench::expected_sum(n, 1, status_value));
  samples.report(state);
}
void BM_Wakeup_Kcont(benchmark::State& state) {
  wakeup_kcont<kcont::atomic_wakeup>(state);
}
BENCHMARK(BM_Wakeup_Kcont)->UseRealTime()->Apply(kcont_bench::register_case);
// The same with Policy::idle_spin = no_spin: every task wakes a sleeping
// runner (a futex wake and a scheduler wake-up per round trip).
void BM_Wakeup_KcontNoSpin(benchmark::State& state) {
  wakeup_kcont<kcont::atomic_wakeup, kcont::no_spin>(state);
}
BENCHMARK(BM_Wakeup_KcontNoSpin)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);
void BM_Wakeup_KcontCondvarWakeup(benchmark::State& state) {
  wakeup_kcont<kcont::condvar_wakeup>(state);
}
BENCHMARK(BM_Wakeup_KcontCondvarWakeup)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);
void BM_Wakeup_KcontFdWakeup(benchmark::State& state) {
  wakeup_kcont<kcont::fd_wakeup>(state);
}
BENCHMARK(BM_Wakeup_KcontFdWakeup)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);

// ------------------------------------------ G: deferral from a signal handler

// The signal-safe dispatcher: lock-free queue, eventfd wake-up, the level
// drained by hand (as a poll loop watching wait_fd() would).
struct signal_safe_policy {
  using wakeup = kcont::fd_wakeup;
};
using signal_dispatcher = kcont::thread_dispatcher<
    bsd_level, kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>,
    signal_safe_policy>;
static_assert(signal_dispatcher::signal_safe);

constexpr auto sig_kc_handler = [](request* r, tally* t, int status) noexcept {
  record(*t, r, status);
};
using sig_kc =
    kcont::kc<std::remove_const_t<decltype(sig_kc_handler)>, tally*, bsd_level>;

// What the handlers reach: set before the handler is installed, read only by
// the handler, which runs on the benchmark thread (raise delivers the signal
// to the calling thread before it returns).
struct signal_target {
  signal_dispatcher* d = nullptr;
  std::optional<sig_kc>* ks = nullptr;
  request* reqs = nullptr;
  tally* t = nullptr;
  std::size_t next = 0;
};
signal_target sig;

void push_handler(int) {
  const std::size_t i = sig.next++;
  (void)kcont::defer_from_signal(*sig.d, *sig.ks[i], &sig.reqs[i], fresh_status());
}
void inline_handler(int) {
  const std::size_t i = sig.next++;
  record(*sig.t, &sig.reqs[i], fresh_status());
}

void install(void (*h)(int)) {
  struct sigaction sa {};
  sa.sa_handler = h;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
}

// Loop (timed by hand): N x raise(SIGUSR1). Untimed: the drain (Kcont only).
template <bool Defer>
void signal_push(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t);
  std::unique_ptr<std::optional<sig_kc>[]> ks;
  std::optional<signal_dispatcher> d;
  if constexpr (Defer) {
    ks = std::make_unique<std::optional<sig_kc>[]>(batch);
    for (std::size_t i = 0; i < batch; ++i)
      ks[i].emplace(sig_kc_handler, &t, bsd_level::softnet);
    d.emplace();
  }
  sig = signal_target{d ? &*d : nullptr, ks.get(), reqs.get(), &t, 0};
  install(Defer ? push_handler : inline_handler);
  std::uint64_t rounds = 0;
  kcont_bench::item_check check(state);
  for (auto _ : state) {
    sig.next = 0;
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < batch; ++i) raise(SIGUSR1);
    state.SetIterationTime(
        std::chrono::duration<double>(clock_type::now() - start).count());
    if constexpr (Defer) (void)d->drain(bsd_level::softnet);
    ++rounds;
  }
  install(SIG_DFL);
  check.finish(rounds * batch, t,
               kcont_bench::expected_sum(rounds, batch, status_value));
}
void BM_SignalPush_EmptyHandler(benchmark::State& state) {
  signal_push<false>(state);
}
BENCHMARK(BM_SignalPush_EmptyHandler)
    ->UseManualTime()
    ->Apply(kcont_bench::register_case);
void BM_SignalPush_Kcont(benchmark::State& state) { signal_push<true>(state); }
BENCHMARK(BM_SignalPush_Kcont)->UseManualTime()->Apply(kcont_bench::register_case);

}  // namespace
