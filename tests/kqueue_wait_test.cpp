// The kqueue's blocking wait over its sources (kcont/detail/kqueue_wait.hpp):
// kevent() with no timeout sleeps in ONE system call (the fd_source's
// epoll_wait, or poll(2) with the poll backend) until a descriptor is ready,
// a signal arrives, a timer is due, another thread triggers a user event, or
// the timeout ends; the kqueue's native_handle() is readable while an event is pending
// (FreeBSD: a kqueue descriptor polls readable when kq_count > 0,
// kqueue_poll in sys/kern/kern_event.c). Timing checks are "at or after"
// only: no upper bounds.
#include <kcont/dispatcher.hpp>
#include <kcont/event_loop.hpp>
#include <kcont/kc.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/posix/fd_filters.hpp>
#include <kcont/posix/fd_source.hpp>
#include <kcont/posix/signal_source.hpp>
#include <kcont/timer_filter.hpp>
#include <kcont/timer_source.hpp>

#include <doctest/doctest.h>

#if defined(__linux__)

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using kcont::ev;
using kcont::filter_id;
using clk = std::chrono::steady_clock;

// An epoll backend that counts its waits: one per blocking kevent().
struct counting_backend : kcont::epoll_backend {
  static inline std::atomic<std::size_t> waits{0};
  int wait(kcont::fd_backend_event* out, int n, int timeout_ms) noexcept {
    waits.fetch_add(1, std::memory_order_relaxed);
    return epoll_backend::wait(out, n, timeout_ms);
  }
};

using epoll_src = kcont::basic_fd_source<kcont::epoll_backend>;
using poll_src = kcont::basic_fd_source<kcont::poll_backend>;
using count_src = kcont::basic_fd_source<counting_backend>;

template <class Src>
using kq_t = kcont::kqueue<kcont::filters<kcont::read_filter<Src>, kcont::write_filter<Src>,
                                          kcont::timer_filter<>, kcont::user_filter>>;

struct pipe_fds {
  int r = -1, w = -1;
  pipe_fds() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  pipe_fds(const pipe_fds&) = delete;
  pipe_fds& operator=(const pipe_fds&) = delete;
  ~pipe_fds() {
    ::close(r);
    ::close(w);
  }
  void put() const {
    const char c = 'x';
    REQUIRE(::write(w, &c, 1) == 1);
  }
  void take() const {
    char buf[64];
    while (::read(r, buf, sizeof buf) > 0) {
    }
  }
};

template <class KQ>
int add(KQ& kq, std::uintptr_t ident, filter_id f, ev flags, std::int64_t data = 0,
        std::uint32_t fflags = 0) {
  return kq.change({.ident = ident, .filter = f, .flags = ev::add | flags, .fflags = fflags,
                    .data = data});
}

template <class KQ>
int del(KQ& kq, std::uintptr_t ident, filter_id f) {
  return kq.change({.ident = ident, .filter = f, .flags = ev::delete_});
}

template <class KQ>
void trigger(KQ& kq, std::uintptr_t ident) {
  REQUIRE(kq.change({.ident = ident, .filter = filter_id::user,
                     .fflags = kcont::note::trigger}) == 0);
}

template <class KQ>
void await_sleeper(KQ& kq) {
  while (kq.waiting() == 0) std::this_thread::yield();
}

bool readable(int fd) {
  ::pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

}  // namespace

