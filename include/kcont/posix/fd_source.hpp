// kcont/posix/fd_source.hpp — descriptor readiness as an event source.
//
// Defines `basic_fd_source<Backend, Level>` (alias `fd_source`): the event
// source of file descriptors, with one klist per registered descriptor,
// fired with the readiness bits (`fd_ready`) when the kernel reports the
// descriptor ready. Its backends, `epoll_backend` (Linux, the default there)
// and `poll_backend` (any POSIX system; also built and tested on Linux, so
// that it does not rot), are kcont/posix/fd_backends.hpp. The kqueue
// filters that watch it, read_filter and write_filter with kqueue(2)'s
// EVFILT_READ / EVFILT_WRITE
// semantics, are kcont/posix/fd_filters.hpp.
//
// The source knows nothing of who listens (DESIGN.md): each knote on a
// descriptor's klist runs its own continuation when it fires: one at
// softnet, one deferred to a thread runner, or a kqueue's enqueue.
//
// Compared with a raw epoll loop: the epoll registration follows the knotes
// (added with the first knote on a descriptor, changed when the wanted
// directions change, removed with the last), and one readiness event fans out
// to every knote on the descriptor without allocating.
//
// Usage:
//   kcont::fd_source fds;                                  // owns an epoll instance
//   kcont::kqueue<kcont::filters<kcont::read_filter<>>> kq{fds};
//   kq.change({.ident = static_cast<std::uintptr_t>(sock),
//              .filter = kcont::filter_id::read, .flags = kcont::ev::add});
//   fds.poll(std::chrono::milliseconds(100));  // waits; fires the ready klists
//   kq.kevent({}, out);                       // {sock, read, data = bytes readable}
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kcont/contract.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/klist.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/posix/fd_backends.hpp"
#include "kcont/posix/fd_wakeup.hpp"

namespace kcont {


// The event source of file descriptors: a klist per registered descriptor.
//
// A filter's attach (read_filter, write_filter) calls attach(kn, fd,
// interest): the first knote on a descriptor allocates its entry (klist and
// registration) and registers it with the backend; later ones link on the
// same klist; the last detach frees it. Registration may allocate; a
// readiness event never does. poll() waits for readiness and fires each ready
// descriptor's klist with the fd_ready bits as the hint.
//
// Closing a descriptor: BSD drops a descriptor's knotes at close(2)
// (knote_fdclose); in user space the source cannot see a close, so tell it
// first: forget(fd) (or close(fd), which forgets and closes). Its knotes
// stop firing: their filters see fd_ready::closed and say defunct()
// (kcont/filter.hpp). A kqueue's knotes are dropped from the kqueue right
// then, as knote_drop does (a pending report is never made, ev::delete_
// returns ENOENT, ev::add of the number makes a new knote that watches the
// descriptor the number names now) and freed by its next change or scan; a
// plain knote stays attached until its owner detaches it
// (kcont/posix/fd_filters.hpp). A registration
// the kernel keeps for a closed descriptor (epoll keeps one while a dup of
// it is open) is harmless: every event carries its registration's
// generation, and an event of a forgotten one is ignored.
//
// Lifetime contract: outlives every knote attached to it; no descriptor is
// registered when it is destroyed (debug builds abort).
// Thread-safety: attach, detach, forget and poll from any thread (with the
// poll backend, one thread polls at a time); filters' event calls run under
// the klist's lock, never the source's.
template <class Backend = default_fd_backend, level_set Level = bsd_level>
class basic_fd_source {
 public:
  using hint_type = std::uint32_t;
  using level_type = Level;
  using list_type = klist<hint_type, Level, std::mutex>;
  using knote_type = knote_base<hint_type, Level>;

