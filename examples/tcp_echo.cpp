// tcp_echo: a one-thread TCP echo server on 127.0.0.1, and a tour of kcont.
//
//   tcp_echo [--port P] [--idle-ms MS] [--max-clients N]
//
// Prints "listening on 127.0.0.1:PORT" first, echoes every byte, closes
// connections idle for MS ms (default 300), refuses more than N open ones;
// on SIGINT or SIGTERM prints its totals and exits. tests/tcp_echo_test.py
// drives it. One thread, one blocking system call per round (kevent():
// epoll_wait until a descriptor is ready or the next timer is due):
//   listener readable  kqueue read knote (ev::clear)  -> the loop's handler accepts
//   connection ready   plain knote<read_filter<>>     -> conn::on_ready at softnet:
//                                                        reads, asks for a flush
//   idle timer due     plain knote<timer_filter<>>    -> conn::on_idle at softclock:
//                                                        asks for a flush
//   SIGINT, SIGTERM    kqueue signal knotes           -> the handler stops the loop
//   then, between waits, the loop drains the dispatcher's levels: conn::flush
//   runs at process level, sends the replies and closes ended connections.
//
// The listener goes through the kqueue (an event handed to a handler, the
// kqueue(2) way); a connection does not: its knotes run their own
// continuations inside the wait, nothing is queued per event and nothing
// looks the connection up (the kqueue is one continuation among many). A
// monitor thread watches a second kqueue counting what the server posts:
// however many posts, one report per ~100 ms (rule 7: queued once).
#include <kcont/event_loop.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/posix.hpp>
#include <kcont/timer_filter.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

using kcont::bsd_level;
using kcont::ev;
using kcont::filter_id;
using namespace std::chrono_literals;

namespace {

using kq_t = kcont::kqueue<kcont::filters<kcont::read_filter<>, kcont::timer_filter<>,
                                          kcont::signal_filter<>, kcont::user_filter>>;
// The levels the loop drains between waits. One thread defers, so no lock;
// kqueue_schedule makes a deferral wake the loop's kevent() (a plain knote's
// continuation runs inside it, and the kqueue would otherwise sleep on).
using levels_t = kcont::manual_dispatcher<bsd_level, kcont::no_lock, kcont::kqueue_schedule<kq_t>>;
// The monitor's view: one counting knote per kind of post, and a user event
// that tells it to stop.
using view_t =
    kcont::kqueue<kcont::filters<kcont::counting_filter<filter_id{1}>, kcont::user_filter>>;
constexpr long accepted_bit = 1, closed_bit = 2, replied_bit = 4;

enum class end_reason { none, peer, reset, idle, stop };
constexpr std::size_t chunk = 64 * 1024;         // one recv
constexpr std::size_t max_backlog = 1024 * 1024;  // unsent bytes before reading pauses

struct conn;

struct server {
  kcont::fd_source fds;     // epoll; a klist per descriptor
  kcont::timer_source timers;
  kcont::signal_source sigs;
  kq_t kq{fds, timers, sigs};  // its blocking wait drives all three
  levels_t levels{kcont::kqueue_schedule<kq_t>{&kq}};
  kcont::event_loop<kq_t, levels_t> loop{kq, levels};
  kcont::event_source activity;  // what the monitor's view counts
  view_t view{activity};

  std::chrono::milliseconds idle_after{300};
  std::size_t max_clients = 1024;
  int listener = -1;
  std::map<int, std::unique_ptr<conn>> conns;
  unsigned long long ended[5] = {}, refused = 0;  // by end_reason
  // Read by the monitor thread too.
  std::atomic<unsigned long long> accepted{0}, open{0}, bytes{0};

  void accept_all();
  void close(conn& c);
};

// One connection: its buffer, its knotes and their continuations. Immovable
// (knotes are linked in place), so the server keeps it behind a unique_ptr.
struct conn {
  conn(server& s, int d) : srv(s), fd(d) {}
  void on_ready(kcont::fd_source::knote_type* kn, kcont::knote_cause);
  void on_idle(kcont::timer_source::knote_type*, kcont::knote_cause);
  void flush();
  void read_some();

  server& srv;
  const int fd;
  std::vector<char> out;  // bytes read and not yet echoed (from `sent` on)
  std::size_t sent = 0;
  bool paused = false;    // reading stopped: the peer does not read its replies
  int error = 0;          // the socket's error, as the read filter reported it
  end_reason why = end_reason::none;

  // The continuations, this connection their environment: readiness at
  // softnet, the idle timer at softclock, replies at process level (on_ready
  // says why).
  template <auto M>
  using handler = kcont::kc<kcont::method_fn<M>, conn*, bsd_level>;
  handler<&conn::on_ready> ready_kc{kcont::method<&conn::on_ready>, this, bsd_level::softnet};
  handler<&conn::on_idle> idle_kc{kcont::method<&conn::on_idle>, this, bsd_level::softclock};
  kcont::kc<kcont::method_fn<&conn::flush>, conn*, bsd_level, int, int> flush_kc{
      kcont::method<&conn::flush>, this, bsd_level::process};

