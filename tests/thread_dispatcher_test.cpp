// thread_dispatcher: runners per level, cross-thread stress with
// cancellation, lost wake-ups, deferral from signal handlers, the pollable
// descriptor, cancellation, shutdown policies, budgets, exceptions and the
// allocation-free threaded paths.
#include <kcont/thread_dispatcher.hpp>

#include <doctest/doctest.h>

#include <kcont/dispatcher.hpp>
#include <kcont/posix/fd_wakeup.hpp>
#include <kcont/resume.hpp>
#include <kcont/run.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::run_result;

constexpr bsd_level all_levels[] = {bsd_level::process, bsd_level::softclock,
                                    bsd_level::softnet, bsd_level::softserial};

// What one continuation saw: how often it ran and the sum of its statuses.
struct tally {
  std::atomic<std::uint64_t> runs{0};
  std::atomic<std::uint64_t> sum{0};
};
struct count_fn {
  void operator()(int, tally*& t, int status) const {
    t->sum.fetch_add(static_cast<std::uint64_t>(status),
                     std::memory_order_relaxed);
    t->runs.fetch_add(1, std::memory_order_release);
  }
};
using count_kc = kcont::kc<count_fn, tally*, bsd_level>;

// N continuations, each with its own tally (kc is immovable: built in place).
struct node_set {
  std::size_t n;
  std::unique_ptr<tally[]> tallies;
  std::unique_ptr<std::optional<count_kc>[]> nodes;
  node_set(std::size_t count, bsd_level (*level_of)(std::size_t))
      : n(count),
        tallies(std::make_unique<tally[]>(count)),
        nodes(std::make_unique<std::optional<count_kc>[]>(count)) {
    for (std::size_t i = 0; i < n; ++i)
      nodes[i].emplace(count_fn{}, &tallies[i], level_of(i));
  }
  count_kc& operator[](std::size_t i) { return *nodes[i]; }
  std::uint64_t total_runs() const {
    std::uint64_t t = 0;
    for (std::size_t i = 0; i < n; ++i)
      t += tallies[i].runs.load(std::memory_order_acquire);
    return t;
  }
};
bsd_level cycle_levels(std::size_t i) { return all_levels[i % 4]; }
template <bsd_level L>
bsd_level fixed_level(std::size_t) {
  return L;
}

// Records the current level of each call, in order.
struct level_log {
  std::mutex m;
  std::vector<bsd_level> seen;
};
struct log_level_fn {
  void operator()(int, level_log*& log, int) const {
    std::lock_guard<std::mutex> g(log->m);
    log->seen.push_back(kcont::current_level<bsd_level>());
  }
};
using log_kc = kcont::kc<log_level_fn, level_log*, bsd_level>;

// Runs until `release` is set, after setting `started`.
struct gate {
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
};
struct gate_fn {
  void operator()(int, gate*& g, int) const {
    g->started.store(true);
    kcont_test::spin_until([&] { return g->release.load(); });
    g->finished.store(true);
  }
};
using gate_kc = kcont::kc<gate_fn, gate*, bsd_level>;

using manual_all = kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>;
using one_thread = kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>;
using mixed_plan = kcont::runner_plan<kcont::pool_runner<2>, kcont::thread_runner,
                                     kcont::no_runner, kcont::thread_runner>;

struct mutex_condvar {
  using queue = kcont::kcqueue<kcont::kc_hook, std::mutex>;
  using wakeup = kcont::condvar_wakeup;
};
struct spin_fd {
  using queue = kcont::kcqueue<kcont::kc_hook, kcont::spin_lock>;
  using wakeup = kcont::fd_wakeup;
};
struct mpsc_fd {
  using wakeup = kcont::fd_wakeup;
};
struct hand_back {
  using on_stop = kcont::hand_back_on_stop;
};
struct rethrow {
  using on_exception = kcont::rethrow_exceptions;
};

}  // namespace

static_assert(kcont::deferral_target<kcont::thread_dispatcher<>>);
static_assert(kcont::thread_dispatcher<>::concurrent);
static_assert(!kcont::thread_dispatcher<>::signal_safe);
static_assert(kcont::thread_dispatcher<bsd_level, one_thread, mpsc_fd>::signal_safe);
static_assert(!kcont::thread_dispatcher<bsd_level, one_thread, spin_fd>::signal_safe);
static_assert(!kcont::thread_dispatcher<bsd_level, mixed_plan>::is_manual(
    bsd_level::softnet));
static_assert(kcont::thread_dispatcher<bsd_level, manual_all>::is_manual(
    bsd_level::softnet));
static_assert(kcont::detail::level_queue<kcont::mpsc_queue<>>);
static_assert(kcont::detail::level_queue<kcont::kcqueue<kcont::kc_hook, std::mutex>>);

// ---- runners and levels ----------------------------------------------------

TEST_CASE("thread_dispatcher.plan_maps_levels_to_runners") {
  kcont::thread_dispatcher<bsd_level, mixed_plan> d;
  CHECK(d.thread_count(bsd_level::process) == 2);
  CHECK(d.thread_count(bsd_level::softclock) == 1);
  CHECK(d.thread_count(bsd_level::softnet) == 1);  // falls back to softclock's
  CHECK_FALSE(d.is_manual(bsd_level::softnet));
  kcont::thread_dispatcher<bsd_level,
                           kcont::plan_for<bsd_level, kcont::pool_runner<>,
                                           kcont::no_runner>>
      pool;
  CHECK(pool.thread_count(bsd_level::softserial) >= 1);
}

TEST_CASE("thread_dispatcher.shared_manual_runner_runs_higher_levels_first") {
  kcont::thread_dispatcher<bsd_level, manual_all, rethrow> d;
  level_log log;
  log_kc p{log_level_fn{}, &log, bsd_level::process};
  log_kc c{log_level_fn{}, &log, bsd_level::softclock};
  log_kc n{log_level_fn{}, &log, bsd_level::softnet};
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  for (auto* k : {&p, &c, &n, &s}) CHECK(kcont::defer(d, *k, 0, 0) == run_result::deferred);
  CHECK(d.drain(bsd_level::process) == 4);  // one runner for every level
  // Highest first, each at its own level; the caller's level is restored.
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softserial, bsd_level::softnet,
                                           bsd_level::softclock, bsd_level::process});
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
}

TEST_CASE("thread_dispatcher.shared_thread_runner_runs_higher_levels_first") {
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  level_log log;
  gate g;
  gate_kc blocker{gate_fn{}, &g, bsd_level::process};
  log_kc p{log_level_fn{}, &log, bsd_level::process};
  log_kc n{log_level_fn{}, &log, bsd_level::softnet};
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  (void)kcont::defer(d, blocker, 0, 0);
  kcont_test::spin_until([&] { return g.started.load(); });
  // The runner is busy: these wait, and then run by level, not by age.
  (void)kcont::defer(d, p, 0, 0);
  (void)kcont::defer(d, n, 0, 0);
  (void)kcont::defer(d, s, 0, 0);
  g.release = true;
  d.stop();
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softserial, bsd_level::softnet,
                                           bsd_level::process});
}

