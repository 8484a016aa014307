// defer_from_signal on a dispatcher whose wake-up is not async-signal-safe.
// expect: the dispatcher is not async-signal-safe
#include <kcont/kcont.hpp>

int main() {
  kcont::thread_dispatcher<> d;  // atomic_wakeup: a futex wake, not signal-safe
  kcont::kc k{[](int, int&, int) {}, 0, kcont::bsd_level::softnet};
  (void)kcont::defer_from_signal(d, k, 0, 0);
  d.stop();
}
