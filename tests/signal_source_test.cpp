// signal_source and signal_filter: POSIX signals as an event source and
// EVFILT_SIGNAL. Expected values come from kqueue(2) and FreeBSD's
// sys/kern/kern_sig.c (filt_sigattach sets EV_CLEAR; filt_signal counts
// deliveries in kn_data); each test names the one it checks.
//
// Exact counts, honestly: the kernel merges a standard signal sent while the
// same signal is still pending (POSIX), and ThreadSanitizer merges any signal
// it has not yet handed to the program. So the storms either raise() (the
// handler runs before raise returns: nothing is ever pending) or give each
// sending thread its own signal and let it send the next one only once the
// previous one has been reported: every send is then one delivery.
#include <kcont/posix/signal_source.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <kcont/dispatcher.hpp>
#include <kcont/kc.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/posix/fd_filters.hpp>
#include <kcont/posix/fd_source.hpp>
#include <kcont/posix/fd_wakeup.hpp>
#include <kcont/thread_dispatcher.hpp>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using kcont::ev;
using kcont::filter_id;

using kq_t = kcont::kqueue<kcont::filters<kcont::user_filter, kcont::signal_filter<>>>;

int add(kq_t& kq, int sig, ev extra = ev::none) {
  return kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                    .flags = ev::add | extra});
}
int del(kq_t& kq, int sig) {
  return kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                    .flags = ev::delete_});
}

// The events a scan reports now.
std::vector<kcont::kevent> scan(kq_t& kq) {
  kcont::kevent out[16];
  const std::size_t n = kq.scan(out);
  return {out, out + n};
}

// The action installed for sig now.
struct sigaction action_of(int sig) {
  struct sigaction sa {};
  REQUIRE(::sigaction(sig, nullptr, &sa) == 0);
  return sa;
}

std::atomic<int> own_calls{0};
void own_handler(int) { own_calls.fetch_add(1); }

// Sets sig's action to `fn` (a handler, SIG_IGN or SIG_DFL) while alive,
// then restores the one before.
struct scoped_action {
  int sig;
  struct sigaction old {};
  scoped_action(int s, void (*fn)(int)) : sig(s) {
    struct sigaction sa {};
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(sig, &sa, &old) == 0);
  }
  ~scoped_action() { (void)::sigaction(sig, &old, nullptr); }
};

}  // namespace

// kqueue(2): "data returns the number of times the signal has occurred since
// the last call to kevent()"; filt_sigattach: "kn->kn_flags |= EV_CLEAR;
// /* automatically set */", so a report resets it (even when the change did
// not ask for ev::clear), and the next report counts from zero.
TEST_CASE("signal_source.data_since_last_report_resets") {
  scoped_action keep(SIGUSR1, own_handler);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  CHECK(sigs.watching(SIGUSR1));
  for (int i = 0; i < 3; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(sigs.dispatch() == 1);
  auto ev1 = scan(kq);
  REQUIRE(ev1.size() == 1);
  CHECK(ev1[0].ident == static_cast<std::uintptr_t>(SIGUSR1));
  CHECK(ev1[0].filter == filter_id::signal);
  CHECK(ev1[0].data == 3);
  CHECK(ev1[0].fflags == 0);
  CHECK(has(ev1[0].flags, ev::clear));
  CHECK(scan(kq).empty());  // reset by the report
  CHECK(sigs.dispatch() == 0);
  for (int i = 0; i < 2; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  (void)sigs.dispatch();
  // Two dispatches before one report: the report holds both.
  REQUIRE(::raise(SIGUSR1) == 0);
  (void)sigs.dispatch();
  auto ev2 = scan(kq);
  REQUIRE(ev2.size() == 1);
  CHECK(ev2[0].data == 3);
  CHECK(own_calls.load() == 0);  // replaced while watched
  REQUIRE(del(kq, SIGUSR1) == 0);
  CHECK(!sigs.watching(SIGUSR1));
}

// What a kqueue's every scan calls: dispatch() with nothing delivered costs
// atomic loads only (D0 of the counters' table in signal_source.hpp), no
// read(2) of the descriptor: a descriptor made readable behind the source's
// back (Linux: the eventfd is both ends) stays readable. Once a delivery
// made it readable, the next dispatch resets it, and ready() says so.
#if defined(__linux__)
TEST_CASE("signal_source.dispatch_with_nothing_delivered_makes_no_system_call") {
  scoped_action keep(SIGUSR1, SIG_IGN);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  const int fd = sigs.native_handle();
  REQUIRE(fd >= 0);
  auto readable = [fd] {
    ::pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  };
  CHECK_FALSE(sigs.ready());
  const std::uint64_t one = 1;
  REQUIRE(::write(fd, &one, sizeof one) == static_cast<ssize_t>(sizeof one));
  CHECK(sigs.dispatch() == 0);
  CHECK(readable());  // not read: no system call
  CHECK_FALSE(sigs.ready());
  REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(sigs.ready());
  CHECK(sigs.dispatch() == 1);
  CHECK_FALSE(readable());  // a written descriptor is reset
  CHECK_FALSE(sigs.ready());
  auto ev = scan(kq);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].data == 1);
  REQUIRE(del(kq, SIGUSR1) == 0);
}
#endif

