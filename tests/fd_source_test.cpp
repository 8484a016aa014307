// fd_source, read_filter and write_filter: descriptor readiness with
// kqueue(2)'s EVFILT_READ / EVFILT_WRITE semantics on pipes, socketpairs and
// TCP loopback. Expected values come from kqueue(2) and FreeBSD's filters:
// filt_soread / filt_sowrite (sys/kern/uipc_socket.c), filt_piperead /
// filt_pipewrite (sys/kern/sys_pipe.c); each test names the one it checks.
// Tests marked "both backends" run over the matrix {epoll_backend,
// poll_backend}; edge-triggered behaviour (ev::clear) is epoll's only.
#include <kcont/posix/fd_filters.hpp>
#include <kcont/posix/fd_source.hpp>

#include <doctest/doctest.h>

#if defined(__linux__)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kcont/dispatcher.hpp>
#include <kcont/thread_dispatcher.hpp>
#include <kcont/kc.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using kcont::ev;
using kcont::filter_id;

using epoll_src = kcont::basic_fd_source<kcont::epoll_backend>;
using poll_src = kcont::basic_fd_source<kcont::poll_backend>;

template <class Src>
using kq_t = kcont::kqueue<
    kcont::filters<kcont::user_filter, kcont::read_filter<Src>, kcont::write_filter<Src>>>;

struct fd_pair {
  int a = -1, b = -1;  // pipe: a = read end, b = write end
  fd_pair() = default;
  fd_pair(const fd_pair&) = delete;
  fd_pair& operator=(const fd_pair&) = delete;
  fd_pair(fd_pair&& o) noexcept : a(std::exchange(o.a, -1)), b(std::exchange(o.b, -1)) {}
  ~fd_pair() {
    close_a();
    close_b();
  }
  void close_a() {
    if (a >= 0) ::close(std::exchange(a, -1));
  }
  void close_b() {
    if (b >= 0) ::close(std::exchange(b, -1));
  }
};

fd_pair make_pipe() {
  fd_pair p;
  int fds[2];
  REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
  p.a = fds[0];
  p.b = fds[1];
  return p;
}

fd_pair make_socketpair() {
  fd_pair p;
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  p.a = fds[0];
  p.b = fds[1];
  return p;
}

int tcp_listener(sockaddr_in& addr) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(l >= 0);
  addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(l, 16) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return l;
}

int tcp_connect(const sockaddr_in& addr) {
  const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(c >= 0);
  const int r = ::connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  REQUIRE((r == 0 || errno == EINPROGRESS));
  return c;
}

// A connected TCP loopback pair: a = client, b = accepted server side.
fd_pair make_tcp_pair() {
  sockaddr_in addr;
  const int l = tcp_listener(addr);
  fd_pair p;
  p.a = tcp_connect(addr);
  for (int i = 0; i < 2000 && p.b < 0; ++i) {
    p.b = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (p.b < 0) std::this_thread::sleep_for(1ms);
  }
  ::close(l);
  REQUIRE(p.b >= 0);
  return p;
}

template <class Kq>
std::vector<typename Kq::kevent_type> scan(Kq& kq, std::size_t max = 64) {
  std::vector<typename Kq::kevent_type> out(max);
  out.resize(kq.scan(out));
  return out;
}

template <class Kq>
int add(Kq& kq, int fd, filter_id f, ev flags = ev::none, std::uint32_t fflags = 0,
        std::int64_t data = 0) {
  return kq.change({.ident = static_cast<std::uintptr_t>(fd), .filter = f,
                    .flags = ev::add | flags, .fflags = fflags, .data = data});
}

// `p` with a read knote (flags as given) on its end `a` in kq.
template <class Kq>
fd_pair reading(Kq& kq, fd_pair p, ev flags = ev::none) {
  REQUIRE(add(kq, p.a, filter_id::read, flags) == 0);
  return p;
}

// Polls (up to 2 s) until a scan's events satisfy `done`, for events that the
// kernel delivers a moment later (TCP over loopback); returns the last scan.
template <class Src, class Kq, class Done>
std::vector<typename Kq::kevent_type> wait_until(Src& fds, Kq& kq, Done done) {
  std::vector<typename Kq::kevent_type> e;
  for (int i = 0; i < 200; ++i) {
    (void)fds.poll(10ms);
    e = scan(kq);
    if (done(e)) break;
  }
  return e;
}

// Polls (up to 2 s) until the kqueue has something to report.
template <class Src, class Kq>
std::vector<typename Kq::kevent_type> wait_events(Src& fds, Kq& kq) {
  return wait_until(fds, kq, [](const auto& e) { return !e.empty(); });
}

void put(int fd, std::size_t n) {
  std::vector<char> buf(n, 'x');
  REQUIRE(::write(fd, buf.data(), n) == static_cast<ssize_t>(n));
}
std::size_t drain_fd(int fd) {
  char buf[4096];
  std::size_t total = 0;
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof buf)) > 0) total += static_cast<std::size_t>(r);
  return total;
}

}  // namespace

