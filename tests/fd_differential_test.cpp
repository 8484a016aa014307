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
//
// Backends: the epoll backend (edge-triggered registrations) with every
// flag but those left out below; the poll backend with level-triggered
// knotes only (poll(2) has no edges, so EV_CLEAR / EV_DISPATCH / EV_ONESHOT
// would be compared against activations the backend cannot give).
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
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch_support.hpp"

namespace {

// Operations left out of the random set because kcont and FreeBSD disagree
// there; each is listed, with a seed, its trace and FreeBSD's source, in the
// report of the branch that added this file. Setting one to true brings the
// operation back (and the test fails until kcont does what FreeBSD does);
// the seed named at each is the first that fails with that one set to true
// (FD_DIFF_SEED=n runs seed n alone and prints its trace).
//
// shutdown(SHUT_WR) of a socket that has an EVFILT_WRITE knote, or adding
// one after it: FreeBSD's uipc_shutdown calls socantsendmore(so), so
// filt_sowrite sees SBS_CANTSENDMORE and sets EV_EOF on the socket's own
// write knote; kcont reports it writable without EV_EOF (seed 1: {8 WRITE}
// added after "shutdown 8 SHUT_WR", reported with flags 0).
inline constexpr bool kown_write_eof_after_shutdown = false;
// close() of a socket with bytes still unread in its receive buffer: Linux
// sets ECONNRESET on the peer (unix_release_sock) and kcont reports it in
// the peer's EV_EOF fflags; FreeBSD's unp_disconnect sets no so_error, so
// filt_soread / filt_sowrite report fflags 0 (seed 17: {7 WRITE EV_EOF}
// with fflags 104, ECONNRESET).
inline constexpr bool kclose_socket_with_unread_bytes = false;
// EV_CLEAR on EVFILT_WRITE: FreeBSD calls knote() on the klist holding a
// pipe's write knotes at every write (pipe_write: "if
// (wpipe->pipe_buffer.cnt) pipeselwakeup(wpipe)") and every read that
// leaves PIPE_BUF of space (pipe_read), and on a socket's send klist at
// every read by the peer (uipc_rcvd: sowwakeup_locked(so2)); filt_pipewrite
// / filt_sowrite then find space and activate it, so an EV_CLEAR write
// knote reports again after each. kcont activates it only when epoll gives
// an EPOLLOUT edge, which Linux does not give for these (seed 26: FreeBSD
// reports {7 WRITE EV_CLEAR} after the peer's "read 8 73", kcont nothing).
inline constexpr bool kclear_write_knotes = false;
// EV_CLEAR on a socket's EVFILT_READ: FreeBSD keeps a socket's read and
// write knotes on two klists (soo_kqfilter: so_rdsel for EVFILT_READ,
// so_wrsel for EVFILT_WRITE) and only the receive side's events
// (sorwakeup: the peer's write, shutdown or close) call knote() on the read
// klist. kcont fires every knote of the descriptor on any epoll edge, so an
// EV_CLEAR read knote reports again with nothing new after: a change of
// the socket's EVFILT_WRITE knote (add, delete: its epoll registration
// changes), the peer reading (Linux's sk_write_space gives an EPOLLOUT
// edge), or the socket's own shutdown(SHUT_WR). FreeBSD's kqueue_register
// calls f_event on the changed knote alone; knote_drop only detaches it
// (seed 2: {7 READ EV_CLEAR data 51} reported again after EV_DELETE of
// {7 WRITE}).
inline constexpr bool kclear_read_knotes_on_sockets = false;
// EV_ONESHOT: kqueue_scan copies a one-shot knote out without re-checking
// it ("*kevp = kn->kn_kevent; knote_drop(kn, td);"), so it reports the data
// (and EV_EOF) of the last f_event call, and is queued whenever it was
// activated, even while disabled. FreeBSD calls knote() on a pipe's klist
// at every write (pipe_write) and every read leaving PIPE_BUF of space
// (pipe_read), and on a socket's receive klist at the peer's writes, not at
// its own reads (soreceive wakes the peer's send side only: uipc_rcvd).
// kcont's data differs both ways: stale after the writer's own write or a
// pipe read Linux gives no edge for (seed 29: a one-shot pipe write knote,
// FreeBSD 65535 after "write 6 1", kcont 65536), current after a socket's
// own read (FreeBSD keeps the value of the peer's last write), and a
// disabled one-shot socket read knote activated by a write-side edge is
// reported on EV_ENABLE with data 0 where FreeBSD reports nothing.
inline constexpr bool koneshot_knotes = false;
// A read of a pipe that leaves bytes behind, or any read after the writer
// closed, while the read end has an EV_CLEAR knote: FreeBSD's pipe_read ends
// with "if (nread > 0 && rpipe->pipe_buffer.size - rpipe->pipe_buffer.cnt
// >= PIPE_BUF) pipeselwakeup(rpipe)", whose klist holds the read knote:
// filt_piperead finds bytes left (or PIPE_EOF) and activates it again
// (seed 253: FreeBSD reports {5 READ EV_CLEAR data 110} after "read 5 16";
// likewise {EV_CLEAR|EV_EOF data 0} after the last bytes are read at EOF).
// Linux gives no epoll edge for those reads; kcont reports nothing.
inline constexpr bool kpipe_read_under_clear_knote = false;
// Comparing kqueue::pending() with FreeBSD's kq_count after every
// operation: kcont queues knotes FreeBSD does not. Registering a knote
// changes its descriptor's epoll registration, and the next look fires the
// descriptor's klist, activating a disabled knote whose condition holds at
// that moment; FreeBSD's kqueue_register runs no f_event for a disabled
// knote ("if ((kn->kn_status & KN_DISABLED) == 0) event = ...; else event
// = 0;"), and knote() activates only when f_event returns true. Seed 1390:
// {8 READ EV_ADD|EV_DISABLE} added with 166 bytes queued, two reads drain
// them, EV_ENABLE: FreeBSD's f_event(kn, 0) finds nothing and does not
// queue it (pending 1); kcont queues it (pending 2) and the next scan drops
// it unreported. Visible as pending() and as the kqueue's
// native_handle() readable (kqueue_poll) with nothing to report.
inline constexpr bool kcompare_pending_counts = false;


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

// What the sequences did, to check that they do exercise the filters.
struct tally {
  std::size_t events = 0;       // events compared
  std::size_t eof_events = 0;   // ... with EV_EOF
  std::size_t edge_events = 0;  // ... of EV_CLEAR or EV_DISPATCH knotes
  std::size_t changes = 0, writes = 0, reads = 0, shutdowns = 0, closes = 0;
  std::size_t sequences = 0;
};

// One sequence: a fresh source (on Backend), kqueue, pipe and socket pair.
template <class Backend>
class run {
  using source = kcont::basic_fd_source<Backend>;
  using kqueue_t = kcont::kqueue<
      kcont::filters<kcont::read_filter<source>, kcont::write_filter<source>, kcont::user_filter>>;

