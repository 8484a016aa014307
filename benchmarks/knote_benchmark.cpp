// Cases C, D and E: the knote layer (kcont/knote.hpp, klist.hpp, kqueue.hpp,
// kfilters.hpp) next to the hand-written equivalents, in the same binary.
//
// C, coalesced activation. N = 64 event objects; one iteration activates
// each of them twice, then consumes each once (one item = one object: two
// activations, one event consumed, run with status = the number of
// activations it absorbed, 2). Rule 7: the second activation must not queue
// the object again.
//   BM_Activate_RawQueuedFlag   the floor: the source walks an intrusive list
//                               of its objects; activation = ++count and, if
//                               the object's plain `queued` flag is clear,
//                               set it and link it on an intrusive FIFO; the
//                               consumer pops, clears the flag, reads and
//                               resets the count, does the item's work
//   BM_Activate_RawQueuedFlagSpinLock  the floor under BM_Activate_Kqueue's
//                               locks, each taken as often as a minimal
//                               locked design needs: the source's std::mutex
//                               per post, the queue's spin_lock per
//                               activation and per scan (events copied out
//                               under it, recorded after)
//   BM_Activate_RawQueuedFlagSpinLockPerPost  the same with the queue's
//                               spin_lock held once over each post's walk
//                               (as a kqueue's batched fan-out holds it)
//   BM_Activate_KnoteFifo       plain knotes on a klist<no_lock>, each firing
//                               through its filter (count in kn.data) and
//                               running an immediate continuation that links
//                               the knote on the caller's FIFO once
//                               (knote_core::try_queue); the consumer pops,
//                               unqueues, reads and resets kn.data
//   BM_Activate_Kqueue          knotes of a kcont::kqueue<counting_filter,
//                               request*, spin_lock> registered with
//                               ev::add | ev::clear on a kcont::event_source
//                               (its klist under std::mutex): 2 x
//                               src.post(1) fan out 2N activations, each
//                               running the kqueue's own continuation (rule 7:
//                               queued once), then one kq.scan of N events
//   BM_Activate_KqueueNoLock    the same with no_lock for the kqueue and the
//                               source (one thread, like the floor)
//
// D, fan-out of one event to K = 1, 8, 64 subscribers (->Arg(K)); one item =
// one subscriber called with the event's hint (the status), per fire K items.
//   BM_FanOut_RawList           intrusive list of {next, fn, request}: one
//                               indirect call per subscriber (the floor)
//   BM_FanOut_StdFunctionVector std::vector<std::function<void(long)>>
//   BM_FanOut_VirtualObserver   std::vector<observer*>, virtual on_event(long)
//                               (the usual C++ observer, for reference)
//   BM_FanOut_KnoteClosure      klist<long, bsd_level, no_lock>.fire(t, hint,
//                               t.lowest) over K knote_closure<filter, fn,
//                               request*, at<immediate>, no_lock>: handler
//                               and data bound in the node, as the floor's
//                               {fn, request}; per subscriber one indirect
//                               call, the knote's fused fire function, with
//                               the filter's event, the activation (rule 6)
//                               and the handler inline (the target row)
//   BM_FanOut_KnoteClosureDefault  the same with the default policy (no
//                               policy written: kcont::list_guarded,
//                               FreeBSD's knlist discipline: on a no_lock
//                               klist the fields are the fanning thread's,
//                               no field lock; the state word thread-safe)
//   BM_FanOut_KnoteClosureThreadSafe  the same with kcont::spin_lock closures
//                               (opt-in: the filter under the knote's field
//                               lock, for fields read from any thread)
//   BM_FanOut_Klist             the same list over K knote<filter, bsd_level,
//                               no_lock>, each with a separate kc{fn,
//                               request*, at<immediate>}: the fused fire
//                               function calls the continuation through its
//                               type-erased trampoline (comparison row)
//   BM_FanOut_KlistThreadSafe   the same with spin_lock knotes (field lock)
//   BM_FanOut_RawListMutex      the floor under a lock: the raw list walked
//                               under one hold of a std::mutex
//   BM_FanOut_KnoteClosureMutex klist<long, bsd_level, std::mutex> over K
//                               spin_lock knote_closures (a field lock
//                               each; comparison row): the
//                               list lock dropped around each handler, so
//                               that a handler may detach any knote
//   BM_FanOut_KnoteClosureMutexHoldLock  the same list and knotes fired
//                               with the opt-in kcont::hold_lock (handlers
//                               that never touch the list: the lock held
//                               across the whole fan-out, FreeBSD's
//                               KNOTE_LOCKED)
//   BM_FanOut_KnoteClosureMutexListGuarded  the same hold_lock fan-out over
//                               knote_closures of policy kcont::list_guarded
//                               (fields guarded by the list's lock, no field
//                               lock: FreeBSD's knlist; issue 14's locked
//                               fan-out target)
//   BM_FanOut_RawListNodeLock   the floor of a per-subscriber lock (what a
//                               thread-safe knote's field lock is): the raw
//                               list, each node's spin_lock taken around
//                               storing the hint in the node, then the call
//   BM_FanOut_RawListMutexNodeLock  the same under one hold of a std::mutex
//
// E, kqueue activate + scan per event: one registered object; one iteration
// posts one event and consumes it (one item).
//   BM_ActivateScan_DequeMutex      std::deque of event records + std::mutex:
//                                   push {ident, data, request*} under the
//                                   lock, pop it under the lock, do the work
//   BM_ActivateScan_RawQueuedFlag   the floor of C with one object, one
//                                   activation per round
//   BM_ActivateScan_Kqueue          src.post(1); kq.scan(out) (spin_lock
//                                   kqueue, std::mutex source, as in C)
//
// As in the other files: every round is one out-of-line `round_*` call taking
// its structures by reference (they live in memory, as a queue shared by a
// producer and a consumer does; report.sh counts these functions' instructions
// with callgrind); the hint/status is laundered through kcont_bench::opaque
// each round; function pointers and object pointers of the baselines are
// laundered once so that nothing is devirtualized; item_check verifies the
// count and the checksum of every item and reports allocs_per_item.
// Registration (kqueue ev::add, knote attach, vector fill) happens before the
// timed loop; detaching after it.
#include <kcont/kcont.hpp>
#include <kcont/kfilters.hpp>
#include <kcont/klist.hpp>
#include <kcont/immediate_target.hpp>
#include <kcont/knote.hpp>
#include <kcont/knote_closure.hpp>
#include <kcont/kqueue.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont_bench::record;
using kcont_bench::request;
using kcont_bench::tally;