// kqueue(2) EVFILT_READ: "data contains the number of bytes in the read
// buffer" (filt_piperead: kn_data = pipe_buffer.cnt); level-triggered by
// default: reported by every scan while unread. Both backends.
TEST_CASE_TEMPLATE("fd_source.read_pipe_data_is_bytes_readable_level_triggered", Src,
                   epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = reading(kq, make_pipe());
  CHECK(scan(kq).empty());
  put(p.b, 5);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == static_cast<std::uintptr_t>(p.a));
  CHECK(e[0].filter == filter_id::read);
  CHECK(e[0].data == 5);
  CHECK(!has(e[0].flags, ev::eof));
  e = scan(kq);  // level: again, without a new readiness event
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 5);
  char buf[2];
  REQUIRE(::read(p.a, buf, 2) == 2);
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 3);
  CHECK(drain_fd(p.a) == 3);
  CHECK(scan(kq).empty());  // the re-check finds nothing: dropped
  CHECK(kq.change({.ident = static_cast<std::uintptr_t>(p.a), .filter = filter_id::read,
                   .flags = ev::delete_}) == 0);
  CHECK(fds.size_slow() == 0);
}

// EV_CLEAR: "After the event is retrieved by the user, its state is reset"
// (kqueue(2)); reported again only after new data, with data = all bytes
// readable then (filt_piperead recomputes kn_data). epoll only (edges).
TEST_CASE("fd_source.read_clear_reports_only_after_new_data") {
  epoll_src fds;
  kq_t<epoll_src> kq{fds};
  auto p = reading(kq, make_pipe(), ev::clear);
  put(p.b, 5);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 5);
  CHECK(scan(kq).empty());
  (void)fds.dispatch();  // no new edge
  CHECK(scan(kq).empty());
  put(p.b, 3);
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 8);
}

// filt_piperead: PIPE_EOF (the writer closed) sets EV_EOF; data still
// counts the unread bytes. Both backends.
TEST_CASE_TEMPLATE("fd_source.read_pipe_eof_when_writer_closes", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = reading(kq, make_pipe());
  put(p.b, 2);
  p.close_b();
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].data == 2);
  CHECK(e[0].fflags == 0);
  CHECK(drain_fd(p.a) == 2);
  e = scan(kq);  // EOF holds: still reported (filt_piperead returns 1)
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].data == 0);
}

// filt_pipewrite: data = buffer size - bytes queued; a full pipe is not
// writable (nothing reported); space again after the reader drains; EV_EOF
// when the reader is gone. Both backends.
TEST_CASE_TEMPLATE("fd_source.write_pipe_space_full_and_eof", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = make_pipe();
  const int size = ::fcntl(p.b, F_GETPIPE_SZ);
  REQUIRE(size > 0);
  REQUIRE(add(kq, p.b, filter_id::write) == 0);
  auto e = scan(kq);  // writable at once: the registration's re-check
  REQUIRE(e.size() == 1);
  CHECK(e[0].filter == filter_id::write);
  CHECK(e[0].data == size);
  put(p.b, 100);
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == size - 100);
  std::vector<char> buf(4096, 'y');
  while (::write(p.b, buf.data(), buf.size()) > 0) {
  }
  CHECK(scan(kq).empty());
  CHECK(drain_fd(p.a) > 0);
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == size);
  p.close_a();
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
}

// filt_soread: data = bytes in the receive buffer; SBS_CANTRCVMORE (the
// peer's shutdown(SHUT_WR)) sets EV_EOF, fflags = so_error (0), data still
// counting. Both backends.
TEST_CASE_TEMPLATE("fd_source.socketpair_read_data_and_eof_on_peer_shutdown", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto s = reading(kq, make_socketpair());
  put(s.b, 7);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 7);
  CHECK(!has(e[0].flags, ev::eof));
  REQUIRE(::shutdown(s.b, SHUT_WR) == 0);
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].data == 7);
  CHECK(e[0].fflags == 0);
}

// filt_sowrite: data = sbspace(so_snd), at most the send buffer; a full
// buffer is not writable; the peer's close makes SBS_CANTSENDMORE: EV_EOF.
TEST_CASE_TEMPLATE("fd_source.socketpair_write_space_and_eof_on_peer_close", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto s = make_socketpair();
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  REQUIRE(::getsockopt(s.a, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0);
  REQUIRE(add(kq, s.a, filter_id::write) == 0);
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data > 0);
  CHECK(e[0].data <= sndbuf);
  const auto empty_space = e[0].data;
  put(s.a, 1000);
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data < empty_space);  // the 1000 bytes (and their overhead) queued
  std::vector<char> buf(4096, 'z');
  while (::write(s.a, buf.data(), buf.size()) > 0) {
  }
  CHECK(scan(kq).empty());
  s.close_b();
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
}

// filt_soread over TCP loopback: data = bytes readable.
TEST_CASE_TEMPLATE("fd_source.tcp_read_data_count", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto t = reading(kq, make_tcp_pair());
  put(t.b, 10);
  auto e = wait_events(fds, kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 10);
  CHECK(!has(e[0].flags, ev::eof));
}