TEST_CASE("thread_dispatcher.a_lower_level_request_inside_a_runner_is_deferred") {
  // A softnet continuation that runs a process-level one (no level argument):
  // the runner set curipl to softnet, so it is deferred, not nested.
  using D = kcont::thread_dispatcher<bsd_level, manual_all, rethrow>;
  D d;
  level_log log;
  log_kc low{log_level_fn{}, &log, bsd_level::process};
  struct env_t {
    D* d;
    log_kc* low;
    run_result r;
  };
  kcont::kc high{[](int, env_t& e, int) { e.r = kcont::run(*e.d, *e.low, 0, 0); },
                 env_t{&d, &low, run_result::refused}, bsd_level::softnet};
  (void)kcont::defer(d, high, 0, 0);
  CHECK(d.drain(bsd_level::process, kcont::drain_budget::items(1)) == 1);
  CHECK(high.env().r == run_result::deferred);
  CHECK(d.drain(bsd_level::process) == 1);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::process});
}

// ---- the stress test -------------------------------------------------------

namespace {

template <class Plan, class Policy, std::size_t Normal, std::size_t Small,
          bool ManualLoop = false>
struct stress_config {
  using plan = Plan;
  using policy = Policy;
  static constexpr std::size_t total = kcont_test::sized(Normal, Small);
  static constexpr bool manual_loop = ManualLoop;
};

// The matrix (each line: plan; queue + wake-up; deferrals in a plain build /
// under a sanitizer):
//   pool(2) + thread + fallback + thread; mpsc + atomic;      1,200,000 / 60,000
// (counts of continuations that ran; cancelled ones come on top)
//   a thread per level;                   mutex + condvar;      200,000 / 20,000
//   thread + fallbacks + pool(2);         spin_lock + eventfd;  200,000 / 20,000
//   manual (a poll loop thread) + thread; mpsc + eventfd;       200,000 / 20,000
using stress_mpsc_atomic =
    stress_config<mixed_plan, kcont::dispatch_defaults, 1200000, 60000>;
using stress_mutex_condvar =
    stress_config<kcont::plan_for<bsd_level, kcont::thread_runner, kcont::thread_runner>,
                  mutex_condvar, 200000, 20000>;
using stress_spin_fd =
    stress_config<kcont::runner_plan<kcont::thread_runner, kcont::no_runner,
                                     kcont::no_runner, kcont::pool_runner<2>>,
                  spin_fd, 200000, 20000>;
using stress_manual_fd =
    stress_config<kcont::runner_plan<kcont::manual_runner, kcont::thread_runner,
                                     kcont::no_runner, kcont::no_runner>,
                  mpsc_fd, 200000, 20000, true>;

// What one producer deferred and cancelled, per node.
struct expect {
  explicit expect(std::size_t n) : runs(n), sum(n), last(n), carried(n) {}
  std::vector<std::int64_t> runs;
  std::vector<std::int64_t> sum;
  std::vector<int> last;     // the status of its pending deferral
  std::vector<int> carried;  // saved by a cancelled deferral (0: none)
  std::uint64_t deferred = 0, cancelled = 0, refused = 0;
};

}  // namespace

// Two producers defer continuations of every level (64 nodes per level each,
// reused as soon as they ran) until the matrix's count has run (not counting
// the cancelled ones), and every 16th step cancel (every 64th: cancel_sync)
// the node they deferred last. Each producer knows what it deferred and what it got
// back, per node: after stop(), every node ran exactly that many times with
// exactly that sum of statuses (count and checksum).
TEST_CASE_TEMPLATE("thread_dispatcher.rule9_stress_each_runs_once_or_is_cancelled", C,
                   stress_mpsc_atomic, stress_mutex_condvar, stress_spin_fd,
                   stress_manual_fd) {
  using D = kcont::thread_dispatcher<bsd_level, typename C::plan, typename C::policy>;
  constexpr int producers = 2;
  const std::size_t per_producer_nodes = 64 * 4;
  const std::uint64_t target = C::total / producers;

  D d;
  std::vector<std::unique_ptr<node_set>> sets;
  for (int p = 0; p < producers; ++p)
    sets.push_back(std::make_unique<node_set>(per_producer_nodes, cycle_levels));

  std::vector<expect> expects(producers, expect(per_producer_nodes));

  std::atomic<bool> loop_done{false};
  std::thread loop;
  if constexpr (C::manual_loop) {
    // The process level's manual runner, drained by "an event loop" thread
    // in small budgets.
    loop = std::thread([&] {
      while (!loop_done.load()) {
        d.wait(bsd_level::process);
        (void)d.drain(bsd_level::process, kcont::drain_budget::items(64));
      }
    });
  }

  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p)
    threads.emplace_back([&, p] {
      node_set& nodes = *sets[static_cast<std::size_t>(p)];
      expect& e = expects[static_cast<std::size_t>(p)];
      for (std::uint64_t j = 0; e.deferred - e.cancelled < target; ++j) {
        if (j % 16 == 15) {
          // Cancel the node deferred just before (often still queued).
          const std::size_t i = (j - 1) % per_producer_nodes;
          const bool removed =
              j % 64 == 63 ? d.cancel_sync(nodes[i]) : d.cancel(nodes[i]);
          if (removed) {
            // Handed back carrying its saved status: the next accepted
            // deferral runs with that one (rule 2), not its own.
            ++e.cancelled;
            --e.runs[i];
            e.sum[i] -= e.last[i];
            e.carried[i] = e.last[i];
          }
          continue;
        }
        const std::size_t i = j % per_producer_nodes;
        const int status = static_cast<int>(j % 1000) + 1;
        if (kcont::defer(d, nodes[i], 0, status) == run_result::deferred) {
          const int saved = e.carried[i] != 0 ? e.carried[i] : status;
          e.carried[i] = 0;
          ++e.deferred;
          ++e.runs[i];
          e.sum[i] += saved;
          e.last[i] = saved;
        } else {
          ++e.refused;  // still queued: the pending run absorbs it
        }
      }
    });
  for (auto& t : threads) t.join();
  d.stop();  // drain_on_stop: everything left runs
  loop_done = true;
  if (loop.joinable()) loop.join();

  std::uint64_t deferred = 0, cancelled = 0, mismatches = 0;
  for (int p = 0; p < producers; ++p) {
    const auto& e = expects[static_cast<std::size_t>(p)];
    deferred += e.deferred;
    cancelled += e.cancelled;
    for (std::size_t i = 0; i < per_producer_nodes; ++i) {
      const auto& t = sets[static_cast<std::size_t>(p)]->tallies[i];
      if (static_cast<std::int64_t>(t.runs.load()) != e.runs[i] ||
          static_cast<std::int64_t>(t.sum.load()) != e.sum[i])
        ++mismatches;
    }
  }
  MESSAGE("deferred " << deferred << ", cancelled " << cancelled);
  CHECK(deferred - cancelled >= C::total);  // ran
  CHECK(mismatches == 0);
  for (bsd_level l : all_levels) CHECK_FALSE(d.has_work(l));
}

// ---- lost wake-ups ---------------------------------------------------------

