// signals: POSIX signals as events (EVFILT_SIGNAL), the kqueue way and the
// knote way.
//
//   raise / kill, any thread
//      |  the source's handler: counts the delivery, wakes the descriptor
//      v
//   sigs.poll()   waits on sigs.native_handle(), then fires each signal's
//      |          klist once with the deliveries counted since the last time
//      +--> kqueue knotes  SIGUSR1, SIGUSR2: a scan reports
//      |                   data = deliveries since the last report
//      +--> plain knote    SIGHUP: its own continuation ("reload") runs
//
// While a signal has a knote, the source's handler is its disposition; the
// last knote's removal restores the action it replaced (here SIG_DFL).
#include <kcont/kfilters.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/posix/signal_source.hpp>

#include <chrono>
#include <cstdio>
#include <thread>

#include <signal.h>

using kcont::ev;
using kcont::filter_id;

namespace {

const char* name_of(std::uintptr_t sig) {
  return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGUSR2 ? "SIGUSR2" : "?";
}

template <class Kq>
void report(Kq& kq, const char* when) {
  kcont::kevent out[4];
  const std::size_t n = kq.scan(out);
  for (int sig : {SIGUSR1, SIGUSR2})  // in this order, whatever the scan's
    for (std::size_t i = 0; i < n; ++i)
      if (out[i].ident == static_cast<std::uintptr_t>(sig))
        std::printf("%s: %s delivered %lld time(s)\n", when, name_of(out[i].ident),
                    static_cast<long long>(out[i].data));
}

}  // namespace

int main() {
  kcont::signal_source sigs;
  kcont::kqueue<kcont::filters<kcont::user_filter, kcont::signal_filter<>>> kq{sigs};
  for (int sig : {SIGUSR1, SIGUSR2})
    (void)kq.change({.ident = static_cast<std::uintptr_t>(sig), .filter = filter_id::signal,
                     .flags = ev::add});

  // SIGHUP reloads the configuration: a plain knote, its own continuation.
  kcont::kc reload{[](kcont::signal_source::knote_type* kn, int& reloads, kcont::knote_cause) {
                     reloads += static_cast<int>(kn->data);
                     kn->data = 0;
                     std::printf("SIGHUP: reloading the configuration (reload %d)\n", reloads);
                   },
                   0, kcont::at<kcont::bsd_level::immediate>};
  kcont::knote<kcont::signal_filter<>> hup{kcont::signal_filter<>{sigs}, reload, SIGHUP};
  (void)hup.attach();

  // raise() runs the handler before it returns: three SIGUSR1, one SIGUSR2.
  for (int i = 0; i < 3; ++i) (void)::raise(SIGUSR1);
  (void)::raise(SIGUSR2);
  (void)sigs.poll(std::chrono::seconds(1));
  report(kq, "main thread");
  report(kq, "again");  // nothing since the last report: no event

  // Another thread's signals, and a SIGHUP.
  std::thread t([] {
    for (int i = 0; i < 5; ++i) (void)::raise(SIGUSR1);
    (void)::raise(SIGHUP);
  });
  t.join();
  (void)sigs.poll(std::chrono::seconds(1));
  report(kq, "other thread");

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