// filt_soread: the peer's close over TCP (a FIN) makes SBS_CANTRCVMORE:
// EV_EOF, fflags 0 (no socket error), data the unread bytes.
TEST_CASE_TEMPLATE("fd_source.tcp_peer_close_reports_eof_without_error", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto t = reading(kq, make_tcp_pair());
  put(t.b, 4);
  t.close_b();
  auto e =
      wait_until(fds, kq, [](const auto& v) { return !v.empty() && has(v[0].flags, ev::eof); });
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].fflags == 0);
  CHECK(e[0].data == 4);
}

// filt_soread: a reset connection (the peer closed with SO_LINGER 0) can
// receive no more: EV_EOF with so_error = ECONNRESET in fflags.
TEST_CASE_TEMPLATE("fd_source.tcp_reset_reports_eof_with_socket_error", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto t = reading(kq, make_tcp_pair());
  ::linger lg{1, 0};
  REQUIRE(::setsockopt(t.b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  t.close_b();
  auto e = wait_events(fds, kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].fflags == ECONNRESET);
}

// filt_sowrite: a refused connect leaves SBS_CANTSENDMORE and so_error:
// EV_EOF with ECONNREFUSED in fflags.
TEST_CASE_TEMPLATE("fd_source.tcp_connect_refused_reports_eof_on_write", Src, epoll_src,
                   poll_src) {
  sockaddr_in addr;
  const int l = tcp_listener(addr);
  ::close(l);  // nothing listens on addr any more
  Src fds;
  kq_t<Src> kq{fds};
  fd_pair c;
  c.a = tcp_connect(addr);
  REQUIRE(add(kq, c.a, filter_id::write) == 0);
  auto e = scan(kq);
  if (e.empty()) e = wait_events(fds, kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(e[0].fflags == ECONNREFUSED);
}

// filt_soread on a listening socket: data = sol_qlen, the connections
// waiting for accept (Linux TCP: from TCP_INFO).
TEST_CASE_TEMPLATE("fd_source.tcp_listener_data_is_pending_connections", Src, epoll_src,
                   poll_src) {
  sockaddr_in addr;
  fd_pair l;
  l.a = tcp_listener(addr);
  Src fds;
  kq_t<Src> kq{fds};
  REQUIRE(add(kq, l.a, filter_id::read) == 0);
  CHECK(scan(kq).empty());
  fd_pair c1, c2;
  c1.a = tcp_connect(addr);
  c2.a = tcp_connect(addr);
  auto e = wait_until(fds, kq, [](const auto& v) { return !v.empty() && v[0].data == 2; });
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 2);
  // A listener is never writable (filt_sowrite: SOLISTENING returns 0).
  REQUIRE(add(kq, l.a, filter_id::write) == 0);
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].filter == filter_id::read);
}

// EV_ONESHOT: reported once, with the knote's data, then deleted; the
// descriptor's last knote gone, the source drops its registration.
TEST_CASE_TEMPLATE("fd_source.oneshot_reported_once_then_deleted", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = reading(kq, make_pipe(), ev::oneshot);
  put(p.b, 4);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 4);
  CHECK(kq.size() == 0);
  CHECK(fds.size_slow() == 0);
  put(p.b, 1);
  (void)fds.dispatch();
  CHECK(scan(kq).empty());
}

// An EV_ONESHOT report is the knote as it stands (kqueue_scan copies
// kn_kevent, EV_EOF included: filt_piperead set it in kn_flags).
TEST_CASE_TEMPLATE("fd_source.oneshot_report_carries_eof", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = reading(kq, make_pipe(), ev::oneshot);
  put(p.b, 3);
  p.close_b();
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(has(e[0].flags, ev::eof));
  CHECK(has(e[0].flags, ev::oneshot));
  CHECK(e[0].data == 3);
  CHECK(kq.size() == 0);
}

// EV_DISPATCH: disabled after each report; EV_ENABLE re-arms it, and the
// enable's re-check reports data that is still there.
TEST_CASE_TEMPLATE("fd_source.dispatch_disables_and_enable_rearms", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = reading(kq, make_pipe(), ev::dispatch);
  put(p.b, 5);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 5);
  CHECK(scan(kq).empty());
  put(p.b, 1);
  (void)fds.dispatch();
  CHECK(scan(kq).empty());  // disabled
  REQUIRE(kq.change({.ident = static_cast<std::uintptr_t>(p.a), .filter = filter_id::read,
                     .flags = ev::enable}) == 0);
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 6);
}

