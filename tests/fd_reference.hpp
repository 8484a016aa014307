// fd_reference.hpp: an independent reference model of FreeBSD kqueue(2) for
// EVFILT_READ and EVFILT_WRITE on pipes and AF_UNIX stream socket pairs, used
// as a test oracle beside kcont's read_filter / write_filter over fd_source.
//
// What it models
//   One kqueue, single-threaded, changes applied one at a time (kevent() with
//   one change and no event list: kqueue_register's errno) and scans with a
//   zero timeout. The descriptors are pipes (a read end and a write end) and
//   connected AF_UNIX SOCK_STREAM socket pairs; their state is what the
//   filters read: bytes queued per direction, end-of-file per direction, and
//   which ends are still open. The operations on them (write, read,
//   shutdown(SHUT_WR), close) change that state and then call knote() on the
//   klists FreeBSD calls it on, each cited below. A knote's status (active,
//   queued, disabled, detached) and its flags (EV_CLEAR, EV_ONESHOT,
//   EV_DISPATCH, EV_EOF) follow kern_event.c.
//
// Sources (every rule below cites its function)
//   FreeBSD sys/kern/kern_event.c, main as held in kostikbel/freebsd-src at
//   efedda13b52cf93df98deab4cacfe560ba24a1fe (the tree kqueue_reference.hpp
//   and timer_reference.hpp were written from): knote, knlist_cleardel
//   (knlist_clear), knote_fdclose; and kqueue_register, KNOTE_ACTIVATE,
//   knote_drop, kqueue_scan, knote_enqueue, knote_dequeue, which
//   kern_event_reference.hpp models for all three reference models (this
//   one gives it fget() and the f_isfd filters, which have no f_touch).
//   FreeBSD sys/kern/sys_pipe.c, freebsd/freebsd-src at
//   004248ee6494d69ee77849286420e3c2d2d60f59: pipe_kqfilter, filt_piperead,
//   filt_pipewrite, filt_pipedetach, pipe_read, pipe_write, pipeclose,
//   pipeselwakeup.
//   FreeBSD sys/kern/uipc_socket.c (main): filt_soread, filt_sowrite
//   ("kn->kn_data = sbspace(&so->so_snd); ... SBS_CANTSENDMORE ... EV_EOF,
//   kn_fflags = so->so_error"). For who calls knote() on a unix stream
//   socket's buffers: sys/kern/uipc_usrreq.c uipc_send (sorwakeup_locked on
//   the peer's receive buffer), uipc_rcvd (sowwakeup_locked on the peer's
//   send buffer), uipc_shutdown / unp_shutdown (socantsendmore on the
//   socket, socantrcvmore on the peer), unp_disconnect / soisdisconnected
//   (the peer can neither receive nor send more; both buffers woken), and
//   sys/kern/uipc_sockbuf.c socantsendmore / socantrcvmore (set SBS_* and
//   wake the buffer's klist).
//   FreeBSD lib/libc/sys/kqueue.2: EVFILT_READ "data contains the number of
//   bytes available"; "If the read direction of the socket has shutdown,
//   then the filter also sets EV_EOF in flags, and returns the socket error
//   (if any) in fflags"; for pipes "the filter will set EV_EOF when the last
//   writer disconnects"; EVFILT_WRITE "data will contain the amount of space
//   remaining in the write buffer. The filter will set EV_EOF when the
//   reader disconnects"; "a file descriptor ... closed ... removes its
//   knotes" (knote_fdclose).
//
// FreeBSD 15's unix stream sockets (sys/kern/uipc_usrreq.c after the 2024
//   rewrite, read in the index's current copy) have their own write filter,
//   uipc_filt_sowrite: space = uipc_stream_sbspace(&so2->so_rcv) (the peer's
//   receive buffer); "if (unp2 == NULL) { if (so->so_state &
//   SS_ISDISCONNECTED) { kn->kn_flags |= EV_EOF; ... return (1); } ...}";
//   "if (so2->so_rcv.sb_state & SBS_CANTRCVMORE) { kn->kn_flags |= EV_EOF;
//   return (1); }"; uipc_shutdown(SHUT_WR) calls
//   "uipc_cantrcvmore(unp->unp_conn->unp_socket)" and unp_disconnect's
//   unp_soisdisconnected does "so->so_state |= SS_ISDISCONNECTED; ...
//   socantrcvmore_locked(so);". The states this model reports are the same
//   under both versions: EV_EOF on a socket's own write knote after its
//   shutdown(SHUT_WR), on the survivor's read and write knotes after the
//   peer's close, and none on the write knote for the peer's
//   shutdown(SHUT_RD) (FreeBSD tests/sys/kern/unix_stream.c:
//   peerclosed_writability expects EV_EOF, peershutdown_writability does
//   not, peershutdown_wakeup_kevent expects EVFILT_READ EV_EOF). Which
//   klists each version knote()s at a write or read may differ; the
//   differential leaves out the cases that depend on it (EV_CLEAR write
//   knotes, one-shot data).
//
// Where the model departs from FreeBSD (on purpose, each marked "MODEL:")
//   - A pipe's buffer size is the driver's (Linux: F_GETPIPE_SZ); FreeBSD's
//     is 16 or 64 KiB and grows (pipe_write's pipespace). The write filter's
//     data on a pipe is size - bytes queued, filt_pipewrite's formula.
//   - A socket's send-buffer space (filt_sowrite's sbspace(&so->so_snd)) is
//     not a number Linux can show (its AF_UNIX accounting counts buffer
//     overhead, not bytes); the model reports `any_positive` there, which the
//     differential test matches against any data > 0.
//   - Buffers never fill: the operations write a few hundred bytes at most,
//     so a pipe's space stays >= PIPE_BUF (FreeBSD's 512, filt_pipewrite)
//     and a socket's >= sb_lowat: the write filters are ready until EOF.
//   - Pipes are used one way only (read filter on the read end, write filter
//     on the write end). FreeBSD's pipes are bidirectional; Linux's are not.
//   - so_error is 0 throughout: FreeBSD's orderly close of a unix stream
//     socket (unp_disconnect) sets no error on the peer.
//
// What it leaves out
//   NOTE_LOWAT, EV_FORCEONESHOT, EV_RECEIPT, EV_KEEPUDATA (kern_event.c's
//   code for them is modelled, but the driver issues none), change lists
//   with several changes (kqueue_reference_test.cpp checks the change loop), full
//   buffers, listening sockets, named pipes, threads.
//
// Independence
//   Written from the FreeBSD sources above and the public kevent / kqueue
//   contracts only, without reading kcont's fd_source, fd_filters,
//   fd_backends or their tests. Standard headers and
//   kern_event_reference.hpp only.
#ifndef KCONT_TESTS_FD_REFERENCE_HPP
#define KCONT_TESTS_FD_REFERENCE_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "kern_event_reference.hpp"  // kev, EV_* values, kern_event