std::unique_ptr<request[]> make_requests(tally& t, std::size_t n) {
  auto reqs = std::make_unique<request[]>(n);
  for (std::size_t i = 0; i < n; ++i) reqs[i] = request{i, &t};
  return reqs;
}

void finish(benchmark::State& state, kcont_bench::item_check& check,
            const tally& t, std::size_t per_round, int status) {
  const auto rounds = static_cast<std::uint64_t>(state.iterations());
  check.finish(rounds * per_round, t,
               kcont_bench::expected_sum(rounds, per_round, status));
}

// =============================================== C and E: coalesced activation

constexpr std::size_t objects = 64;  // C: N event objects
constexpr long post_hint = 1;

// ---------------------------------------------------------------- the floor

// An event object of the floor: linked on its source's list (snext) and, when
// queued, on the consumer's FIFO (qnext).
struct flag_node {
  flag_node* snext = nullptr;
  flag_node* qnext = nullptr;
  request* req = nullptr;
  int count = 0;
  bool queued = false;
};

// What a locked consumer copies out under its lock (a scan's event).
struct record_out {
  request* req;
  int count;
};

struct flag_queue {
  flag_node* src_head = nullptr;  // the source's objects
  flag_node* head = nullptr;      // the consumer's FIFO
  flag_node* tail = nullptr;
};

// Loop: `activations` x (walk the source's list: ++count; if !queued, set
// queued and link at the FIFO's tail), then until the FIFO is empty (unlink
// the head, clear queued, take and reset the count, record(req, count)).
[[gnu::noinline]] void round_raw_flag(flag_queue& q, int activations) {
  for (int a = 0; a < activations; ++a) {
    for (flag_node* n = q.src_head; n != nullptr; n = n->snext) {
      ++n->count;
      if (n->queued) continue;  // rule 7 by hand: queued once
      n->queued = true;
      n->qnext = nullptr;
      if (q.tail == nullptr)
        q.head = n;
      else
        q.tail->qnext = n;
      q.tail = n;
    }
  }
  while (flag_node* n = q.head) {
    q.head = n->qnext;
    if (q.head == nullptr) q.tail = nullptr;
    n->queued = false;
    const int c = n->count;
    n->count = 0;
    record(*n->req->owner, n->req, c);
  }
}

void activate_raw_flag(benchmark::State& state, std::size_t n, int activations) {
  tally t;
  auto reqs = make_requests(t, n);
  auto nodes = std::make_unique<flag_node[]>(n);
  for (std::size_t i = 0; i < n; ++i) {
    nodes[i].req = &reqs[i];
    nodes[i].snext = i + 1 < n ? &nodes[i + 1] : nullptr;
  }
  flag_queue q;
  q.src_head = kcont_bench::opaque(nodes.get());
  kcont_bench::item_check check(state);
  for (auto _ : state) round_raw_flag(q, kcont_bench::opaque(activations));
  finish(state, check, t, n, activations);
}

void BM_Activate_RawQueuedFlag(benchmark::State& state) {
  activate_raw_flag(state, objects, 2);
}
BENCHMARK(BM_Activate_RawQueuedFlag)->Apply(kcont_bench::register_case);

// The floor under the locks of BM_Activate_Kqueue, taken as often as a
// minimal thread-safe design takes them: the source's std::mutex once per
// post (the walk of its list), the queue's spin_lock once per activation
// (count, queued flag and link are the queue's, guarded by it) and once per
// scan (pop every queued object, clear its flag, take and reset its count
// into the output array); the items are recorded after the unlock, as a
// kqueue's caller records the events a scan wrote.
struct locked_flag_queue {
  flag_queue q;
  std::mutex source_lock;
  kcont::spin_lock queue_lock;
};