// BSD drops a descriptor's knotes at close(2) (knote_fdclose): forget(fd)
// does it here. A pending report is dropped, nothing fires again, and a
// registration the kernel keeps for the closed descriptor (epoll keeps it
// while a dup is open) does not fire the descriptor number's new knotes.
TEST_CASE_TEMPLATE("fd_source.forget_drops_knotes_and_stale_registrations", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = make_pipe();
  const int number = p.a;
  const int dup = ::dup(p.a);
  REQUIRE(dup >= 0);
  REQUIRE(add(kq, p.a, filter_id::read) == 0);
  put(p.b, 3);
  (void)fds.dispatch();
  CHECK(kq.pending() == 1);
  CHECK(fds.forget(number));
  CHECK(!fds.forget(number));
  CHECK(fds.size_slow() == 0);
  CHECK(kq.pending() == 0);  // knote_fdclose: knote_drop, gone from the kqueue
  CHECK(kq.size() == 0);
  CHECK(scan(kq).empty());  // the pending report is dropped
  p.close_a();
  // The same number, another pipe; the old pipe stays open through `dup`.
  auto q = make_pipe();
  REQUIRE(::dup2(q.a, number) == number);
  kcont::kc k{[](kcont::knote_base<std::uint32_t>*, int& n, kcont::knote_cause) { ++n; },
              0, kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::read_filter<Src>> kn{kcont::read_filter<Src>{fds}, k,
                                           static_cast<std::uintptr_t>(number)};
  REQUIRE(kn.attach() == 0);
  put(p.b, 1);  // the old pipe: its stale registration must not fire kn
  (void)fds.dispatch();
  CHECK(k.env() == 0);
  put(q.b, 2);
  (void)fds.dispatch();
  CHECK(k.env() >= 1);
  CHECK(kn.data == 2);
  (void)kn.detach();
  // The kqueue's knote went with the close (FreeBSD's knote_fdclose drops
  // every knote on the descriptor): there is none left to delete.
  CHECK(kq.change({.ident = static_cast<std::uintptr_t>(number), .filter = filter_id::read,
                   .flags = ev::delete_}) == ENOENT);
  CHECK(fds.size_slow() == 0);
  ::close(number);
  ::close(dup);
}

// FreeBSD's close(2) calls knote_fdclose (sys/kern/kern_event.c), which
// knote_drop()s every knote on the descriptor from every kqueue: a pending
// report is never made, the knotes are gone (EV_DELETE: EBADF, fget(), while
// the number is closed, ENOENT once it names another descriptor; kq_count
// and the registration count drop). fds.close(fd) is that close here.
// Both backends.
TEST_CASE_TEMPLATE("fd_source.close_drops_kqueue_knotes_like_knote_fdclose", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  kq_t<Src> other{fds};  // every kqueue, not only one
  auto s = reading(kq, make_socketpair());
  REQUIRE(add(kq, s.a, filter_id::write) == 0);
  REQUIRE(add(other, s.a, filter_id::read) == 0);
  REQUIRE(add(kq, s.b, filter_id::read) == 0);  // another descriptor: kept
  put(s.b, 3);
  put(s.a, 1);
  (void)fds.dispatch();
  CHECK(kq.size() == 3);
  CHECK(kq.pending() == 3);  // s.a readable and writable, s.b readable
  CHECK(other.pending() == 1);
  const int fd = std::exchange(s.a, -1);
  CHECK(fds.close(fd) == 0);
  CHECK(kq.size() == 1);
  CHECK(kq.pending() == 1);
  CHECK(other.size() == 0);
  CHECK(other.pending() == 0);
  auto e = scan(kq);
  REQUIRE(e.size() == 1);  // nothing for fd: its reports were dropped
  CHECK(e[0].ident == static_cast<std::uintptr_t>(s.b));
  CHECK(scan(other).empty());
  // Every change naming the closed number fails before any lookup:
  // kqueue_register's fget() (EBADF).
  for (const filter_id f : {filter_id::read, filter_id::write})
    CHECK(kq.change({.ident = static_cast<std::uintptr_t>(fd), .filter = f,
                     .flags = ev::delete_}) == EBADF);
  CHECK(other.change({.ident = static_cast<std::uintptr_t>(fd), .filter = filter_id::read,
                      .flags = ev::delete_}) == EBADF);
  CHECK(fds.size_slow() == 1);  // s.b only
}

// The bug knote_fdclose prevents: a server closes connection fd N, accepts
// another that gets number N and adds (N, EVFILT_READ). kqueue_register
// must not find the old knote (it would modify it, and the new connection
// would never be heard of): it makes a new one, whose attach watches the
// descriptor N names now. The new pipe's read end is forced onto the old
// number with dup2. Both backends.
TEST_CASE_TEMPLATE("fd_source.descriptor_number_reused_after_close_is_watched_by_a_new_add",
                   Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = make_pipe();
  const int number = std::exchange(p.a, -1);
  REQUIRE(add(kq, number, filter_id::read, ev::none, 0, 0) == 0);
  put(p.b, 2);
  (void)fds.dispatch();
  CHECK(kq.pending() == 1);
  CHECK(fds.close(number) == 0);
  auto q = make_pipe();
  REQUIRE(::dup2(q.a, number) == number);
  REQUIRE(add(kq, number, filter_id::read, ev::clear) == 0);
  CHECK(kq.size() == 1);
  CHECK(kq.pending() == 0);  // the new pipe is empty
  put(q.b, 5);
  auto e = wait_events(fds, kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == static_cast<std::uintptr_t>(number));
  CHECK(e[0].filter == filter_id::read);
  CHECK(e[0].data == 5);
  CHECK(has(e[0].flags, ev::clear));  // the new knote's flags, not the old one's
  CHECK(kq.change({.ident = static_cast<std::uintptr_t>(number), .filter = filter_id::read,
                   .flags = ev::delete_}) == 0);
  if (q.a == number) q.a = -1;  // make_pipe took the free number itself
  CHECK(fds.close(number) == 0);
  CHECK(fds.size_slow() == 0);
}

// forget/close racing a scan: one thread closes descriptors (dups of a few
// socketpair ends, so the numbers are reused at once) and adds knotes on
// the new ones, another scans (and so polls the source), a third writes.
// Each close drops its knotes before it returns (a delete: EBADF), the
// kqueue counts only the live ones, and the knote of each new descriptor
// is heard from. ASan and TSan check the frees racing the scans.
TEST_CASE_TEMPLATE("fd_source.close_and_re_add_race_a_scanning_and_a_writing_thread", Src,
                   epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  constexpr int pairs = 3;
  std::vector<fd_pair> s;
  for (int i = 0; i < pairs; ++i) s.push_back(make_socketpair());
  std::atomic<bool> done{false};
  std::atomic<std::size_t> seen{0};
  std::atomic<int> scans{0};
  std::thread scanner([&] {
    typename kq_t<Src>::kevent_type out[8];
    while (!done.load()) {
      seen += kq.scan(out, 1ms);
      ++scans;
    }
  });
  std::thread writer([&] {
    for (int i = 0; !done.load(); ++i) {
      if (::write(s[static_cast<std::size_t>(i % pairs)].b, "x", 1) != 1)
        std::this_thread::yield();
    }
  });
  const int rounds = static_cast<int>(kcont_test::sized(600, 100));
  int dups[pairs];
  bool writes[pairs] = {};  // dups[i] has a write knote too
  std::size_t live = 0;     // knotes the kqueue must count
  for (int i = 0; i < pairs; ++i) {
    dups[i] = ::dup(s[static_cast<std::size_t>(i)].a);
    REQUIRE(dups[i] >= 0);
    REQUIRE(add(kq, dups[i], filter_id::read, ev::clear) == 0);
    ++live;
  }
  bool all = true;
  // The scanner and the writer at work before the first close.
  for (int t = 0; t < 2000 && (scans.load() < 2 || seen.load() == 0); ++t)
    std::this_thread::sleep_for(1ms);
  for (int r = 0; r < rounds; ++r) {
    const int i = r % pairs;
    if (r % 8 == 0) std::this_thread::yield();  // let the scanner in
    if (r % 2 == 0 && !writes[i]) {
      REQUIRE(add(kq, dups[i], filter_id::write) == 0);
      writes[i] = true;
      ++live;
    }
    const auto id = static_cast<std::uintptr_t>(dups[i]);
    all = all && fds.close(dups[i]) == 0;
    live -= writes[i] ? 2 : 1;
    writes[i] = false;
    all = all && kq.size() == live;
    all = all && kq.change({.ident = id, .filter = filter_id::read,
                            .flags = ev::delete_}) == EBADF;  // fget()
    all = all && kq.change({.ident = id, .filter = filter_id::write,
                            .flags = ev::delete_}) == EBADF;
    (void)drain_fd(s[static_cast<std::size_t>(i)].a);
    dups[i] = ::dup(s[static_cast<std::size_t>(i)].a);  // mostly the same number
    REQUIRE(dups[i] >= 0);
    REQUIRE(add(kq, dups[i], filter_id::read, ev::clear) == 0);
    ++live;
  }
  done = true;
  writer.join();
  scanner.join();
  CHECK(all);
  CHECK(seen.load() > 0);
  // The last knote of each new descriptor is heard from.
  for (auto& p : s) {
    (void)drain_fd(p.a);
    put(p.b, 1);
  }
  std::vector<std::uintptr_t> heard;
  for (int t = 0; t < 200 && heard.size() < std::size_t{pairs}; ++t) {
    for (const auto& e : scan(kq))
      if (std::find(heard.begin(), heard.end(), e.ident) == heard.end())
        heard.push_back(e.ident);
    if (heard.size() < std::size_t{pairs}) (void)fds.poll(10ms);
  }
  CHECK(heard.size() == std::size_t{pairs});
  for (int i = 0; i < pairs; ++i) CHECK(fds.close(dups[i]) == 0);
  CHECK(kq.size() == 0);
  CHECK(kq.pending() == 0);
  CHECK(fds.size_slow() == 0);
}

// Any continuation: one that runs at once in the poll, one at softnet
// deferred to a manual_dispatcher level and run by its drain.
TEST_CASE_TEMPLATE("fd_source.knote_continuation_runs_at_once_or_deferred", Src, epoll_src,
                   poll_src) {
  using base_t = kcont::knote_base<std::uint32_t>;
  Src fds;
  kcont::manual_dispatcher<> d;
  auto p = make_pipe();
  kcont::kc now{[](base_t* kn, std::int64_t& seen, kcont::knote_cause) { seen = kn->data; },
                std::int64_t{0}, kcont::at<kcont::bsd_level::immediate>};
  kcont::kc later{[](base_t* kn, std::int64_t& seen, kcont::knote_cause) { seen = kn->data; },
                  std::int64_t{0}, kcont::bsd_level::softnet};
  kcont::knote<kcont::read_filter<Src>> a{kcont::read_filter<Src>{fds}, now,
                                          static_cast<std::uintptr_t>(p.a)};
  kcont::knote<kcont::read_filter<Src>> b{kcont::read_filter<Src>{fds}, later,
                                          static_cast<std::uintptr_t>(p.a)};
  REQUIRE(a.attach() == 0);
  REQUIRE(b.attach() == 0);
  CHECK(fds.size_slow() == 1);  // one klist for both
  put(p.b, 9);
  CHECK(fds.poll(d, 0ns, kcont::bsd_level::softserial) == 2);
  CHECK(now.env() == 9);
  CHECK(later.env() == 0);  // deferred to softnet
  CHECK(d.drain(kcont::bsd_level::softnet) == 1);
  CHECK(later.env() == 9);
  (void)a.detach(d);
  (void)b.detach(d);
  CHECK(fds.size_slow() == 0);
}

// A read and a write knote on one descriptor share its klist and its one
// registration; deleting one narrows the registration and the other still
// fires; deleting both ends it.
TEST_CASE_TEMPLATE("fd_source.read_and_write_share_one_registration", Src, epoll_src,
                   poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto s = reading(kq, make_socketpair());
  REQUIRE(add(kq, s.a, filter_id::write) == 0);
  CHECK(fds.size_slow() == 1);
  auto e = scan(kq);
  REQUIRE(e.size() == 1);  // writable; nothing to read yet
  CHECK(e[0].filter == filter_id::write);
  REQUIRE(kq.change({.ident = static_cast<std::uintptr_t>(s.a), .filter = filter_id::write,
                     .flags = ev::delete_}) == 0);
  CHECK(fds.size_slow() == 1);
  CHECK(scan(kq).empty());
  put(s.b, 6);
  (void)fds.dispatch();
  e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].filter == filter_id::read);
  CHECK(e[0].data == 6);
  REQUIRE(kq.change({.ident = static_cast<std::uintptr_t>(s.a), .filter = filter_id::read,
                     .flags = ev::delete_}) == 0);
  CHECK(fds.size_slow() == 0);
}