namespace kqref {

// sys/sys/event.h
inline constexpr std::int16_t EVFILT_READ = -1;
inline constexpr std::int16_t EVFILT_WRITE = -2;
// sys/sys/syslimits.h: "#define PIPE_BUF 512": the space filt_pipewrite asks for.
inline constexpr std::int64_t FREEBSD_PIPE_BUF = 512;
// MODEL: the write filter's data on a socket, "some space" (see above).
inline constexpr std::int64_t any_positive = std::numeric_limits<std::int64_t>::min();

static_assert(EBADF == 9 && EPIPE == 32, "errno numbers differ from FreeBSD's");

// The klist a knote hangs on (pipe_kqfilter's kn_hook; soo_kqfilter's
// so_rdsel / so_wrsel).
enum class fd_list_kind { pipe_reader, socket_rcv, socket_snd };
struct fd_list_id {
  fd_list_kind kind = fd_list_kind::pipe_reader;
  int index = 0;
  friend bool operator==(const fd_list_id&, const fd_list_id&) = default;
};
// What a descriptor knote adds to kern_event.c's.
struct fd_knote : knote_base {
  int fd = -1;
  fd_list_id list;
  bool attached = false;  // on its klist (not KN_DETACHED)
  std::uint64_t seq = 0;  // knlist_add order: knote() walks newest first
};

// EVFILT_READ / EVFILT_WRITE on kern_event.c's skeleton (kern_event_reference.hpp).
class fd_model : public kern_event<fd_model, fd_knote> {
 public:
  // A pipe whose read end is `rfd` and write end `wfd`, its buffer `size`
  // bytes (MODEL: the driver's F_GETPIPE_SZ), empty.
  void add_pipe(int rfd, int wfd, std::int64_t size) {
    const int p = static_cast<int>(pipes_.size());
    pipes_.push_back(pipe_pair{size});
    ends_[rfd] = end{end_kind::pipe_read, p, wfd};
    ends_[wfd] = end{end_kind::pipe_write, p, rfd};
  }
  // A connected AF_UNIX stream socket pair.
  void add_socketpair(int a, int b) {
    ends_[a] = end{end_kind::socket, static_cast<int>(sockets_.size()), b};
    sockets_.push_back(socket_state{});
    ends_[b] = end{end_kind::socket, static_cast<int>(sockets_.size()), a};
    sockets_.push_back(socket_state{});
  }