 public:
  // level_only: no EV_CLEAR, EV_ONESHOT or EV_DISPATCH (for a level-triggered
  // backend: poll(2) has no edges, so only level-triggered knotes mean the
  // same there).
  explicit run(bool level_only) : kq_(fds_), level_only_(level_only) {
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
  std::string go(Pick& pick, int steps, tally& seen) {
    for (int step = 0; step < steps; ++step) {
      std::string why = one(pick, seen);
      if (why.empty() && kq_.size() != model_.registered())
        why = "the kqueue holds " + std::to_string(kq_.size()) + " knotes, FreeBSD " +
              std::to_string(model_.registered());
      if (why.empty() && kcompare_pending_counts && kq_.pending() != model_.queued())
        why = "the kqueue has " + std::to_string(kq_.pending()) + " pending, FreeBSD " +
              std::to_string(model_.queued());
      if (!why.empty()) return log_.str() + "step " + std::to_string(step) + ": " + why;
    }
    log_ << "final scan ->";
    const std::string why = compare_scan(seen);
    return why.empty() ? why : log_.str() + "step " + std::to_string(steps) + ": " + why;
  }

 private:
  template <class Pick>
  std::string one(Pick& pick, tally& seen) {
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
            if (pick(2) == 0 && !level_only_ &&
                (filter == kqref::EVFILT_READ ? kclear_read_knotes_on_sockets || !sock
                                              : kclear_write_knotes))
              flags |= kqref::EV_CLEAR;
            if (pick(5) == 0 && koneshot_knotes && !level_only_) flags |= kqref::EV_ONESHOT;
            if (pick(5) == 0 && !level_only_) flags |= kqref::EV_DISPATCH;
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
        if ((flags & kqref::EV_ADD) != 0 && filter == kqref::EVFILT_WRITE) {
          if (!kown_write_eof_after_shutdown && model_.write_shut(fd)) return "";
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
        ++seen.changes;
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
        ++seen.writes;
        return "";
      }
      case 5:
      case 6: {  // a read of 1..300 bytes
        if (!model_.is_open(fd) || (!sock && fd != fd_[0])) return "";
        const std::int64_t n = 1 + pick(300);
        std::array<char, 512> buf{};
        const std::int64_t want = model_.readable(fd) < n ? model_.readable(fd) : n;
        if (want == 0) return "";  // EAGAIN or EOF: no state change
        if (!kpipe_read_under_clear_knote && !sock &&
            (want < model_.readable(fd) || !model_.is_open(fd_[1])) &&
            (model_.flags_of(static_cast<std::uintptr_t>(fd), kqref::EVFILT_READ) & kqref::EV_CLEAR) != 0)
          return "";
        const ssize_t r = ::read(fd, buf.data(), static_cast<std::size_t>(n));
        log_ << "read " << fd << " " << n << " -> " << r << "\n";
        if (r != want) return "read(2) returned " + std::to_string(r) + ", model " + std::to_string(want);
        fds_.dispatch();
        model_.read(fd, n);
        ++seen.reads;
        return "";
      }
      case 7: {  // shutdown(SHUT_WR) of a socket, or a close now and then
        if (!model_.is_open(fd)) return "";
        if (sock && !model_.write_shut(fd) && pick(3) != 0) {
          if (!kown_write_eof_after_shutdown && model_.has_knote(static_cast<std::uintptr_t>(fd), kqref::EVFILT_WRITE))
            return "";
          log_ << "shutdown " << fd << " SHUT_WR\n";
          if (::shutdown(fd, SHUT_WR) != 0) return "shutdown(2) failed";
          fds_.dispatch();
          model_.shutdown_write(fd);
          ++seen.shutdowns;
          return "";
        }
        if (pick(4) != 0) return "";
        if (!kclose_socket_with_unread_bytes && sock && model_.readable(fd) != 0) return "";
        log_ << "close " << fd << "\n";
        fds_.close(fd);
        fds_.dispatch();
        model_.close(fd);
        ++seen.closes;
        return "";
      }
      default:  // a scan
        log_ << "scan ->";
        return compare_scan(seen);
    }
  }