TEST_CASE_TEMPLATE("kqueue_wait.blocking_kevent_returns_when_a_pipe_becomes_readable", Src,
                   epoll_src, poll_src) {
  Src fds;
  kcont::timer_source timers;
  kq_t<Src> kq{fds, timers};
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  std::thread writer([&] {
    await_sleeper(kq);
    p.put();
  });
  kcont::kevent out[4];
  const auto r = kq.kevent({}, out, std::nullopt);
  writer.join();
  REQUIRE(r.ret == 1);
  CHECK(out[0].ident == static_cast<std::uintptr_t>(p.r));
  CHECK(out[0].filter == filter_id::read);
  CHECK(out[0].data == 1);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

TEST_CASE_TEMPLATE("kqueue_wait.blocking_kevent_returns_when_another_thread_triggers", Src,
                   epoll_src, poll_src) {
  Src fds;
  kcont::timer_source timers;
  kq_t<Src> kq{fds, timers};
  REQUIRE(add(kq, 7, filter_id::user, ev::clear) == 0);
  std::thread firer([&] {
    await_sleeper(kq);
    trigger(kq, 7);
  });
  kcont::kevent out[4];
  const auto r = kq.kevent({}, out, std::nullopt);
  firer.join();
  REQUIRE(r.ret == 1);
  CHECK(out[0].ident == 7);
  CHECK(out[0].filter == filter_id::user);
  CHECK(kq.wakeups() == 1);
}

// Nothing but a timer: the wait ends at its deadline (the earlier of the
// timeout and the next deadline), never before.
TEST_CASE_TEMPLATE("kqueue_wait.blocking_kevent_returns_when_a_timer_is_due", Src, epoll_src,
                   poll_src) {
  Src fds;
  kcont::timer_source timers;
  kq_t<Src> kq{fds, timers};
  const auto start = clk::now();
  REQUIRE(add(kq, 1, filter_id::timer, ev::oneshot, 30) == 0);  // 30 ms
  kcont::kevent out[4];
  const auto r = kq.kevent({}, out, std::nullopt);
  REQUIRE(r.ret == 1);
  CHECK(clk::now() - start >= 30ms);
  CHECK(out[0].ident == 1);
  CHECK(out[0].filter == filter_id::timer);
  CHECK(out[0].data == 1);
}

// A timer added by another thread while a scanner sleeps without limit:
// the change wakes it to re-read the next deadline.
TEST_CASE("kqueue_wait.timer_added_while_a_scanner_sleeps_is_waited_for") {
  epoll_src fds;
  kcont::timer_source timers;
  kq_t<epoll_src> kq{fds, timers};
  std::thread adder([&] {
    await_sleeper(kq);
    REQUIRE(add(kq, 2, filter_id::timer, ev::oneshot, 10) == 0);
  });
  kcont::kevent out[4];
  const auto r = kq.kevent({}, out, std::nullopt);
  adder.join();
  REQUIRE(r.ret == 1);
  CHECK(out[0].filter == filter_id::timer);
}

TEST_CASE_TEMPLATE("kqueue_wait.timeout_expires_with_nothing", Src, epoll_src, poll_src) {
  Src fds;
  kcont::timer_source timers;
  kq_t<Src> kq{fds, timers};
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::none) == 0);
  REQUIRE(add(kq, 3, filter_id::timer, ev::oneshot, 60'000) == 0);  // a minute away
  kcont::kevent out[4];
  const auto start = clk::now();
  const auto r = kq.kevent({}, out, 25ms);
  CHECK(r.ret == 0);
  CHECK(clk::now() - start >= 25ms);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// A zero-timeout kevent drives the sources once: a readable pipe is
// reported without anyone polling the fd_source first.
TEST_CASE("kqueue_wait.zero_timeout_kevent_reports_a_ready_descriptor") {
  epoll_src fds;
  kcont::timer_source timers;
  kq_t<epoll_src> kq{fds, timers};
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  kcont::kevent out[4];
  CHECK(kq.kevent({}, out).ret == 0);
  p.put();
  CHECK(kq.kevent({}, out).ret == 1);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// FreeBSD's kqueue_poll: the kqueue's descriptor polls readable while an
// event is pending, whoever made it pending.
TEST_CASE("kqueue_wait.native_handle_polls_readable_while_an_event_is_pending") {
  epoll_src fds;
  kcont::timer_source timers;
  kq_t<epoll_src> kq{fds, timers};
  REQUIRE(add(kq, 9, filter_id::user, ev::clear) == 0);
  const int h = kq.native_handle();
  REQUIRE(h >= 0);
  CHECK_FALSE(readable(h));
  std::thread firer([&] { trigger(kq, 9); });  // no scanner: a loop watches h
  firer.join();
  CHECK(readable(h));
  kcont::kevent out[4];
  CHECK(kq.kevent({}, out).ret == 1);
  CHECK(kq.kevent({}, out).ret == 0);  // nothing pending: the descriptor is reset
  CHECK_FALSE(readable(h));
  pipe_fds p;  // a descriptor becoming ready makes it readable too
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  p.put();
  CHECK(readable(h));
  CHECK(kq.kevent({}, out).ret == 1);
  CHECK(kq.kevent({}, out).ret == 0);
  CHECK_FALSE(readable(h));
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// One wake-up per empty-to-non-empty transition of the pending list (as
// kqueue.blocked_scanner_is_woken_once_per_empty_to_nonempty for the
// condition-variable wait), and one epoll_wait per blocking kevent.
// A level-triggered knote whose descriptor stays ready is pending at every
// scan, so no scan ever waits; every scan still looks at the descriptors
// once without blocking (one wait call) and fires the due timers, so a
// timer and a second descriptor are reported (by the scan after the look
// that found them) however long the first stays ready.
TEST_CASE_TEMPLATE("kqueue_wait.a_descriptor_that_stays_ready_starves_no_timer_and_no_other",
                   Src, epoll_src, poll_src, count_src) {
  Src fds;
  kcont::timer_source timers;
  kq_t<Src> kq{fds, timers};
  pipe_fds busy, late;
  busy.put();  // never drained
  REQUIRE(add(kq, static_cast<std::uintptr_t>(busy.r), filter_id::read, ev::none) == 0);
  REQUIRE(add(kq, static_cast<std::uintptr_t>(late.r), filter_id::read, ev::clear) == 0);
  // Before the add: the deadline is counted from the add, so a start taken
  // after it could be up to the add's duration late and the check below
  // could see a timer that fired on time as early.
  const auto start = clk::now();
  REQUIRE(add(kq, 9, filter_id::timer, ev::oneshot, 20) == 0);  // 20 ms
  bool timer_seen = false, late_seen = false;
  int scans = 0, busy_reports = 0, put_at = -1, late_at = -1;
  kcont::kevent out[4];
  while ((!timer_seen || !late_seen) && clk::now() - start < 10s) {
    const std::size_t waits_before = counting_backend::waits.load();
    const auto r = kq.kevent({}, out, std::nullopt);  // never sleeps: busy is pending
    if constexpr (std::is_same_v<Src, count_src>)
      CHECK(counting_backend::waits.load() - waits_before == 1);
    for (int i = 0; i < r.ret; ++i) {
      if (out[i].ident == static_cast<std::uintptr_t>(busy.r)) ++busy_reports;
      if (out[i].ident == static_cast<std::uintptr_t>(late.r) && !late_seen) {
        late_seen = true;
        late_at = scans;
      }
      if (out[i].filter == filter_id::timer) {
        CHECK(clk::now() - start >= 20ms);
        timer_seen = true;
      }
    }
    ++scans;
    if (busy_reports == 3 && put_at < 0) {
      late.put();
      put_at = scans;
    }
  }
  CHECK(timer_seen);
  CHECK(late_seen);
  CHECK(busy_reports == scans);  // reported by every scan
  CHECK(late_at - put_at <= 1);  // the next scan's look finds it, the one after reports it
  for (int fd : {busy.r, late.r})
    REQUIRE(del(kq, static_cast<std::uintptr_t>(fd), filter_id::read) == 0);
}

TEST_CASE("kqueue_wait.one_system_call_and_one_wake_per_blocking_kevent") {
  count_src fds;
  kcont::timer_source timers;
  kq_t<count_src> kq{fds, timers};
  constexpr std::uintptr_t knotes = 64;
  for (std::uintptr_t i = 0; i < knotes; ++i) REQUIRE(add(kq, i, filter_id::user, ev::clear) == 0);
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  kcont::kevent out[knotes + 1];
  constexpr std::uint64_t rounds = 20;
  for (std::uint64_t round = 1; round <= rounds; ++round) {
    const std::size_t waits_before = counting_backend::waits.load();
    std::thread firer([&] {
      await_sleeper(kq);
      for (std::uintptr_t i = 0; i < knotes; ++i) trigger(kq, i);
    });
    std::size_t n = kq.scan(out, std::nullopt);
    firer.join();
    CHECK(counting_backend::waits.load() - waits_before == 1);
    REQUIRE(n >= 1);
    n += kq.scan(out);  // what the first scan found no more
    CHECK(n == knotes);
    CHECK(kq.wakeups() == round);
  }
  // A descriptor's readiness fired by the sleeper's own wait wakes no one.
  const std::uint64_t wakes = kq.wakeups();
  for (int i = 0; i < 20; ++i) {
    const std::size_t waits_before = counting_backend::waits.load();
    std::thread writer([&] {
      await_sleeper(kq);
      p.put();
    });
    CHECK(kq.scan(out, std::nullopt) == 1);
    writer.join();
    CHECK(counting_backend::waits.load() - waits_before == 1);
    p.take();
  }
  CHECK(kq.wakeups() == wakes);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// Two blocked scanners: one sleeps in the source, the other on the
// condition variable; when the first returns, the second takes over the
// source, so a descriptor ready later still ends its wait.
TEST_CASE("kqueue_wait.second_scanner_takes_over_the_source") {
  epoll_src fds;
  kcont::timer_source timers;
  kq_t<epoll_src> kq{fds, timers};
  pipe_fds a, b;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(a.r), filter_id::read, ev::clear) == 0);
  REQUIRE(add(kq, static_cast<std::uintptr_t>(b.r), filter_id::read, ev::clear) == 0);
  std::atomic<int> done{0};
  std::uintptr_t got[2] = {0, 0};
  auto scanner = [&](int i) {
    kcont::kevent out[1];
    REQUIRE(kq.kevent({}, out, std::nullopt).ret == 1);
    got[i] = out[0].ident;
    done.fetch_add(1);
  };
  std::thread s0(scanner, 0), s1(scanner, 1);
  while (kq.waiting() != 2) std::this_thread::yield();
  a.put();
  while (done.load() == 0) std::this_thread::yield();
  b.put();
  s0.join();
  s1.join();
  CHECK(got[0] + got[1] == static_cast<std::uintptr_t>(a.r + b.r));
  CHECK(got[0] != got[1]);
  for (int fd : {a.r, b.r})
    REQUIRE(del(kq, static_cast<std::uintptr_t>(fd), filter_id::read) == 0);
}

// Zero allocations per event in the steady state: blocking kevents woken by
// a descriptor, a user trigger and a timer.
TEST_CASE("kqueue_wait.no_allocation_per_event") {
  epoll_src fds;
  kcont::timer_source timers;
  timers.reserve(4);
  kq_t<epoll_src> kq{fds, timers};
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  REQUIRE(add(kq, 5, filter_id::user, ev::clear) == 0);
  REQUIRE(add(kq, 6, filter_id::timer, ev::none, 1) == 0);  // every millisecond
  kcont::kevent out[4];
  auto round = [&] {
    p.put();
    trigger(kq, 5);
    std::size_t seen = 0;
    bool timer = false;
    while (seen < 2 || !timer) {
      const auto r = kq.kevent({}, out, std::nullopt);
      for (int i = 0; i < r.ret; ++i) {
        if (out[i].filter == filter_id::timer)
          timer = true;
        else
          ++seen;
      }
    }
    p.take();
  };
  round();
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 50; ++i) round();
  CHECK(scope.count() == 0);
  REQUIRE(del(kq, 6, filter_id::timer) == 0);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// A source with a descriptor of its own (as a signalfd would be) plugs into
// the same one wait: it attaches a read knote on its descriptor to the
// fd_source, whose continuation drains the descriptor and fires the source's
// klist. The kqueue's blocking scan then still sleeps in ONE epoll_wait.
namespace {
struct own_fd_source {
  int fd;
  kcont::event_source* rx;
};
struct drain_and_post {
  void operator()(kcont::knote_base<std::uint32_t>*, own_fd_source& s,
                  kcont::knote_cause) const {
    std::uint64_t v = 0;
    while (::read(s.fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v))
      (void)s.rx->post(1);
  }
};
}  // namespace

TEST_CASE("kqueue_wait.a_source_with_its_own_descriptor_plugs_into_the_one_wait") {
  count_src fds;
  kcont::event_source rx;
  kcont::timer_source timers;
  kcont::kqueue<kcont::filters<kcont::read_filter<count_src>, kcont::timer_filter<>,
                               kcont::counting_filter<filter_id{1}>, kcont::user_filter>>
      kq{fds, timers, rx};
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  REQUIRE(efd >= 0);
  kcont::kc k{drain_and_post{}, own_fd_source{efd, &rx}, kcont::bsd_level::immediate};
  kcont::knote<kcont::read_filter<count_src>> watch{kcont::read_filter<count_src>{fds}, k,
                                                    static_cast<std::uintptr_t>(efd)};
  REQUIRE(watch.attach() == 0);
  REQUIRE(kq.change({.ident = 0, .filter = filter_id{1}, .flags = ev::add | ev::clear}) == 0);
  for (int round = 0; round < 10; ++round) {
    const std::size_t waits_before = counting_backend::waits.load();
    std::thread sender([&] {
      await_sleeper(kq);
      const std::uint64_t one = 1;
      REQUIRE(::write(efd, &one, sizeof one) == static_cast<ssize_t>(sizeof one));
    });
    kcont::kevent out[2];
    const auto r = kq.kevent({}, out, std::nullopt);
    sender.join();
    REQUIRE(r.ret == 1);
    CHECK(out[0].filter == filter_id{1});
    CHECK(out[0].data == 1);
    CHECK(counting_backend::waits.load() - waits_before == 1);
  }
  (void)watch.detach();
  ::close(efd);
}

// --- signals: the signal_source's deliveries end the same one wait ---------
//
// A kqueue whose contexts include a signal_source (a ready source,
// kcont/detail/kqueue_wait.hpp) has its fd_source watch the signal source's
// descriptor: a blocking kevent() sleeps in ONE epoll_wait (or poll) that a
// signal ends, and the same kevent() reports the signal knotes (data =
// deliveries since the last report: kqueue(2)). Before, nothing dispatched
// the source but the program's own sigs.poll(). Each test ends a wait the
// signal failed to end with a user trigger (`rescue`), so that it fails
// instead of hanging.

namespace {

template <class Src>
using sig_kq_t =
    kcont::kqueue<kcont::filters<kcont::read_filter<Src>, kcont::write_filter<Src>,
                                 kcont::signal_filter<>, kcont::timer_filter<>,
                                 kcont::user_filter>>;

constexpr std::uintptr_t rescue_ident = 99;

// Sets sig's action to SIG_IGN while alive (a stray delivery after the
// knote's removal must not end the test), then restores the one before.
struct ignore_signal {
  int sig;
  struct sigaction old {};
  explicit ignore_signal(int s) : sig(s) {
    struct sigaction sa {};
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(sig, &sa, &old) == 0);
  }
  ignore_signal(const ignore_signal&) = delete;
  ignore_signal& operator=(const ignore_signal&) = delete;
  ~ignore_signal() { (void)::sigaction(sig, &old, nullptr); }
};

template <class KQ>
int add_signal(KQ& kq, int sig) {
  return kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                    .flags = ev::add});
}
template <class KQ>
int del_signal(KQ& kq, int sig) {
  return del(kq, static_cast<std::uintptr_t>(sig), filter_id::signal);
}

// After `send`, waits up to 5 s for `returned`; then triggers the rescue
// user event, so that a scan the signal did not wake returns (and fails).
template <class KQ, class Send>
std::thread sender(KQ& kq, std::atomic<bool>& returned, Send send) {
  return std::thread([&kq, &returned, send] {
    await_sleeper(kq);
    send();
    const auto give_up = clk::now() + 5s;
    while (!returned.load() && clk::now() < give_up) std::this_thread::sleep_for(1ms);
    if (!returned.load()) trigger(kq, rescue_ident);
  });
}

}  // namespace