  // kevent(kq, &change, 1, NULL, 0, &zero): kqueue_register's errno (with
  // no room for an error entry, kqueue_kevent returns it: -1 and errno).
  int change(const kev& k) { return kevent(std::span<const kev>(&k, 1), 0).err; }

  // kevent(kq, NULL, 0, events, nevents, &zero): what kqueue_scan writes.
  std::vector<kev> scan(std::size_t nevents) { return kevent({}, nevents).out; }

  // write(fd, buf, n) of n > 0 bytes on an open end whose peer can receive.
  // Returns false (nothing changed) when the write would fail (EPIPE, or a
  // read-only end): the driver does not issue those.
  bool write(int fd, std::int64_t n) {
    if (!can_write(fd)) return false;
    const end& w = ends_.at(fd);
    if (w.kind == end_kind::pipe_write) {
      pipe_pair& p = pipes_[static_cast<std::size_t>(w.index)];
      p.cnt += n;
      // pipe_write: "if (wpipe->pipe_buffer.cnt) pipeselwakeup(wpipe);":
      // wpipe is the read side's struct pipe, whose klist holds the read
      // end's read knotes and the write end's write knotes (pipe_kqfilter:
      // "cpipe = PIPE_PEER(cpipe)" for EVFILT_WRITE).
      knote_list(list_id{list_kind::pipe_reader, w.index});
    } else {
      socket_state& peer = sockets_[static_cast<std::size_t>(ends_.at(w.peer).index)];
      peer.rcv_cnt += n;
      // uipc_send (SOCK_STREAM): "sbappend_locked(&so2->so_rcv, ...);
      // sorwakeup_locked(so2);": the peer's read knotes.
      knote_list(list_id{list_kind::socket_rcv, ends_.at(w.peer).index});
    }
    return true;
  }

  // read(fd, buf, n): returns the bytes read (0 at EOF or when empty; the
  // driver compares it with read(2)'s).
  std::int64_t read(int fd, std::int64_t n) {
    const auto it = ends_.find(fd);
    if (it == ends_.end() || !it->second.open) return 0;
    const end& r = it->second;
    if (r.kind == end_kind::pipe_read) {
      pipe_pair& p = pipes_[static_cast<std::size_t>(r.index)];
      const std::int64_t got = std::min(n, p.cnt);
      p.cnt -= got;
      // pipe_read: "if (nread > 0 && rpipe->pipe_buffer.size -
      // rpipe->pipe_buffer.cnt >= PIPE_BUF) pipeselwakeup(rpipe);": the read
      // end's own read knotes are re-evaluated too (filt_piperead sets
      // kn_data to what is left, and activates them if anything is).
      if (got > 0 && p.size - p.cnt >= FREEBSD_PIPE_BUF)
        knote_list(list_id{list_kind::pipe_reader, r.index});
      return got;
    }
    if (r.kind != end_kind::socket) return 0;
    socket_state& s = sockets_[static_cast<std::size_t>(r.index)];
    const std::int64_t got = std::min(n, s.rcv_cnt);
    s.rcv_cnt -= got;
    // soreceive -> pr_rcvd = uipc_rcvd: "sowwakeup_locked(so2)": the peer's
    // write knotes (its send space grew). Nothing wakes the reader's own
    // receive buffer: its read knotes are not re-evaluated.
    const auto peer = ends_.find(r.peer);
    if (got > 0 && peer != ends_.end() && peer->second.open)
      knote_list(list_id{list_kind::socket_snd, peer->second.index});
    return got;
  }