// A continuation deferred to a thread runner: the poll defers it to softnet,
// a thread_dispatcher's runner thread runs it; detach(d) cancels or waits.
TEST_CASE_TEMPLATE("fd_source.knote_continuation_on_a_runner_thread", Src, epoll_src,
                   poll_src) {
  using base_t = kcont::knote_base<std::uint32_t>;
  using plan = kcont::plan_for<kcont::bsd_level, kcont::thread_runner, kcont::no_runner>;
  Src fds;
  kcont::thread_dispatcher<kcont::bsd_level, plan> d;
  auto p = make_pipe();
  std::atomic<std::int64_t> seen{0};
  kcont::kc k{[](base_t* kn, std::atomic<std::int64_t>*& out, kcont::knote_cause) {
                out->store(kn->data);
              },
              &seen, kcont::bsd_level::softnet};
  kcont::knote<kcont::read_filter<Src>> kn{kcont::read_filter<Src>{fds}, k,
                                           static_cast<std::uintptr_t>(p.a)};
  REQUIRE(kn.attach() == 0);
  put(p.b, 11);
  CHECK(fds.poll(d, 0ns, kcont::bsd_level::softserial) == 1);
  kcont_test::spin_until([&] { return seen.load() == 11; });
  (void)kn.detach(d);
  d.stop();
}