namespace {
// no_spin: the runner sleeps as soon as it runs dry, so (almost) every cycle
// goes through the sleep protocol. wake_atomic_spin keeps the default idle
// spin: most cycles find the runner spinning, the others race the end of
// the spin against the push.
template <class Wakeup, std::size_t Normal, std::size_t Small,
          class Spin = kcont::no_spin, class Queue = kcont::mpsc_queue<>>
struct wake_config {
  struct policy {
    using wakeup = Wakeup;
    using idle_spin = Spin;
    using queue = Queue;
  };
  static constexpr std::size_t cycles = kcont_test::sized(Normal, Small);
};
using wake_atomic = wake_config<kcont::atomic_wakeup, 1200000, 20000>;
using wake_condvar = wake_config<kcont::condvar_wakeup, 500000, 5000>;
using wake_fd = wake_config<kcont::fd_wakeup, 300000, 5000>;
using wake_atomic_spin =
    wake_config<kcont::atomic_wakeup, 300000, 5000, kcont::default_idle_spin>;
// Locked level queues: a std::mutex queue's pushes take no lock (its staged
// stack: kcqueue.hpp's batch table), so its `first` and empty() carry the
// protocol; a spin_lock queue's push links under its lock.
using wake_mutex_queue = wake_config<kcont::atomic_wakeup, 200000, 5000, kcont::no_spin,
                                     kcont::kcqueue<kcont::kc_hook, std::mutex>>;
using wake_mutex_queue_spin =
    wake_config<kcont::atomic_wakeup, 100000, 5000, kcont::default_idle_spin,
                kcont::kcqueue<kcont::kc_hook, std::mutex>>;
using wake_spin_lock_queue = wake_config<kcont::condvar_wakeup, 100000, 5000, kcont::no_spin,
                                         kcont::kcqueue<kcont::kc_hook, kcont::spin_lock>>;
}  // namespace

// One producer defers one continuation, waits until it ran, and defers again:
// the runner goes idle and to sleep between almost every pair, so each cycle
// races a producer's push against a runner's last check. A lost wake-up
// hangs the test. Cycles: 1,200,000 (atomic) + 500,000 (condvar) + 300,000
// (eventfd) = 2,000,000 in a plain build, plus 300,000 with the default idle
// spin; 20,000 / 5,000 / 5,000 / 5,000 under a sanitizer. The same with
// locked level queues (std::mutex: 200,000 without a spin, 100,000 with it;
// spin_lock: 100,000; 5,000 each under a sanitizer). Two levels share the
// runner.
TEST_CASE_TEMPLATE("thread_dispatcher.no_lost_wakeup_in_post_sleep_cycles", W,
                   wake_atomic, wake_condvar, wake_fd, wake_atomic_spin, wake_mutex_queue,
                   wake_mutex_queue_spin, wake_spin_lock_queue) {
  kcont::thread_dispatcher<bsd_level, one_thread, typename W::policy> d;
  node_set nodes(2, [](std::size_t i) {
    return i == 0 ? bsd_level::softnet : bsd_level::process;
  });
  std::size_t refused = 0;
  for (std::size_t c = 0; c < W::cycles; ++c) {
    const std::size_t i = c % 2;
    const std::uint64_t before = nodes.tallies[i].runs.load(std::memory_order_acquire);
    if (kcont::defer(d, nodes[i], 0, 1) != run_result::deferred) ++refused;
    kcont_test::spin_until([&] {
      return nodes.tallies[i].runs.load(std::memory_order_acquire) > before;
    });
  }
  d.stop();
  CHECK(refused == 0);
  CHECK(nodes.total_runs() == W::cycles);
}

// Policy::idle_spin: a runner spinning for work (here for up to an hour)
// still runs what is deferred during the spin, and stop() ends the spin
// rather than waiting it out. No clock is read: were the spin waited out, the
// test would hang and meson's per-file timeout would name it.
namespace {
struct hour_spin {
  static constexpr std::chrono::nanoseconds duration = std::chrono::hours(1);
};
}  // namespace

TEST_CASE("thread_dispatcher.idle_spin_runs_work_and_stop_ends_it") {
  struct long_spin {
    using idle_spin = hour_spin;
  };
  static_assert(std::is_same_v<kcont::thread_dispatcher<>::idle_spin_type,
                               kcont::default_idle_spin>);
  std::optional<kcont::thread_dispatcher<bsd_level, one_thread, long_spin>> d;
  d.emplace();
  node_set nodes(1, [](std::size_t) { return bsd_level::softnet; });
  for (std::uint64_t c = 1; c <= 100; ++c) {
    CHECK(kcont::defer(*d, nodes[0], 0, 1) == run_result::deferred);
    kcont_test::spin_until([&] {
      return nodes.tallies[0].runs.load(std::memory_order_acquire) >= c;
    });
  }
  d.reset();  // stop() and join, while the runner spins: returns at all
  CHECK(nodes.total_runs() == 100);
}

// ---- deferral from a signal handler ----------------------------------------

namespace {
namespace sig {
using policy = mpsc_fd;
using D = kcont::thread_dispatcher<
    bsd_level,
    kcont::runner_plan<kcont::thread_runner, kcont::no_runner,
                       kcont::thread_runner, kcont::no_runner>,
    policy>;
D* dispatcher = nullptr;
node_set* nodes = nullptr;
count_kc* shared = nullptr;
std::atomic<std::size_t> next{0};
std::atomic<std::size_t> overflow{0};
std::atomic<std::size_t> bad{0};
std::atomic<std::size_t> shared_deferred{0};
std::atomic<std::size_t> shared_refused{0};
static_assert(std::atomic<std::size_t>::is_always_lock_free);

void handler(int) {
  const int saved = errno;
  const std::size_t i = next.fetch_add(1);
  if (i < nodes->n) {
    if (kcont::defer_from_signal(*dispatcher, (*nodes)[i], 0, 1) !=
        run_result::deferred)
      bad.fetch_add(1);
  } else {
    overflow.fetch_add(1);
  }
  // One node deferred over and over: deferred or absorbed, never run twice
  // for one deferral.
  if (kcont::defer_from_signal(*dispatcher, *shared, 0, 1) == run_result::deferred)
    shared_deferred.fetch_add(1);
  else
    shared_refused.fetch_add(1);
  errno = saved;
}
}  // namespace sig
}  // namespace

namespace {
// Blocks or unblocks `sig` for the calling thread only.
void mask_signal(int sig, int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  (void)pthread_sigmask(how, &set, nullptr);
}
}  // namespace

// Signals: the main thread raise()s N times (delivered synchronously) while a
// second thread kill()s the process N times (coalesced when pending). Every
// handler call defers a fresh node and re-defers one shared node. Each fresh
// node runs exactly once; the shared one once per accepted deferral.
// N = 20,000 in a plain build, 2,000 under a sanitizer. Only the main thread
// takes the signal (the others start with it blocked), so blocking it again
// there proves every handler call is over before the counts are read. (A
// handler interrupting a consumer mid-pop is the next test.)
TEST_CASE("thread_dispatcher.defer_from_signal_handlers") {
  const std::size_t n = kcont_test::sized(20000, 2000);
  mask_signal(SIGUSR1, SIG_BLOCK);  // inherited by the threads made below
  sig::D d;
  node_set nodes(2 * n + 16, cycle_levels);
  tally shared_tally;
  count_kc shared{count_fn{}, &shared_tally, bsd_level::softnet};
  sig::dispatcher = &d;
  sig::nodes = &nodes;
  sig::shared = &shared;

  struct sigaction sa {};
  sa.sa_handler = sig::handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  REQUIRE(sigaction(SIGUSR1, &sa, nullptr) == 0);

  std::thread killer([&] {
    for (std::size_t i = 0; i < n; ++i) {
      (void)kill(getpid(), SIGUSR1);
      if (i % 64 == 0) std::this_thread::yield();
    }
  });
  mask_signal(SIGUSR1, SIG_UNBLOCK);
  for (std::size_t i = 0; i < n; ++i) (void)raise(SIGUSR1);
  killer.join();
  // Every handler call ran on this thread and is over; what is still pending
  // is discarded by SIG_IGN.
  mask_signal(SIGUSR1, SIG_BLOCK);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  REQUIRE(sigaction(SIGUSR1, &ign, nullptr) == 0);
  mask_signal(SIGUSR1, SIG_UNBLOCK);

  const std::size_t calls = sig::next.load();
  const std::size_t fresh = std::min(calls, nodes.n);
  kcont_test::spin_until([&] { return nodes.total_runs() >= fresh; });
  d.stop();

  std::size_t wrong = 0;
  for (std::size_t i = 0; i < nodes.n; ++i)
    if (nodes.tallies[i].runs.load() != (i < fresh ? 1u : 0u)) ++wrong;
  MESSAGE("handler calls " << calls);
  CHECK(calls >= n);  // every raise() was handled
  CHECK(sig::bad.load() == 0);
  CHECK(sig::overflow.load() == 0);
  CHECK(wrong == 0);
  CHECK(shared_tally.runs.load() == sig::shared_deferred.load());
  CHECK(sig::shared_deferred.load() + sig::shared_refused.load() == calls);
}