// PerPost: the queue's lock held once over each post's walk instead of once
// per activation (the pattern of a kqueue's batched fan-out, which fires a
// run of one kqueue's knotes under one hold: kcont/detail/fire.hpp).
template <bool PerPost>
[[gnu::noinline]] void round_raw_flag_locked(locked_flag_queue& lq,
                                             std::span<record_out> out,
                                             int activations) {
  flag_queue& q = lq.q;
  for (int a = 0; a < activations; ++a) {
    std::lock_guard<std::mutex> sg(lq.source_lock);
    std::unique_lock<kcont::spin_lock> post_hold(lq.queue_lock, std::defer_lock);
    if constexpr (PerPost) post_hold.lock();
    for (flag_node* n = q.src_head; n != nullptr; n = n->snext) {
      std::unique_lock<kcont::spin_lock> g(lq.queue_lock, std::defer_lock);
      if constexpr (!PerPost) g.lock();
      ++n->count;
      if (n->queued) continue;  // rule 7 by hand: queued once
      n->queued = true;
      n->qnext = nullptr;
      if (q.tail == nullptr)
        q.head = n;
      else
        q.tail->qnext = n;
      q.tail = n;
    }
  }
  std::size_t k = 0;
  {
    std::lock_guard<kcont::spin_lock> g(lq.queue_lock);
    while (k < out.size()) {
      flag_node* n = q.head;
      if (n == nullptr) break;
      q.head = n->qnext;
      if (q.head == nullptr) q.tail = nullptr;
      n->queued = false;
      out[k++] = record_out{n->req, n->count};
      n->count = 0;
    }
  }
  for (std::size_t i = 0; i < k; ++i) record(*out[i].req->owner, out[i].req, out[i].count);
}

template <bool PerPost>
void activate_raw_flag_locked(benchmark::State& state) {
  tally t;
  constexpr std::size_t n = objects;
  constexpr int activations = 2;
  auto reqs = make_requests(t, n);
  auto nodes = std::make_unique<flag_node[]>(n);
  for (std::size_t i = 0; i < n; ++i) {
    nodes[i].req = &reqs[i];
    nodes[i].snext = i + 1 < n ? &nodes[i + 1] : nullptr;
  }
  locked_flag_queue lq;
  lq.q.src_head = kcont_bench::opaque(nodes.get());
  std::vector<record_out> out(n);
  kcont_bench::item_check check(state);
  for (auto _ : state)
    round_raw_flag_locked<PerPost>(lq, out, kcont_bench::opaque(activations));
  finish(state, check, t, n, activations);
}

void BM_Activate_RawQueuedFlagSpinLock(benchmark::State& state) {
  activate_raw_flag_locked<false>(state);
}
BENCHMARK(BM_Activate_RawQueuedFlagSpinLock)->Apply(kcont_bench::register_case);

void BM_Activate_RawQueuedFlagSpinLockPerPost(benchmark::State& state) {
  activate_raw_flag_locked<true>(state);
}
BENCHMARK(BM_Activate_RawQueuedFlagSpinLockPerPost)->Apply(kcont_bench::register_case);

// ------------------------------------------- plain knotes + a caller FIFO

using fan_list = kcont::klist<long, bsd_level, kcont::no_lock>;
using knote_ref = kcont::knote_base<long>;

// Counts the posts it sees in kn.data (as counting_filter does), fires on
// every one.
struct count_filter {
  fan_list* list;
  int attach(knote_ref& kn) {
    list->insert(kn);
    return 0;
  }
  void detach(knote_ref& kn) { (void)list->erase(kn); }
  bool event(knote_ref& kn, long) {
    ++kn.data;
    return true;
  }
};

// Pol: the knotes' threading policy: no_lock (single-threaded knotes, as
// the list: the kcont case) or spin_lock (thread-safe knotes, for reference).
template <class Pol>
struct fifo_sub;
template <class Pol>
struct sub_fifo {
  fifo_sub<Pol>* head = nullptr;
  fifo_sub<Pol>* tail = nullptr;
};

// The caller's continuation: link the knote on the FIFO unless it is queued
// there already (the knote's own queued bit, knote_core::try_queue).
template <class Pol>
struct enqueue_once {
  void operator()(knote_ref* kn, sub_fifo<Pol>* q, kcont::knote_cause) const noexcept;
};
template <class Pol>
using enqueue_kc = kcont::kc<enqueue_once<Pol>, sub_fifo<Pol>*,
                             kcont::static_level<bsd_level::immediate>>;

template <class Pol>
struct fifo_sub : kcont::knote<count_filter, bsd_level, Pol> {
  fifo_sub(fan_list& l, enqueue_kc<Pol>& k, request* r)
      : kcont::knote<count_filter, bsd_level, Pol>(count_filter{&l}, k), req(r) {}
  fifo_sub* qnext = nullptr;
  request* req;
};

template <class Pol>
void enqueue_once<Pol>::operator()(knote_ref* kn, sub_fifo<Pol>* q,
                                   kcont::knote_cause) const noexcept {
  if (!kn->try_queue()) return;  // rule 7: queued once
  auto* s = static_cast<fifo_sub<Pol>*>(kn);
  s->qnext = nullptr;
  if (q->tail == nullptr)
    q->head = s;
  else
    q->tail->qnext = s;
  q->tail = s;
}