  // Readable (always watched) and writable (watched only while a reply
  // waits for room in the send buffer): one continuation for both.
  kcont::knote<kcont::read_filter<>> rd{kcont::read_filter<>{srv.fds}, ready_kc,
                                        static_cast<std::uintptr_t>(fd)};
  kcont::knote<kcont::write_filter<>> wr{kcont::write_filter<>{srv.fds}, ready_kc,
                                         static_cast<std::uintptr_t>(fd)};
  // A one-shot timer, armed by attach() and re-armed on every event.
  kcont::knote<kcont::timer_filter<>> idle{kcont::timer_filter<>{srv.timers, srv.idle_after},
                                           idle_kc};
};

// Runs inside the kqueue's wait, at softnet: the fd_source fired the
// descriptor's klist. It only moves bytes from the socket into `out` and asks
// for a flush. kcont::run of a process-level continuation from softnet defers
// it (rule 1), so every connection that became ready in this wait is read
// before any reply goes out, and a flush asked for twice before it runs runs
// once (a queued continuation absorbs the second request).
void conn::on_ready(kcont::fd_source::knote_type* kn, kcont::knote_cause) {
  // A reset: the source took the socket's error (SO_ERROR, cleared by the
  // read) and the filter reports it in fflags; recv() may say only 0 now.
  if (const auto f = kn->snapshot(); f.fflags != 0) error = static_cast<int>(f.fflags);
  read_some();
  // Activity: the idle clock restarts from the last byte read.
  srv.timers.arm(idle, srv.idle_after);
  (void)kcont::run(srv.levels, flush_kc, 0, 0, bsd_level::softnet);
}

// The descriptor source is edge-triggered (epoll, EPOLLET: kqueue's
// EV_CLEAR): a knote fires when new data arrives, not while data waits. So
// read until the kernel says EAGAIN, or the rest would wait for the next
// arrival. Stop early when too much is unsent: the peer is not reading its
// replies, and the kernel's buffers should hold it back, not ours. flush()
// reads again once the backlog is sent.
void conn::read_some() {
  paused = false;
  while (why == end_reason::none) {
    if (out.size() - sent >= max_backlog) {
      paused = true;
      return;
    }
    const std::size_t at = out.size();
    out.resize(at + chunk);
    const ssize_t n = ::recv(fd, out.data() + at, chunk, 0);
    out.resize(at + static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    if (n == 0)  // EOF: a peer that shut down writing, or one reset before
      why = error != 0 ? end_reason::reset : end_reason::peer;
    else if (errno != EAGAIN)
      why = end_reason::reset;  // ECONNRESET, ETIMEDOUT: the peer is gone
    return;
  }
}

// A timer's continuation, run by the timer source's tick inside the wait.
// It closes nothing itself: the flush that closes may be queued already.
void conn::on_idle(kcont::timer_source::knote_type*, kcont::knote_cause) {
  if (why == end_reason::none || why == end_reason::peer) why = end_reason::idle;
  (void)kcont::run(srv.levels, flush_kc, 0, 0, bsd_level::softclock);
}

// Process level, run by the loop's drain between waits, outside any klist's
// fan-out: the one place a connection ends, so nothing fires for it later.
void conn::flush() {
  if (why == end_reason::reset || why == end_reason::idle) return srv.close(*this);
  while (sent < out.size()) {
    // MSG_NOSIGNAL: a peer gone is EPIPE, not a SIGPIPE killing the server.
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      srv.bytes.fetch_add(static_cast<unsigned long long>(n), std::memory_order_relaxed);
    } else if (n < 0 && errno == EAGAIN) {
      // Send buffer full: watch for room (reported at once if some is back).
      if (!wr.is_attached()) (void)wr.attach();
      return;
    } else if (n < 0 && errno != EINTR) {
      why = end_reason::reset;  // EPIPE, ECONNRESET
      return srv.close(*this);
    }
  }
  if (wr.is_attached()) (void)wr.detach();  // all sent: stop watching for room
  if (!out.empty()) (void)srv.activity.post(replied_bit);
  out.clear();
  sent = 0;
  if (why == end_reason::peer) return srv.close(*this);  // echoed all it sent
  if (paused) {
    read_some();
    // defer, not run: this continuation is running (at process level).
    if (!out.empty() || why != end_reason::none) (void)kcont::defer(srv.levels, flush_kc, 0, 0);
  }
}

// The listener's knote has ev::clear (reported once per arrival): accept
// until EAGAIN, as on_ready reads.
void server::accept_all() {
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
    if (fd < 0) return;
    accepted.fetch_add(1, std::memory_order_relaxed);
    auto c = std::make_unique<conn>(*this, fd);
    if (conns.size() >= max_clients || c->rd.attach() != 0) {  // attach: ENOMEM
      ++refused;
      ::close(fd);
    } else {
      (void)c->idle.attach();  // arms the idle timer from now
      conns.emplace(fd, std::move(c));
      open.fetch_add(1, std::memory_order_relaxed);
    }
    (void)activity.post(accepted_bit);
  }
}

