// Case I: echo round trips over loopback TCP, a kcont server loop next to a
// hand-written epoll loop, the same client for both.
//
// One iteration: each of C connections (C = 1 or 64) sends a 64-byte message,
// then the client reads every reply and compares it byte for byte. The
// benchmark thread is the client (blocking sockets); the server runs on a
// thread of its own. Real time per round trip (items = C per iteration).
// Loopback TCP, not socketpairs: the measure is a TCP server, and a
// socketpair's write wakes the reader with far less work in the kernel, which
// would magnify the user-space share of a round trip beyond what a server sees.
// The connections are made and accepted before the timed loop (an accept
// per connection is not what is measured); the server-side sockets are
// non-blocking with TCP_NODELAY, as the client's.
//
//   BM_Echo_RawEpoll/C    the floor: epoll_wait over the C sockets, each
//                         registered EPOLLIN | EPOLLET; per ready socket recv
//                         until EAGAIN, each chunk sent back at once
//   BM_Echo_KcontLoop/C   examples/tcp_echo.cpp's shape (idle timers left out,
//                         as the floor has none): an event_loop over a
//                         kqueue<read_filter, user_filter> on an fd_source;
//                         per connection a plain knote<read_filter<>> whose
//                         continuation (softnet) reads the knote's data count
//                         (bytes readable) and asks for a flush at process
//                         level, deferred to the loop's manual_dispatcher
//                         (kqueue_schedule); the loop's drain sends
//   BM_Echo_KcontLoopUntilEagain/C  the same, reading until EAGAIN as the
//                         floor and tcp_echo do (the filter's FIONREAD unused)
//   BM_Echo_KcontKqueue/C the kqueue(2) way: a read knote per socket in the
//                         kqueue (ev::clear), the loop's handler reads e.data
//                         bytes and sends them back
//
// Counters: server_cpu_ns_per_reply, the server thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID) over the timed loop per reply; allocs_per_item
// (process-wide: client and server) from item_check.
#include <kcont/event_loop.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/posix.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::ev;
using kcont::filter_id;

constexpr std::size_t message = 64;
constexpr std::size_t buffer = 4096;  // one recv, on both servers

// C connected pairs over 127.0.0.1: client ends blocking (with a receive
// timeout, so a lost reply fails the run instead of hanging it), server ends
// non-blocking; TCP_NODELAY on both.
struct connections {
  std::vector<int> client, server;
  bool ok = true;

  explicit connections(std::size_t n) {
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ok = ::bind(lfd, reinterpret_cast<sockaddr*>(&a), len) == 0 && ::listen(lfd, 128) == 0 &&
         ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    const int on = 1;
    const timeval limit{10, 0};
    for (std::size_t i = 0; ok && i < n; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ok = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      const int s = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      ok = ok && s >= 0;
      (void)::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
      (void)::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      (void)::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
      client.push_back(c);
      server.push_back(s);
    }
    ::close(lfd);
  }
  connections(const connections&) = delete;
  connections& operator=(const connections&) = delete;
  ~connections() {
    for (int fd : client) ::close(fd);
  }
};

// The client, the same for every server: one round = every connection sends
// its message (connection i's starts with i), then every reply is read and
// compared. Returns false on a short or wrong reply.
struct client {
  std::vector<std::array<char, message>> sent;
  kcont_bench::tally t;

  explicit client(std::size_t n) : sent(n) {
    for (std::size_t i = 0; i < n; ++i) {
      std::memset(sent[i].data(), static_cast<int>('a' + i % 26), message);
      std::memcpy(sent[i].data(), &i, sizeof i);
    }
  }
  bool round(const std::vector<int>& fds) {
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (::send(fds[i], sent[i].data(), message, MSG_NOSIGNAL) != static_cast<ssize_t>(message))
        return false;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      char got[message];
      for (std::size_t have = 0; have < message;) {
        const ssize_t n = ::recv(fds[i], got + have, message - have, 0);
        if (n <= 0) return false;
        have += static_cast<std::size_t>(n);
      }
      if (std::memcmp(got, sent[i].data(), message) != 0) return false;
      ++t.count;
      t.sum += i;
    }
    return true;
  }
};

// Reads fd until EAGAIN, sending each chunk back (what an edge-triggered
// loop that does not know how much is readable must do). Returns false when
// the peer is gone.
bool echo_ready(int fd) {
  char buf[buffer];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (::send(fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) return false;
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
  }
}