  // A registered descriptor: what a filter keeps between attach and detach.
  //
  // Its lifetime, every field under the source's lock_ (the one place this
  // protocol is written):
  //
  //   state     | event                              | action -> next state
  //   ----------+------------------------------------+------------------------------
  //   (none)    | first attach on fd                 | allocate, register with the
  //             |                                    |   backend, table_[fd] -> live
  //   live      | attach / detach, knotes remain     | count +/-1, backend widened or
  //             |                                    |   narrowed -> live
  //   live      | poll finds its tag (gen matches)   | pins + 1; fire unlocked;
  //             |                                    |   pins - 1 -> live (or freed)
  //   live      | last detach                        | backend DEL, table_[fd] = null
  //             |                                    |   -> forgotten
  //   live      | forget(fd)                         | backend DEL, table_[fd] = null,
  //             |                                    |   fire fd_ready::closed (pinned)
  //             |                                    |   -> forgotten
  //   forgotten | poll event with its tag            | ignored: not in the table (stale)
  //   forgotten | detach of one of its knotes        | count - 1
  //   forgotten | count == 0 and pins == 0           | delete (release_locked)
  //
  // A pin keeps the entry (and its klist) alive while a fan-out runs without
  // lock_, so that a continuation may detach, forget or attach (which take
  // lock_) and the last detach on another thread cannot free it under the fan-out.
  struct entry {
    list_type list;
    int fd = -1;
    std::uint32_t gen = 0;
    std::uint32_t count[2] = {0, 0};  // knotes per fd_interest
    std::uint32_t pins = 0;           // poll() calls firing it now
    bool forgotten = false;           // out of the table (forget or last detach)
    // A descriptor the backend refuses (epoll: EPERM for a regular file or
    // a directory, which are always ready): not watched; only a kqueue's
    // re-check (registration, enable, scan) reports it.
    bool unwatched = false;
    // The socket's pending error (SO_ERROR), kept once read: Linux clears it
    // on read, BSD's filters report so_error as long as it is set.
    std::atomic<int> error{0};
    [[nodiscard]] unsigned interest() const noexcept {
      return (count[0] != 0 ? 1u : 0u) | (count[1] != 0 ? 2u : 0u);
    }
  };

  // Effects: a source with no descriptor registered; its wake-up descriptor
  //   (wake()) is watched by the backend under a tag no descriptor has.
  basic_fd_source() { (void)backend_.ctl(wake_.native_handle(), 0, 1, wake_tag); }
  basic_fd_source(const basic_fd_source&) = delete;
  basic_fd_source& operator=(const basic_fd_source&) = delete;
  ~basic_fd_source() {
    for ([[maybe_unused]] entry* e : table_)
      KCONT_EXPECTS(e == nullptr, "fd_source: destroyed with descriptors registered");
  }

  // The backend's descriptor (epoll: readable while a registered descriptor
  // is ready or after a wake(), for another loop to watch); -1 with the
  // poll backend.
  [[nodiscard]] int native_handle() const noexcept { return backend_.native_handle(); }

  // Effects: links kn on fd's klist, registering fd (its first knote) or
  //   widening its registration to `dir`.
  //   `slot` (the filter's) receives the entry, for detach, before kn is
  //   linked; nullptr on failure.
  // Returns: 0, or an errno: EBADF
  //   (fd < 0 or not open), or the backend's. A descriptor epoll refuses
  //   with EPERM (a regular file, always ready, as BSD's vnode filters
  //   say) is accepted unwatched: see entry::unwatched. Allocates: the entry on a descriptor's first knote, the table
  //   when fd is beyond it. Thread-safety: any thread.
  int attach(knote_type& kn, int fd, fd_interest dir, entry*& slot) {
    if (fd < 0) return EBADF;
    std::lock_guard<std::mutex> g(lock_);
    const auto i = static_cast<std::size_t>(fd);
    if (i >= table_.size()) table_.resize(i + 1, nullptr);
    entry* e = table_[i];
    std::unique_ptr<entry> fresh;
    if (e == nullptr) {
      if (::fcntl(fd, F_GETFD) < 0) return EBADF;
      for (const auto& w : watched_)
        if (w.first == fd) return EEXIST;  // watch()ed: its owner drains it
      fresh = std::make_unique<entry>();
      e = fresh.get();
      e->fd = fd;
      e->gen = ++gen_;
    }
    const unsigned before = e->interest();
    ++e->count[static_cast<int>(dir)];
    if (e->interest() != before) {
      if (const int err = ctl(*e, before); err != 0) {
        --e->count[static_cast<int>(dir)];
        return err;
      }
    }
    // Before the link: a fan-out reads the slot (under the klist's lock)
    // as soon as kn is on the list.
    slot = e;
    if (!e->list.insert(kn)) {  // kn is on a klist already
      slot = nullptr;
      --e->count[static_cast<int>(dir)];
      const unsigned widened = before | (1u << static_cast<int>(dir));
      if (widened != before) (void)ctl(*e, widened, before);
      return EEXIST;
    }
    if (fresh) table_[i] = fresh.release();
    return 0;
  }

  // Effects: unlinks kn from e's klist; the last knote on a descriptor ends
  //   its registration and frees the entry (once no poll() fires it). Once
  //   it returns, no fan-out of this source calls kn's filter.
  // Thread-safety: any thread; not from inside the filter's event.
  void detach(knote_type& kn, entry* e, fd_interest dir) noexcept {
    if (e == nullptr) return;
    std::lock_guard<std::mutex> g(lock_);
    if (!e->list.erase(kn)) return;
    const unsigned before = e->interest();
    --e->count[static_cast<int>(dir)];
    if (!e->forgotten && e->interest() != before) (void)ctl(*e, before);
    if (e->interest() == 0 && !e->forgotten) {
      e->forgotten = true;
      table_[static_cast<std::size_t>(e->fd)] = nullptr;
    }
    release_locked(e);
  }

