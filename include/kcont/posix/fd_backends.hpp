// kcont/posix/fd_backends.hpp — how an fd_source asks the kernel for readiness.
//
// Defines the readiness bits an fd_source fans out (`fd_ready`), the
// directions a knote watches (`fd_interest`), and the source's two backends:
// `epoll_backend` (Linux: edge-triggered, one descriptor for another loop to
// watch) and `poll_backend` (any POSIX system: level-triggered poll(2)),
// with `default_fd_backend` the platform's choice. A backend has
//   int ctl(int fd, unsigned old_interest, unsigned interest, uint64_t tag)
//   int wait(fd_backend_event* out, int n, int timeout_ms)
//   int native_handle()
// (interest: bit 0 read, bit 1 write; 0 ends the watch). Users name a
// backend only to pick one: basic_fd_source<poll_backend> (kcont/posix/
// fd_source.hpp), e.g. to test the fallback on Linux.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>
#if defined(__cpp_exceptions)
#include <system_error>
#endif

#include <poll.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/epoll.h>
#endif

#include "kcont/posix/fd_wakeup.hpp"

namespace kcont {

// The readiness bits a descriptor's klist is fired with (its hint). A hint
// of 0 is the kqueue scan's re-check: the filter then asks the kernel itself.
namespace fd_ready {
inline constexpr std::uint32_t in = 0x01;     // readable (POLLIN)
inline constexpr std::uint32_t out = 0x02;    // writable (POLLOUT)
inline constexpr std::uint32_t hup = 0x04;    // hang-up (POLLHUP)
inline constexpr std::uint32_t rdhup = 0x08;  // peer shut down writing (POLLRDHUP)
inline constexpr std::uint32_t err = 0x10;    // error pending (POLLERR, POLLNVAL)
// forget(fd): the descriptor is gone; filters stop firing (not a kernel bit).
inline constexpr std::uint32_t closed = 0x80000000;
}  // namespace fd_ready

// The directions a knote watches a descriptor in.
enum class fd_interest : std::uint8_t { read, write };

// One readiness event of a backend: the registration's tag and the bits.
struct fd_backend_event {
  std::uint64_t tag = 0;
  std::uint32_t ready = 0;
};

namespace detail {

// The poll(2) bits of `events` as fd_ready bits.
[[nodiscard]] inline std::uint32_t fd_ready_of_poll(short revents) noexcept {
  std::uint32_t r = 0;
  if (revents & POLLIN) r |= fd_ready::in;
  if (revents & POLLOUT) r |= fd_ready::out;
  if (revents & POLLHUP) r |= fd_ready::hup;
  if (revents & (POLLERR | POLLNVAL)) r |= fd_ready::err;
#if defined(POLLRDHUP)
  if (revents & POLLRDHUP) r |= fd_ready::rdhup;
#endif
  return r;
}

// The poll(2) events that watch `interest` (a mask of 1 << fd_interest).
[[nodiscard]] inline short poll_events_of(unsigned interest) noexcept {
  short bits = 0;
  if (interest & 1u) bits |= POLLIN;
#if defined(POLLRDHUP)
  if (interest & 1u) bits |= POLLRDHUP;
#endif
  if (interest & 2u) bits |= POLLOUT;
  return bits;
}

}  // namespace detail

// The poll(2) backend: level-triggered, as poll(2) is; works on every POSIX
// system. Every poll() reports each descriptor that is ready, so a knote with
// ev::clear is reported again while its descriptor stays ready (poll(2) has
// no edges: the epoll backend is the one that matches kqueue(2) there).
// One thread polls at a time; ctl from any thread wakes it (a pipe or
// eventfd, fd_wakeup), so a new registration is watched at once.
// native_handle() is -1: there is no one descriptor to watch.
class poll_backend {
 public:
  poll_backend() { scratch_.reserve(1); }
  poll_backend(const poll_backend&) = delete;
  poll_backend& operator=(const poll_backend&) = delete;

  [[nodiscard]] int native_handle() const noexcept { return -1; }

  // Effects: starts, changes or ends watching fd (interest 0 ends it).
  // Returns: 0. Allocates when the table grows (registration).
  int ctl(int fd, unsigned /*old_interest*/, unsigned interest, std::uint64_t tag) {
    std::lock_guard<std::mutex> g(m_);
    auto it = std::find_if(set_.begin(), set_.end(),
                           [&](const pollfd& p) { return p.fd == fd; });
    if (interest == 0) {
      if (it != set_.end()) {
        tags_.erase(tags_.begin() + (it - set_.begin()));
        set_.erase(it);
      }
    } else if (it != set_.end()) {
      it->events = detail::poll_events_of(interest);
      tags_[static_cast<std::size_t>(it - set_.begin())] = tag;
    } else {
      set_.push_back(pollfd{fd, detail::poll_events_of(interest), 0});
      tags_.push_back(tag);
      if (!polling_) scratch_.reserve(set_.size() + 1);
    }
    if (polling_) wake_.notify();
    return 0;
  }