// Loop: 2 x list.fire (per knote: the filter's event under the field lock,
// rule 6's activation (no_lock list: no pin; the knote stays active after
// its first activation: no write), the continuation through kcont::run:
// try_queue (a fetch_or), link), then until the FIFO is empty (unlink, unqueue, take and reset
// kn.data, record). One thread: kn.data is read without the field lock.
template <class Pol>
[[gnu::noinline]] void round_knote_fifo(fan_list& l, sub_fifo<Pol>& q,
                                        int activations) {
  kcont::immediate_target<> t;
  for (int a = 0; a < activations; ++a)
    (void)l.fire(t, post_hint, t.lowest);
  while (fifo_sub<Pol>* s = q.head) {
    q.head = s->qnext;
    if (q.head == nullptr) q.tail = nullptr;
    s->unqueue();
    const int c = static_cast<int>(s->data);
    s->data = 0;
    record(*s->req->owner, s->req, c);
  }
}

template <class Pol>
void activate_knote_fifo(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t, objects);
  fan_list list;
  sub_fifo<Pol> q;
  enqueue_kc<Pol> k{enqueue_once<Pol>{}, &q, kcont::at<bsd_level::immediate>};
  auto subs = std::make_unique<std::optional<fifo_sub<Pol>>[]>(objects);
  for (std::size_t i = 0; i < objects; ++i) {
    subs[i].emplace(list, k, &reqs[i]);
    (void)subs[i]->attach();
  }
  constexpr int activations = 2;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_knote_fifo<Pol>(list, q, kcont_bench::opaque(activations));
  finish(state, check, t, objects, activations);
  for (std::size_t i = 0; i < objects; ++i) (void)subs[i]->detach();
}

void BM_Activate_KnoteFifo(benchmark::State& state) {
  activate_knote_fifo<kcont::no_lock>(state);
}
BENCHMARK(BM_Activate_KnoteFifo)->Apply(kcont_bench::register_case);

void BM_Activate_KnoteFifoThreadSafe(benchmark::State& state) {
  activate_knote_fifo<kcont::spin_lock>(state);
}
BENCHMARK(BM_Activate_KnoteFifoThreadSafe)->Apply(kcont_bench::register_case);

// ---------------------------------------------------------------- kqueue

template <kcont::lock_policy SourceLock, kcont::lock_policy QueueLock>
struct kq_setup {
  using source_type = kcont::basic_event_source<bsd_level, SourceLock>;
  using filter_type = kcont::counting_filter<kcont::filter_id{1}, source_type>;
  using queue_type =
      kcont::kqueue<kcont::filters<filter_type>, request*, QueueLock>;
  using event_type = typename queue_type::kevent_type;
};

// Loop: `activations` x src.post(1) (the source's klist lock; per run of the
// kqueue's consecutive knotes one call of its fused fire under one hold of
// the kqueue lock, per knote: the counting
// filter's event, then for a knote not pending yet → active and the link on
// the pending list; rule 7: nothing more for a pending one), then one
// kq.scan of up to N events (the pending knotes taken off the list; per
// event: unqueue, the filter's re-check and report inline, ev::clear's
// reset, the kevent copied out), then per event record(udata, data).
template <class Setup>
[[gnu::noinline]] void round_kqueue(typename Setup::source_type& src,
                                    typename Setup::queue_type& kq,
                                    std::span<typename Setup::event_type> out,
                                    int activations) {
  for (int a = 0; a < activations; ++a) (void)src.post(post_hint);
  const std::size_t n = kq.scan(out);
  for (std::size_t i = 0; i < n; ++i) {
    request* r = out[i].udata;
    record(*r->owner, r, static_cast<int>(out[i].data));
  }
}

template <class Setup>
void activate_kqueue(benchmark::State& state, std::size_t n, int activations) {
  tally t;
  auto reqs = make_requests(t, n);
  typename Setup::source_type src;
  typename Setup::queue_type kq{src};
  for (std::size_t i = 0; i < n; ++i) {
    const int err = kq.change({.ident = i,
                               .filter = kcont::filter_id{1},
                               .flags = kcont::ev::add | kcont::ev::clear,
                               .udata = &reqs[i]});
    if (err != 0) {
      state.SkipWithError("kqueue: ev::add failed");
      return;
    }
  }
  std::vector<typename Setup::event_type> out(n);
  kcont_bench::item_check check(state);
  for (auto _ : state)
    round_kqueue<Setup>(src, kq, out, kcont_bench::opaque(activations));
  finish(state, check, t, n, activations);
}

using kq_spin = kq_setup<std::mutex, kcont::spin_lock>;  // event_source + spin_lock kqueue
using kq_nolock = kq_setup<kcont::no_lock, kcont::no_lock>;

void BM_Activate_Kqueue(benchmark::State& state) {
  activate_kqueue<kq_spin>(state, objects, 2);
}
BENCHMARK(BM_Activate_Kqueue)->Apply(kcont_bench::register_case);