  // shutdown(fd, SHUT_WR) on an open socket.
  void shutdown_write(int fd) {
    const auto it = ends_.find(fd);
    if (it == ends_.end() || !it->second.open || it->second.kind != end_kind::socket) return;
    socket_state& s = sockets_[static_cast<std::size_t>(it->second.index)];
    // uipc_shutdown: "socantsendmore(so);" -> SBS_CANTSENDMORE and
    // sowwakeup: this socket's write knotes see EV_EOF (filt_sowrite).
    s.cantsendmore = true;
    knote_list(list_id{list_kind::socket_snd, it->second.index});
    // unp_shutdown: "if (unp2 != NULL ...) socantrcvmore(so2);" ->
    // SBS_CANTRCVMORE and sorwakeup: the peer's read knotes see EV_EOF
    // (filt_soread), with the bytes still queued as data.
    const auto peer = ends_.find(it->second.peer);
    if (peer != ends_.end() && peer->second.open) {
      sockets_[static_cast<std::size_t>(peer->second.index)].cantrcvmore = true;
      knote_list(list_id{list_kind::socket_rcv, peer->second.index});
    }
  }

  // close(fd): closefp -> knote_fdclose, then the object's close.
  void close(int fd) {
    const auto it = ends_.find(fd);
    if (it == ends_.end() || !it->second.open) return;
    // knote_fdclose: "while ((kn = SLIST_FIRST(&kq->kq_knlist[fd])) != NULL)
    // { ... knote_drop(kn, td); }": every knote on the descriptor goes,
    // a queued one with its pending event (knote_drop_detached:
    // "if (kn->kn_status & KN_QUEUED) knote_dequeue(kn);").
    for (auto k = knotes_.begin(); k != knotes_.end();) {
      auto next = std::next(k);
      if (k->second.fd == fd) knote_drop(k->second);
      k = next;
    }
    end& c = it->second;
    c.open = false;
    if (c.kind == end_kind::pipe_write || c.kind == end_kind::pipe_read) {
      pipe_pair& p = pipes_[static_cast<std::size_t>(c.index)];
      if (c.kind == end_kind::pipe_write) {
        // pipeclose(cpipe = the write end's struct): "cpipe->pipe_state |=
        // PIPE_EOF; pipeselwakeup(cpipe);" (its klist: the write end's read
        // knotes and the read end's write knotes, neither used here); "ppipe
        // = cpipe->pipe_peer; if (ppipe->pipe_present == PIPE_ACTIVE) {
        // ppipe->pipe_state |= PIPE_EOF; ... pipeselwakeup(ppipe); }": the
        // read end's read knotes see EV_EOF (filt_piperead) with what is
        // left as data.
        p.writer_present = false;
        if (p.reader_present) {
          p.reader_eof = true;
          knote_list(list_id{list_kind::pipe_reader, c.index});
        }
      } else {
        // pipeclose(cpipe = the read end's struct): "cpipe->pipe_state |=
        // PIPE_EOF; ... pipeselwakeup(cpipe);": the write end's write
        // knotes hang on this klist; filt_pipewrite, pipe_present still
        // PIPE_ACTIVE, computes the space and sees PIPE_EOF: EV_EOF,
        // activated.
        p.reader_eof = true;
        knote_list(list_id{list_kind::pipe_reader, c.index});
        // "cpipe->pipe_present = PIPE_CLOSING; ... knlist_clear(&cpipe->
        // pipe_sel.si_note, 1);" = knlist_cleardel(knl, NULL, 1, 0): each
        // knote left on the klist is detached and "kn->kn_flags |= EV_EOF |
        // EV_ONESHOT;  /* Make sure cleared knotes disappear soon */": the
        // write end's write knotes report once more (as they stand: oneshot
        // is not re-checked) and are dropped by that scan.
        p.reader_present = false;
        for (auto& [k, kn] : knotes_) {
          if (kn.attached && kn.list == list_id{list_kind::pipe_reader, c.index}) {
            kn.attached = false;
            kn.kn_kevent.flags |= EV_EOF | EV_ONESHOT;
          }
        }
      }
      return;
    }
    // soclose -> uipc_close / uipc_detach -> unp_disconnect(unp, unp2) ->
    // soisdisconnected(so2): "so->so_state &= ~(SS_ISCONNECTING |
    // SS_ISCONNECTED | ...); socantrcvmore_locked(so); ...
    // socantsendmore_locked(so);": the peer's read knotes see EV_EOF
    // (filt_soread) and its write knotes too (filt_sowrite), so_error 0.
    const auto peer = ends_.find(c.peer);
    if (peer != ends_.end() && peer->second.open) {
      socket_state& s = sockets_[static_cast<std::size_t>(peer->second.index)];
      s.cantrcvmore = true;
      s.cantsendmore = true;
      s.connected = false;
      knote_list(list_id{list_kind::socket_rcv, peer->second.index});
      knote_list(list_id{list_kind::socket_snd, peer->second.index});
    }
  }