namespace {
namespace sig2 {
using D = kcont::thread_dispatcher<bsd_level, manual_all, mpsc_fd>;
D* dispatcher = nullptr;
node_set* nodes = nullptr;
std::atomic<std::size_t> next{0};
std::atomic<std::size_t> bad{0};

void handler(int) {
  const int saved = errno;
  const std::size_t i = next.fetch_add(1);
  if (i >= nodes->n ||
      kcont::defer_from_signal(*dispatcher, (*nodes)[i], 0, 1) !=
          run_result::deferred)
    bad.fetch_add(1);
  errno = saved;
}
}  // namespace sig2
}  // namespace

// The handler interrupts the very thread that drains the queue it pushes to,
// often while that thread holds the queue's consumer lock (pop): the push
// must not need it. pthread_kill N times, one at a time (3,000; 500 under a
// sanitizer); every handler call's node runs exactly once, nothing deadlocks.
TEST_CASE("thread_dispatcher.signal_interrupting_its_own_consumer") {
  const std::size_t n = kcont_test::sized(3000, 500);
  sig2::D d;
  node_set nodes(n + 16, cycle_levels);
  sig2::dispatcher = &d;
  sig2::nodes = &nodes;

  struct sigaction sa {};
  sa.sa_handler = sig2::handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  REQUIRE(sigaction(SIGUSR2, &sa, nullptr) == 0);

  std::atomic<bool> done{false};
  std::atomic<bool> started{false};
  std::atomic<bool> block{false};
  std::atomic<bool> blocked{false};
  std::thread consumer([&] {
    started = true;
    while (!done.load()) {
      (void)d.drain(bsd_level::process, kcont::drain_budget::items(64));
      if (block.load() && !blocked.load()) {
        // Any handler call on this thread is over once it runs this.
        mask_signal(SIGUSR2, SIG_BLOCK);
        blocked = true;
      }
    }
    (void)d.drain(bsd_level::process);
  });
  kcont_test::spin_until([&] { return started.load(); });
  for (std::size_t i = 0; i < n; ++i) {
    // One at a time (pending signals coalesce): each lands wherever the
    // consumer is, often inside pop with the consumer lock held.
    const std::size_t before = sig2::next.load();
    (void)pthread_kill(consumer.native_handle(), SIGUSR2);
    kcont_test::spin_until([&] { return sig2::next.load() > before; });
  }
  block = true;
  kcont_test::spin_until([&] { return blocked.load(); });
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;  // discards what is still pending
  sigemptyset(&ign.sa_mask);
  REQUIRE(sigaction(SIGUSR2, &ign, nullptr) == 0);
  const std::size_t calls = sig2::next.load();
  kcont_test::spin_until([&] { return nodes.total_runs() >= calls; });
  done = true;
  consumer.join();

  std::size_t wrong = 0;
  for (std::size_t i = 0; i < nodes.n; ++i)
    if (nodes.tallies[i].runs.load() != (i < calls ? 1u : 0u)) ++wrong;
  MESSAGE("handler calls " << calls);
  CHECK(calls == n);
  CHECK(sig2::bad.load() == 0);
  CHECK(wrong == 0);
}

// ---- the pollable descriptor -----------------------------------------------

namespace {
bool readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}
}  // namespace

TEST_CASE("thread_dispatcher.fd_readable_while_a_manual_level_has_work") {
  kcont::thread_dispatcher<bsd_level, manual_all, mpsc_fd> d;
  const int fd = d.wait_fd(bsd_level::softnet);
  CHECK(fd == d.wait_fd(bsd_level::process));  // one runner, one descriptor
  CHECK_FALSE(readable(fd));
  node_set nodes(3, fixed_level<bsd_level::softnet>);
  for (std::size_t i = 0; i < 3; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  CHECK(readable(fd));
  // A budget leaves work: the descriptor stays readable (rescheduled).
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(2)) == 2);
  CHECK(readable(fd));
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK_FALSE(readable(fd));
  CHECK(nodes.total_runs() == 3);
}