void BM_Activate_KqueueNoLock(benchmark::State& state) {
  activate_kqueue<kq_nolock>(state, objects, 2);
}
BENCHMARK(BM_Activate_KqueueNoLock)->Apply(kcont_bench::register_case);

// ==================================================== E: activate + scan, one

void BM_ActivateScan_RawQueuedFlag(benchmark::State& state) {
  activate_raw_flag(state, 1, 1);
}
BENCHMARK(BM_ActivateScan_RawQueuedFlag)->Apply(kcont_bench::register_case);

void BM_ActivateScan_Kqueue(benchmark::State& state) {
  activate_kqueue<kq_spin>(state, 1, 1);
}
BENCHMARK(BM_ActivateScan_Kqueue)->Apply(kcont_bench::register_case);

struct event_record {
  std::uintptr_t ident;
  std::int64_t data;
  request* udata;
};

// Loop: lock; push_back an event record; unlock; then lock; take the front
// record and pop it; unlock; record(udata, data).
[[gnu::noinline]] void round_deque_event(std::deque<event_record>& q,
                                         std::mutex& m, request* r,
                                         std::int64_t data) {
  {
    std::lock_guard<std::mutex> g(m);
    q.push_back(event_record{r->id, data, r});
  }
  event_record e;
  {
    std::lock_guard<std::mutex> g(m);
    e = q.front();
    q.pop_front();
  }
  record(*e.udata->owner, e.udata, static_cast<int>(e.data));
}

void BM_ActivateScan_DequeMutex(benchmark::State& state) {
  tally t;
  auto reqs = make_requests(t, 1);
  request* const r = kcont_bench::opaque(reqs.get());
  std::deque<event_record> q;
  std::mutex m;
  // Its first block allocated before the loop (not in a round: callgrind's
  // single-round count would charge that one-off allocation to one item; in
  // the loop the deque allocates one block every 512 bytes, which
  // allocs_per_item shows).
  q.push_back(event_record{0, 0, r});
  q.pop_front();
  kcont_bench::item_check check(state);
  for (auto _ : state)
    round_deque_event(q, m, r, kcont_bench::opaque(std::int64_t{1}));
  finish(state, check, t, 1, 1);
}
BENCHMARK(BM_ActivateScan_DequeMutex)->Apply(kcont_bench::register_case);

// ============================================================ D: fan-out

constexpr int fan_status = 3;

void fan_args(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(8)->Arg(64);
  kcont_bench::register_case(b);
}

std::size_t subscribers(const benchmark::State& state) {
  return static_cast<std::size_t>(state.range(0));
}

inline long fresh_hint() noexcept { return kcont_bench::opaque(long{fan_status}); }

// D, the knote cases: one fan-out before the timed loop (a plain fire, not
// a round_* function, so callgrind does not count it), its items then taken
// out of the tally (item_check counts from zero). A knote's first activation
// stores its state word (idle -> active); every later one finds it active
// and stores nothing. The timed loop runs millions of rounds, all but the
// first in that steady state; report.sh counts one round with callgrind,
// which without this was the first one and counted each knote's first
// activation (about 10 instructions per subscriber that the timed rounds do
// not execute). The raw baselines keep no state: nothing to warm.
template <class List>
void warm_up(tally& t, List& list) {
  kcont::immediate_target<> target;
  (void)list.fire(target, fresh_hint(), target.lowest);
  t.count = 0;
  t.sum = 0;
}

// ---------------------------------------------------------------- raw list

struct raw_sub {
  raw_sub* next;
  void (*fn)(raw_sub*, long) noexcept;
  request* req;
};

void raw_sub_handler(raw_sub* s, long hint) noexcept {
  record(*s->req->owner, s->req, static_cast<int>(hint));
}

// Loop: for each subscriber, one indirect call through its fn (read from the
// node at run time: the list is laundered).
[[gnu::noinline]] void round_raw_list(raw_sub* head, long hint) {
  for (raw_sub* s = head; s != nullptr; s = s->next) s->fn(s, hint);
}

void BM_FanOut_RawList(benchmark::State& state) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  auto subs = std::make_unique<raw_sub[]>(k);
  for (std::size_t i = 0; i < k; ++i)
    subs[i] = raw_sub{i + 1 < k ? &subs[i + 1] : nullptr, &raw_sub_handler, &reqs[i]};
  raw_sub* const head = kcont_bench::opaque(subs.get());
  kcont_bench::item_check check(state);
  for (auto _ : state) round_raw_list(head, fresh_hint());
  finish(state, check, t, k, fan_status);
}
BENCHMARK(BM_FanOut_RawList)->Apply(fan_args);

// ------------------------------------------------------- std::function vector

// Loop: for each std::function in the vector, its invoker (an indirect call;
// the 8-byte capture sits in the small buffer).
[[gnu::noinline]] void round_function_vector(
    std::vector<std::function<void(long)>>& v, long hint) {
  for (auto& f : v) f(hint);
}