  // What the driver may do: write(fd) succeeds (an open writable end whose
  // peer is open and can receive), and the bytes a read(fd) would find.
  bool can_write(int fd) const {
    const auto it = ends_.find(fd);
    if (it == ends_.end() || !it->second.open) return false;
    const end& w = it->second;
    if (w.kind == end_kind::pipe_read) return false;
    // pipe_write: "if (wpipe->pipe_present != PIPE_ACTIVE || (wpipe->
    // pipe_state & PIPE_EOF)) ... return (EPIPE);"
    if (w.kind == end_kind::pipe_write)
      return pipes_[static_cast<std::size_t>(w.index)].reader_present;
    const auto peer = ends_.find(w.peer);
    return !sockets_[static_cast<std::size_t>(w.index)].cantsendmore &&
           peer != ends_.end() && peer->second.open;
  }
  std::int64_t readable(int fd) const {
    const auto it = ends_.find(fd);
    if (it == ends_.end() || !it->second.open) return 0;
    if (it->second.kind == end_kind::pipe_read)
      return pipes_[static_cast<std::size_t>(it->second.index)].cnt;
    if (it->second.kind == end_kind::socket)
      return sockets_[static_cast<std::size_t>(it->second.index)].rcv_cnt;
    return 0;
  }
  bool is_open(int fd) const {
    const auto it = ends_.find(fd);
    return it != ends_.end() && it->second.open;
  }
  bool is_socket(int fd) const {
    const auto it = ends_.find(fd);
    return it != ends_.end() && it->second.kind == end_kind::socket;
  }
  bool write_shut(int fd) const {
    const auto it = ends_.find(fd);
    return it != ends_.end() && it->second.kind == end_kind::socket &&
           sockets_[static_cast<std::size_t>(it->second.index)].cantsendmore;
  }

  // (registered() and queued(), kq_count, are kern_event's.)
  // True when a knote (ident, filter) exists.
  bool has_knote(std::uintptr_t ident, std::int16_t filter) const {
    return knotes_.count(key{ident, filter}) != 0;
  }
  // The flags a knote reports (EV_CLEAR, EV_ONESHOT...), 0 when none exists.
  std::uint16_t flags_of(std::uintptr_t ident, std::int16_t filter) const {
    const auto it = knotes_.find(key{ident, filter});
    return it == knotes_.end() ? 0 : it->second.kn_kevent.flags;
  }

 private:
  friend class kern_event<fd_model, fd_knote>;
  using list_kind = fd_list_kind;
  using list_id = fd_list_id;

  enum class end_kind { pipe_read, pipe_write, socket };
  struct end {
    end_kind kind = end_kind::socket;
    int index = 0;  // the pipe, or the socket
    int peer = -1;  // the other end's descriptor
    bool open = true;
  };
  // One pipe: struct pipe of each end, reduced to what the filters read.
  // The bytes in flight sit in the read side's pipe_buffer.
  struct pipe_pair {
    std::int64_t size = 0;       // rpipe->pipe_buffer.size (MODEL: the driver's)
    std::int64_t cnt = 0;        // rpipe->pipe_buffer.cnt
    bool reader_eof = false;     // rpipe->pipe_state & PIPE_EOF
    bool reader_present = true;  // rpipe->pipe_present == PIPE_ACTIVE
    bool writer_present = true;  // wpipe->pipe_present == PIPE_ACTIVE
  };
  struct socket_state {
    std::int64_t rcv_cnt = 0;   // sbavail(&so->so_rcv)
    bool cantrcvmore = false;   // so_rcv.sb_state & SBS_CANTRCVMORE
    bool cantsendmore = false;  // so_snd.sb_state & SBS_CANTSENDMORE
    bool connected = true;      // so_state & SS_ISCONNECTED
  };
  // kqueue_fo_find: only the two descriptor filters here.
  static bool fo_find(std::int16_t filter) {
    return filter == EVFILT_READ || filter == EVFILT_WRITE;
  }

