// kcont's EVFILT_READ / EVFILT_WRITE (read_filter / write_filter over an
// epoll fd_source) against the independent FreeBSD model (fd_reference.hpp,
// written from sys_pipe.c, uipc_socket.c and kern_event.c without reading
// kcont's descriptor code): seeded random sequences of changes, writes,
// reads, shutdowns, closes and scans on one pipe and one AF_UNIX stream
// socket pair, applied to both; every change's errno and every scan's events
// (ident, filter, flags with EV_EOF, fflags, data, udata) are compared. A
// failing seed prints the operations that led there.
//
// Timing (the user-space artefact the brief names): readiness reaches the
// kqueue only when the source is looked at. After every operation on a
// descriptor (and after every change, which may register it with epoll) the
// driver calls fds.dispatch() once: that is the kernel's knote() call at the
// moment of the operation, so the model's state after it is FreeBSD's.
//
// Comparison: a scan gets room for every knote (8 >= the 6 there can be),
// so it reports every pending event; FreeBSD's order is the order knote()
// reached the knotes, which depends on klist order, so events are compared
// as multisets (sorted by ident, filter). data: exact for EVFILT_READ (bytes
// queued) and for EVFILT_WRITE on a pipe (F_GETPIPE_SZ - bytes queued, the
// size filt_pipewrite subtracts from); for EVFILT_WRITE on a socket the model
// says `any_positive` and the test asks data > 0 (see fd_reference.hpp).
#include "fd_reference.hpp"

#include <doctest/doctest.h>

#include <kcont/kqueue.hpp>
#include <kcont/posix.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch_support.hpp"