  // Effects: BSD's close(2) of a registered descriptor (knote_fdclose):
  //   ends its registration and fires its klist with fd_ready::closed, so
  //   every knote on it is defunct: it never fires again, and a kqueue drops
  //   its knotes before this returns (no report, ev::delete_ finds none;
  //   freed by its next change or scan). Other knotes stay attached until
  //   their owners detach them (cheap, no system call). Call it BEFORE
  //   close(2): once it returns, the number may be reused and re-added.
  // Returns: true when fd was registered.
  // Thread-safety: any thread.
  bool forget(int fd) {
    entry* e = nullptr;
    {
      std::lock_guard<std::mutex> g(lock_);
      if (fd < 0 || static_cast<std::size_t>(fd) >= table_.size()) return false;
      e = table_[static_cast<std::size_t>(fd)];
      if (e == nullptr) return false;
      (void)ctl(*e, e->interest(), 0);
      e->forgotten = true;
      table_[static_cast<std::size_t>(fd)] = nullptr;
      ++e->pins;
    }
    immediate_target<Level> now;
    (void)e->list.fire(now, fd_ready::closed, now.lowest);
    std::lock_guard<std::mutex> g(lock_);
    --e->pins;
    release_locked(e);
    return true;
  }

  // Effects: forget(fd), then close(2). Returns: close's result.
  int close(int fd) {
    (void)forget(fd);
    return ::close(fd);
  }

  // Effects: waits up to `timeout` (std::nullopt: without limit; rounded up
  //   to milliseconds, never early) for readiness, then fires the klist of
  //   each ready descriptor with its fd_ready bits; each knote that fires runs
  //   its continuation at `current` through `d` (or defers it to its level).
  // Returns: how many knotes fired. Complexity: O(ready descriptors +
  //   their knotes). No allocation.
  // Thread-safety: any thread (poll backend: one at a time).
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t poll(D& d, std::optional<std::chrono::nanoseconds> timeout, Level current) {
    return wait_and_fire(d, timeout, current, [] {});
  }

  // Effects: as poll(d, timeout, current), calling woken() once the wait's
  //   system call returned, before anything fires (a kqueue's blocking scan
  //   stops counting itself as asleep there: kcont/detail/kqueue_wait.hpp).
  //   A wake(), a watch()ed descriptor or EINTR (a signal handled on this
  //   thread) ends the wait; nothing fires for them.
  // Returns: how many knotes fired. No allocation. Thread-safety: as poll.
  template <deferral_target D, class Woken>
    requires std::same_as<typename D::level_type, Level>
  std::size_t wait_and_fire(D& d, std::optional<std::chrono::nanoseconds> timeout,
                            Level current, Woken&& woken) {
    fd_backend_event evs[64];
    const int n = backend_.wait(evs, 64, timeout_ms(timeout));
    woken();
    std::size_t fired = 0;
    for (int i = 0; i < n; ++i) {
      if (evs[i].tag == wake_tag) {
        wake_.reset();
        continue;
      }
      if ((evs[i].tag & 0xffffffffu) == watch_mark) continue;  // watch(): its owner drains it
      entry* e = pin(evs[i].tag);
      if (e == nullptr) continue;  // a forgotten registration: stale
      if (evs[i].ready & fd_ready::err) note_error(*e);
      fired += e->list.fire(d, evs[i].ready, current);
      std::lock_guard<std::mutex> g(lock_);
      --e->pins;
      release_locked(e);
    }
    return fired;
  }
  // Effects: wait_and_fire for knotes whose continuations all run at once
  //   (a kqueue's): what a kqueue's blocking scan calls.
  template <class Woken>
  std::size_t wait_and_fire(std::optional<std::chrono::nanoseconds> timeout, Woken&& woken) {
    immediate_target<Level> t;
    return wait_and_fire(t, timeout, t.lowest, woken);
  }

  // Effects: makes a wait (poll, wait_and_fire) in progress, or the next
  //   one, return: one write(2) on an eventfd (a pipe off Linux) that the
  //   backend watches; native_handle() becomes readable. Async-signal-safe.
  //   One wait returns per wake() (the next wait that harvests it resets
  //   it). Thread-safety: any thread.
  void wake() const noexcept { wake_.notify(); }

