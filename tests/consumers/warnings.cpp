// A user's translation unit under the user's flags: every public header,
// included through -I (so its warnings are the user's warnings), and every
// public template instantiated and run briefly. tests/consumers/warnings.sh
// builds it with -Wall -Wextra -Wpedantic -Wshadow -Werror at -O0..-O3 with
// g++ and clang++; a warning any header causes fails that build.
#include <kcont/always_filter.hpp>
#include <kcont/completion_queue.hpp>
#include <kcont/contract.hpp>
#include <kcont/current_level.hpp>
#include <kcont/dispatcher.hpp>
#include <kcont/kc.hpp>
#include <kcont/kc_array.hpp>
#include <kcont/kcont.hpp>
#include <kcont/kcqueue.hpp>
#include <kcont/kevent.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/timer_filter.hpp>
#include <kcont/klist.hpp>
#include <kcont/knote.hpp>
#include <kcont/knote_closure.hpp>
#include <kcont/kqueue.hpp>
#include <kcont/level.hpp>
#include <kcont/mpsc_queue.hpp>
#include <kcont/run.hpp>
#include <kcont/runner.hpp>
#include <kcont/thread_dispatcher.hpp>
#include <kcont/wakeup.hpp>
#if KCONT_WARNINGS_POSIX
#include <kcont/posix.hpp>
#include <kcont/posix/fd_wakeup.hpp>
#include <signal.h>
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <span>
#include <vector>

namespace {

using kcont::bsd_level;
using kcont::knote_cause;
using kn_t = kcont::knote_base<long>;

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}

struct request {
  int id = 0;
};

// A klist-driven source and filter, as a driver writes one.
template <class Lock>
struct source {
  kcont::klist<long, bsd_level, Lock> list;
};
template <class Lock>
struct bits_filter {
  source<Lock>* src;
  int attach(kn_t& kn) {
    src->list.insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)src->list.erase(kn); }
  bool event(kn_t& kn, long hint) {
    kn.data += hint;
    return true;
  }
};

struct count_fn {
  void operator()(kn_t*, int*& n, knote_cause) const { ++*n; }
};

struct handler {
  int seen = 0;
  void on_event(kn_t*, knote_cause) { ++seen; }
  void on_any() { ++seen; }
  void on_done(request* r, int status) { seen += r->id + status; }
};

// A klist fan-out over several subscribers of every knote kind, with the
// list's lock policy `Lock` and the knotes' `KnLock` (no_lock, spin_lock or
// list_guarded, the default).
template <class Lock, class KnLock>
void fan_out() {
  kcont::manual_dispatcher<> d;
  source<Lock> s;
  int n = 0;
  kcont::kc k1{count_fn{}, &n, bsd_level::immediate};
  kcont::kc k2{count_fn{}, &n, bsd_level::softnet};
  kcont::knote<bits_filter<Lock>, bsd_level, KnLock> a{bits_filter<Lock>{&s}, k1, 1};
  kcont::knote<bits_filter<Lock>, bsd_level, KnLock> b{bits_filter<Lock>{&s}, k2, 2};
  kcont::knote_closure<bits_filter<Lock>, count_fn, int*,
                       kcont::static_level<bsd_level::immediate>, KnLock>
      c{bits_filter<Lock>{&s}, count_fn{}, &n, kcont::at<bsd_level::immediate>, 3};
  handler h;
  kcont::knote_method<&handler::on_event, bits_filter<Lock>,
                      kcont::static_level<bsd_level::immediate>, KnLock>
      m{bits_filter<Lock>{&s}, &h, kcont::at<bsd_level::immediate>, 4};
  kcont::knote_method<&handler::on_any, bits_filter<Lock>, bsd_level, KnLock> z{
      bits_filter<Lock>{&s}, &h, bsd_level::immediate, 5};
  expect(a.attach() == 0 && b.attach() == 0 && c.attach() == 0 && m.attach() == 0 &&
             z.attach() == 0,
         "attach");
  expect(s.list.fire(d, 1, bsd_level::softserial) == 5, "fan-out fires 5");
  expect(d.drain_all() == 1, "one deferred");
  expect(n == 3 && h.seen == 2, "fan-out ran every subscriber");
  a.detach(d);
  b.detach(d);
  c.detach(d);
  m.detach(d);
  z.detach(d);
  expect(s.list.empty(), "detached");
}

