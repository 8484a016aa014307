// wakeup: the three wake-up policies: a sleeper never misses a notify that
// follows a change it waits for; fd_wakeup's descriptor is readable from a
// notify until a reset.
#include <kcont/wakeup.hpp>

#include <doctest/doctest.h>

#include <kcont/posix/fd_wakeup.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <thread>
#include <type_traits>

#include <poll.h>
#include <sys/resource.h>

#include "dispatch_support.hpp"

static_assert(kcont::wakeup_policy<kcont::atomic_wakeup>);
static_assert(kcont::wakeup_policy<kcont::condvar_wakeup>);
static_assert(kcont::wakeup_policy<kcont::fd_wakeup>);
static_assert(!kcont::wakeup_policy<int>);
static_assert(kcont::fd_wakeup::signal_safe);
static_assert(!kcont::atomic_wakeup::signal_safe);
// Linux has a futex under std::atomic::wait: the default is the atomic one
// (elsewhere with libstdc++ it is condvar_wakeup; tests/windows/run.sh runs it).
#if defined(__linux__)
static_assert(std::is_same_v<kcont::default_wakeup, kcont::atomic_wakeup>);
#endif

namespace {
bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}
}  // namespace

// Matrix: every wake-up policy. Ping-pong: the sleeper waits for each value
// of a counter the other thread bumps only after the sleeper acknowledged the
// previous one, so almost every round the sleeper really sleeps. 100000
// rounds in a plain build, 5000 under a sanitizer.
TEST_CASE_TEMPLATE("wakeup.ping_pong_never_loses_a_notify", W,
                   kcont::atomic_wakeup, kcont::condvar_wakeup,
                   kcont::fd_wakeup) {
  const std::uint32_t rounds =
      static_cast<std::uint32_t>(kcont_test::sized(100000, 5000));
  W w;
  std::atomic<std::uint32_t> posted{0};
  std::atomic<std::uint32_t> seen{0};
  std::thread sleeper([&] {
    for (std::uint32_t i = 1; i <= rounds; ++i) {
      w.wait([&] { return posted.load(std::memory_order_seq_cst) >= i; });
      seen.store(i, std::memory_order_release);
    }
  });
  for (std::uint32_t i = 1; i <= rounds; ++i) {
    posted.store(i, std::memory_order_seq_cst);
    w.notify();
    kcont_test::spin_until([&] { return seen.load() >= i; });
  }
  sleeper.join();
  CHECK(seen.load() == rounds);
}

TEST_CASE("wakeup.fd_readable_from_notify_until_reset") {
  kcont::fd_wakeup w;
  CHECK_FALSE(readable(w.native_handle()));
  w.notify();
  w.notify();
  CHECK(readable(w.native_handle()));
  w.reset();
  CHECK_FALSE(readable(w.native_handle()));
  w.notify_all();
  CHECK(readable(w.native_handle()));
  // wait() resets before checking: ready at once leaves it unreadable.
  w.wait([] { return true; });
  CHECK_FALSE(readable(w.native_handle()));
}

// A descriptor that cannot be created (here: no descriptor left under
// RLIMIT_NOFILE) is reported: with exceptions as std::system_error from the
// constructor, without them by valid() == false and native_handle() == -1,
// and wait() then still returns once ready() holds (it polls ready()).
TEST_CASE("wakeup.fd_creation_failure_is_reported") {
  // clang's -fsanitize=vptr checks the std::error_category call inside
  // system_error's construction; on its first sight of that type it reads
  // the process's memory map, which needs a descriptor, so with none left it
  // reports a false "invalid vptr". Making the same call once before the
  // limit fills its type cache: the check still runs, and hits the cache.
  CHECK(!std::error_code(EMFILE, std::system_category()).message().empty());
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  rlimit none = old;
  none.rlim_cur = 0;  // no new descriptor from here on
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &none) == 0);
  bool reported = false;
  int handle = 0;
  [[maybe_unused]] int checks = 0;
#if defined(__cpp_exceptions)
  try {
    kcont::fd_wakeup w;
    handle = w.native_handle();
  } catch (const std::system_error&) {
    reported = true;
    handle = -1;
  }
#else
  {
    kcont::fd_wakeup w;
    reported = !w.valid();
    handle = w.native_handle();
    w.notify();  // nothing to write to: does nothing
    w.wait([&] { return ++checks == 3; });
  }
#endif
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECK(reported);
  CHECK(handle == -1);
#if !defined(__cpp_exceptions)
  CHECK(checks == 3);
#endif
  kcont::fd_wakeup ok;  // descriptors again
  CHECK(ok.valid());
  CHECK(ok.native_handle() >= 0);
}
