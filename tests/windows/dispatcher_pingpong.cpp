// A thread_dispatcher with the default policy, run where std::atomic::wait
// is not trustworthy (MinGW-w64's libstdc++ under Wine): the runner thread
// must wake for every deferred continuation, also after it fell asleep.
// The waiting side polls with yield so that it relies on nothing but the
// dispatcher's own wake-up. A lost wake-up hangs; the caller's timeout
// names it.
#include <kcont/dispatcher.hpp>
#include <kcont/kc.hpp>
#include <kcont/thread_dispatcher.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

int main() {
  using kcont::bsd_level;
  kcont::thread_dispatcher<> d;
  std::atomic<int> ran{0};
  kcont::kc k{[](int, std::atomic<int>*& r, int) { r->fetch_add(1, std::memory_order_release); },
              &ran, bsd_level::softnet};
  constexpr int rounds = 20000;
  for (int i = 0; i < rounds; ++i) {
    // Every 16th round waits long enough for the runner to go to sleep.
    if (i % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    (void)kcont::defer(d, k, 0, 0);
    while (ran.load(std::memory_order_acquire) != i + 1) std::this_thread::yield();
  }
  d.stop();
  std::printf("%d rounds\n", ran.load());
  return ran.load() == rounds ? 0 : 1;
}
