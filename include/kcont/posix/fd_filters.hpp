// kcont/posix/fd_filters.hpp — EVFILT_READ and EVFILT_WRITE on an fd_source.
//
// Defines `read_filter<Source>` and `write_filter<Source>`: the filters
// (kcont/filter.hpp) of descriptor readiness with kqueue(2)'s semantics, for
// a kqueue (`kqueue<filters<user_filter, read_filter<>, write_filter<>>>
// kq{fds, fds}`) or a standalone knote (`knote<read_filter<>> kn{
// read_filter<>{fds}, k, fd}`), and `fd_kind` / `probe_fd_kind`, what a
// filter learns about its descriptor at attach.
//
// Semantics, FreeBSD's filt_soread / filt_sowrite (sys/kern/uipc_socket.c)
// and filt_piperead / filt_pipewrite (sys/kern/sys_pipe.c), as far as Linux
// lets user space see them:
//   read   data = bytes readable (FIONREAD); a listening socket: pending
//          connections (Linux TCP: the accept queue's length from TCP_INFO;
//          elsewhere 1 while one is pending). Fires when data >= 1 (or >=
//          sdata with note::lowat), on EOF, or with a socket error pending.
//   write  data = space in the send buffer: a socket's SO_SNDBUF minus its
//          queued bytes (SIOCOUTQ), a pipe's F_GETPIPE_SZ minus its queued
//          bytes; fires when the kernel says writable (POLLOUT; with
//          note::lowat: data >= sdata), on EOF, or with an error pending.
//          A listening socket never fires (filt_sowrite returns 0).
//   EV_EOF read: the peer shut down writing or closed (POLLRDHUP / POLLHUP:
//          filt_soread's SBS_CANTRCVMORE, filt_piperead's PIPE_EOF), data
//          still counting the unread bytes; write: the reader of a pipe is
//          gone (POLLERR: filt_pipewrite; with EV_ONESHOT, as pipeclose's
//          knlist_clear marks it: deleted after its report), or the socket cannot send any
//          more (POLLHUP: reset, refused, or both directions shut down).
//          fflags = the socket's error (SO_ERROR) when there is one.
//          Unlike FreeBSD, Linux shows no EOF for a socket whose own sending
//          side alone was shut down (shutdown(SHUT_WR)): it is not reported.
// Level-triggered by default: a kqueue's scan calls event(kn, 0), which asks
// the kernel again (poll(2) and ioctls), so the knote stays reported while
// the condition holds. With ev::clear it is reported once per readiness edge
// of the source (epoll); ev::oneshot and ev::dispatch are the kqueue's.
// An epoll event reports every ready direction: an ev::clear write knote on
// a socket also fires when data arrives while the socket is writable.
// A standalone knote fires on each readiness event of the source (its
// continuation runs then; its data/fflags/flags hold the state).
// Closing: fd_source::forget(fd) (or close(fd)) is FreeBSD's knote_fdclose.
// The filters see fd_ready::closed, never fire again and say defunct()
// (kcont/filter.hpp): a kqueue drops their knotes at once, as knote_drop
// does (no report; ev::delete_ finds none: ENOENT; ev::add of the number
// makes a new knote, which watches whatever descriptor has it now); a
// standalone knote stays attached until its owner detaches it.
//
// Where Linux shows user space less than FreeBSD's kernel sees (the model
// test, tests/fd_differential_test.cpp, leaves these out by name, each with
// a seed and FreeBSD's source):
// - epoll's edges are per descriptor, not per klist: an ev::clear knote may
//   be reported again with nothing new after an event of the other
//   direction, a change of the descriptor's other knote, or its own
//   shutdown(SHUT_WR) (FreeBSD: so_rdsel / so_wrsel, soo_kqfilter); a
//   disabled knote such an edge activates is queued, and the next scan
//   drops it unreported (pending() counts it until then).
// - no edge where FreeBSD calls knote(): a pipe read leaving bytes
//   (pipe_read), the peer's read on a socket's sending side (uipc_rcvd), the
//   writer's own write (pipe_write); an ev::clear knote is not reported
//   again there, and an ev::oneshot knote's data is that of the last edge.
// - a socket closed with bytes unread: Linux sets ECONNRESET on the peer,
//   which EV_EOF's fflags report (FreeBSD's unp_disconnect sets no error).
//
// Thread-safety: as every filter: event and touch run under the knote's
// field lock; here they make system calls (poll, ioctl) but never block.
#pragma once