  // Effects: one poll(2) of every watched descriptor; writes up to n events.
  // Returns: the events written, or -1 with errno.
  int wait(fd_backend_event* out, int n, int timeout_ms) {
    std::lock_guard<std::mutex> one(poller_);  // one poller at a time
    std::unique_lock<std::mutex> g(m_);
    scratch_.assign(set_.begin(), set_.end());  // capacity reserved by ctl
    scratch_.push_back(pollfd{wake_.native_handle(), POLLIN, 0});
    polling_ = true;
    g.unlock();
    const int r = ::poll(scratch_.data(), static_cast<nfds_t>(scratch_.size()), timeout_ms);
    g.lock();
    polling_ = false;
    scratch_.reserve(set_.size() + 1);  // a ctl during the wait did not
    if (r <= 0) return r;
    wake_.reset();
    // From where the last call stopped: a full `out` leaves the rest for
    // the next call, which must not find the same first n again.
    int k = 0;
    const std::size_t count = scratch_.size() - 1;
    const std::size_t start = next_;
    for (std::size_t j = 0; j < count && k < n; ++j) {
      const std::size_t i = (start + j) % count;
      if (scratch_[i].revents == 0) continue;
      next_ = i + 1;
      // Still watched, with the tag it had: else the event is stale.
      auto it = std::find_if(set_.begin(), set_.end(),
                             [&](const pollfd& p) { return p.fd == scratch_[i].fd; });
      if (it == set_.end()) continue;
      out[k++] = {tags_[static_cast<std::size_t>(it - set_.begin())],
                  detail::fd_ready_of_poll(scratch_[i].revents)};
    }
    return k;
  }

 private:
  std::mutex poller_;
  std::mutex m_;
  std::vector<pollfd> set_;
  std::vector<std::uint64_t> tags_;
  std::vector<pollfd> scratch_;
  std::size_t next_ = 0;
  bool polling_ = false;
  fd_wakeup wake_;
};

#if defined(__linux__)
// The epoll(7) backend: every registration edge-triggered (EPOLLET), so a
// descriptor's klist fires when new data or space arrives, as BSD's
// sowakeup calls knote(): a knote with ev::clear is reported once per
// arrival, and a level-triggered kqueue knote stays pending through the
// scan's re-check, not through epoll. Any number of threads may wait.
class epoll_backend {
 public:
  epoll_backend() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {
#if defined(__cpp_exceptions)
    if (fd_ < 0) throw std::system_error(errno, std::system_category(), "epoll_create1");
#endif
  }
  epoll_backend(const epoll_backend&) = delete;
  epoll_backend& operator=(const epoll_backend&) = delete;
  ~epoll_backend() {
    if (fd_ >= 0) ::close(fd_);
  }

  // The epoll descriptor: readable while some registered descriptor is
  // ready, so another loop (poll, epoll, Asio) can watch this source.
  [[nodiscard]] int native_handle() const noexcept { return fd_; }

  // Effects: EPOLL_CTL_ADD / MOD / DEL of fd. Returns: 0 or an errno.
  int ctl(int fd, unsigned old_interest, unsigned interest, std::uint64_t tag) noexcept {
    epoll_event reg{};
    reg.events = EPOLLET;
    if (interest & 1u) reg.events |= EPOLLIN | EPOLLRDHUP;
    if (interest & 2u) reg.events |= EPOLLOUT;
    reg.data.u64 = tag;
    const int op = interest == 0 ? EPOLL_CTL_DEL
                   : old_interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    return ::epoll_ctl(fd_, op, fd, &reg) == 0 ? 0 : errno;
  }

  int wait(fd_backend_event* out, int n, int timeout_ms) noexcept {
    epoll_event evs[64];
    const int r = ::epoll_wait(fd_, evs, std::min(n, 64), timeout_ms);
    for (int i = 0; i < r; ++i) {
      std::uint32_t ready = 0;
      const std::uint32_t e = evs[i].events;
      if (e & EPOLLIN) ready |= fd_ready::in;
      if (e & EPOLLOUT) ready |= fd_ready::out;
      if (e & EPOLLHUP) ready |= fd_ready::hup;
      if (e & EPOLLRDHUP) ready |= fd_ready::rdhup;
      if (e & EPOLLERR) ready |= fd_ready::err;
      out[i] = {evs[i].data.u64, ready};
    }
    return r;
  }

 private:
  int fd_;
};
using default_fd_backend = epoll_backend;
#else
using default_fd_backend = poll_backend;
#endif

}  // namespace kcont