// The signal comes to the sleeping thread itself (pthread_kill: its handler
// interrupts epoll_wait or poll with EINTR, a wake, not an error) or to the
// process from another thread (kill: any thread's handler, the descriptor
// ends the wait); either way the kevent() that slept without limit reports
// it, with data 1 per delivery, and waits again afterwards.
TEST_CASE_TEMPLATE("kqueue_wait.blocking_kevent_returns_when_a_signal_arrives", Src, epoll_src,
                   poll_src) {
  ignore_signal keep(SIGUSR1);
  Src fds;
  kcont::signal_source sigs;
  kcont::timer_source timers;
  sig_kq_t<Src> kq{fds, sigs, timers};
  REQUIRE(add(kq, rescue_ident, filter_id::user, ev::clear) == 0);
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  const pthread_t me = ::pthread_self();
  for (int round = 0; round < 6; ++round) {
    std::atomic<bool> returned{false};
    std::thread t = sender(kq, returned, [round, me] {
      if (round % 2 == 0)
        REQUIRE(::pthread_kill(me, SIGUSR1) == 0);
      else
        REQUIRE(::kill(::getpid(), SIGUSR1) == 0);
    });
    kcont::kevent out[4];
    const auto r = kq.kevent({}, out, std::nullopt);
    returned.store(true);
    t.join();
    REQUIRE(r.ret == 1);
    CHECK(out[0].ident == static_cast<std::uintptr_t>(SIGUSR1));
    CHECK(out[0].filter == filter_id::signal);
    CHECK(out[0].data == 1);
  }
  // Three deliveries while the scanner sleeps (raise: each one handled
  // before it returns): the reports add up to three.
  std::atomic<bool> returned{false};
  std::thread t = sender(kq, returned, [] {
    for (int i = 0; i < 3; ++i) REQUIRE(::raise(SIGUSR1) == 0);
  });
  std::int64_t total = 0;
  kcont::kevent out[4];
  while (total < 3) {
    const auto r = kq.kevent({}, out, 2s);
    if (r.ret == 0) break;
    for (int i = 0; i < r.ret; ++i)
      if (out[i].filter == filter_id::signal) total += out[i].data;
  }
  returned.store(true);
  t.join();
  CHECK(total == 3);
  CHECK(kq.kevent({}, out, 0ms).ret == 0);
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
}

