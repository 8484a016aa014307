// kcont/posix/fd_wakeup.hpp — the POSIX wake-up policy: a descriptor.
//
// Defines `fd_wakeup`, the wake-up policy (kcont/wakeup.hpp) whose notify is
// one write(2) on an eventfd (Linux) or a non-blocking pipe (other POSIX
// systems): async-signal-safe, and a descriptor that a poll/epoll/Asio/libuv
// loop can watch (thread_dispatcher::wait_fd). Kept out of the portable core
// (kcont/kcont.hpp): it includes <unistd.h>, <poll.h>, <fcntl.h> and, on
// Linux, <sys/eventfd.h>. kcont/posix.hpp includes it with the core.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <thread>
#if defined(__cpp_exceptions)
#include <system_error>
#endif

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include "kcont/wakeup.hpp"

namespace kcont {

// A pollable descriptor: an eventfd on Linux, a non-blocking pipe elsewhere.
// Readable from the first notify() after the last reset() until the next
// reset(): a poll/epoll/kqueue/Asio/libuv loop watches native_handle(),
// resets, then drains (a push after the reset makes it readable again, so
// nothing is missed; a readable descriptor with nothing to do is possible
// and harmless).
//
// Lifetime contract: owns its descriptor(s), closed by the destructor; not
// copyable or movable (a loop may hold the number).
// Without exceptions (-fno-exceptions) a descriptor that cannot be created
// is reported by valid() and native_handle() == -1, not thrown: wait() then
// polls ready() with yields instead of sleeping, so nothing is lost, and
// notify() does nothing.
// Thread-safety: notify() from any thread and from a signal handler (one
// write(2); errno is preserved). wait/reset from any thread, not from a
// signal handler.
class fd_wakeup {
 public:
  static constexpr bool signal_safe = true;

  // Throws: std::system_error when the descriptor cannot be created.
  //   Without exceptions: valid() is false then.
  fd_wakeup() {
#if defined(__linux__)
    read_fd_ = write_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (read_fd_ < 0) {
#if defined(__cpp_exceptions)
      throw std::system_error(errno, std::system_category(), "eventfd");
#else
      return;
#endif
    }
#else
    int fds[2];
    if (::pipe(fds) != 0) {
#if defined(__cpp_exceptions)
      throw std::system_error(errno, std::system_category(), "pipe");
#else
      return;
#endif
    }
    for (int fd : fds) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
#endif
  }
  fd_wakeup(const fd_wakeup&) = delete;
  fd_wakeup& operator=(const fd_wakeup&) = delete;
  ~fd_wakeup() {
    if (read_fd_ >= 0) ::close(read_fd_);
    if (write_fd_ != read_fd_) ::close(write_fd_);
  }

  // True when the descriptor exists. Always true with exceptions (the
  //   constructor threw otherwise).
  [[nodiscard]] bool valid() const noexcept { return read_fd_ >= 0; }

  // The descriptor to poll for readability; -1 when !valid().
  [[nodiscard]] int native_handle() const noexcept { return read_fd_; }

  // Effects: notify(), but only when a thread sleeps in wait(): a runner
  //   thread's producers skip the write(2) while it is awake (P1 and P2 of
  //   the sleep/wake protocol in kcont/wakeup.hpp). Async-signal-safe (one
  //   atomic load, maybe one write).
  void wake_sleeper() const noexcept {
    if (sleepers_.load(std::memory_order_seq_cst) != 0) notify();
  }

  // Effects: makes the descriptor readable. Async-signal-safe.
  // Complexity: one write(2). A full pipe is already readable: ignored.
  void notify() const noexcept {
    if (write_fd_ < 0) return;
    const int saved = errno;
#if defined(__linux__)
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto r = ::write(write_fd_, &one, sizeof one);
#else
    const char one = 1;
    [[maybe_unused]] const auto r = ::write(write_fd_, &one, 1);
#endif
    errno = saved;
  }
  // Effects: as notify (every poller of a readable descriptor wakes).
  void notify_all() const noexcept { notify(); }

  // Effects: makes the descriptor unreadable until the next notify.
  void reset() const noexcept {
    const int saved = errno;
    char buf[64];
    while (::read(read_fd_, buf, sizeof buf) > 0) {
    }
    errno = saved;
  }

  // Effects: blocks in poll(2) until ready() returns true (S1..S4 of the
  //   sleep/wake protocol in kcont/wakeup.hpp, S2 being the reset). The
  //   reset comes before the check, so a notify after the check leaves the
  //   descriptor readable and poll returns.
  template <class Ready>
  void wait(Ready&& ready) {
    if (!valid()) {  // no descriptor to sleep on (no exceptions): poll ready()
      while (!ready()) std::this_thread::yield();
      return;
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    for (;;) {
      reset();
      if (ready()) break;
      ::pollfd p{read_fd_, POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
    }
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }

 private:
  std::atomic<std::uint32_t> sleepers_{0};
  int read_fd_ = -1;
  int write_fd_ = -1;
};

static_assert(wakeup_policy<fd_wakeup>);

}  // namespace kcont