void BM_FanOut_StdFunctionVector(benchmark::State& state) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  std::vector<std::function<void(long)>> v;
  for (std::size_t i = 0; i < k; ++i) {
    request* r = &reqs[i];
    v.emplace_back([r](long h) { record(*r->owner, r, static_cast<int>(h)); });
  }
  kcont_bench::item_check check(state);
  for (auto _ : state) round_function_vector(v, fresh_hint());
  finish(state, check, t, k, fan_status);
}
BENCHMARK(BM_FanOut_StdFunctionVector)->Apply(fan_args);

// ---------------------------------------------------------- virtual observer

struct observer {
  virtual void on_event(long hint) noexcept = 0;

 protected:
  ~observer() = default;
};

struct request_observer final : observer {
  explicit request_observer(request* r) : req(r) {}
  void on_event(long hint) noexcept override {
    record(*req->owner, req, static_cast<int>(hint));
  }
  request* req;
};

// Loop: for each observer pointer in the vector, one virtual call.
[[gnu::noinline]] void round_virtual(std::vector<observer*>& v, long hint) {
  for (observer* o : v) o->on_event(hint);
}

void BM_FanOut_VirtualObserver(benchmark::State& state) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  std::vector<request_observer> obs;
  obs.reserve(k);
  std::vector<observer*> v;
  for (std::size_t i = 0; i < k; ++i) {
    obs.emplace_back(&reqs[i]);
    v.push_back(kcont_bench::opaque(static_cast<observer*>(&obs.back())));
  }
  kcont_bench::item_check check(state);
  for (auto _ : state) round_virtual(v, fresh_hint());
  finish(state, check, t, k, fan_status);
}
BENCHMARK(BM_FanOut_VirtualObserver)->Apply(fan_args);

// -------------------------------------------------------------------- klist

// The three-line filter: attach links the knote on the list, event keeps
// the hint for the continuation (kn.data) and fires.
struct hint_filter {
  fan_list* list;
  int attach(knote_ref& kn) {
    list->insert(kn);
    return 0;
  }
  void detach(knote_ref& kn) { (void)list->erase(kn); }
  bool event(knote_ref& kn, long hint) {
    kn.data = hint;
    return true;
  }
};

constexpr auto fan_handler = [](knote_ref* kn, request* r,
                                kcont::knote_cause) noexcept {
  record(*r->owner, r, static_cast<int>(kn->data));
};
using fan_kc = kcont::kc<std::remove_const_t<decltype(fan_handler)>, request*,
                         kcont::static_level<bsd_level::immediate>>;

// One subscriber: its continuation and its knote, built in place. Pol: the
// knote's threading policy (no_lock: single-threaded, as the list).
template <class Pol>
struct fan_sub {
  fan_sub(fan_list& l, request* r)
      : k(fan_handler, r, kcont::at<bsd_level::immediate>),
        kn(hint_filter{&l}, k) {}
  fan_kc k;
  kcont::knote<hint_filter, bsd_level, Pol> kn;
};

// Loop: one list.fire(t, hint, t.lowest): per knote one indirect call, the
// knote's fused fire function: the filter's event inline (under the field
// lock for a thread-safe knote), rule 6's activation (no_lock list: no pin)
// and the continuation through its type-erased trampoline (state test,
// level test, indirect call).
[[gnu::noinline]] void round_klist(fan_list& l, long hint) {
  kcont::immediate_target<> t;
  (void)l.fire(t, hint, t.lowest);
}

// The fan-out of K subscribers, each built in its slot by
// attach_one(slot, list, request*), which returns its knote; timed through
// `round` (one fire per iteration).
template <class Sub, class Attach>
void fan_out(benchmark::State& state, void (*round)(fan_list&, long), Attach attach_one) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  fan_list list;
  auto subs = std::make_unique<std::optional<Sub>[]>(k);
  auto kns = std::make_unique<knote_ref*[]>(k);
  for (std::size_t i = 0; i < k; ++i) {
    knote_ref& kn = attach_one(subs[i], list, &reqs[i]);
    (void)kn.attach();
    kns[i] = &kn;
  }
  warm_up(t, list);
  kcont_bench::item_check check(state);
  for (auto _ : state) round(list, fresh_hint());
  finish(state, check, t, k, fan_status);
  for (std::size_t i = 0; i < k; ++i) (void)kns[i]->detach();
}

template <class Pol>
void fan_out_klist(benchmark::State& state) {
  fan_out<fan_sub<Pol>>(state, &round_klist,
                        [](auto& slot, fan_list& l, request* r) -> auto& {
                          return slot.emplace(l, r).kn;
                        });
}

void BM_FanOut_Klist(benchmark::State& state) { fan_out_klist<kcont::no_lock>(state); }
BENCHMARK(BM_FanOut_Klist)->Apply(fan_args);

void BM_FanOut_KlistThreadSafe(benchmark::State& state) {
  fan_out_klist<kcont::spin_lock>(state);
}
BENCHMARK(BM_FanOut_KlistThreadSafe)->Apply(fan_args);

// --------------------------------------------------------------- knote_closure

// One subscriber as one object: the knote with its continuation (the same
// handler, the same request*) embedded, so its type is known to the knote's
// fused fire function. Pol: the knote's threading policy; none: the default.
template <class... Pol>
using fan_closure =
    kcont::knote_closure<hint_filter, std::remove_const_t<decltype(fan_handler)>, request*,
                         kcont::static_level<bsd_level::immediate>, Pol...>;