// A kqueue with a signal source but no fd_source sleeps in the signal
// source's poll(2), which a signal and another thread's trigger both end.
TEST_CASE("kqueue_wait.without_fd_source_the_signal_source_is_the_wait") {
  ignore_signal keep(SIGUSR1);
  kcont::signal_source sigs;
  kcont::timer_source timers;
  kcont::kqueue<kcont::filters<kcont::signal_filter<>, kcont::timer_filter<>, kcont::user_filter>>
      kq{sigs, timers};
  REQUIRE(add(kq, rescue_ident, filter_id::user, ev::clear) == 0);
  REQUIRE(add(kq, 3, filter_id::user, ev::clear) == 0);
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  const pthread_t me = ::pthread_self();
  kcont::kevent out[4];
  for (int round = 0; round < 4; ++round) {
    std::atomic<bool> returned{false};
    std::thread t = sender(kq, returned, [me, round] {
      REQUIRE((round % 2 == 0 ? ::pthread_kill(me, SIGUSR1) : ::raise(SIGUSR1)) == 0);
    });
    const auto r = kq.kevent({}, out, std::nullopt);
    returned.store(true);
    t.join();
    REQUIRE(r.ret == 1);
    CHECK(out[0].filter == filter_id::signal);
    CHECK(out[0].data == 1);
  }
  std::thread t([&] {
    await_sleeper(kq);
    trigger(kq, 3);
  });
  const auto r = kq.kevent({}, out, std::nullopt);
  t.join();
  REQUIRE(r.ret == 1);
  CHECK(out[0].ident == 3);
  // A timer is waited for too.
  REQUIRE(add(kq, 4, filter_id::timer, ev::oneshot, 5) == 0);
  const auto rt = kq.kevent({}, out, std::nullopt);
  REQUIRE(rt.ret == 1);
  CHECK(out[0].filter == filter_id::timer);
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
}