// ev::delete_ of the last knote restores the action the first attach
// replaced: a handler of the program's own, and SIG_IGN, which FreeBSD's
// filter records all the same (kqueue(2): "even if the signal has been
// marked as SIG_IGN").
TEST_CASE("signal_source.delete_restores_the_old_disposition") {
  kcont::signal_source sigs;
  kq_t kq{sigs};
  {
    scoped_action keep(SIGUSR2, own_handler);
    own_calls = 0;
    REQUIRE(add(kq, SIGUSR2) == 0);
    CHECK((action_of(SIGUSR2).sa_handler != &own_handler));
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(own_calls.load() == 0);
    (void)sigs.dispatch();
    auto e = scan(kq);
    REQUIRE(e.size() == 1);
    CHECK(e[0].data == 1);
    REQUIRE(del(kq, SIGUSR2) == 0);
    CHECK((action_of(SIGUSR2).sa_handler == &own_handler));
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(own_calls.load() == 1);
    (void)sigs.dispatch();
    CHECK(scan(kq).empty());
  }
  {
    scoped_action ignore(SIGUSR2, SIG_IGN);
    REQUIRE(add(kq, SIGUSR2) == 0);
    for (int i = 0; i < 4; ++i) REQUIRE(::raise(SIGUSR2) == 0);
    (void)sigs.dispatch();
    auto e = scan(kq);
    REQUIRE(e.size() == 1);
    CHECK(e[0].data == 4);  // recorded although ignored
    REQUIRE(del(kq, SIGUSR2) == 0);
    CHECK((action_of(SIGUSR2).sa_handler == SIG_IGN));
  }
  // Two knotes (a kqueue's and a second kqueue's): the first delete keeps
  // the handler, the last restores.
  {
    scoped_action keep(SIGUSR2, own_handler);
    kq_t kq2{sigs};
    REQUIRE(add(kq, SIGUSR2) == 0);
    REQUIRE(add(kq2, SIGUSR2) == 0);
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(sigs.dispatch() == 2);
    CHECK(scan(kq).at(0).data == 1);
    CHECK(scan(kq2).at(0).data == 1);
    REQUIRE(del(kq, SIGUSR2) == 0);
    CHECK((action_of(SIGUSR2).sa_handler != &own_handler));
    REQUIRE(del(kq2, SIGUSR2) == 0);
    CHECK((action_of(SIGUSR2).sa_handler == &own_handler));
  }
}

