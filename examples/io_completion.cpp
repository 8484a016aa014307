// io_completion: the case kcont was made for.
//
//   disk interrupt (softserial)
//        |  io_request::complete(status)
//        v
//   request's waiters: kcqueue<kc_base<io_request*, int>>
//        |  run_all at softserial
//        +--> log line      (immediate: runs inside the interrupt)
//        +--> tcp sender    (softnet:   deferred, runs when softnet drains)
//        +--> file cache    (process:   deferred, runs in process context)
//
// Each waiter is a caller-owned continuation that lives in its subsystem; the
// request only links them. All get the completion's obj and status, however
// late they run, and in priority order: softnet before process.
#include <kcont/kcont.hpp>

#include <cstdio>

using kcont::bsd_level;

struct io_request {
  int block;
  kcont::kcqueue<kcont::kc_base<io_request*, int>> waiters;

  // Called by the "driver" at interrupt level.
  template <class Dispatcher>
  void complete(Dispatcher& d, int status) {
    std::printf("irq: block %d done, status %d, %s\n", block, status,
                "running waiters at softserial");
    kcont::run_all(d, waiters, this, status, bsd_level::softserial);
  }
};

struct tcp_sender {
  int sent = 0;
  void on_block(io_request* r, int status) {
    ++sent;
    std::printf("softnet: tcp sends block %d (status %d)\n", r->block, status);
  }
};

struct file_cache {
  void on_block(io_request* r, int status) {
    std::printf("process: cache fills block %d (status %d)\n", r->block, status);
  }
};

int main() {
  kcont::manual_dispatcher<> d;
  tcp_sender tcp;
  file_cache cache;

  kcont::kc log{[](io_request* r, const char*& tag, int status) {
                  std::printf("immediate: %s block %d status %d\n", tag, r->block, status);
                },
                "log", bsd_level::immediate};
  kcont::kc send{kcont::method<&tcp_sender::on_block>, &tcp, bsd_level::softnet};
  kcont::kc fill{kcont::method<&file_cache::on_block>, &cache, bsd_level::process};

  io_request req{7, {}};
  (void)req.waiters.push(fill);  // registration order is not priority order
  (void)req.waiters.push(send);
  (void)req.waiters.push(log);

  req.complete(d, 0);
  std::printf("after the interrupt: softnet pending %d, process pending %d\n",
              d.has_work(bsd_level::softnet), d.has_work(bsd_level::process));

  // The soft-interrupt and process runners, highest level first.
  const auto ran = d.drain_all();
  std::printf("drained %zu deferred continuations; tcp sent %d\n", ran, tcp.sent);
}
// Expected output:
//   irq: block 7 done, status 0, running waiters at softserial
//   immediate: log block 7 status 0
//   after the interrupt: softnet pending 1, process pending 1
//   softnet: tcp sends block 7 (status 0)
//   process: cache fills block 7 (status 0)
//   drained 2 deferred continuations; tcp sent 1