// With signals among the contexts the blocking kevent still sleeps in ONE
// system call of the fd_source (its epoll_wait watches the signal source's
// descriptor): one wait per kevent that a signal ends.
TEST_CASE("kqueue_wait.one_system_call_per_blocking_kevent_with_signals") {
  ignore_signal keep(SIGUSR1);
  count_src fds;
  kcont::signal_source sigs;
  kcont::timer_source timers;
  sig_kq_t<count_src> kq{fds, sigs, timers};
  REQUIRE(add(kq, rescue_ident, filter_id::user, ev::clear) == 0);
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  kcont::kevent out[4];
  for (int round = 0; round < 10; ++round) {
    const std::size_t waits_before = counting_backend::waits.load();
    std::atomic<bool> returned{false};
    std::thread t = sender(kq, returned, [] { REQUIRE(::raise(SIGUSR1) == 0); });
    const auto r = kq.kevent({}, out, std::nullopt);
    returned.store(true);
    t.join();
    CHECK(counting_backend::waits.load() - waits_before == 1);
    REQUIRE(r.ret == 1);
    CHECK(out[0].filter == filter_id::signal);
    CHECK(out[0].data == 1);
  }
  // A descriptor still ends the same one wait.
  const std::size_t waits_before = counting_backend::waits.load();
  std::thread writer([&] {
    await_sleeper(kq);
    p.put();
  });
  CHECK(kq.kevent({}, out, std::nullopt).ret == 1);
  writer.join();
  CHECK(counting_backend::waits.load() - waits_before == 1);
  CHECK(out[0].filter == filter_id::read);
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

// A storm through the blocking kevent: several threads each raise()
// SIGUSR1 `per` times (raise in an unblocked thread runs the handler before
// it returns: each raise is one delivery, nothing merges) while the
// scanner sleeps in kevent() without limit; the reports add up exactly.
TEST_CASE("kqueue_wait.signal_storm_through_the_blocking_kevent_counts_every_raise") {
  ignore_signal keep(SIGUSR1);
  constexpr int threads = 4;
  constexpr int per = 2000;
  epoll_src fds;
  kcont::signal_source sigs;
  kcont::timer_source timers;
  sig_kq_t<epoll_src> kq{fds, sigs, timers};
  constexpr std::uintptr_t done_ident = 7;
  REQUIRE(add(kq, done_ident, filter_id::user, ev::clear) == 0);
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  std::thread finisher([&] {
    await_sleeper(kq);
    std::vector<std::thread> raisers;
    for (int t = 0; t < threads; ++t)
      raisers.emplace_back([] {
        for (int i = 0; i < per; ++i) (void)::raise(SIGUSR1);
      });
    for (auto& r : raisers) r.join();
    trigger(kq, done_ident);
  });
  std::int64_t total = 0;
  bool done = false;
  kcont::kevent out[4];
  std::size_t scans = 0;
  while (!done) {
    const auto r = kq.kevent({}, out, std::nullopt);
    ++scans;
    for (int i = 0; i < r.ret; ++i) {
      if (out[i].filter == filter_id::signal) total += out[i].data;
      if (out[i].filter == filter_id::user) done = true;
    }
  }
  finisher.join();
  // What the deliveries after the last report left: one more look.
  const auto r = kq.kevent({}, out, 0ms);
  for (int i = 0; i < r.ret; ++i)
    if (out[i].filter == filter_id::signal) total += out[i].data;
  CHECK(total == std::int64_t{threads} * per);
  CHECK(scans >= 1);
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
}

// Zero allocations per signal event through the kqueue's wait: a delivery
// (raise on this thread: handled before it returns) then a blocking kevent
// whose epoll_wait finds the signal source's descriptor readable.
TEST_CASE("kqueue_wait.no_allocation_per_signal_event") {
  ignore_signal keep(SIGUSR1);
  epoll_src fds;
  kcont::signal_source sigs;
  kcont::timer_source timers;
  sig_kq_t<epoll_src> kq{fds, sigs, timers};
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  kcont::kevent out[4];
  auto round = [&] {
    REQUIRE(::raise(SIGUSR1) == 0);
    REQUIRE(::raise(SIGUSR1) == 0);
    const auto r = kq.kevent({}, out, 5s);
    REQUIRE(r.ret == 1);
    CHECK(out[0].data == 2);
  };
  round();
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 100; ++i) round();
  CHECK(scope.count() == 0);
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
}