void server::close(conn& c) {
  // The contract of a plain knote on a descriptor: detach it before
  // close(2) (the source cannot see a close). Then a flush still queued is
  // taken back, and nothing of this connection can run any more.
  (void)c.rd.detach();
  if (c.wr.is_attached()) (void)c.wr.detach();
  (void)c.idle.detach();
  (void)levels.cancel(c.flush_kc);
  (void)fds.close(c.fd);
  ++ended[static_cast<int>(c.why)];
  open.fetch_sub(1, std::memory_order_relaxed);
  (void)activity.post(closed_bit);
  conns.erase(c.fd);  // frees c, even from inside c.flush (rule 3)
}

// The monitor thread: sleeps in its own kqueue until the server posts, prints
// one line for everything counted since the last scan, then lets posts
// accumulate for 100 ms: many posts, one report.
void monitor(server& s) {
  view_t::kevent_type out[4];
  for (;;) {
    const auto r = s.view.kevent({}, out, std::nullopt);
    long long n[4] = {0, 0, 0, 0};  // by ident: 1 accepted, 2 closed, 3 replied
    bool stop = false;
    for (int i = 0; i < r.ret; ++i) {
      if (out[i].filter == filter_id::user) stop = true;
      else n[out[i].ident] += out[i].data;  // data: posts since the last report
    }
    if (n[1] + n[2] + n[3] > 0)
      std::printf("monitor: %lld posts in one report: +%lld accepted, +%lld closed, %lld replies;"
                  " now %llu accepted, %llu open, %llu bytes echoed\n",
                  n[1] + n[2] + n[3], n[1], n[2], n[3], s.accepted.load(), s.open.load(),
                  s.bytes.load());
    if (stop) return;
    std::this_thread::sleep_for(100ms);
  }
}

int listen_on(int port) {  // non-blocking, as accept_all needs
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int on = 1;  // a restart may bind the port its last run's connections hold
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in a{.sin_family = AF_INET, .sin_port = htons(static_cast<std::uint16_t>(port)),
                .sin_addr = {htonl(INADDR_LOOPBACK)}, .sin_zero = {}};
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::perror("tcp_echo: listen");
    std::exit(1);
  }
  std::printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a line at a time, even into a pipe
  server srv;
  int port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--port") == 0) port = static_cast<int>(v);
    if (std::strcmp(argv[i], "--idle-ms") == 0) srv.idle_after = std::chrono::milliseconds(v);
    if (std::strcmp(argv[i], "--max-clients") == 0) srv.max_clients = static_cast<std::size_t>(v);
  }

  // Signals join the one wait: while SIGINT and SIGTERM have knotes, the
  // signal source's handler counts them and makes its descriptor readable,
  // which the kqueue's wait watches (kq{fds, timers, sigs}); the same
  // kevent() reports them.
  for (int sig : {SIGINT, SIGTERM})
    (void)srv.kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                         .flags = ev::add});

  for (std::uintptr_t id : {1, 2, 3})  // ident i counts the posts with bit 1 << (i - 1)
    (void)srv.view.change({.ident = id, .filter = filter_id{1}, .flags = ev::add | ev::clear,
                           .fflags = 1u << (id - 1)});
  (void)srv.view.change({.ident = 0, .filter = filter_id::user, .flags = ev::add});
  std::thread watcher(monitor, std::ref(srv));

  srv.listener = listen_on(port);
  (void)srv.kq.change({.ident = static_cast<std::uintptr_t>(srv.listener),
                       .filter = filter_id::read, .flags = ev::add | ev::clear});

  // The loop's handler gets the kqueue's events (the connections' never
  // come here): the listener's (data: connections waiting) and the signals.
  srv.loop.run([&](const kq_t::kevent_type& e) {
    if (e.filter == filter_id::read) srv.accept_all();
    if (e.filter == filter_id::signal) srv.loop.stop();
  });

  // Stopped. Run what the last round deferred (closes among it), then close
  // what is still open; every knote is detached before its source goes.
  (void)srv.levels.drain_all();
  while (!srv.conns.empty()) {
    srv.conns.begin()->second->why = end_reason::stop;
    srv.close(*srv.conns.begin()->second);
  }
  (void)srv.kq.change({.ident = static_cast<std::uintptr_t>(srv.listener),
                       .filter = filter_id::read, .flags = ev::delete_});
  (void)srv.fds.close(srv.listener);
  (void)srv.view.change({.ident = 0, .filter = filter_id::user, .fflags = kcont::note::trigger});
  watcher.join();
  std::printf("totals: %llu accepted, %llu closed by peer, %llu reset, %llu closed idle,"
              " %llu refused, %llu open at stop, %llu bytes echoed\n",
              srv.accepted.load(), srv.ended[1], srv.ended[2], srv.ended[3], srv.refused,
              srv.ended[4], srv.bytes.load());
}
