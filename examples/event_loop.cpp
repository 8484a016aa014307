// event_loop: kcont drained by a poll() loop on its own thread.
//
//   "NIC" thread                          poll() loop (main thread)
//   ------------                          -------------------------
//   defer(rx[i], &packet[i], len) --+
//                                   v
//              thread_dispatcher level queues (lock-free)
//                                   |  first push -> eventfd write
//                                   v
//              d.wait_fd(level) readable  ----> poll() wakes
//                                               d.drain(level, budget 8)
//                                               (highest level first)
//
// The dispatcher starts no thread: every level has a manual runner (all of
// them one runner here: level 0's, the others fall back to it), and its
// fd_wakeup gives the loop a descriptor that is readable while that runner
// has work. Any loop that polls descriptors (epoll, Asio's posix::stream_
// descriptor, libuv's uv_poll_t) drains kcont the same way.
#include <kcont/posix.hpp>

#include <cstdio>
#include <optional>
#include <thread>

#include <poll.h>

using kcont::bsd_level;

struct policy {
  using wakeup = kcont::fd_wakeup;  // pollable, and signal-safe to notify
};
using plan = kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>;
using dispatcher = kcont::thread_dispatcher<bsd_level, plan, policy>;

struct packet {
  int id;
};
struct stats {
  int packets = 0;
  long bytes = 0;
};
// Runs on the loop's thread, at softnet: no lock needed on stats.
struct on_packet {
  void operator()(packet*, stats*& s, int len) const {
    ++s->packets;
    s->bytes += len;
  }
};
using rx_kc = kcont::kc<on_packet, stats*, bsd_level>;

struct say_fn {
  void operator()(int, const char*& what, int) const {
    std::printf("%s runs at %s\n", what,
                kcont::current_level<bsd_level>() == bsd_level::softserial
                    ? "softserial"
                    : "process");
  }
};

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

int main() {
  dispatcher d;
  const int fd = d.wait_fd(bsd_level::softnet);

  // The receive continuations belong to the driver: no allocation per packet.
  constexpr int n = 64;
  packet packets[n];
  std::optional<rx_kc> rx[n];
  stats st;
  for (int i = 0; i < n; ++i) {
    packets[i].id = i;
    rx[i].emplace(on_packet{}, &st, bsd_level::softnet);
  }

  std::thread nic([&] {
    for (int i = 0; i < n; ++i) (void)kcont::defer(d, *rx[i], &packets[i], 100 + i);
  });

  // The loop: sleep in poll(), drain in budgets of 8 so other descriptors
  // (none here) would get their turn.
  while (st.packets < n) {
    pollfd p{fd, POLLIN, 0};
    (void)::poll(&p, 1, -1);
    (void)d.drain(bsd_level::softnet, kcont::drain_budget::items(8));
  }
  nic.join();
  std::printf("loop: %d packets, %ld bytes\n", st.packets, st.bytes);

  // Priorities still hold: a shared runner takes the highest level first.
  kcont::kc flush{say_fn{}, "flush logs", bsd_level::process};
  kcont::kc ack{say_fn{}, "ack timer", bsd_level::softserial};
  (void)kcont::defer(d, flush, 0, 0);
  (void)kcont::defer(d, ack, 0, 0);
  std::printf("readable with work: %s\n", readable(fd) ? "yes" : "no");
  (void)d.drain(bsd_level::process, kcont::drain_budget::items(1));
  std::printf("readable after a budget of 1: %s\n", readable(fd) ? "yes" : "no");
  (void)d.drain(bsd_level::process);
  std::printf("readable when empty: %s\n", readable(fd) ? "yes" : "no");
  d.stop();
}
// Expected output:
//   loop: 64 packets, 8416 bytes
//   readable with work: yes
//   ack timer runs at softserial
//   readable after a budget of 1: yes
//   flush logs runs at process
//   readable when empty: no