// A poll() loop drains what another thread defers: 5,000 continuations
// (1,000 under a sanitizer), in budgets of 16.
TEST_CASE("thread_dispatcher.poll_loop_drains_cross_thread_work") {
  const std::size_t n = kcont_test::sized(5000, 1000);
  kcont::thread_dispatcher<bsd_level, manual_all, mpsc_fd> d;
  node_set nodes(n, cycle_levels);
  std::thread producer([&] {
    for (std::size_t i = 0; i < n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  });
  std::size_t ran = 0;
  while (ran < n) {
    pollfd p{d.wait_fd(bsd_level::process), POLLIN, 0};
    (void)::poll(&p, 1, -1);  // blocks: a lost wake-up hangs here
    ran += d.drain(bsd_level::process, kcont::drain_budget::items(16));
  }
  producer.join();
  CHECK(nodes.total_runs() == n);
}

// ---- cancellation ----------------------------------------------------------

TEST_CASE("thread_dispatcher.cancel_before_it_runs") {
  kcont::thread_dispatcher<bsd_level, manual_all, rethrow> d;
  node_set nodes(3, fixed_level<bsd_level::softnet>);
  for (std::size_t i = 0; i < 3; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  CHECK(d.cancel(nodes[1]));
  CHECK_FALSE(d.cancel(nodes[1]));
  CHECK_FALSE(nodes[1].is_queued());
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK(nodes.tallies[1].runs.load() == 0);
  CHECK_FALSE(d.cancel(nodes[0]));  // it ran
  count_kc imm{count_fn{}, &nodes.tallies[0], bsd_level::immediate};
  CHECK_FALSE(d.cancel(imm));
  // cancel_sync of a queued one removes it without waiting.
  (void)kcont::defer(d, nodes[2], 0, 1);
  CHECK(d.cancel_sync(nodes[2]));
}

TEST_CASE("thread_dispatcher.cancel_sync_waits_for_a_running_continuation") {
  kcont::thread_dispatcher<bsd_level, one_thread> d;
  gate g;
  gate_kc k{gate_fn{}, &g, bsd_level::softnet};
  (void)kcont::defer(d, k, 0, 0);
  kcont_test::spin_until([&] { return g.started.load(); });
  bool removed = true;
  bool finished_when_returned = false;
  std::thread canceller([&] {
    removed = d.cancel_sync(k);
    finished_when_returned = g.finished.load();
  });
  g.release = true;
  canceller.join();
  CHECK_FALSE(removed);
  CHECK(finished_when_returned);  // it returned only after the run returned
}

TEST_CASE("thread_dispatcher.cancel_sync_from_inside_itself_does_not_wait") {
  using D = kcont::thread_dispatcher<bsd_level, one_thread>;
  D d;
  struct env_t {
    D* d;
    kcont::kc_hook* self;
    std::atomic<int> result{-1};
  };
  env_t env{&d, nullptr};
  kcont::kc k{[](int, env_t*& e, int) { e->result = e->d->cancel_sync(*e->self) ? 1 : 0; },
              &env, bsd_level::softnet};
  env.self = &k;
  (void)kcont::defer(d, k, 0, 0);
  d.stop();
  CHECK(env.result.load() == 0);
}

// ---- shutdown --------------------------------------------------------------

TEST_CASE("thread_dispatcher.stop_drains_pending_work") {
  // softclock and up: a thread, busy behind a gate; process: a manual runner
  // nobody drains. stop() (from another thread) runs all of it.
  using plan = kcont::runner_plan<kcont::manual_runner, kcont::thread_runner,
                                  kcont::no_runner, kcont::no_runner>;
  kcont::thread_dispatcher<bsd_level, plan> d;
  gate g;
  gate_kc blocker{gate_fn{}, &g, bsd_level::softnet};
  node_set soft(100, fixed_level<bsd_level::softclock>);
  node_set process(50, fixed_level<bsd_level::process>);
  (void)kcont::defer(d, blocker, 0, 0);
  kcont_test::spin_until([&] { return g.started.load(); });
  for (std::size_t i = 0; i < soft.n; ++i) (void)kcont::defer(d, soft[i], 0, 1);
  for (std::size_t i = 0; i < process.n; ++i) (void)kcont::defer(d, process[i], 0, 1);
  std::thread stopper([&] { d.stop(); });
  g.release = true;
  stopper.join();
  CHECK(d.stopping());
  CHECK(soft.total_runs() == 100);
  CHECK(process.total_runs() == 50);
  for (bsd_level l : all_levels) CHECK_FALSE(d.has_work(l));
}

TEST_CASE("thread_dispatcher.destructor_drains_pending_work") {
  node_set nodes(20, cycle_levels);
  {
    kcont::thread_dispatcher<bsd_level, manual_all> d;
    for (std::size_t i = 0; i < nodes.n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  }
  CHECK(nodes.total_runs() == 20);
}

TEST_CASE("thread_dispatcher.stop_hands_pending_work_back") {
  // Manual runners only: nothing runs; stop(out) hands back all ten, which
  // then run elsewhere with the obj/status their deferral saved.
  kcont::thread_dispatcher<bsd_level, manual_all, hand_back> d;
  node_set nodes(10, cycle_levels);
  for (std::size_t i = 0; i < nodes.n; ++i)
    (void)kcont::defer(d, nodes[i], 0, static_cast<int>(i) + 1);
  kcont::kcqueue<kcont::kc_hook> out;
  CHECK(d.stop(out) == 10);
  CHECK(out.size_slow() == 10);
  CHECK(nodes.total_runs() == 0);
  kcont::manual_dispatcher<> elsewhere;
  while (kcont::kc_hook* h = out.pop())
    CHECK(kcont::detail::pushed(elsewhere.push_deferred(*h, [] {})));
  CHECK(elsewhere.drain_all() == 10);
  for (std::size_t i = 0; i < nodes.n; ++i)
    CHECK(nodes.tallies[i].sum.load() == i + 1);
}

TEST_CASE("thread_dispatcher.handed_back_work_pops_unqueued_and_still_deferred") {
  // What the owner gets back from stop(out): popped from `out`, each is on
  // no queue and still carries its deferral (saved obj/status), the state a
  // public kcont::resume(kc_hook&) runs it from. Until run.hpp has it, the
  // test resumes through the internal door.
  kcont::thread_dispatcher<bsd_level, manual_all, hand_back> d;
  node_set nodes(4, cycle_levels);
  for (std::size_t i = 0; i < nodes.n; ++i)
    (void)kcont::defer(d, nodes[i], 0, static_cast<int>(i) + 10);
  kcont::kcqueue<kcont::kc_hook> out;
  CHECK(d.stop(out) == 4);
  std::size_t popped = 0;
  while (kcont::kc_hook* h = out.pop()) {
    CHECK_FALSE(h->is_queued());
    CHECK(h->is_deferred());
    (void)kcont::resume(*h);
    CHECK_FALSE(h->is_deferred());
    ++popped;
  }
  CHECK(popped == 4);
  CHECK(nodes.total_runs() == 4);
  for (std::size_t i = 0; i < nodes.n; ++i)
    CHECK(nodes.tallies[i].sum.load() == i + 10);
}

TEST_CASE("thread_dispatcher.stop_hands_back_what_a_busy_thread_did_not_run") {
  kcont::thread_dispatcher<bsd_level, one_thread, hand_back> d;
  gate g;
  gate_kc blocker{gate_fn{}, &g, bsd_level::softnet};
  node_set nodes(100, cycle_levels);
  (void)kcont::defer(d, blocker, 0, 0);
  kcont_test::spin_until([&] { return g.started.load(); });
  for (std::size_t i = 0; i < nodes.n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  kcont::kcqueue<kcont::kc_hook> out;
  std::size_t handed = 0;
  std::thread stopper([&] { handed = d.stop(out); });
  g.release = true;
  stopper.join();
  // Each node either ran (before the runner saw the stop) or came back.
  std::size_t back_and_ran = 0;
  while (kcont::kc_hook* h = out.pop()) {
    auto& k = static_cast<count_kc&>(
        static_cast<kcont::kc_base<int, int, bsd_level>&>(*h));
    if (k.env()->runs.load() != 0) ++back_and_ran;
    kcont::dispose(*h);
  }
  CHECK(back_and_ran == 0);
  CHECK(nodes.total_runs() + handed == 100);
}

TEST_CASE("thread_dispatcher.hand_back_destroyed_with_work_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        static tally t;
        static count_kc k{count_fn{}, &t, bsd_level::softnet};
        kcont::thread_dispatcher<bsd_level, manual_all, hand_back> d;
        (void)kcont::defer(d, k, 0, 0);
      },
      "call stop(out) first"));
}

TEST_CASE("thread_dispatcher.misuse_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks || kcont_test::sanitized)) {
  using plan = kcont::runner_plan<kcont::manual_runner, kcont::thread_runner,
                                  kcont::no_runner, kcont::no_runner>;
  // drain() of a level a thread drains.
  CHECK(kcont_test::dies_with(
      [] {
        kcont::thread_dispatcher<bsd_level, plan> d;
        (void)d.drain(bsd_level::softnet);
      },
      "drain() is for manual runners"));
  // stop() from a continuation running on one of the dispatcher's threads.
  CHECK(kcont_test::dies_with(
      [] {
        using D = kcont::thread_dispatcher<bsd_level, plan>;
        static D d;
        static kcont::kc k{[](int, D*& self, int) { self->stop(); }, &d,
                           bsd_level::softnet};
        (void)kcont::defer(d, k, 0, 0);
        for (;;) std::this_thread::yield();
      },
      "it would join itself"));
}

// ---- budgets ---------------------------------------------------------------

TEST_CASE("thread_dispatcher.budgets_leave_the_rest_queued") {
  kcont::thread_dispatcher<bsd_level, manual_all> d;
  node_set nodes(10, fixed_level<bsd_level::softnet>);
  for (std::size_t i = 0; i < nodes.n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(3)) == 3);
  CHECK(d.has_work(bsd_level::softnet));
  // A deadline already past runs nothing; a far one runs the rest.
  CHECK(d.drain(bsd_level::softnet,
                kcont::drain_budget::for_time(std::chrono::seconds(0))) == 0);
  CHECK(d.drain(bsd_level::softnet,
                kcont::drain_budget::for_time(std::chrono::hours(1))) == 7);
  CHECK_FALSE(d.has_work(bsd_level::softnet));
}