// The target row measures the default as a user gets it: no policy written.
static_assert(std::is_same_v<fan_closure<>::knote_type::lock_type, kcont::list_guarded>);

// Loop: as round_klist; one indirect call, the first closure's fused fire
// function, which fires the knotes after it of its own type too (a batch:
// the fan-out's cursor, read back after each handler), each with the
// filter's event, rule 6's activation (a load and a test: the knote stays
// active) and the handler inlined (at a compile-time immediate level the
// continuation's state is not tested: run()'s precondition, checked in
// debug builds).
[[gnu::noinline]] void round_knote_closure(fan_list& l, long hint) {
  kcont::immediate_target<> t;
  (void)l.fire(t, hint, t.lowest);
}

template <class... Pol>
void fan_out_closure(benchmark::State& state) {
  fan_out<fan_closure<Pol...>>(state, &round_knote_closure,
                            [](auto& slot, fan_list& l, request* r) -> auto& {
                              return slot.emplace(hint_filter{&l}, fan_handler, r,
                                                  kcont::at<bsd_level::immediate>);
                            });
}

void BM_FanOut_KnoteClosure(benchmark::State& state) {
  fan_out_closure<kcont::no_lock>(state);
}
BENCHMARK(BM_FanOut_KnoteClosure)->Apply(fan_args);

// The default policy (list_guarded): the filter's event with no field lock
// (the no_lock list's one thread guards the fields), the activation a load
// of the atomic state word (the knote stays active), the handler inline.
void BM_FanOut_KnoteClosureDefault(benchmark::State& state) { fan_out_closure<>(state); }
BENCHMARK(BM_FanOut_KnoteClosureDefault)->Apply(fan_args);

// The opt-in per-knote field lock (kcont::spin_lock): one exchange and one
// release store per subscriber around the filter's event.
void BM_FanOut_KnoteClosureThreadSafe(benchmark::State& state) {
  fan_out_closure<kcont::spin_lock>(state);
}
BENCHMARK(BM_FanOut_KnoteClosureThreadSafe)->Apply(fan_args);

// ------------------------------------------------- under a std::mutex (issue 14)

// The same fan-out when the list has a real lock (an event source fired
// from several threads): the floor walks its raw list under one hold of a
// std::mutex; kcont fires a klist<long, bsd_level, std::mutex> over
// spin_lock knote_closures (a field lock each; each continuation runs
// with the list lock dropped, so that it may detach any knote, its knote
// published as the fan-out cursor's current one, so that a detach on
// another thread waits for it: the cursor table in kcont/detail/klist_fanout.hpp).
using mutex_list = kcont::klist<long, bsd_level, std::mutex>;

struct mutex_hint_filter {
  mutex_list* list;
  int attach(knote_ref& kn) {
    list->insert(kn);
    return 0;
  }
  void detach(knote_ref& kn) { (void)list->erase(kn); }
  bool event(knote_ref& kn, long hint) {
    kn.data = hint;
    return true;
  }
};

// A raw subscriber with a lock of its own, as a thread-safe knote's field
// lock: the hint is stored in the node under it (as hint_filter stores it in
// kn.data), the handler reads it back after the unlock.
struct locked_sub {
  locked_sub* next;
  void (*fn)(locked_sub*) noexcept;
  request* req;
  kcont::spin_lock lock;
  long data = 0;
};

void locked_sub_handler(locked_sub* s) noexcept {
  record(*s->req->owner, s->req, static_cast<int>(s->data));
}

// Loop: for each subscriber: lock its spin_lock, store the hint, unlock, one
// indirect call through its fn.
[[gnu::noinline]] void round_raw_list_node_lock(locked_sub* head, long hint) {
  for (locked_sub* s = head; s != nullptr; s = s->next) {
    {
      std::lock_guard<kcont::spin_lock> g(s->lock);
      s->data = hint;
    }
    s->fn(s);
  }
}

// Loop: as round_raw_list_node_lock, under one hold of a std::mutex.
[[gnu::noinline]] void round_raw_list_mutex_node_lock(locked_sub* head, std::mutex& m,
                                                      long hint) {
  std::lock_guard<std::mutex> g(m);
  for (locked_sub* s = head; s != nullptr; s = s->next) {
    {
      std::lock_guard<kcont::spin_lock> g2(s->lock);
      s->data = hint;
    }
    s->fn(s);
  }
}

// K locked_subs, linked in order; `round(head, hint)` timed.
template <class Round>
void fan_out_node_lock(benchmark::State& state, Round round) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  auto subs = std::make_unique<locked_sub[]>(k);
  for (std::size_t i = 0; i < k; ++i) {
    subs[i].next = i + 1 < k ? &subs[i + 1] : nullptr;
    subs[i].fn = &locked_sub_handler;
    subs[i].req = &reqs[i];
  }
  locked_sub* const head = kcont_bench::opaque(subs.get());
  kcont_bench::item_check check(state);
  for (auto _ : state) round(head, fresh_hint());
  finish(state, check, t, k, fan_status);
}