// Reads `count` bytes (a knote's data: what is readable), sending each chunk
// back.
void echo_count(int fd, std::size_t count) {
  char buf[buffer];
  while (count > 0) {
    const ssize_t n = ::recv(fd, buf, std::min(count, sizeof buf), 0);
    if (n <= 0 || ::send(fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) return;
    count -= static_cast<std::size_t>(n);
  }
}

// The server threads' name, for a profiler (perf report --comm echo-server).
void name_server_thread() { (void)::pthread_setname_np(::pthread_self(), "echo-server"); }

// --- the floor: a raw epoll loop ---------------------------------------------
class raw_epoll_server {
 public:
  explicit raw_epoll_server(const std::vector<int>& fds)
      : fds_(fds),
        ep_(::epoll_create1(EPOLL_CLOEXEC)),
        stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = stop_;
    (void)::epoll_ctl(ep_, EPOLL_CTL_ADD, stop_, &e);
    for (int fd : fds) {
      e.events = EPOLLIN | EPOLLET;
      e.data.fd = fd;
      (void)::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e);
    }
    thread_ = std::thread([this] {
      name_server_thread();
      run();
    });
  }
  ~raw_epoll_server() {
    const std::uint64_t one = 1;
    (void)!::write(stop_, &one, sizeof one);
    thread_.join();
    for (int fd : fds_) ::close(fd);
    ::close(stop_);
    ::close(ep_);
  }
  std::thread& thread() noexcept { return thread_; }

 private:
  void run() {
    epoll_event evs[64];
    for (;;) {
      const int n = ::epoll_wait(ep_, evs, 64, -1);
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.fd == stop_) return;
        (void)echo_ready(evs[i].data.fd);
      }
    }
  }
  std::vector<int> fds_;
  int ep_, stop_;
  std::thread thread_;
};

// --- kcont: tcp_echo's shape -----------------------------------------------
using loop_kq = kcont::kqueue<kcont::filters<kcont::read_filter<>, kcont::user_filter>>;
using loop_levels =
    kcont::manual_dispatcher<bsd_level, kcont::no_lock, kcont::kqueue_schedule<loop_kq>>;

// ReadCount: read the knote's data count (true), or until EAGAIN as the floor
// and examples/tcp_echo.cpp do (false).
template <bool ReadCount>
class kcont_loop_server {
 public:
  explicit kcont_loop_server(const std::vector<int>& fds) {
    for (int fd : fds) conns_.push_back(std::make_unique<conn>(*this, fd));
    for (auto& c : conns_) (void)c->rd.attach();
    thread_ = std::thread([this] {
      name_server_thread();
      loop_.run([](const loop_kq::kevent_type&) {});
    });
  }
  ~kcont_loop_server() {
    loop_.stop();
    thread_.join();
    (void)levels_.drain_all();
    for (auto& c : conns_) {  // detached before closed: the contract
      (void)c->rd.detach();
      (void)fds_.close(c->fd);
    }
  }
  std::thread& thread() noexcept { return thread_; }

 private:
  struct conn {
    conn(kcont_loop_server& s, int d) : srv(s), fd(d) {}
    // softnet: read what came, defer the reply to process level. The
    // filter has just set data = the bytes readable (FIONREAD): reading that
    // much needs no recv that ends in EAGAIN (bytes arriving later are a new
    // edge, a new event).
    void on_ready(kcont::fd_source::knote_type* kn, kcont::knote_cause) {
      auto want = ReadCount ? static_cast<std::size_t>(kn->snapshot().data) : SIZE_MAX;
      while (want > 0) {
        if (len == buffer) flush();  // full (never with 64-byte messages)
        const ssize_t n = ::recv(fd, buf + len, std::min(want, buffer - len), 0);
        if (n <= 0) break;
        len += static_cast<std::size_t>(n);
        want -= static_cast<std::size_t>(n);
      }
      (void)kcont::run(srv.levels_, flush_kc, 0, 0, bsd_level::softnet);
    }
    void flush() {
      if (len != 0 && ::send(fd, buf, len, MSG_NOSIGNAL) == static_cast<ssize_t>(len)) len = 0;
    }
    kcont_loop_server& srv;
    const int fd;
    std::size_t len = 0;
    char buf[buffer];
    kcont::kc<kcont::method_fn<&conn::on_ready>, conn*, bsd_level> ready_kc{
        kcont::method<&conn::on_ready>, this, bsd_level::softnet};
    kcont::kc<kcont::method_fn<&conn::flush>, conn*, bsd_level, int, int> flush_kc{
        kcont::method<&conn::flush>, this, bsd_level::process};
    kcont::knote<kcont::read_filter<>> rd{kcont::read_filter<>{srv.fds_}, ready_kc,
                                          static_cast<std::uintptr_t>(fd)};
  };