TEST_CASE("thread_dispatcher.drain_budget_for_huge_times_saturates") {
  // for_time(hours::max()) overflowed converting to the clock's unit and
  // adding to now (UBSan), and the deadline wrapped into the past: drain ran
  // nothing. Saturated: a duration the clock cannot hold means no deadline.
  using clock = std::chrono::steady_clock;
  using kcont::drain_budget;
  CHECK(drain_budget::for_time(std::chrono::hours::max()).deadline ==
        clock::time_point::max());
  CHECK(drain_budget::for_time(std::chrono::nanoseconds::max()).deadline ==
        clock::time_point::max());
  CHECK(drain_budget::for_time(std::chrono::duration<double>(1e300)).deadline ==
        clock::time_point::max());
  CHECK(drain_budget::for_time(
            std::chrono::duration<long long, std::pico>::max()).deadline <
        clock::time_point::max());
  const auto before = clock::now();
  const auto spent = drain_budget::for_time(std::chrono::hours::min());
  const auto after = clock::now();
  CHECK(spent.deadline >= before);  // already spent: no wrap into the future
  CHECK(spent.deadline <= after);
  const auto b = drain_budget::for_time(std::chrono::milliseconds(5));
  CHECK(b.deadline >= before + std::chrono::milliseconds(5));
  CHECK(b.deadline < before + std::chrono::hours(1));

  kcont::thread_dispatcher<bsd_level, manual_all> d;
  node_set nodes(4, fixed_level<bsd_level::softnet>);
  for (std::size_t i = 0; i < nodes.n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
  CHECK(d.drain(bsd_level::softnet, spent) == 0);
  CHECK(d.drain(bsd_level::softnet,
                drain_budget::for_time(std::chrono::hours::max())) == 4);
}

TEST_CASE("thread_dispatcher.immediate_is_not_a_queue_level") {
  // `immediate` has no queue: has_work, drain, wait, thread_count and
  // is_manual read past the queue and runner arrays with it. Refused:
  // a contract violation in a debug build, a defined result in release.
  using D = kcont::thread_dispatcher<bsd_level, manual_all>;
  if constexpr (kcont::contract_checks) {
    CHECK(kcont_test::dies_with([] { D d; (void)d.has_work(bsd_level::immediate); },
                                "has_work() needs a deferrable level"));
    CHECK(kcont_test::dies_with([] { D d; (void)d.drain(bsd_level::immediate); },
                                "drain() needs a deferrable level"));
    CHECK(kcont_test::dies_with([] { D d; d.wait(bsd_level::immediate); },
                                "wait() needs a deferrable level"));
    CHECK(kcont_test::dies_with([] { D d; (void)d.thread_count(bsd_level::immediate); },
                                "thread_count() needs a deferrable level"));
    CHECK(kcont_test::dies_with([] { (void)D::is_manual(bsd_level::immediate); },
                                "is_manual() needs a deferrable level"));
  } else {
    D d;
    node_set nodes(2, fixed_level<bsd_level::softserial>);
    for (std::size_t i = 0; i < nodes.n; ++i) (void)kcont::defer(d, nodes[i], 0, 1);
    CHECK_FALSE(d.has_work(bsd_level::immediate));
    CHECK(d.drain(bsd_level::immediate) == 0);
    d.wait(bsd_level::immediate);  // returns at once
    CHECK(d.thread_count(bsd_level::immediate) == 0u);
    CHECK_FALSE(D::is_manual(bsd_level::immediate));
    CHECK(nodes.total_runs() == 0);
    CHECK(d.drain(bsd_level::softserial) == 2);
  }
  using T = kcont::thread_dispatcher<bsd_level, one_thread>;
  T t;
  CHECK(t.thread_count(bsd_level::process) == 1u);
  CHECK_FALSE(T::is_manual(bsd_level::softserial));
  CHECK(t.thread_count(bsd_level::softserial) == 1u);
}

TEST_CASE("thread_dispatcher.nested_drain_of_a_manual_runner_is_refused") {
  // The guard was a side effect inside KCONT_EXPECTS, so a release build
  // compiled it out and a nested drain ran the outer drain's work inside one
  // of its continuations. The claim is now taken outside the check: a debug
  // build aborts, a release build's nested drain runs nothing.
  using D = kcont::thread_dispatcher<bsd_level, manual_all>;
  struct nest {
    D* d;
    std::size_t inner = 99;
  };
  struct nest_fn {
    void operator()(int, nest& n, int) const { n.inner = n.d->drain(bsd_level::softnet); }
  };
  using nest_kc = kcont::kc<nest_fn, nest, bsd_level>;
  if constexpr (kcont::contract_checks) {
    CHECK(kcont_test::dies_with(
        [] {
          static D d;
          static nest_kc k{nest_fn{}, nest{&d}, bsd_level::softnet};
          (void)kcont::defer(d, k, 0, 0);
          (void)d.drain(bsd_level::softnet);
        },
        "one thread drains a manual runner at a time"));
  } else {
    D d;
    nest_kc k{nest_fn{}, nest{&d}, bsd_level::softnet};
    node_set after(2, fixed_level<bsd_level::softnet>);
    (void)kcont::defer(d, k, 0, 0);
    for (std::size_t i = 0; i < after.n; ++i) (void)kcont::defer(d, after[i], 0, 1);
    // The outer drain runs all three, in order; the nested one runs none.
    CHECK(d.drain(bsd_level::softnet) == 3);
    CHECK(k.env().inner == 0u);
    CHECK(after.total_runs() == 2);
    CHECK_FALSE(d.has_work(bsd_level::softnet));
  }
}

// ---- exceptions ------------------------------------------------------------

#if defined(__cpp_exceptions)  // the exception policies need exceptions
namespace {
struct maybe_throw_fn {
  void operator()(int, tally*& t, int status) const {
    t->runs.fetch_add(1);
    if (status < 0) throw std::runtime_error("continuation failed");
  }
};
using throwing_kc = kcont::kc<maybe_throw_fn, tally*, bsd_level>;
}  // namespace

TEST_CASE("thread_dispatcher.rethrow_leaves_the_rest_queued") {
  kcont::thread_dispatcher<bsd_level, manual_all, rethrow> d;
  tally ta, tb, tc;
  throwing_kc a{maybe_throw_fn{}, &ta, bsd_level::softnet};
  throwing_kc b{maybe_throw_fn{}, &tb, bsd_level::softnet};
  throwing_kc c{maybe_throw_fn{}, &tc, bsd_level::softnet};
  (void)kcont::defer(d, a, 0, 1);
  (void)kcont::defer(d, b, 0, -1);  // throws in the middle of the drain
  (void)kcont::defer(d, c, 0, 1);
  CHECK_THROWS_AS(d.drain(bsd_level::softnet), std::runtime_error);
  CHECK(ta.runs.load() == 1);
  CHECK(tb.runs.load() == 1);
  CHECK(tc.runs.load() == 0);
  CHECK_FALSE(b.is_queued());  // it ran; it is not re-queued
  CHECK(d.has_work(bsd_level::softnet));
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);  // restored
  CHECK(d.drain(bsd_level::softnet) == 1);
  CHECK(tc.runs.load() == 1);
}