#include <cstdint>
#include <utility>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <linux/sockios.h>
#endif

#include "kcont/filter.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/kevent.hpp"
#include "kcont/posix/fd_source.hpp"

namespace kcont {

// What a descriptor is, as its filters need to know (probed at attach: a
// socket that starts listening after its knotes attach is still a socket).
enum class fd_kind : std::uint8_t { other, pipe, socket, listener };

// Effects: fstat and, for a socket, SO_ACCEPTCONN.
[[nodiscard]] inline fd_kind probe_fd_kind(int fd) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fd_kind::other;
  if (S_ISFIFO(st.st_mode)) return fd_kind::pipe;
  if (!S_ISSOCK(st.st_mode)) return fd_kind::other;
  int on = 0;
  socklen_t len = sizeof on;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on != 0)
    return fd_kind::listener;
  return fd_kind::socket;
}

namespace detail {

// The descriptor's readiness now (a zero-timeout poll(2)), as fd_ready bits.
[[nodiscard]] inline std::uint32_t fd_ready_now(int fd) noexcept {
  ::pollfd p{fd, static_cast<short>(POLLIN | POLLOUT), 0};
#if defined(POLLRDHUP)
  p.events |= POLLRDHUP;
#endif
  if (::poll(&p, 1, 0) <= 0) return 0;
  return detail::fd_ready_of_poll(p.revents);
}

// Bytes readable (FIONREAD); for a listening socket, pending connections.
[[nodiscard]] inline std::int64_t fd_readable(int fd, fd_kind kind,
                                              std::uint32_t ready) noexcept {
  if (kind == fd_kind::listener) {
#if defined(__linux__)
    // Linux reports a listener's accept queue in tcpi_unacked (TCP only).
    ::tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == 10)
      return ti.tcpi_unacked;  // 10: TCP_LISTEN
#endif
    return (ready & fd_ready::in) != 0 ? 1 : 0;
  }
  int n = 0;
  if (::ioctl(fd, FIONREAD, &n) == 0) return n;
  return (ready & fd_ready::in) != 0 ? 1 : 0;
}

// Space in the send buffer (0 when unknown).
[[nodiscard]] inline std::int64_t fd_writable(int fd, fd_kind kind) noexcept {
  if (kind == fd_kind::socket) {
#if defined(SIOCOUTQ)
    int size = 0;
    socklen_t len = sizeof size;
    int queued = 0;
    if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) == 0 &&
        ::ioctl(fd, SIOCOUTQ, &queued) == 0)
      return size > queued ? size - queued : 0;
#elif defined(FIONSPACE)
    int space = 0;
    if (::ioctl(fd, FIONSPACE, &space) == 0) return space;
#endif
    return 0;
  }
  if (kind == fd_kind::pipe) {
#if defined(F_GETPIPE_SZ)
    const int size = ::fcntl(fd, F_GETPIPE_SZ);
    int queued = 0;
    if (size > 0 && ::ioctl(fd, FIONREAD, &queued) == 0)
      return size > queued ? size - queued : 0;
#endif
    return 0;
  }
  return 0;
}

// What read_filter and write_filter share: the source, the descriptor's
// entry on it, its kind, and whether forget() made the knote defunct.
template <class Source, fd_interest Dir>
class fd_filter_base {
 public:
  using context_type = Source;
  using hint_type = typename Source::hint_type;
  // A plain knote<read_filter<>>'s policy: a field lock (the descriptor's
  // klist is the source's: no guard() reaches it to read data outside event).
  using knote_policy = spin_lock;