namespace {

using source = kcont::basic_fd_source<kcont::epoll_backend>;
using kqueue_t = kcont::kqueue<kcont::filters<kcont::read_filter<source>, kcont::write_filter<source>,
                                              kcont::user_filter>>;

std::string show(const kqref::kev& e) {
  std::ostringstream o;
  o << "{ident " << e.ident << " " << (e.filter == kqref::EVFILT_READ ? "READ" : "WRITE")
    << " flags 0x" << std::hex << e.flags << std::dec << " fflags " << e.fflags << " data ";
  if (e.data == kqref::any_positive)
    o << ">0";
  else
    o << e.data;
  o << " udata " << e.udata << "}";
  return o.str();
}

kqref::kev to_ref(const kcont::kevent& e) {
  return kqref::kev{e.ident, static_cast<std::int16_t>(e.filter),
                    static_cast<std::uint16_t>(e.flags), e.fflags, e.data, e.udata};
}

bool same_event(const kqref::kev& got, const kqref::kev& want) {
  if (want.data == kqref::any_positive) {
    kqref::kev g = got;
    g.data = want.data;
    return got.data > 0 && g == want;
  }
  return got == want;
}

// One sequence: a fresh source, kqueue, pipe and socket pair.
class run {
 public:
  run() : kq_(fds_) {
    int p[2];
    int s[2];
    REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s) == 0);
    fd_ = {p[0], p[1], s[0], s[1]};
    const int size = ::fcntl(p[1], F_GETPIPE_SZ);
    REQUIRE(size > 0);
    model_.add_pipe(p[0], p[1], size);
    model_.add_socketpair(s[0], s[1]);
  }
  ~run() {
    for (int fd : fd_)
      if (model_.is_open(fd)) fds_.close(fd);
  }
  run(const run&) = delete;
  run& operator=(const run&) = delete;

  // Applies `steps` operations drawn with pick(n); returns "" or what
  // differed first, with the trace.
  template <class Pick>
  std::string go(Pick& pick, int steps, std::size_t& events_seen) {
    for (int step = 0; step < steps; ++step) {
      const std::string why = one(pick, events_seen);
      if (!why.empty()) return log_.str() + "step " + std::to_string(step) + ": " + why;
    }
    log_ << "final scan\n";
    return compare_scan(events_seen);
  }

 private:
  template <class Pick>
  std::string one(Pick& pick, std::size_t& events_seen) {
    const int fd = fd_[pick(4)];
    const bool sock = model_.is_socket(fd);
    switch (pick(10)) {
      case 0:
      case 1:
      case 2: {  // a change
        const std::int16_t filter = !sock ? (fd == fd_[0] ? kqref::EVFILT_READ : kqref::EVFILT_WRITE)
                                          : (pick(2) == 0 ? kqref::EVFILT_READ : kqref::EVFILT_WRITE);
        std::uint16_t flags = 0;
        switch (pick(6)) {
          case 0:
          case 1:
            flags = kqref::EV_ADD;
            if (pick(2) == 0) flags |= kqref::EV_CLEAR;
            if (pick(5) == 0) flags |= kqref::EV_ONESHOT;
            if (pick(5) == 0) flags |= kqref::EV_DISPATCH;
            if (pick(6) == 0) flags |= kqref::EV_DISABLE;
            break;
          case 2:
            flags = kqref::EV_DELETE;
            break;
          case 3:
            flags = kqref::EV_ENABLE;
            break;
          case 4:
            flags = kqref::EV_DISABLE;
            break;
          default:
            flags = kqref::EV_ADD;  // a modification (or a plain add)
            break;
        }
        const kqref::kev c{static_cast<std::uintptr_t>(fd), filter, flags, 0, 0, pick(100)};
        log_ << "change " << show(c) << " -> ";
        const int got = kq_.change(kcont::kevent{.ident = c.ident,
                                                 .filter = static_cast<kcont::filter_id>(c.filter),
                                                 .flags = static_cast<kcont::ev>(c.flags),
                                                 .fflags = 0,
                                                 .data = 0,
                                                 .udata = c.udata});
        fds_.dispatch();
        const int want = model_.change(c);
        log_ << got << "\n";
        if (got != want)
          return "change returned " + std::to_string(got) + ", FreeBSD " + std::to_string(want);
        return "";
      }
      case 3:
      case 4: {  // a write of 1..200 bytes
        if (!model_.can_write(fd)) return "";
        const std::int64_t n = 1 + pick(200);
        std::array<char, 256> buf{};
        const ssize_t w = sock ? ::send(fd, buf.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL)
                               : ::write(fd, buf.data(), static_cast<std::size_t>(n));
        log_ << "write " << fd << " " << n << "\n";
        if (w != n) return "write(2) wrote " + std::to_string(w);
        fds_.dispatch();
        model_.write(fd, n);
        return "";
      }
      case 5:
      case 6: {  // a read of 1..300 bytes
        if (!model_.is_open(fd) || (!sock && fd != fd_[0])) return "";
        const std::int64_t n = 1 + pick(300);
        std::array<char, 512> buf{};
        const std::int64_t want = model_.readable(fd) < n ? model_.readable(fd) : n;
        if (want == 0) return "";  // EAGAIN or EOF: no state change
        const ssize_t r = ::read(fd, buf.data(), static_cast<std::size_t>(n));
        log_ << "read " << fd << " " << n << " -> " << r << "\n";
        if (r != want) return "read(2) returned " + std::to_string(r) + ", model " + std::to_string(want);
        fds_.dispatch();
        model_.read(fd, n);
        return "";
      }
      case 7: {  // shutdown(SHUT_WR) of a socket, or a close now and then
        if (!model_.is_open(fd)) return "";
        if (sock && !model_.write_shut(fd) && pick(3) != 0) {
          log_ << "shutdown " << fd << " SHUT_WR\n";
          if (::shutdown(fd, SHUT_WR) != 0) return "shutdown(2) failed";
          fds_.dispatch();
          model_.shutdown_write(fd);
          return "";
        }
        if (pick(4) != 0) return "";
        log_ << "close " << fd << "\n";
        fds_.close(fd);
        fds_.dispatch();
        model_.close(fd);
        return "";
      }
      default:  // a scan
        log_ << "scan ->";
        return compare_scan(events_seen);
    }
  }

  std::string compare_scan(std::size_t& events_seen) {
    std::array<kcont::kevent, 8> out{};
    const std::size_t n = kq_.scan(out);
    std::vector<kqref::kev> got;
    for (std::size_t i = 0; i < n; ++i) got.push_back(to_ref(out[i]));
    std::vector<kqref::kev> want = model_.scan(out.size());
    auto by_key = [](const kqref::kev& x, const kqref::kev& y) {
      return x.ident != y.ident ? x.ident < y.ident : x.filter < y.filter;
    };
    std::sort(got.begin(), got.end(), by_key);
    std::sort(want.begin(), want.end(), by_key);
    events_seen += want.size();
    bool same = got.size() == want.size();
    for (std::size_t i = 0; same && i < got.size(); ++i) same = same_event(got[i], want[i]);
    for (const auto& e : want) log_ << " " << show(e);
    log_ << "\n";
    if (same) return "";
    std::ostringstream why;
    why << "scan reported";
    for (const auto& e : got) why << " " << show(e);
    why << "\n  FreeBSD reports";
    for (const auto& e : want) why << " " << show(e);
    return why.str();
  }

  source fds_;
  kqueue_t kq_;
  kqref::fd_model model_;
  std::array<int, 4> fd_{};  // pipe read end, pipe write end, socket a, socket b
  std::ostringstream log_;
};

}  // namespace

TEST_CASE("fd_differential.random_sequences_match_the_freebsd_reference") {
  const int sequences = static_cast<int>(kcont_test::sized(2000, 300));
  constexpr int steps = 50;
  std::size_t events_seen = 0;
  for (int seed = 1; seed <= sequences; ++seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    run r;
    const std::string verdict = r.go(pick, steps, events_seen);
    INFO("seed " << seed << "\n" << verdict);
    REQUIRE(verdict.empty());
  }
  CHECK(events_seen > static_cast<std::size_t>(sequences) * 5);  // the scans do see events
}