// Many descriptors: random writes and reads over N socketpairs; after each
// round every descriptor with unread bytes is reported exactly once, with
// data = its unread bytes, and no other. Both backends.
TEST_CASE_TEMPLATE("fd_source.many_descriptors_match_the_model", Src, epoll_src, poll_src) {
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur < 2200 && rl.rlim_max >= 2200) {
    rl.rlim_cur = 2200;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  }
  const std::size_t n = std::min<std::size_t>(1000, (rl.rlim_cur - 100) / 2);
  INFO("socketpairs: " << n);
  Src fds;
  kq_t<Src> kq{fds};
  std::vector<fd_pair> pairs;
  pairs.reserve(n);
  std::vector<std::int64_t> unread(n, 0);
  std::vector<int> index_of;
  for (std::size_t i = 0; i < n; ++i) {
    pairs.push_back(make_socketpair());
    REQUIRE(add(kq, pairs[i].a, filter_id::read) == 0);
    if (index_of.size() <= static_cast<std::size_t>(pairs[i].a))
      index_of.resize(static_cast<std::size_t>(pairs[i].a) + 1, -1);
    index_of[static_cast<std::size_t>(pairs[i].a)] = static_cast<int>(i);
  }
  std::mt19937 rng(13);
  std::vector<kcont::kevent> out(n + 1);
  for (int round = 0; round < 8; ++round) {
    for (std::size_t i = 0; i < n; ++i) {
      if (rng() % 3 == 0) {
        const std::size_t bytes = 1 + rng() % 300;
        put(pairs[i].b, bytes);
        unread[i] += static_cast<std::int64_t>(bytes);
      }
    }
    for (std::size_t k = 0; k <= n / 64 + 1; ++k) (void)fds.dispatch();
    const std::size_t got = kq.scan(out);
    std::vector<int> seen(n, 0);
    for (std::size_t j = 0; j < got; ++j) {
      const int i = index_of[out[j].ident];
      REQUIRE(i >= 0);
      ++seen[static_cast<std::size_t>(i)];
      CHECK(out[j].data == unread[static_cast<std::size_t>(i)]);
    }
    for (std::size_t i = 0; i < n; ++i) CHECK(seen[i] == (unread[i] > 0 ? 1 : 0));
    for (std::size_t i = 0; i < n; ++i) {
      if (rng() % 2 == 0) {
        CHECK(drain_fd(pairs[i].a) == static_cast<std::size_t>(unread[i]));
        unread[i] = 0;
      }
    }
  }
  for (auto& pr : pairs)
    CHECK(kq.change({.ident = static_cast<std::uintptr_t>(pr.a), .filter = filter_id::read,
                     .flags = ev::delete_}) == 0);
  CHECK(fds.size_slow() == 0);
}