void BM_FanOut_RawListNodeLock(benchmark::State& state) {
  fan_out_node_lock(state, [](locked_sub* h, long hint) { round_raw_list_node_lock(h, hint); });
}
BENCHMARK(BM_FanOut_RawListNodeLock)->Apply(fan_args);

void BM_FanOut_RawListMutexNodeLock(benchmark::State& state) {
  std::mutex m;
  fan_out_node_lock(state, [&m](locked_sub* h, long hint) {
    round_raw_list_mutex_node_lock(h, m, hint);
  });
}
BENCHMARK(BM_FanOut_RawListMutexNodeLock)->Apply(fan_args);

// Loop: lock; for each subscriber one indirect call through its fn; unlock.
[[gnu::noinline]] void round_raw_list_mutex(raw_sub* head, std::mutex& m, long hint) {
  std::lock_guard<std::mutex> g(m);
  for (raw_sub* s = head; s != nullptr; s = s->next) s->fn(s, hint);
}

void BM_FanOut_RawListMutex(benchmark::State& state) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  auto subs = std::make_unique<raw_sub[]>(k);
  for (std::size_t i = 0; i < k; ++i)
    subs[i] = raw_sub{i + 1 < k ? &subs[i + 1] : nullptr, &raw_sub_handler, &reqs[i]};
  raw_sub* const head = kcont_bench::opaque(subs.get());
  std::mutex m;
  kcont_bench::item_check check(state);
  for (auto _ : state) round_raw_list_mutex(head, m, fresh_hint());
  finish(state, check, t, k, fan_status);
}
BENCHMARK(BM_FanOut_RawListMutex)->Apply(fan_args);

using mutex_closure =
    kcont::knote_closure<mutex_hint_filter, std::remove_const_t<decltype(fan_handler)>,
                         request*, kcont::static_level<bsd_level::immediate>, kcont::spin_lock>;

// Loop: one list.fire(t, hint, t.lowest): the list's std::mutex, then per
// knote the filter's event under the field lock, the unpinned activation
// (a load: the knote stays active), the list lock dropped around the
// handler and retaken (the last knote: pinned, the lock not retaken).
[[gnu::noinline]] void round_klist_mutex(mutex_list& l, long hint) {
  kcont::immediate_target<> t;
  (void)l.fire(t, hint, t.lowest);
}

// Loop: one list.fire(t, hint, t.lowest, kcont::hold_lock): the list's
// std::mutex held throughout; per knote one indirect call, the closure's
// fused fire (the filter's event under the field lock, the unpinned
// activation: a load, the handler inline), as on a no_lock list.
[[gnu::noinline]] void round_klist_mutex_hold_lock(mutex_list& l, long hint) {
  kcont::immediate_target<> t;
  (void)l.fire(t, hint, t.lowest, kcont::hold_lock);
}

template <class Closure = mutex_closure>
void fan_out_mutex(benchmark::State& state, void (*round)(mutex_list&, long)) {
  const std::size_t k = subscribers(state);
  tally t;
  auto reqs = make_requests(t, k);
  mutex_list list;
  auto subs = std::make_unique<std::optional<Closure>[]>(k);
  for (std::size_t i = 0; i < k; ++i) {
    subs[i].emplace(mutex_hint_filter{&list}, fan_handler, &reqs[i],
                    kcont::at<bsd_level::immediate>);
    (void)subs[i]->attach();
  }
  warm_up(t, list);
  kcont_bench::item_check check(state);
  for (auto _ : state) round(list, fresh_hint());
  finish(state, check, t, k, fan_status);
  for (std::size_t i = 0; i < k; ++i) (void)subs[i]->detach();
}

void BM_FanOut_KnoteClosureMutex(benchmark::State& state) {
  fan_out_mutex(state, &round_klist_mutex);
}
BENCHMARK(BM_FanOut_KnoteClosureMutex)->Apply(fan_args);

void BM_FanOut_KnoteClosureMutexHoldLock(benchmark::State& state) {
  fan_out_mutex(state, &round_klist_mutex_hold_lock);
}
BENCHMARK(BM_FanOut_KnoteClosureMutexHoldLock)->Apply(fan_args);

// The knotes of FreeBSD's knlist: fields guarded by the list's lock
// (kcont::list_guarded), no field lock of their own.
using mutex_guarded_closure =
    kcont::knote_closure<mutex_hint_filter, std::remove_const_t<decltype(fan_handler)>,
                         request*, kcont::static_level<bsd_level::immediate>,
                         kcont::list_guarded>;

// Loop: as round_klist_mutex_hold_lock over list_guarded knote_closures:
// the list's std::mutex held throughout; per knote one indirect call, the
// closure's fused fire (the filter's event with no field lock, the
// unpinned activation: a load, the handler inline).
void BM_FanOut_KnoteClosureMutexListGuarded(benchmark::State& state) {
  fan_out_mutex<mutex_guarded_closure>(state, &round_klist_mutex_hold_lock);
}
BENCHMARK(BM_FanOut_KnoteClosureMutexListGuarded)->Apply(fan_args);

}  // namespace