template <class Lock>
void kqueue_with() {
  kcont::event_source rx;
  kcont::timer_source ts;
  kcont::kqueue<kcont::filters<kcont::user_filter,
                               kcont::counting_filter<kcont::filter_id{1}>,
                               kcont::timer_filter<>>,
                std::uintptr_t, Lock>
      kq{rx, ts};
  using kev = kcont::kevent;
  expect(kq.change(kev{0, kcont::filter_id{1}, kcont::ev::add | kcont::ev::clear, 0, 0, 7}) == 0,
         "kqueue add counting");
  expect(kq.change(kev{1, kcont::filter_id::user, kcont::ev::add | kcont::ev::clear, 0, 0, 8}) == 0,
         "kqueue add user");
  expect(kq.change(kev{2, kcont::filter_id::timer, kcont::ev::add, 0, 5, 9}) == 0,
         "kqueue add timer");
  rx.post(1);
  (void)kq.change(kev{1, kcont::filter_id::user, kcont::ev{}, kcont::note::trigger, 0, 0});
  (void)ts.tick(kcont::timer_source::clock::now() + std::chrono::milliseconds(5));
  std::array<kev, 8> out{};
  const std::size_t got = kq.scan(std::span<kev>(out));
  expect(got == 3, "kqueue scan reports three events");
  const auto r = kq.kevent(std::span<const kev>{}, std::span<kev>(out));
  expect(r.error == 0, "kevent");
}

// A standalone timer (kcont/timer_source.hpp's usage), each lock policy.
template <class Lock>
void timer_with() {
  using source = kcont::basic_timer_source<bsd_level, Lock>;
  using tkn = typename source::knote_type;
  source timers;
  kcont::kc on{[](tkn* kn, long& n, kcont::knote_cause) { n += kn->snapshot().data; }, 0L,
               kcont::at<bsd_level::immediate>};
  kcont::knote<kcont::timer_filter<source>> t{
      kcont::timer_filter<source>{timers, std::chrono::milliseconds(1), kcont::timer_mode::periodic},
      on};
  expect(t.attach() == 0, "timer attach");
  timers.arm(t, std::chrono::nanoseconds(0));
  expect(timers.next_deadline().has_value(), "timer armed");
  (void)timers.tick(source::clock::now() + std::chrono::milliseconds(2));
  expect(on.env() >= 1, "timer fired");
  t.detach();
  expect(timers.empty(), "timer detached");
}

struct say_level {
  void operator()(int, int*& n, int) const {
    if (kcont::current_level<bsd_level>() == bsd_level::softnet) ++*n;
  }
};

template <class Plan, class Policy = kcont::dispatch_defaults>
void dispatcher_with(bool manual) {
  kcont::thread_dispatcher<bsd_level, Plan, Policy> d;
  std::atomic<int> ran{0};
  int n = 0;
  kcont::kc k{[](int, std::atomic<int>*& r, int) { r->fetch_add(1); }, &ran,
              bsd_level::softnet};
  kcont::kc lv{say_level{}, &n, bsd_level::softnet};
  (void)kcont::defer(d, k, 0, 0);
  if (manual) {
    (void)d.drain(bsd_level::softnet);
    (void)kcont::defer(d, lv, 0, 0);
    (void)d.drain(bsd_level::softnet);
    expect(n == 1, "manual runner ran at softnet");
  }
  d.stop();
  expect(ran.load() == 1, "dispatcher ran the continuation");
}

struct condvar_policy {
  using wakeup = kcont::condvar_wakeup;
  using queue = kcont::kcqueue<kcont::kc_hook, std::mutex>;
};
#if KCONT_WARNINGS_POSIX
struct fd_policy {
  using wakeup = kcont::fd_wakeup;
};
#endif