  explicit fd_filter_base(Source& source) noexcept : source_(&source) {}

  // The filter_for members (kcont/filter.hpp). attach: the knote's ident is
  // the descriptor; EBADF when it is none; EPIPE for writing to a pipe whose
  // reader is gone (pipe_kqfilter: "other end of pipe has been closed").
  template <class K>
  int attach(K& kn) {
    if (kn.ident > 0x7fffffffu) return EBADF;
    const int fd = static_cast<int>(kn.ident);
    kind_ = probe_fd_kind(fd);
    if (Dir == fd_interest::write && kind_ == fd_kind::pipe &&
        (fd_ready_now(fd) & fd_ready::err) != 0)
      return EPIPE;
    closed_ = false;
    return source_->attach(kn, fd, Dir, entry_);
  }
  // detach: unlinks first (after that no fan-out reads entry_), then forgets
  // the entry, which the source may have freed.
  template <class K>
  void detach(K& kn) {
    source_->detach(kn, entry_, Dir);
    entry_ = nullptr;
  }
  // touch: a change saves fflags/data (note::lowat and its mark); a report
  // copies data, fflags and EV_EOF, resetting data/fflags with ev::clear.
  template <class K>
  void touch(K& kn, knote_change& c, touch_op op) {
    if (op == touch_op::change) {
      kn.sfflags = c.fflags;
      kn.sdata = c.data;
      return;
    }
    c.fflags = kn.fflags;
    c.data = kn.data;
    c.flags |= static_cast<std::uint16_t>(kn.flags & (eof_bit | oneshot_bit));
    if (has(static_cast<ev>(c.flags), ev::clear)) {
      kn.fflags = 0;
      kn.data = 0;
    }
  }

  // FreeBSD's fget() in kqueue_register: EBADF for every change (add,
  // delete, enable...) naming no open descriptor.
  [[nodiscard]] static int check_ident(std::uintptr_t ident) noexcept {
    if (ident > 0x7fffffffu || ::fcntl(static_cast<int>(ident), F_GETFD) == -1) return EBADF;
    return 0;
  }

  // True once forget() dropped the descriptor: the knote never fires again.
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  // The filter concept's defunct() (kcont/filter.hpp): closed(), so that a
  // kqueue drops the knote as FreeBSD's knote_fdclose does.
  [[nodiscard]] bool defunct() const noexcept { return closed_; }
  // What the descriptor was found to be at attach.
  [[nodiscard]] fd_kind kind() const noexcept { return kind_; }

 protected:
  static constexpr std::uint16_t eof_bit = static_cast<std::uint16_t>(ev::eof);
  static constexpr std::uint16_t oneshot_bit = static_cast<std::uint16_t>(ev::oneshot);

  // The readiness to judge: the hint's, or (hint 0: the scan's re-check)
  // the kernel's now. Returns 0 when the knote must not look (closed, or
  // a hint that is not about `wanted`).
  std::uint32_t readiness(std::uint32_t hint, std::uint32_t wanted) {
    if (hint & fd_ready::closed) closed_ = true;
    if (closed_ || entry_ == nullptr) return 0;
    if (hint != 0) return (hint & wanted) != 0 ? hint : 0;
    const std::uint32_t now = fd_ready_now(entry_->fd);
    if (now & fd_ready::err) Source::note_error(*entry_);
    return now | 0x40000000u;  // not 0: "asked", even when nothing is ready
  }
  template <class K>
  static bool report_eof(K& kn, int error) {
    kn.flags = static_cast<std::uint16_t>(kn.flags | eof_bit);
    kn.fflags = static_cast<std::uint32_t>(error);
    return true;
  }
  template <class K>
  static void no_eof(K& kn) {
    kn.flags = static_cast<std::uint16_t>(kn.flags & ~eof_bit);
    kn.fflags = 0;
  }
  [[nodiscard]] int error() const noexcept {
    return entry_->error.load(std::memory_order_relaxed);
  }