  std::string compare_scan(tally& seen) {
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
    seen.events += want.size();
    for (const auto& e : want) {
      if ((e.flags & kqref::EV_EOF) != 0) ++seen.eof_events;
      if ((e.flags & (kqref::EV_CLEAR | kqref::EV_DISPATCH)) != 0) ++seen.edge_events;
    }
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
  bool level_only_ = false;
};

// Runs the seeded sequences on Backend; REQUIREs each to agree with the
// model and returns what they did.
template <class Backend>
tally run_sequences(bool level_only) {
  // FD_DIFF_SEQUENCES=n runs n sequences (a wider survey than the default).
  const char* wide = std::getenv("FD_DIFF_SEQUENCES");
  const int sequences =
      wide != nullptr ? std::atoi(wide) : static_cast<int>(kcont_test::sized(3000, 1000));
  constexpr int steps = 50;
  tally seen;
  // FD_DIFF_SEED=n runs that seed alone (to read its trace).
  const char* only = std::getenv("FD_DIFF_SEED");
  for (int seed = only != nullptr ? std::atoi(only) : 1;
       seed <= (only != nullptr ? std::atoi(only) : sequences); ++seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    run<Backend> r(level_only);
    const std::string verdict = r.go(pick, steps, seen);
    if (std::getenv("FD_DIFF_SURVEY") != nullptr) {  // every failing seed's last line
      if (!verdict.empty()) {
        const auto at = verdict.rfind("step ");
        MESSAGE("seed " << seed << ": " << verdict.substr(at == std::string::npos ? 0 : at));
      }
      continue;
    }
    INFO("seed " << seed << "\n" << verdict);
    REQUIRE(verdict.empty());
  }
  seen.sequences = only != nullptr ? 1 : static_cast<std::size_t>(sequences);
  INFO("events " << seen.events << " eof " << seen.eof_events << " clear/dispatch "
                 << seen.edge_events << " changes " << seen.changes << " writes " << seen.writes
                 << " reads " << seen.reads << " shutdowns " << seen.shutdowns << " closes "
                 << seen.closes);
  // The sequences do exercise the filters (measured, seeds 1..300 on epoll:
  // 11.6 events, 2.2 with EV_EOF, 0.7 of EV_CLEAR / EV_DISPATCH knotes, 0.8
  // shutdowns, 0.4 closes per sequence).
  CHECK(seen.events > 8 * seen.sequences);
  CHECK(seen.eof_events > seen.sequences);
  CHECK(2 * (seen.shutdowns + seen.closes) > seen.sequences);
  return seen;
}

}  // namespace

TEST_CASE("fd_differential.random_sequences_match_the_freebsd_reference") {
  const tally seen = run_sequences<kcont::epoll_backend>(false);
  CHECK(2 * seen.edge_events > seen.sequences);
}

TEST_CASE("fd_differential.level_triggered_sequences_match_the_freebsd_reference_on_poll") {
  (void)run_sequences<kcont::poll_backend>(true);
}