namespace {
struct capture_handler {
  std::atomic<int>* caught;
  void operator()(std::exception_ptr e, bsd_level level) const {
    try {
      std::rethrow_exception(e);
    } catch (const std::runtime_error&) {
      if (level == bsd_level::softnet) caught->fetch_add(1);
    }
  }
};
struct capture {
  using on_exception = capture_handler;
};
}  // namespace

TEST_CASE("thread_dispatcher.handler_captures_and_the_runner_goes_on") {
  std::atomic<int> caught{0};
  kcont::thread_dispatcher<bsd_level, one_thread, capture> d{capture_handler{&caught}};
  constexpr int n = 12;
  std::vector<std::unique_ptr<tally>> tallies;
  std::vector<std::unique_ptr<throwing_kc>> ks;
  for (int i = 0; i < n; ++i) {
    tallies.push_back(std::make_unique<tally>());
    ks.push_back(std::make_unique<throwing_kc>(maybe_throw_fn{}, tallies.back().get(),
                                               bsd_level::softnet));
  }
  for (int i = 0; i < n; ++i) (void)kcont::defer(d, *ks[static_cast<std::size_t>(i)], 0, i % 3 == 0 ? -1 : 1);
  d.stop();
  CHECK(caught.load() == 4);
  for (auto& t : tallies) CHECK(t->runs.load() == 1);
}

// No threads in a forked sanitized child.
TEST_CASE("thread_dispatcher.terminate_policy_terminates" * doctest::skip(kcont_test::sanitized)) {
  CHECK(kcont_test::dies_with(
      [] {
        static tally t;
        static throwing_kc k{maybe_throw_fn{}, &t, bsd_level::softnet};
        kcont::thread_dispatcher<bsd_level, one_thread> d;
        (void)kcont::defer(d, k, 0, -1);
        d.stop();
      },
      "continuation failed"));
}
#endif  // __cpp_exceptions

// ---- allocation-free threaded paths ----------------------------------------

// Matrix: mpsc + atomic wake-up (pool, thread, fallback), mutex + condvar,
// mpsc + eventfd. After construction and a warm-up round, 20,000 deferrals
// from two threads through runner threads allocate nothing.
TEST_CASE_TEMPLATE("thread_dispatcher.threaded_paths_do_not_allocate", P,
                   kcont::dispatch_defaults, mutex_condvar, mpsc_fd) {
  kcont::thread_dispatcher<bsd_level, mixed_plan, P> d;
  node_set a(64, cycle_levels);
  node_set b(64, cycle_levels);
  auto round = [&d](node_set& s, std::size_t count) {
    std::size_t deferred = 0;
    for (std::size_t j = 0; deferred < count; ++j)
      if (kcont::defer(d, s[j % s.n], 0, 1) == run_result::deferred) ++deferred;
    return deferred;
  };
  (void)round(a, 64);  // warm-up: first waits, thread-locals
  (void)round(b, 64);
  kcont_test::spin_until([&] { return a.total_runs() + b.total_runs() == 128; });
  std::atomic<bool> go{false};
  std::thread other([&] {
    kcont_test::spin_until([&] { return go.load(); });
    (void)round(b, 10000);
  });
  std::size_t allocations = 0;
  {
    kcont_test::allocation_scope scope;
    go = true;
    (void)round(a, 10000);
    kcont_test::spin_until(
        [&] { return a.total_runs() + b.total_runs() == 128 + 20000; });
    allocations = scope.count();
  }
  other.join();
  CHECK(allocations == 0);
}

// ---- the drain vocabulary (kcont/drain_budget.hpp) --------------------------

namespace {
// Two manual runners: process (softclock falls back to it) and softnet
// (softserial falls back to it).
using two_manual = kcont::runner_plan<kcont::manual_runner, kcont::no_runner,
                                      kcont::manual_runner, kcont::no_runner>;
// process and softclock on a thread, softnet and softserial by hand.
using thread_below_manual = kcont::runner_plan<kcont::thread_runner, kcont::no_runner,
                                               kcont::manual_runner, kcont::no_runner>;
using one_runner_per_level =
    kcont::plan_for<bsd_level, kcont::manual_runner, kcont::manual_runner>;
}  // namespace

TEST_CASE("thread_dispatcher.drain_runs_every_level_of_its_runner_and_no_other") {
  kcont::thread_dispatcher<bsd_level, two_manual, rethrow> d;
  level_log log;
  log_kc p{log_level_fn{}, &log, bsd_level::process};
  log_kc c{log_level_fn{}, &log, bsd_level::softclock};
  log_kc n{log_level_fn{}, &log, bsd_level::softnet};
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  for (auto* k : {&p, &c, &n, &s}) (void)kcont::defer(d, *k, 0, 0);
  // softclock's runner is process's: both of its levels, highest first.
  CHECK(d.drain(bsd_level::softclock) == 2);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softclock, bsd_level::process});
  CHECK(d.has_work(bsd_level::softnet));
  CHECK(d.has_work(bsd_level::softserial));
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softclock, bsd_level::process,
                                           bsd_level::softserial, bsd_level::softnet});
}

TEST_CASE("thread_dispatcher.drain_all_runs_every_manual_level_highest_first") {
  kcont::thread_dispatcher<bsd_level, two_manual, rethrow> d;
  level_log log;
  log_kc p{log_level_fn{}, &log, bsd_level::process};
  log_kc c{log_level_fn{}, &log, bsd_level::softclock};
  log_kc n{log_level_fn{}, &log, bsd_level::softnet};
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  for (auto* k : {&p, &c, &n, &s}) (void)kcont::defer(d, *k, 0, 0);
  CHECK(d.drain_all(kcont::drain_budget::items(3)) == 3);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softserial, bsd_level::softnet,
                                           bsd_level::softclock});
  CHECK(d.drain_all(kcont::drain_budget::for_time(std::chrono::seconds(0))) == 0);
  CHECK(d.drain_all() == 1);
  CHECK(log.seen.back() == bsd_level::process);
  CHECK(d.drain_all() == 0);
  CHECK(kcont::current_level<bsd_level>() == bsd_level::process);
}

TEST_CASE("thread_dispatcher.drain_all_runs_a_higher_deferral_before_the_lower_level_goes_on") {
  // Across runners too: a process continuation defers to softserial (the
  // other manual runner); that runs before the second process one.
  using D = kcont::thread_dispatcher<bsd_level, two_manual, rethrow>;
  D d;
  level_log log;
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  log_kc p2{log_level_fn{}, &log, bsd_level::process};
  struct env_t {
    D* d;
    log_kc* s;
    level_log* log;
  };
  kcont::kc p1{[](int, env_t& e, int) {
                 log_level_fn{}(0, e.log, 0);
                 (void)kcont::defer(*e.d, *e.s, 0, 0);
               },
               env_t{&d, &s, &log}, bsd_level::process};
  (void)kcont::defer(d, p1, 0, 0);
  (void)kcont::defer(d, p2, 0, 0);
  CHECK(d.drain_all() == 3);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::process, bsd_level::softserial,
                                           bsd_level::process});
}