  // kqueue_register, f_isfd: "if (kev->ident > INT_MAX) error = EBADF; else
  // error = fget(td, kev->ident, ...);": a descriptor that is not open is
  // EBADF for every change, EV_DELETE and EV_ENABLE included.
  int fget(const kev& k) const {
    const auto e = ends_.find(static_cast<int>(k.ident));
    if (k.ident > static_cast<std::uintptr_t>(std::numeric_limits<int>::max()) ||
        e == ends_.end() || !e->second.open)
      return EBADF;
    return 0;
  }

  // f_attach = filt_fileattach -> fo_kqfilter of the descriptor.
  int f_attach(fd_knote& kn) {
    kn.fd = static_cast<int>(kn.kn_kevent.ident);
    const int error = attach(kn, ends_.at(kn.fd));
    if (error == 0) kn.seq = ++seq_;
    return error;
  }

  // f_detach: filt_pipedetach / filt_sordetach: knlist_remove.
  static void f_detach(fd_knote& kn) { kn.attached = false; }

  // Descriptor filters are f_isfd and have no f_touch: kqueue_register
  // saves a re-add's fflags and data, kqueue_scan copies kn_kevent out and
  // resets kn_data and kn_fflags of an EV_CLEAR knote.
  static constexpr bool touch = false;

  // fo_kqfilter of the descriptor: pipe_kqfilter / soo_kqfilter.
  int attach(fd_knote& kn, const end& e) {
    if (e.kind == end_kind::socket) {
      // soo_kqfilter: "case EVFILT_READ: kn->kn_fop = &soread_filtops; knl =
      // &so->so_rdsel.si_note; ... case EVFILT_WRITE: kn->kn_fop =
      // &sowrite_filtops; knl = &so->so_wrsel.si_note;" then knlist_add.
      kn.list = list_id{kn.kn_kevent.filter == EVFILT_READ ? list_kind::socket_rcv
                                                           : list_kind::socket_snd,
                        e.index};
      kn.attached = true;
      return 0;
    }
    // pipe_kqfilter: EVFILT_WRITE: "if (cpipe->pipe_peer->pipe_present !=
    // PIPE_ACTIVE) { /* other end of pipe has been closed */ ... return
    // (EPIPE); } cpipe = PIPE_PEER(cpipe);"; both filters then "kn->kn_hook
    // = cpipe; knlist_add(&cpipe->pipe_sel.si_note, kn, 1);": the read
    // side's klist for the read end's read knotes and the write end's write
    // knotes. (A filter the end does not support, "not supported by this
    // file descriptor", attaches a filter that never fires; the driver does
    // not register those.)
    if (kn.kn_kevent.filter == EVFILT_WRITE && e.kind == end_kind::pipe_write &&
        !pipes_[static_cast<std::size_t>(e.index)].reader_present)
      return EPIPE;
    kn.list = list_id{list_kind::pipe_reader, e.index};
    kn.attached = true;
    return 0;
  }