#if KCONT_WARNINGS_POSIX
// A pipe's read and write ends on a descriptor source, through a kqueue.
template <class Src>
void fd_source_with() {
  Src fds;
  kcont::kqueue<kcont::filters<kcont::read_filter<Src>, kcont::write_filter<Src>>> kq{fds};
  int p[2];
  expect(::pipe(p) == 0, "pipe");
  const auto r = static_cast<std::uintptr_t>(p[0]);
  const auto w = static_cast<std::uintptr_t>(p[1]);
  expect(kq.change({.ident = r, .filter = kcont::filter_id::read, .flags = kcont::ev::add}) == 0 &&
             kq.change({.ident = w, .filter = kcont::filter_id::write,
                        .flags = kcont::ev::add}) == 0,
         "fd_source: registered");
  expect(::write(p[1], "x", 1) == 1, "pipe write");
  (void)fds.dispatch();
  kcont::kevent out[4];
  expect(kq.scan(out) == 2, "fd_source: read and write ready");
  (void)kq.change({.ident = r, .filter = kcont::filter_id::read, .flags = kcont::ev::delete_});
  (void)kq.change({.ident = w, .filter = kcont::filter_id::write, .flags = kcont::ev::delete_});
  ::close(p[0]);
  ::close(p[1]);
}

// One thread's loop (kcont/event_loop.hpp's usage): a pipe, a timer and
// deferred work, through the kqueue's one blocking wait.
void event_loop_use() {
  using kq_t = kcont::kqueue<kcont::filters<kcont::read_filter<>, kcont::timer_filter<>,
                                            kcont::user_filter>>;
  kcont::fd_source fds;
  kcont::timer_source timers;
  kq_t kq{fds, timers};
  kcont::manual_dispatcher<bsd_level, std::mutex, kcont::kqueue_schedule<kq_t>> d{{&kq}};
  kcont::event_loop loop{kq, d};
  int p[2];
  expect(::pipe(p) == 0, "pipe");
  const auto r = static_cast<std::uintptr_t>(p[0]);
  expect(kq.change({.ident = r, .filter = kcont::filter_id::read, .flags = kcont::ev::add}) == 0 &&
             kq.change({.ident = 7, .filter = kcont::filter_id::timer,
                        .flags = kcont::ev::add | kcont::ev::oneshot, .data = 1}) == 0,
         "event_loop: registered");
  expect(::write(p[1], "x", 1) == 1, "pipe write");
  int work = 0;
  kcont::kc job{[](int* w, int*&, int) { ++*w; }, &work, bsd_level::softnet};
  (void)kcont::defer(d, job, &work, 0);
  int reads = 0, ticks = 0;
  while (reads == 0 || ticks == 0 || work == 0) {
    (void)loop.run_once([&](const kq_t::kevent_type& ev) {
      reads += ev.filter == kcont::filter_id::read;
      ticks += ev.filter == kcont::filter_id::timer;
    });
  }
  (void)kq.change({.ident = r, .filter = kcont::filter_id::read, .flags = kcont::ev::delete_});
  ::close(p[0]);
  ::close(p[1]);
}

// Signals through a kqueue (EVFILT_SIGNAL) and a plain knote; the action
// replaced while watched is restored by the last delete.
void signal_source_use() {
  kcont::signal_source sigs;
  kcont::kqueue<kcont::filters<kcont::signal_filter<>>> kq{sigs};
  const auto sig = static_cast<std::uintptr_t>(SIGUSR1);
  expect(kq.change({.ident = sig, .filter = kcont::filter_id::signal, .flags = kcont::ev::add}) == 0,
         "signal_source: registered");
  kcont::kc on{[](kcont::signal_source::knote_type* kn, std::int64_t& n, kcont::knote_cause) {
                 n += kn->data;
                 kn->data = 0;
               },
               std::int64_t{0}, kcont::at<bsd_level::immediate>};
  kcont::knote<kcont::signal_filter<>> kn{kcont::signal_filter<>{sigs}, on, sig};
  expect(kn.attach() == 0, "signal_source: knote attached");
  expect(::raise(SIGUSR1) == 0 && ::raise(SIGUSR1) == 0, "raise");
  expect(sigs.poll(std::chrono::seconds(1)) == 2, "signal_source: both knotes fired");
  kcont::kevent out[2];
  expect(kq.scan(out) == 1 && out[0].data == 2 && on.env() == 2, "signal_source: 2 deliveries");
  (void)kn.detach();
  (void)kq.change({.ident = sig, .filter = kcont::filter_id::signal, .flags = kcont::ev::delete_});
  expect(!sigs.watching(SIGUSR1), "signal_source: released");
}
#endif