// Registration may allocate; a readiness event must not: after the knotes
// are registered (and one warm-up round), write / poll / scan / read rounds
// allocate nothing, for kqueue knotes and a standalone knote. Both backends.
TEST_CASE_TEMPLATE("fd_source.no_allocation_per_readiness_event", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  std::vector<fd_pair> pipes;
  for (int i = 0; i < 16; ++i) {
    pipes.push_back(make_pipe());
    REQUIRE(add(kq, pipes.back().a, filter_id::read, i % 2 ? ev::clear : ev::none) == 0);
  }
  auto extra = make_pipe();
  kcont::kc k{[](kcont::knote_base<std::uint32_t>*, int& n, kcont::knote_cause) { ++n; }, 0,
              kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::read_filter<Src>> kn{kcont::read_filter<Src>{fds}, k,
                                           static_cast<std::uintptr_t>(extra.a)};
  REQUIRE(kn.attach() == 0);
  kcont::kevent out[32];
  auto round = [&] {
    char c = 'x';
    for (auto& p : pipes) REQUIRE(::write(p.b, &c, 1) == 1);
    REQUIRE(::write(extra.b, &c, 1) == 1);
    // The kqueue drives its source: the scan's one look fires the ready
    // klists (16 kqueue knotes and the plain one) and reports them.
    CHECK(kq.scan(out) == 16);
    char buf[8];
    for (auto& p : pipes) REQUIRE(::read(p.a, buf, sizeof buf) == 1);
    REQUIRE(::read(extra.a, buf, sizeof buf) == 1);
    CHECK(kq.scan(out) == 0);
  };
  round();
  const int before = k.env();
  kcont_test::allocation_scope scope;
  for (int i = 0; i < 200; ++i) round();
  CHECK(scope.count() == 0);
  CHECK(k.env() - before == 200);
  (void)kn.detach();
}

// One thread writes while another polls: every byte is seen, with an
// ev::clear knote reporting each arrival (TSan checks the races).
TEST_CASE_TEMPLATE("fd_source.thread_writes_while_another_polls", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto s = reading(kq, make_socketpair(), ev::clear);
  const std::size_t total = kcont_test::sized(200000, 20000);
  std::thread writer([&] {
    std::size_t sent = 0;
    char buf[97] = {};
    while (sent < total) {
      const std::size_t n = std::min(sizeof buf, total - sent);
      const ssize_t r = ::write(s.b, buf, n);
      if (r > 0)
        sent += static_cast<std::size_t>(r);
      else
        std::this_thread::yield();
    }
  });
  std::size_t got = 0;
  kcont::kevent out[4];
  while (got < total) {
    (void)fds.poll(50ms);
    if (kq.scan(out) > 0) got += drain_fd(s.a);
  }
  writer.join();
  CHECK(got == total);
}

// NOTE_LOWAT (kqueue(2); filt_soread: "if (kn->kn_sfflags & NOTE_LOWAT)
// return kn->kn_data >= kn->kn_sdata"): not reported below the mark.
TEST_CASE_TEMPLATE("fd_source.read_lowat_waits_for_the_mark", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto s = make_socketpair();
  REQUIRE(add(kq, s.a, filter_id::read, ev::none, kcont::note::lowat, 10) == 0);
  put(s.b, 5);
  (void)fds.dispatch();
  CHECK(scan(kq).empty());
  put(s.b, 5);
  (void)fds.dispatch();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].data == 10);
}

// kqueue(2) ERRORS: "[EBADF] The specified descriptor is invalid."
TEST_CASE_TEMPLATE("fd_source.invalid_descriptor_is_ebadf", Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  int closed_fd;
  {
    auto p = make_pipe();
    closed_fd = p.a;
  }
  CHECK(add(kq, closed_fd, filter_id::read) == EBADF);
  CHECK(add(kq, closed_fd, filter_id::write) == EBADF);
  CHECK(kq.size() == 0);
  CHECK(fds.size_slow() == 0);
}