  Source* source_;
  typename Source::entry* entry_ = nullptr;
  fd_kind kind_ = fd_kind::other;
  bool closed_ = false;
};

}  // namespace detail

// EVFILT_READ (see the header comment). Per-knote state: the descriptor's
// entry on the source and its kind.
// Usage:
//   kcont::kqueue<kcont::filters<kcont::read_filter<>>> kq{fds};
//   kq.change({.ident = fd, .filter = kcont::filter_id::read,
//              .flags = kcont::ev::add | kcont::ev::clear});
template <class Source = fd_source>
class read_filter : public detail::fd_filter_base<Source, fd_interest::read> {
  using base = detail::fd_filter_base<Source, fd_interest::read>;

 public:
  static constexpr filter_id id = filter_id::read;
  using typename base::hint_type;
  using base::base;

  // filt_soread / filt_piperead: data = bytes readable; EV_EOF with the
  // socket's error in fflags; fires on data >= the low-water mark, EOF or
  // a pending error.
  template <class K>
  bool event(K& kn, hint_type hint) {
    constexpr std::uint32_t wanted =
        fd_ready::in | fd_ready::hup | fd_ready::rdhup | fd_ready::err;
    const std::uint32_t ready = this->readiness(hint, wanted);
    if (ready == 0) return false;
    kn.data = detail::fd_readable(this->entry_->fd, this->kind_, ready);
    const int err = this->error();
    if (this->kind_ != fd_kind::listener &&
        (ready & (fd_ready::hup | fd_ready::rdhup)) != 0)
      return this->report_eof(kn, err);
    if (this->kind_ == fd_kind::listener && err != 0) return this->report_eof(kn, err);
    this->no_eof(kn);
    if (err != 0) return true;  // "temporary udp error"
    if (this->kind_ == fd_kind::listener) return kn.data > 0;
    const std::int64_t lowat = (kn.sfflags & note::lowat) != 0 && kn.sdata > 0 ? kn.sdata : 1;
    return kn.data >= lowat;
  }
};

// EVFILT_WRITE (see the header comment).
template <class Source = fd_source>
class write_filter : public detail::fd_filter_base<Source, fd_interest::write> {
  using base = detail::fd_filter_base<Source, fd_interest::write>;

 public:
  static constexpr filter_id id = filter_id::write;
  using typename base::hint_type;
  using base::base;

  // filt_sowrite / filt_pipewrite: data = send-buffer space; EV_EOF when
  // nothing more can be sent (fflags: the socket's error); fires when
  // writable (with note::lowat: data >= sdata), on EOF or a pending error.
  template <class K>
  bool event(K& kn, hint_type hint) {
    constexpr std::uint32_t wanted = fd_ready::out | fd_ready::hup | fd_ready::err;
    const std::uint32_t ready = this->readiness(hint, wanted);
    if (ready == 0 || this->kind_ == fd_kind::listener) return false;
    kn.data = detail::fd_writable(this->entry_->fd, this->kind_);
    const int err = this->error();
    const bool eof = this->kind_ == fd_kind::pipe ? (ready & fd_ready::err) != 0
                                                  : (ready & fd_ready::hup) != 0;
    // A pipe's reader gone: pipeclose's knlist_clear makes the write knote
    // EV_EOF | EV_ONESHOT (knlist_cleardel): reported once, then deleted.
    if (eof && this->kind_ == fd_kind::pipe) kn.flags |= this->oneshot_bit;
    if (eof) return this->report_eof(kn, err);
    this->no_eof(kn);
    if (err != 0) return true;
    if ((ready & fd_ready::out) == 0) return false;
    if ((kn.sfflags & note::lowat) != 0) return kn.data >= kn.sdata;
    return true;
  }
};

}  // namespace kcont