TEST_CASE("thread_dispatcher.drain_all_leaves_levels_that_threads_drain") {
  kcont::thread_dispatcher<bsd_level, thread_below_manual> d;
  gate g;
  gate_kc blocker{gate_fn{}, &g, bsd_level::process};
  node_set waiting(1, fixed_level<bsd_level::softclock>);
  node_set mine(2, fixed_level<bsd_level::softnet>);
  (void)kcont::defer(d, blocker, 0, 0);
  kcont_test::spin_until([&] { return g.started.load(); });
  (void)kcont::defer(d, waiting[0], 0, 1);  // behind the blocked thread
  for (std::size_t i = 0; i < mine.n; ++i) (void)kcont::defer(d, mine[i], 0, 1);
  CHECK(d.drain_all() == 2);  // softnet's two; softclock is the thread's
  CHECK(mine.total_runs() == 2);
  CHECK(waiting.total_runs() == 0);
  CHECK(d.has_work(bsd_level::softclock));
  g.release = true;
  d.stop();
  CHECK(waiting.total_runs() == 1);
}

TEST_CASE("thread_dispatcher.nested_drain_all_is_refused_and_releases_what_it_took") {
  // drain_all from a continuation that drain(softnet) runs: softnet's runner
  // is busy. A debug build aborts; a release build's drain_all runs nothing
  // and gives back the process runner it had claimed before it found that.
  using D = kcont::thread_dispatcher<bsd_level, two_manual>;
  struct nest {
    D* d;
    std::size_t inner = 99;
  };
  struct nest_fn {
    void operator()(int, nest& n, int) const { n.inner = n.d->drain_all(); }
  };
  using nest_kc = kcont::kc<nest_fn, nest, bsd_level>;
  if constexpr (kcont::contract_checks) {
    CHECK(kcont_test::dies_with(
        [] {
          static D d;
          static nest_kc k{nest_fn{}, nest{&d}, bsd_level::softnet};
          (void)kcont::defer(d, k, 0, 0);
          (void)d.drain(bsd_level::softnet);
        },
        "one thread drains a manual runner at a time"));
  } else {
    D d;
    nest_kc k{nest_fn{}, nest{&d}, bsd_level::softnet};
    node_set low(1, fixed_level<bsd_level::process>);
    (void)kcont::defer(d, k, 0, 0);
    (void)kcont::defer(d, low[0], 0, 1);
    CHECK(d.drain(bsd_level::softnet) == 1);
    CHECK(k.env().inner == 0u);
    CHECK(low.total_runs() == 0);
    CHECK(d.drain(bsd_level::process) == 1);  // its runner was released
  }
}

// The drain vocabulary is one: a manual_dispatcher and the thread_dispatcher
// whose plan gives every level its own manual runner drain alike.
TEST_CASE_TEMPLATE("dispatch.drain_and_drain_all_mean_the_same_on_every_dispatcher", D,
                   kcont::manual_dispatcher<bsd_level, std::mutex>,
                   kcont::thread_dispatcher<bsd_level, one_runner_per_level, rethrow>) {
  D d;
  level_log log;
  log_kc p{log_level_fn{}, &log, bsd_level::process};
  log_kc c{log_level_fn{}, &log, bsd_level::softclock};
  log_kc n{log_level_fn{}, &log, bsd_level::softnet};
  log_kc s{log_level_fn{}, &log, bsd_level::softserial};
  for (auto* k : {&p, &c, &n, &s}) (void)kcont::defer(d, *k, 0, 0);
  CHECK(d.drain(bsd_level::softnet) == 1);  // its runner's one level
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softnet});
  CHECK(d.drain(bsd_level::process,
                kcont::drain_budget::for_time(std::chrono::seconds(0))) == 0);
  CHECK(d.drain_all(kcont::drain_budget::items(2)) == 2);
  CHECK(log.seen == std::vector<bsd_level>{bsd_level::softnet, bsd_level::softserial,
                                           bsd_level::softclock});
  CHECK(d.drain_all(kcont::drain_budget::for_time(std::chrono::hours::max())) == 1);
  CHECK(log.seen.back() == bsd_level::process);
  CHECK(d.drain_all() == 0);
}

// ---- wake-ups ----------------------------------------------------------------

#if defined(__linux__)
namespace {
// The calling thread's read(2) and write(2) counts, from the kernel
// (/proc/thread-self/io): the eventfd's writes and reads are among them.
struct io_counts {
  long reads = 0;
  long writes = 0;
};
long io_field(const char* text, const char* name) {
  const char* p = std::strstr(text, name);
  return p == nullptr ? -1 : std::strtol(p + std::strlen(name), nullptr, 10);
}
io_counts thread_io() {
  char buf[512] = {};
  const int fd = ::open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  REQUIRE(n > 0);
  return {io_field(buf, "syscr:"), io_field(buf, "syscw:")};
}

// A continuation that defers itself again until it has run `n` times.
template <class D>
struct redefer {
  D* d;
  int n;
  int runs = 0;
  kcont::kc_base<int, int, bsd_level>* self = nullptr;
};
template <class D>
struct redefer_fn {
  void operator()(int, redefer<D>*& r, int) const {
    if (++r->runs < r->n) CHECK(kcont::defer(*r->d, *r->self, 0, 0) == kcont::run_result::deferred);
  }
};
}  // namespace

// Issue 12: a continuation deferring to its own manual runner, from the
// thread draining that runner, makes no wake-up system call: the drain
// finds the work before it returns. Counted with the kernel's per-thread
// read/write counts over 200 items: no eventfd write, and only the reads of
// the drain's one reset (of the wake-up the first deferral, from outside,
// made), which are per drain.
TEST_CASE_TEMPLATE("thread_dispatcher.defer_to_own_manual_runner_makes_no_wakeup_syscall",
                   P, mpsc_fd, spin_fd) {
  using D = kcont::thread_dispatcher<bsd_level, manual_all, P>;
  D d;
  constexpr int n = 200;
  redefer<D> r{&d, n};
  kcont::kc<redefer_fn<D>, redefer<D>*, bsd_level> k{redefer_fn<D>{}, &r, bsd_level::softnet};
  r.self = &k;
  REQUIRE(kcont::defer(d, k, 0, 0) == kcont::run_result::deferred);  // one write
  const io_counts m0 = thread_io();
  const io_counts m1 = thread_io();  // what one measurement costs
  CHECK(d.drain(bsd_level::softnet) == static_cast<std::size_t>(n));
  const io_counts m2 = thread_io();
  const long reads = (m2.reads - m1.reads) - (m1.reads - m0.reads);
  const long writes = (m2.writes - m1.writes) - (m1.writes - m0.writes);
  CHECK(r.runs == n);
  CHECK(writes == 0);
  // The drain's one reset (a read that empties the eventfd, one that finds
  // it empty): per drain, none per item.
  CHECK(reads <= 2);
  CHECK_FALSE(readable(d.wait_fd(bsd_level::softnet)));
}

// The same deferral stopped by a budget: the drain re-arms the descriptor
// as it releases the runner, so the work left is not lost.
TEST_CASE("thread_dispatcher.own_deferral_left_by_a_budget_rearms_the_descriptor") {
  using D = kcont::thread_dispatcher<bsd_level, manual_all, mpsc_fd>;
  D d;
  redefer<D> r{&d, 3};
  kcont::kc<redefer_fn<D>, redefer<D>*, bsd_level> k{redefer_fn<D>{}, &r, bsd_level::softnet};
  r.self = &k;
  REQUIRE(kcont::defer(d, k, 0, 0) == kcont::run_result::deferred);
  CHECK(d.drain(bsd_level::softnet, kcont::drain_budget::items(1)) == 1);
  CHECK(readable(d.wait_fd(bsd_level::softnet)));
  CHECK(d.drain(bsd_level::softnet) == 2);
  CHECK_FALSE(readable(d.wait_fd(bsd_level::softnet)));
}
#endif