  // f_event(kn, 0): the filter's check, which updates kn_data, EV_EOF and
  // kn_fflags as a side effect.
  bool f_event(fd_knote& kn) {
    const end& e = ends_.at(kn.fd);
    if (e.kind != end_kind::socket) {
      const pipe_pair& p = pipes_[static_cast<std::size_t>(e.index)];
      if (kn.kn_kevent.filter == EVFILT_READ) {
        // filt_piperead: "kn->kn_data = rpipe->pipe_buffer.cnt; ... if
        // ((rpipe->pipe_state & PIPE_EOF) != 0 && ...) { kn->kn_flags |=
        // EV_EOF; return (1); } kn->kn_flags &= ~EV_EOF; return (kn->kn_data
        // > 0);"
        kn.kn_kevent.data = p.cnt;
        if (p.reader_eof) {
          kn.kn_kevent.flags |= EV_EOF;
          return true;
        }
        kn.kn_kevent.flags = static_cast<std::uint16_t>(kn.kn_kevent.flags & ~EV_EOF);
        return kn.kn_kevent.data > 0;
      }
      // filt_pipewrite (wpipe = kn_hook, the read side's struct): "if
      // (wpipe->pipe_present == PIPE_ACTIVE || ...) { ... kn->kn_data =
      // wpipe->pipe_buffer.size - wpipe->pipe_buffer.cnt; ... } if
      // (wpipe->pipe_present != PIPE_ACTIVE || (wpipe->pipe_state &
      // PIPE_EOF)) { kn->kn_flags |= EV_EOF; return (1); } kn->kn_flags &=
      // ~EV_EOF; return (kn->kn_data >= PIPE_BUF);": after the reader is
      // gone the data is left as it was last computed.
      if (p.reader_present) kn.kn_kevent.data = p.size - p.cnt;
      if (!p.reader_present || p.reader_eof) {
        kn.kn_kevent.flags |= EV_EOF;
        return true;
      }
      kn.kn_kevent.flags = static_cast<std::uint16_t>(kn.kn_kevent.flags & ~EV_EOF);
      return kn.kn_kevent.data >= FREEBSD_PIPE_BUF;
    }
    const socket_state& s = sockets_[static_cast<std::size_t>(e.index)];
    if (kn.kn_kevent.filter == EVFILT_READ) {
      // filt_soread: "kn->kn_data = sbavail(&so->so_rcv) - so->so_rcv.sb_ctl;
      // if (so->so_rcv.sb_state & SBS_CANTRCVMORE) { kn->kn_flags |= EV_EOF;
      // kn->kn_fflags = so->so_error; return (1); } else if (so->so_error)
      // return (1); ... else if (sbavail(&so->so_rcv) >=
      // so->so_rcv.sb_lowat) return (1);": sb_lowat is 1 for a stream
      // socket's receive buffer. EV_EOF is never cleared (nor needed: the
      // state does not come back).
      kn.kn_kevent.data = s.rcv_cnt;
      if (s.cantrcvmore) {
        kn.kn_kevent.flags |= EV_EOF;
        kn.kn_kevent.fflags = 0;  // so_error (MODEL: 0, see above)
        return true;
      }
      return s.rcv_cnt >= 1;
    }
    // filt_sowrite: "kn->kn_data = sbspace(&so->so_snd); ... if
    // (so->so_snd.sb_state & SBS_CANTSENDMORE) { kn->kn_flags |= EV_EOF;
    // kn->kn_fflags = so->so_error; return (1); } else if (so->so_error)
    // return (1); else if (((so->so_state & SS_ISCONNECTED) == 0) &&
    // (so->so_proto->pr_flags & PR_CONNREQUIRED)) return (0); ... else
    // return (kn->kn_data >= so->so_snd.sb_lowat);" (MODEL: the space is
    // any_positive and always >= sb_lowat: buffers never fill here.)
    kn.kn_kevent.data = any_positive;
    if (s.cantsendmore) {
      kn.kn_kevent.flags |= EV_EOF;
      kn.kn_kevent.fflags = 0;
      return true;
    }
    return s.connected;
  }

  // knote(list, 0, 0): "SLIST_FOREACH_SAFE(kn, &list->kl_list, ...) { ...
  // if (kn->kn_fop->f_event(kn, hint)) KNOTE_ACTIVATE(kn, 1); }": every
  // knote on the klist, disabled ones included (their data is updated and
  // they become active, not queued); f_event returning 0 leaves an active
  // knote as it was. KNOTE_ACTIVATE: "kn_status |= KN_ACTIVE; if
  // ((kn_status & (KN_QUEUED | KN_DISABLED)) == 0) knote_enqueue(kn);"
  // knlist_add inserts at the head, so the walk is newest first.
  void knote_list(list_id list) {
    std::vector<fd_knote*> on;
    for (auto& [k, kn] : knotes_)
      if (kn.attached && kn.list == list) on.push_back(&kn);
    std::sort(on.begin(), on.end(),
              [](const fd_knote* a, const fd_knote* b) { return a->seq > b->seq; });
    for (fd_knote* kn : on)
      if (f_event(*kn)) knote_activate(*kn);
  }

  std::map<int, end> ends_;
  std::vector<pipe_pair> pipes_;
  std::vector<socket_state> sockets_;
  std::uint64_t seq_ = 0;
};

}  // namespace kqref

#endif  // KCONT_TESTS_FD_REFERENCE_HPP