std::atomic<int> thread_starts{0};
struct start_hook {
  void operator()(bsd_level, unsigned) const { thread_starts.fetch_add(1); }
};
struct hooked_policy {
  using on_thread_start = start_hook;
};
struct static_hooked_policy {
  static void on_thread_start(bsd_level, unsigned) { thread_starts.fetch_add(1); }
};

// Issue 14's shapes: a completion queue, N continuations in place, an
// unconditional fan-out, a hook on each runner thread.
void shapes() {
  int sum = 0;
  auto add = [](int o, int*& s, int st) { *s += o * st; };
  using K = kcont::kc<decltype(add), int*, bsd_level>;
  kcont::kc_array<K, 3> ks{[&](std::size_t) { return K{add, &sum, bsd_level::softnet}; }};
  kcont::kcqueue<kcont::kc_base<int, int>, std::mutex> q;
  for (std::size_t i = 0; i < ks.size(); ++i)
    (void)kcont::post(q, ks[i], static_cast<int>(i), 10);
  expect(kcont::resume_all(q) == 3 && sum == 30, "completion queue");

  using list_t = kcont::klist<long, bsd_level, kcont::no_lock>;
  list_t subs;
  int n = 0;
  kcont::knote_closure<kcont::always_filter<list_t>, count_fn, int*,
                       kcont::static_level<bsd_level::immediate>, kcont::no_lock>
      c{kcont::always_filter{subs}, count_fn{}, &n, kcont::at<bsd_level::immediate>};
  expect(c.attach() == 0, "always_filter attach");
  kcont::immediate_target<bsd_level> now;
  expect(subs.fire(now, 0, now.lowest) == 1 && n == 1, "always_filter fires");
  (void)c.detach();

  thread_starts = 0;
  {
    kcont::thread_dispatcher<bsd_level, kcont::plan_for<bsd_level, kcont::pool_runner<2>, kcont::no_runner>,
                             hooked_policy>
        d;
    d.stop();
  }
  {
    kcont::thread_dispatcher<bsd_level, kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>,
                             static_hooked_policy>
        d;
    d.stop();
  }
  expect(thread_starts.load() == 3, "on_thread_start on each runner thread");
}

}  // namespace