// --- event_loop: the dispatcher's levels and the kqueue in one thread ------

namespace {

using loop_kq = kq_t<epoll_src>;
using loop_dispatcher =
    kcont::manual_dispatcher<kcont::bsd_level, std::mutex, kcont::kqueue_schedule<loop_kq>>;
using loop_t = kcont::event_loop<loop_kq, loop_dispatcher>;

struct stop_env {
  loop_t* loop = nullptr;
  std::atomic<int>* ran = nullptr;
  std::thread::id* on = nullptr;
};
struct count_and_stop {
  void operator()(int, stop_env& e, int) const {
    e.ran->fetch_add(1);
    *e.on = std::this_thread::get_id();
    e.loop->stop();
  }
};

}  // namespace

// Work deferred to the dispatcher by another thread while the loop sleeps
// in kevent() wakes it (kqueue_schedule's user event) and runs at its level
// on the loop's thread; the loop's own wake-up never reaches the handler.
TEST_CASE("event_loop.runs_work_deferred_by_another_thread_while_it_sleeps") {
  epoll_src fds;
  kcont::timer_source timers;
  loop_kq kq{fds, timers};
  loop_dispatcher d{kcont::kqueue_schedule<loop_kq>{&kq}};
  loop_t loop{kq, d};
  std::atomic<int> ran{0};
  std::thread::id ran_on;
  kcont::kc k{count_and_stop{}, stop_env{&loop, &ran, &ran_on}, kcont::bsd_level::softnet};
  std::thread poster([&] {
    await_sleeper(kq);
    REQUIRE(kcont::defer(d, k, 0, 0) == kcont::run_result::deferred);
  });
  int handled = 0;
  (void)loop.run([&](const loop_kq::kevent_type&) { ++handled; });
  poster.join();
  CHECK(ran.load() == 1);
  CHECK(ran_on == std::this_thread::get_id());
  CHECK(handled == 0);
  CHECK_FALSE(d.has_work(kcont::bsd_level::softnet));
}