  kcont::fd_source fds_;
  loop_kq kq_{fds_};
  loop_levels levels_{kcont::kqueue_schedule<loop_kq>{&kq_}};
  kcont::event_loop<loop_kq, loop_levels> loop_{kq_, levels_};
  std::vector<std::unique_ptr<conn>> conns_;
  std::thread thread_;
};

// --- kcont: the kqueue(2) way ----------------------------------------------
class kcont_kqueue_server {
 public:
  explicit kcont_kqueue_server(const std::vector<int>& fds) : fdv_(fds) {
    for (int fd : fds)
      (void)kq_.change({.ident = static_cast<std::uintptr_t>(fd), .filter = filter_id::read,
                        .flags = ev::add | ev::clear});
    thread_ = std::thread([this] {
      name_server_thread();
      loop_.run([](const loop_kq::kevent_type& e) {
        echo_count(static_cast<int>(e.ident), static_cast<std::size_t>(e.data));
      });
    });
  }
  ~kcont_kqueue_server() {
    loop_.stop();
    thread_.join();
    for (int fd : fdv_) {
      (void)kq_.change({.ident = static_cast<std::uintptr_t>(fd), .filter = filter_id::read,
                        .flags = ev::delete_});
      (void)fds_.close(fd);
    }
  }
  std::thread& thread() noexcept { return thread_; }

 private:
  std::vector<int> fdv_;
  kcont::fd_source fds_;
  loop_kq kq_{fds_};
  loop_levels levels_{kcont::kqueue_schedule<loop_kq>{&kq_}};
  kcont::event_loop<loop_kq, loop_levels> loop_{kq_, levels_};
  std::thread thread_;
};

// The server thread's CPU time so far, in ns.
double thread_cpu_ns(std::thread& t) {
  clockid_t id{};
  timespec ts{};
  if (::pthread_getcpuclockid(t.native_handle(), &id) != 0 || ::clock_gettime(id, &ts) != 0)
    return 0.0;
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

template <class Server>
void echo(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  connections conns(n);
  if (!conns.ok) {
    state.SkipWithError("could not connect over 127.0.0.1");
    return;
  }
  client cl(n);
  bool ok = true;
  double cpu = 0;
  std::uint64_t rounds = 0;
  {
    Server srv(conns.server);
    ok = cl.round(conns.client);  // warm-up: the server thread is up and running
    cl.t = {};
    kcont_bench::item_check check(state);
    const double cpu0 = thread_cpu_ns(srv.thread());
    for (auto _ : state) {
      if (!cl.round(conns.client)) {
        ok = false;
        break;
      }
      ++rounds;
    }
    cpu = thread_cpu_ns(srv.thread()) - cpu0;
    if (ok) check.finish(rounds * n, cl.t, kcont_bench::expected_sum(rounds, n, 0));
  }  // the server stops and closes its ends
  if (!ok) {
    state.SkipWithError("a reply was short, wrong or late (10 s)");
    return;
  }
  state.counters["server_cpu_ns_per_reply"] =
      rounds == 0 ? 0.0 : cpu / static_cast<double>(rounds * n);
}

void BM_Echo_RawEpoll(benchmark::State& state) { echo<raw_epoll_server>(state); }
void BM_Echo_KcontLoop(benchmark::State& state) { echo<kcont_loop_server<true>>(state); }
void BM_Echo_KcontLoopUntilEagain(benchmark::State& state) {
  echo<kcont_loop_server<false>>(state);
}
void BM_Echo_KcontKqueue(benchmark::State& state) { echo<kcont_kqueue_server>(state); }
BENCHMARK(BM_Echo_RawEpoll)->Arg(1)->Arg(64)->UseRealTime()->Apply(kcont_bench::register_case);
BENCHMARK(BM_Echo_KcontLoop)->Arg(1)->Arg(64)->UseRealTime()->Apply(kcont_bench::register_case);
BENCHMARK(BM_Echo_KcontLoopUntilEagain)
    ->Arg(1)
    ->Arg(64)
    ->UseRealTime()
    ->Apply(kcont_bench::register_case);
BENCHMARK(BM_Echo_KcontKqueue)->Arg(1)->Arg(64)->UseRealTime()->Apply(kcont_bench::register_case);

}  // namespace
