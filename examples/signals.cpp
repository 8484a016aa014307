// signals: POSIX signals as events (EVFILT_SIGNAL), the kqueue way and the
// knote way, in the kqueue's one blocking wait.
//
//   raise / kill, any thread
//      |  the source's handler: counts the delivery, makes the signal
//      v  source's descriptor readable
//   kq.kevent(timeout)  sleeps in ONE epoll_wait of the fd_source, which
//      |                watches that descriptor too; when it returns, the
//      |                scan dispatches the signal source: each signal's
//      |                klist fires once with the deliveries counted
//      +--> kqueue knotes  SIGUSR1, SIGUSR2: the same kevent() reports
//      |                   data = deliveries since the last report
//      +--> plain knote    SIGHUP: its own continuation ("reload") runs
//
// No sigs.poll() by hand: the kqueue finds the signal source among its
// contexts and drives it (a descriptor, a timer or another thread's user
// event would end the same wait). While a signal has a knote, the source's
// handler is its disposition; the last knote's removal restores the action
// it replaced (here SIG_DFL).
#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/posix/fd_filters.hpp>
#include <kcont/posix/fd_source.hpp>
#include <kcont/posix/signal_source.hpp>

#include <chrono>
#include <cstdio>
#include <thread>

#include <signal.h>

using kcont::ev;
using kcont::filter_id;
using kq_t = kcont::kqueue<
    kcont::filters<kcont::read_filter<>, kcont::signal_filter<>, kcont::user_filter>>;

namespace {

const char* name_of(std::uintptr_t sig) {
  return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGUSR2 ? "SIGUSR2" : "?";
}

// One blocking kevent() (up to `timeout`); adds each signal's data to
// `counts` (by signal number).
void wait_once(kq_t& kq, std::chrono::milliseconds timeout, long long (&counts)[3]) {
  kcont::kevent out[4];
  const auto r = kq.kevent({}, out, timeout);
  for (int i = 0; i < r.ret; ++i)
    counts[out[i].ident == SIGUSR1 ? 1 : out[i].ident == SIGUSR2 ? 2 : 0] += out[i].data;
}

void print(const char* when, const long long (&counts)[3]) {
  for (int sig : {SIGUSR1, SIGUSR2})  // in this order, whatever the scan's
    if (const long long n = counts[sig == SIGUSR1 ? 1 : 2]; n != 0)
      std::printf("%s: %s delivered %lld time(s)\n", when,
                  name_of(static_cast<std::uintptr_t>(sig)), n);
}

}  // namespace

int main() {
  kcont::fd_source fds;  // the one wait (epoll); no descriptor needed here
  kcont::signal_source sigs;
  kq_t kq{fds, sigs};
  for (int sig : {SIGUSR1, SIGUSR2})
    (void)kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                     .flags = ev::add});

  // SIGHUP reloads the configuration: a plain knote, its own continuation,
  // run by the kqueue's scan when it dispatches the signal source.
  kcont::kc reload{[](kcont::signal_source::knote_type* kn, int& reloads, kcont::knote_cause) {
                     reloads += static_cast<int>(kn->data);
                     kn->data = 0;
                     std::printf("SIGHUP: reloading the configuration (reload %d)\n", reloads);
                   },
                   0, kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::signal_filter<>> hup{kcont::signal_filter<>{sigs}, reload, SIGHUP};
  (void)hup.attach();

  // raise() runs the handler before it returns: three SIGUSR1, one SIGUSR2,
  // then one kevent() reports both.
  for (int i = 0; i < 3; ++i) (void)::raise(SIGUSR1);
  (void)::raise(SIGUSR2);
  long long first[3] = {};
  wait_once(kq, std::chrono::seconds(1), first);
  print("main thread", first);
  long long again[3] = {};
  wait_once(kq, std::chrono::milliseconds(0), again);
  print("again", again);  // nothing since the last report: no event

  // Another thread's signals end the wait main sleeps in; the reports add
  // up to its five SIGUSR1 (a kevent may wake before the last one).
  std::thread t([] {
    for (int i = 0; i < 5; ++i) (void)::raise(SIGUSR1);
    (void)::raise(SIGHUP);
  });
  long long other[3] = {};
  while (other[1] < 5 || reload.env() < 1) wait_once(kq, std::chrono::seconds(1), other);
  t.join();
  print("other thread", other);

  (void)hup.detach();
  for (int sig : {SIGUSR1, SIGUSR2})
    (void)kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                     .flags = ev::delete_});
  struct sigaction now {};
  (void)::sigaction(SIGUSR1, nullptr, &now);
  std::printf("SIGUSR1 disposition restored: %s\n",
              now.sa_handler == SIG_DFL ? "default" : "something else");
}

// Expected output:
//   main thread: SIGUSR1 delivered 3 time(s)
//   main thread: SIGUSR2 delivered 1 time(s)
//   SIGHUP: reloading the configuration (reload 1)
//   other thread: SIGUSR1 delivered 5 time(s)
//   SIGUSR1 disposition restored: default