// Events go to the handler: a readable pipe and a due timer, in one loop.
TEST_CASE("event_loop.hands_descriptor_and_timer_events_to_the_handler") {
  epoll_src fds;
  kcont::timer_source timers;
  loop_kq kq{fds, timers};
  loop_dispatcher d{kcont::kqueue_schedule<loop_kq>{&kq}};
  pipe_fds p;
  REQUIRE(add(kq, static_cast<std::uintptr_t>(p.r), filter_id::read, ev::clear) == 0);
  REQUIRE(add(kq, 4, filter_id::timer, ev::oneshot, 5) == 0);
  {
    loop_t loop{kq, d};
    p.put();
    bool pipe_seen = false, timer_seen = false;
    const auto work = loop.run([&](const loop_kq::kevent_type& e) {
      if (e.filter == filter_id::read) pipe_seen = true;
      if (e.filter == filter_id::timer) timer_seen = true;
      if (pipe_seen && timer_seen) loop.stop();
    });
    CHECK(work == 2);
    CHECK(pipe_seen);
    CHECK(timer_seen);
  }
  CHECK(kq.size() == 1);  // the loop's user event is gone with it
  REQUIRE(del(kq, static_cast<std::uintptr_t>(p.r), filter_id::read) == 0);
}

TEST_CASE("event_loop.stop_from_another_thread_ends_run") {
  epoll_src fds;
  kcont::timer_source timers;
  loop_kq kq{fds, timers};
  loop_dispatcher d{kcont::kqueue_schedule<loop_kq>{&kq}};
  loop_t loop{kq, d};
  std::thread stopper([&] {
    await_sleeper(kq);
    loop.stop();
  });
  CHECK(loop.run([](const loop_kq::kevent_type&) {}) == 0);
  stopper.join();
  // run may be called again: a round with a timeout ends empty.
  CHECK(loop.run_once([](const loop_kq::kevent_type&) {}, 1ms) == 0);
}