int main() {
  shapes();
  // kc, run, defer, run_all, current_level, manual_dispatcher.
  kcont::manual_dispatcher<> md;
  request req{42};
  int total = 0;
  kcont::kc done{[](request* r, int*& t, int status) { *t += r->id + status; }, &total,
                 bsd_level::softnet};
  expect(kcont::run(md, done, &req, 1, bsd_level::softserial) == kcont::run_result::deferred,
         "deferred");
  expect(md.drain(bsd_level::softnet) == 1 && total == 43, "drained");
  kcont::kc at_now{[](request* r, int*& t, int) { *t += r->id; }, &total,
                   kcont::at<bsd_level::immediate>};
  (void)kcont::run(md, at_now, &req, 0, bsd_level::softserial);
  handler h;
  kcont::kc via_method{kcont::method<&handler::on_done>, &h, bsd_level::softnet};
  kcont::kcqueue<kcont::kc_base<request*, int>> waiters;
  (void)waiters.push(via_method);
  (void)kcont::run_all(md, waiters, &req, 0, bsd_level::process);
  (void)kcont::defer(md, done, &req, 0);
  (void)md.drain_all();
  {
    const kcont::level_guard<bsd_level> g(bsd_level::softnet);
    (void)kcont::run(md, done, &req, 0);  // current level from the thread
  }
  expect(h.seen == 42, "method handler ran");

  // Allocating makers.
  auto& made = kcont::make_kc([](request* r, int*& t, int) { *t += r->id; }, &total,
                              bsd_level::softnet);
  (void)kcont::run(md, made, &req, 0, bsd_level::process);
  auto& alloc = kcont::allocate_kc(std::allocator<int>{},
                                   [](request*, int*& t, int) { ++*t; }, &total,
                                   bsd_level::immediate);
  (void)kcont::run(md, alloc, &req, 0, bsd_level::process);
  auto* maybe = kcont::try_make_kc([](request* r, int*& t, int) { *t += r->id; }, &total,
                                   bsd_level::softnet);
  expect(maybe != nullptr, "try_make_kc");
  if (maybe != nullptr) (void)kcont::run(md, *maybe, &req, 0, bsd_level::process);
  auto* maybe2 = kcont::try_allocate_kc(kcont::nothrow_allocator<int>{},
                                        [](request*, int*& t, int) { ++*t; }, &total,
                                        kcont::at<bsd_level::immediate>);
  expect(maybe2 != nullptr, "try_allocate_kc");
  if (maybe2 != nullptr) (void)kcont::run(md, *maybe2, &req, 0, bsd_level::process);

  // Queues: kcqueue with each lock, mpsc_queue.
  kcont::kcqueue<kcont::kc_base<request*, int>, kcont::spin_lock> sq;
  kcont::kcqueue<kcont::kc_base<request*, int>, std::mutex> mq;
  (void)sq.push(done);
  expect(sq.pop() == &done, "spin_lock kcqueue");
  (void)mq.push(done);
  expect(mq.pop() == &done, "mutex kcqueue");
  kcont::mpsc_queue<> mpsc;
  (void)mpsc.push(done);
  expect(mpsc.pop() == &done, "mpsc_queue");

  // Wake-ups.
  kcont::atomic_wakeup aw;
  aw.notify();
  aw.notify_all();
  aw.wait([] { return true; });
  kcont::condvar_wakeup cw;
  cw.notify();
  cw.notify_all();
  cw.wait([] { return true; });

  fan_out<kcont::no_lock, kcont::no_lock>();
  fan_out<kcont::spin_lock, kcont::spin_lock>();
  fan_out<std::mutex, kcont::spin_lock>();
  fan_out<kcont::no_lock, kcont::list_guarded>();
  fan_out<std::mutex, kcont::list_guarded>();
  kqueue_with<kcont::no_lock>();
  kqueue_with<kcont::spin_lock>();
  kqueue_with<std::mutex>();
  timer_with<kcont::no_lock>();
  timer_with<kcont::spin_lock>();
  timer_with<std::mutex>();

  dispatcher_with<kcont::plan_for<bsd_level, kcont::thread_runner, kcont::no_runner>>(false);
  dispatcher_with<kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>>(true);
  dispatcher_with<kcont::plan_for<bsd_level, kcont::pool_runner<2>, kcont::no_runner>,
                  condvar_policy>(false);
#if KCONT_WARNINGS_POSIX
  dispatcher_with<kcont::plan_for<bsd_level, kcont::manual_runner, kcont::no_runner>,
                  fd_policy>(true);
  fd_source_with<kcont::fd_source>();
  fd_source_with<kcont::basic_fd_source<kcont::poll_backend>>();
  signal_source_use();
  event_loop_use();
  kcont::fd_wakeup fw;
  expect(fw.valid(), "fd_wakeup valid");
  fw.notify();
  fw.reset();
#endif

  if (failures != 0) return EXIT_FAILURE;
  std::printf("warnings consumer: ok\n");
  return EXIT_SUCCESS;
}