  // Effects: every wait also returns when `fd` (no knote's; its owner drains
  //   it, e.g. a kqueue's signal_source: kcont/detail/kqueue_wait.hpp) is
  //   readable; nothing fires for it. Each watch(fd) needs an unwatch(fd).
  // Returns: 0, or EBADF (fd < 0), EEXIST (a knote registers fd), the
  //   backend's errno. Complexity: O(watched descriptors); allocates; a
  //   system call for fd's first watch. Thread-safety: any thread.
  int watch(int fd) {
    if (fd < 0) return EBADF;
    std::lock_guard<std::mutex> g(lock_);
    if (static_cast<std::size_t>(fd) < table_.size() && table_[static_cast<std::size_t>(fd)])
      return EEXIST;
    for (auto& w : watched_) {
      if (w.first != fd) continue;
      ++w.second;
      return 0;
    }
    watched_.reserve(watched_.size() + 1);
    if (const int err = backend_.ctl(fd, 0, 1, watch_tag(fd)); err != 0) return err;
    watched_.emplace_back(fd, 1u);
    return 0;
  }
  // Effects: undoes one watch(fd); the last one ends the watch.
  // Thread-safety: any thread.
  void unwatch(int fd) noexcept {
    std::lock_guard<std::mutex> g(lock_);
    for (auto it = watched_.begin(); it != watched_.end(); ++it) {
      if (it->first != fd || --it->second != 0) continue;
      (void)backend_.ctl(fd, 1, 0, watch_tag(fd));
      watched_.erase(it);
      return;
    }
  }

  // Effects: poll for knotes whose continuations all run at once.
  std::size_t poll(std::optional<std::chrono::nanoseconds> timeout) {
    immediate_target<Level> t;
    return poll(t, timeout, t.lowest);
  }
  // Effects: poll without waiting: fires what is ready now.
  std::size_t dispatch() { return poll(std::chrono::nanoseconds::zero()); }

  // Effects: reads the socket's pending error (SO_ERROR) into e when it has
  //   one: Linux clears it on read, so it is kept for every later report.
  static void note_error(entry& e) noexcept {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(e.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
      e.error.store(err, std::memory_order_relaxed);
  }

  // The number of registered descriptors (forgotten ones excluded). O(fds).
  [[nodiscard]] std::size_t size_slow() const {
    std::lock_guard<std::mutex> g(lock_);
    return static_cast<std::size_t>(
        std::count_if(table_.begin(), table_.end(), [](entry* e) { return e != nullptr; }));
  }

 private:
  static std::uint64_t tag_of(const entry& e) noexcept {
    return (std::uint64_t{e.gen} << 32) | static_cast<std::uint32_t>(e.fd);
  }

  int ctl(entry& e, unsigned before) { return ctl(e, before, e.interest()); }
  int ctl(entry& e, unsigned before, unsigned after) {
    if (e.unwatched) return 0;
    const int err = backend_.ctl(e.fd, before, after, tag_of(e));
    if (err == EPERM && before == 0) {
      e.unwatched = true;
      return 0;
    }
    return err;
  }

  // The live entry a backend event's tag names, pinned; nullptr if stale.
  entry* pin(std::uint64_t tag) {
    const auto fd = static_cast<std::size_t>(tag & 0xffffffffu);
    std::lock_guard<std::mutex> g(lock_);
    if (fd >= table_.size()) return nullptr;
    entry* e = table_[fd];
    if (e == nullptr || e->gen != static_cast<std::uint32_t>(tag >> 32)) return nullptr;
    ++e->pins;
    return e;
  }

  // Frees a forgotten entry once no knote and no poll() holds it.
  static void release_locked(entry* e) noexcept {
    if (e->forgotten && e->pins == 0 && e->count[0] == 0 && e->count[1] == 0) delete e;
  }

  // The wake-up descriptor's tag: no registration has it (its descriptor
  // number, 0xffffffff, is no table index).
  static constexpr std::uint64_t wake_tag = ~std::uint64_t{0};
  // A watch()ed descriptor's tag: the descriptor above, a mark below that
  // is no table index either.
  static constexpr std::uint32_t watch_mark = 0xfffffffeu;
  static std::uint64_t watch_tag(int fd) noexcept {
    return (std::uint64_t{static_cast<std::uint32_t>(fd)} << 32) | watch_mark;
  }

  static int timeout_ms(std::optional<std::chrono::nanoseconds> t) noexcept {
    if (!t) return -1;
    if (*t <= std::chrono::nanoseconds::zero()) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*t).count();
    return ms > 0x7fffffff ? -1 : static_cast<int>(ms);
  }

  mutable std::mutex lock_;
  std::vector<entry*> table_;  // by descriptor number
  std::vector<std::pair<int, unsigned>> watched_;  // watch(): descriptor, count
  std::uint32_t gen_ = 0;
  fd_wakeup wake_;  // before backend_: the backend stops watching it first
  Backend backend_;
};

// The descriptor source with the platform's backend (epoll on Linux).
using fd_source = basic_fd_source<>;

}  // namespace kcont