// An event_loop over {fds, sigs, timers}: a signal raised by another thread
// while the loop sleeps in kevent() reaches the handler (data 1), on the
// loop's thread, with no plumbing of the program's own.
TEST_CASE("event_loop.handles_a_signal_over_fds_sigs_and_timers") {
  using sig_loop_kq = sig_kq_t<epoll_src>;
  using sig_dispatcher =
      kcont::manual_dispatcher<kcont::bsd_level, std::mutex, kcont::kqueue_schedule<sig_loop_kq>>;
  ignore_signal keep(SIGUSR1);
  epoll_src fds;
  kcont::signal_source sigs;
  kcont::timer_source timers;
  sig_loop_kq kq{fds, sigs, timers};
  sig_dispatcher d{kcont::kqueue_schedule<sig_loop_kq>{&kq}};
  REQUIRE(add_signal(kq, SIGUSR1) == 0);
  REQUIRE(add(kq, rescue_ident, filter_id::user, ev::clear) == 0);
  {
    kcont::event_loop<sig_loop_kq, sig_dispatcher> loop{kq, d};
    std::atomic<bool> returned{false};
    std::thread t = sender(kq, returned, [] { REQUIRE(::raise(SIGUSR1) == 0); });
    std::int64_t data = 0;
    bool rescued = false;
    std::thread::id on;
    (void)loop.run([&](const sig_loop_kq::kevent_type& e) {
      if (e.filter == filter_id::signal && e.ident == static_cast<std::uintptr_t>(SIGUSR1)) {
        data += e.data;
        on = std::this_thread::get_id();
      }
      if (e.filter == filter_id::user && e.ident == rescue_ident) rescued = true;
      loop.stop();
    });
    returned.store(true);
    t.join();
    CHECK_FALSE(rescued);
    CHECK(data == 1);
    CHECK(on == std::this_thread::get_id());
  }
  REQUIRE(del_signal(kq, SIGUSR1) == 0);
}

#endif  // __linux__