// kqueue(2) EVFILT_READ on a vnode: "data contains the offset from the
// current position to end of file" (filt_vfsread: fires while data != 0);
// EVFILT_WRITE on a vnode always fires (filt_vfswrite). epoll refuses
// regular files (EPERM): the source keeps them unwatched, reported through
// the kqueue's re-check.
TEST_CASE_TEMPLATE("fd_source.regular_file_is_always_ready", Src, epoll_src, poll_src) {
  char path[] = "/tmp/kcont_fd_source_XXXXXX";
  fd_pair f;
  f.a = ::mkstemp(path);
  REQUIRE(f.a >= 0);
  ::unlink(path);
  put(f.a, 10);
  REQUIRE(::lseek(f.a, 3, SEEK_SET) == 3);
  Src fds;
  kq_t<Src> kq{fds};
  REQUIRE(add(kq, f.a, filter_id::read) == 0);
  REQUIRE(add(kq, f.a, filter_id::write) == 0);
  auto e = scan(kq);
  REQUIRE(e.size() == 2);
  CHECK(e[0].filter == filter_id::read);
  CHECK(e[0].data == 7);
  CHECK(e[1].filter == filter_id::write);
  REQUIRE(::lseek(f.a, 0, SEEK_END) == 10);
  e = scan(kq);
  REQUIRE(e.size() == 1);  // at the end: nothing to read
  CHECK(e[0].filter == filter_id::write);
}

// Knotes attach and detach on one thread while another polls the same
// descriptor: the entry is created and freed under the poller's feet
// (TSan and ASan check it).
TEST_CASE_TEMPLATE("fd_source.attach_and_detach_while_another_thread_polls", Src, epoll_src,
                   poll_src) {
  Src fds;
  auto p = make_pipe();
  put(p.b, 1);  // always readable
  std::atomic<bool> done{false};
  std::thread poller([&] {
    while (!done.load()) (void)fds.poll(1ms);
  });
  kcont::kc k{[](kcont::knote_base<std::uint32_t>*, int& n, kcont::knote_cause) { ++n; }, 0,
              kcont::at<kcont::bsd_level::immediate>};
  const int rounds = static_cast<int>(kcont_test::sized(3000, 500));
  for (int i = 0; i < rounds; ++i) {
    kcont::knote<kcont::read_filter<Src>> kn{kcont::read_filter<Src>{fds}, k,
                                             static_cast<std::uintptr_t>(p.a)};
    REQUIRE(kn.attach() == 0);
    put(p.b, 1);
    if (i % 7 == 0) (void)fds.forget(p.a);
    (void)kn.detach();
  }
  done = true;
  poller.join();
  CHECK(fds.size_slow() == 0);
}

// The epoll descriptor is readable while a registered descriptor is
// ready, so another loop can watch the source. (And the brief's spelling:
// the default source, both filters given it as their context.)
TEST_CASE("fd_source.native_handle_is_readable_when_a_descriptor_is") {
  kcont::fd_source fds;
  kcont::kqueue<kcont::filters<kcont::user_filter, kcont::read_filter<>,
                               kcont::write_filter<>>>
      kq{fds, fds};
  auto p = reading(kq, make_pipe());
  ::pollfd w{fds.native_handle(), POLLIN, 0};
  CHECK(::poll(&w, 1, 0) == 0);
  put(p.b, 1);
  CHECK(::poll(&w, 1, 0) == 1);
  (void)fds.dispatch();
  auto e = scan(kq);
  CHECK(e.size() == 1);
  CHECK(poll_src{}.native_handle() == -1);
}

// FreeBSD's pipe_kqfilter: EVFILT_WRITE on a pipe whose reader is gone fails
// with EPIPE ("other end of pipe has been closed"); nothing is registered.
TEST_CASE_TEMPLATE("fd_source.write_knote_on_a_pipe_whose_reader_is_gone_is_epipe", Src,
                   epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = make_pipe();
  p.close_a();
  CHECK(add(kq, p.b, filter_id::write) == EPIPE);
  CHECK(kq.size() == 0);
  CHECK(add(kq, p.b, filter_id::read) == 0);  // only writing needs a reader
  REQUIRE(kq.change({.ident = static_cast<std::uintptr_t>(p.b), .filter = filter_id::read,
                     .flags = ev::delete_}) == 0);
}

// FreeBSD's pipeclose ends with knlist_clear, which marks the write knotes
// of the closing reader's pipe EV_EOF | EV_ONESHOT (knlist_cleardel): the
// next scan reports the knote once, with both flags, and deletes it.
TEST_CASE_TEMPLATE("fd_source.pipe_write_knote_is_reported_once_oneshot_when_the_reader_closes",
                   Src, epoll_src, poll_src) {
  Src fds;
  kq_t<Src> kq{fds};
  auto p = make_pipe();
  REQUIRE(add(kq, p.b, filter_id::write) == 0);  // level-triggered
  CHECK(scan(kq).size() == 1);                   // writable
  p.close_a();
  auto e = scan(kq);
  REQUIRE(e.size() == 1);
  CHECK(e[0].ident == static_cast<std::uintptr_t>(p.b));
  CHECK(kcont::has(e[0].flags, ev::eof));
  CHECK(kcont::has(e[0].flags, ev::oneshot));
  CHECK(kq.size() == 0);  // deleted after its report
  CHECK(scan(kq).empty());
  CHECK(kq.change({.ident = static_cast<std::uintptr_t>(p.b), .filter = filter_id::write,
                   .flags = ev::delete_}) == ENOENT);
}

#endif  // __linux__