// Two signals on one kqueue: each its own knote (ident = signal number) and
// its own count.
TEST_CASE("signal_source.two_signals_count_apart") {
  scoped_action a(SIGUSR1, SIG_IGN);
  scoped_action b(SIGUSR2, SIG_IGN);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  REQUIRE(add(kq, SIGUSR2) == 0);
  for (int i = 0; i < 2; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  for (int i = 0; i < 5; ++i) REQUIRE(::raise(SIGUSR2) == 0);
  CHECK(sigs.poll(0ns) == 2);
  auto e = scan(kq);
  REQUIRE(e.size() == 2);
  std::sort(e.begin(), e.end(), [](auto& x, auto& y) { return x.ident < y.ident; });
  CHECK(e[0].ident == static_cast<std::uintptr_t>(SIGUSR1));
  CHECK(e[0].data == 2);
  CHECK(e[1].ident == static_cast<std::uintptr_t>(SIGUSR2));
  CHECK(e[1].data == 5);
  REQUIRE(del(kq, SIGUSR1) == 0);
  REQUIRE(del(kq, SIGUSR2) == 0);
}

// What attach refuses: numbers that are no signal, SIGKILL and SIGSTOP
// (sigaction refuses them), and a signal another source owns (EBUSY).
TEST_CASE("signal_source.attach_refuses") {
  kcont::signal_source sigs, other;
  kq_t kq{sigs}, kq2{other};
  CHECK(add(kq, 0) == EINVAL);
  CHECK(add(kq, kcont::signal_limit) == EINVAL);
  CHECK(add(kq, SIGKILL) == EINVAL);
  CHECK(add(kq, SIGSTOP) == EINVAL);
  scoped_action keep(SIGUSR1, SIG_IGN);
  REQUIRE(add(kq, SIGUSR1) == 0);
  CHECK(add(kq2, SIGUSR1) == EBUSY);
  REQUIRE(del(kq, SIGUSR1) == 0);
  CHECK(add(kq2, SIGUSR1) == 0);
  REQUIRE(del(kq2, SIGUSR1) == 0);
  CHECK((action_of(SIGUSR1).sa_handler == SIG_IGN));
}

// Any continuation: a plain knote whose continuation runs at once in the
// dispatch and one at softnet, deferred to a manual_dispatcher level.
TEST_CASE("signal_source.knote_continuation_runs_at_once_or_deferred") {
  using base_t = kcont::signal_source::knote_type;
  scoped_action keep(SIGUSR1, SIG_IGN);
  kcont::signal_source sigs;
  kcont::manual_dispatcher<> d;
  // Each takes the deliveries out of its knote's data.
  auto take = [](base_t* kn, std::int64_t& seen, kcont::knote_cause) {
    seen += kn->data;
    kn->data = 0;
  };
  kcont::kc now{take, std::int64_t{0}, kcont::at<kcont::bsd_level::immediate>};
  kcont::kc later{take, std::int64_t{0}, kcont::bsd_level::softnet};
  kcont::knote<kcont::signal_filter<>> a{kcont::signal_filter<>{sigs}, now, SIGUSR1};
  kcont::knote<kcont::signal_filter<>> b{kcont::signal_filter<>{sigs}, later, SIGUSR1};
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  for (int i = 0; i < 3; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(sigs.dispatch(d, kcont::bsd_level::softserial) == 2);
  CHECK(now.env() == 3);
  CHECK(later.env() == 0);  // deferred to softnet
  CHECK(d.drain(kcont::bsd_level::softnet) == 1);
  CHECK(later.env() == 3);
  REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(sigs.dispatch(d, kcont::bsd_level::softserial) == 2);
  CHECK(d.drain(kcont::bsd_level::softnet) == 1);
  CHECK(now.env() == 4);
  CHECK(later.env() == 4);
  (void)a.detach(d);
  (void)b.detach(d);
  CHECK(!sigs.watching(SIGUSR1));
}

// Registration may allocate (the kqueue's knote); a delivery must not: the
// handler, dispatch and the scan allocate nothing, for a kqueue knote and a
// standalone one.
TEST_CASE("signal_source.no_allocation_per_delivery") {
  scoped_action keep(SIGUSR1, SIG_IGN);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  kcont::kc k{[](kcont::signal_source::knote_type*, int& n, kcont::knote_cause) { ++n; }, 0,
              kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::signal_filter<>> kn{kcont::signal_filter<>{sigs}, k, SIGUSR1};
  REQUIRE(kn.attach() == 0);
  kcont::kevent out[4];
  auto round = [&] {
    REQUIRE(::raise(SIGUSR1) == 0);
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(sigs.dispatch() == 2);
    REQUIRE(kq.scan(out) == 1);
    CHECK(out[0].data == 2);
  };
  round();
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 200; ++i) round();
  CHECK(scope.count() == 0);
  CHECK(k.env() == 201);
  (void)kn.detach();
  REQUIRE(del(kq, SIGUSR1) == 0);
}

// raise() storm from several threads at once: each raise is delivered to its
// own thread before it returns (nothing pending to merge), on whatever
// thread, while another thread dispatches and scans: the reports add up to
// exactly the number of raises.
TEST_CASE("signal_source.raise_storm_from_threads_counts_every_delivery") {
  const int threads = 4;
  const int per = static_cast<int>(kcont_test::sized(5000, 500));
  scoped_action keep(SIGUSR1, SIG_IGN);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  std::atomic<bool> done{false};
  std::int64_t total = 0;
  std::thread consumer([&] {
    kcont::kevent out[4];
    for (;;) {
      const bool last = done.load();
      (void)sigs.poll(1ms);
      const std::size_t n = kq.scan(out);
      for (std::size_t i = 0; i < n; ++i) total += out[i].data;
      if (last) break;
    }
  });
  std::vector<std::thread> raisers;
  for (int t = 0; t < threads; ++t)
    raisers.emplace_back([&] {
      for (int i = 0; i < per; ++i) (void)::raise(SIGUSR1);
    });
  for (auto& r : raisers) r.join();
  done = true;
  consumer.join();
  CHECK(total == std::int64_t{threads} * per);
  REQUIRE(del(kq, SIGUSR1) == 0);
}

namespace {
// A storm of kill() or pthread_kill() from several threads, each with its own
// real-time signal, each sending its next signal once the previous one was
// reported (so no two of one signal are ever pending: every send is one
// delivery). The kernel picks the receiving thread (kill) or the sender
// picks one of the threads (pthread_kill). Returns whether every count
// matched.
void storm(bool directed) {
  const int threads = 3;
  const int per = static_cast<int>(kcont_test::sized(2000, 300));
  REQUIRE(SIGRTMIN + threads <= SIGRTMAX);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  std::vector<std::unique_ptr<scoped_action>> keep;
  for (int t = 0; t < threads; ++t) {
    keep.push_back(std::make_unique<scoped_action>(SIGRTMIN + t, SIG_IGN));
    REQUIRE(add(kq, SIGRTMIN + t) == 0);
  }
  std::atomic<std::int64_t> reported[threads] = {};
  std::atomic<int> senders_left{threads};
  const pthread_t main_thread = ::pthread_self();
  std::thread consumer([&] {
    kcont::kevent out[8];
    while (senders_left.load() != 0) {
      (void)sigs.poll(1ms);
      const std::size_t n = kq.scan(out);
      for (std::size_t i = 0; i < n; ++i)
        reported[static_cast<int>(out[i].ident) - SIGRTMIN].fetch_add(out[i].data);
    }
  });
  const pthread_t consumer_thread = consumer.native_handle();
  std::vector<std::thread> senders;
  std::atomic<int> failed_sends{0};
  for (int t = 0; t < threads; ++t)
    senders.emplace_back([&, t] {
      for (int i = 0; i < per; ++i) {
        int r = 0;
        if (!directed)
          r = ::kill(::getpid(), SIGRTMIN + t);
        else
          r = ::pthread_kill((i % 3 == 0)   ? main_thread
                             : (i % 3 == 1) ? consumer_thread
                                            : ::pthread_self(),
                             SIGRTMIN + t);
        if (r != 0) failed_sends.fetch_add(1);
        // Sleeping (not spinning) lets a sanitizer hand a signal taken by
        // this thread to the handler.
        while (reported[t].load() < i + 1) std::this_thread::sleep_for(20us);
      }
      senders_left.fetch_sub(1);
      // No thread exits while another's signal may be in flight: the kernel
      // may pick any thread for a kill(), and ThreadSanitizer defers a
      // signal to the thread's next interceptor, which an exiting thread
      // never reaches (the delivery was lost 1 run in 8 without this).
      while (senders_left.load() != 0) std::this_thread::sleep_for(100us);
    });
  // The main thread takes its share of pthread_kill()s while it waits.
  while (senders_left.load() != 0) std::this_thread::sleep_for(100us);
  for (auto& s : senders) s.join();
  consumer.join();
  CHECK(failed_sends.load() == 0);
  for (int t = 0; t < threads; ++t) CHECK(reported[t].load() == per);
  (void)sigs.dispatch();
  CHECK(scan(kq).empty());  // not one more
  for (int t = 0; t < threads; ++t) REQUIRE(del(kq, SIGRTMIN + t) == 0);
}
}  // namespace

TEST_CASE("signal_source.kill_storm_from_threads_counts_every_delivery") { storm(false); }
TEST_CASE("signal_source.pthread_kill_storm_counts_every_delivery") { storm(true); }

// The source's descriptor in another loop: an fd_source read knote on
// native_handle() whose continuation dispatches the signals (what a one-
// thread server's loop does); one epoll wait covers descriptors and signals.
TEST_CASE("signal_source.descriptor_watched_by_an_fd_source") {
  scoped_action keep(SIGUSR1, SIG_IGN);
  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  kcont::fd_source fds;
  kcont::kc on_ready{[](kcont::fd_source::knote_type*, kcont::signal_source*& s,
                        kcont::knote_cause) { (void)s->dispatch(); },
                     &sigs, kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::read_filter<>> watch{kcont::read_filter<>{fds}, on_ready,
                                           static_cast<std::uintptr_t>(sigs.native_handle())};
  REQUIRE(watch.attach() == 0);
  CHECK(fds.poll(0ns) == 0);  // nothing delivered: not readable
  for (int i = 0; i < 3; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(fds.poll(1s) == 1);
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
  CHECK(fds.poll(0ns) == 0);  // the dispatch reset it
  (void)watch.detach();
  REQUIRE(del(kq, SIGUSR1) == 0);
}

namespace {
namespace coexist {
struct mpsc_fd {
  using wakeup = kcont::fd_wakeup;
};
using D = kcont::thread_dispatcher<
    kcont::bsd_level, kcont::plan_for<kcont::bsd_level, kcont::thread_runner, kcont::no_runner>,
    mpsc_fd>;
struct count_fn {
  void operator()(int, std::atomic<int>*& runs, int) const { runs->fetch_add(1); }
};
using count_kc = kcont::kc<count_fn, std::atomic<int>*, kcont::bsd_level>;
D* dispatcher = nullptr;
count_kc* shared = nullptr;
std::atomic<int> calls{0};
std::atomic<int> deferred{0};
// The program's own handler, the defer_from_signal way.
void handler(int) {
  const int saved = errno;
  calls.fetch_add(1);
  if (kcont::defer_from_signal(*dispatcher, *shared, 0, 1) == kcont::run_result::deferred)
    deferred.fetch_add(1);
  errno = saved;
}
}  // namespace coexist
}  // namespace

// Living alongside defer_from_signal: the program's own handler for SIGUSR2
// defers a continuation to a thread_dispatcher (signal-safe policy) while
// the source watches SIGUSR1, whose knotes report to a kqueue and run a
// continuation deferred to the same dispatcher's thread. Every count exact:
// the handler runs once per raise, its continuation once per accepted
// deferral, the kqueue reports every SIGUSR1 and the deferred knote sees it.
TEST_CASE("signal_source.coexists_with_defer_from_signal") {
  const int n = static_cast<int>(kcont_test::sized(2000, 300));
  coexist::D d;
  std::atomic<int> shared_runs{0};
  coexist::count_kc shared{coexist::count_fn{}, &shared_runs, kcont::bsd_level::softnet};
  coexist::dispatcher = &d;
  coexist::shared = &shared;
  coexist::calls = 0;
  coexist::deferred = 0;
  scoped_action own(SIGUSR2, coexist::handler);
  scoped_action keep(SIGUSR1, SIG_IGN);

  kcont::signal_source sigs;
  kq_t kq{sigs};
  REQUIRE(add(kq, SIGUSR1) == 0);
  struct seen_t {
    std::int64_t total = 0;
    std::atomic<int> runs{0};
  } seen;
  kcont::kc on_signal{[](kcont::signal_source::knote_type* kn, seen_t*& s, kcont::knote_cause) {
                        s->total += kn->data;  // the dispatch waits for this run
                        kn->data = 0;
                        s->runs.fetch_add(1, std::memory_order_release);
                      },
                      &seen, kcont::bsd_level::softnet};
  kcont::knote<kcont::signal_filter<>> kn{kcont::signal_filter<>{sigs}, on_signal, SIGUSR1};
  REQUIRE(kn.attach() == 0);

  std::int64_t reported = 0;
  kcont::kevent out[4];
  for (int i = 0; i < n; ++i) {
    REQUIRE(::raise(SIGUSR1) == 0);
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(sigs.dispatch(d, kcont::bsd_level::softserial) == 2);
    while (seen.runs.load(std::memory_order_acquire) != i + 1) std::this_thread::yield();
    const std::size_t k = kq.scan(out);
    for (std::size_t j = 0; j < k; ++j) reported += out[j].data;
  }
  kcont_test::spin_until([&] { return shared_runs.load() == coexist::deferred.load(); });
  CHECK(reported == n);
  CHECK(seen.total == n);
  CHECK(coexist::calls.load() == n);
  CHECK(coexist::deferred.load() >= 1);
  CHECK(shared_runs.load() == coexist::deferred.load());
  CHECK((action_of(SIGUSR2).sa_handler == &coexist::handler));  // untouched
  (void)kn.detach(d);
  REQUIRE(del(kq, SIGUSR1) == 0);
}
