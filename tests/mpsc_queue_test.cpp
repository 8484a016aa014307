// mpsc_queue: the lock-free multi-producer queue: FIFO, refusal, erase from
// the shared stack and from the batch, claimed pops, and a multi-producer
// stress that checks every node is popped once and per-producer order.
#include <kcont/mpsc_queue.hpp>

#include <doctest/doctest.h>

#include <kcont/run.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using kcont::bsd_level;
using kcont::push_result;

struct noop_fn {
  void operator()(int, int&, int) const {}
};
using node = kcont::kc<noop_fn, int, bsd_level>;

}  // namespace

static_assert(kcont::mpsc_queue<>::signal_safe_push);
static_assert(!kcont::mpsc_queue<>::constant_time_size);

TEST_CASE("mpsc_queue.fifo_for_one_producer") {
  kcont::mpsc_queue<> q;
  node a{noop_fn{}, 1, bsd_level::softnet};
  node b{noop_fn{}, 2, bsd_level::softnet};
  node c{noop_fn{}, 3, bsd_level::softnet};
  CHECK(q.empty());
  CHECK(q.push(a) == push_result::first);
  CHECK(q.push(b) == push_result::queued);
  CHECK(q.pop() == &a);  // takes the stack: b now in the batch
  CHECK(q.push(c) == push_result::first);  // the shared stack was empty
  CHECK(q.size_slow() == 2);
  CHECK(q.pop() == &b);
  CHECK(q.pop() == &c);
  CHECK(q.pop() == nullptr);
  CHECK(q.empty());
  CHECK_FALSE(a.is_queued());
}

TEST_CASE("mpsc_queue.refuses_a_queued_node_and_runs_before_link_once") {
  kcont::mpsc_queue<> q;
  node a{noop_fn{}, 1, bsd_level::softnet};
  int linked = 0;
  CHECK(q.push(a, [&] { ++linked; }) == push_result::first);
  CHECK(q.push(a, [&] { ++linked; }) == push_result::already_queued);
  CHECK(linked == 1);
  CHECK(q.pop() == &a);
}

TEST_CASE("mpsc_queue.erase_from_stack_and_batch") {
  kcont::mpsc_queue<> q;
  node a{noop_fn{}, 1, bsd_level::softnet};
  node b{noop_fn{}, 2, bsd_level::softnet};
  node c{noop_fn{}, 3, bsd_level::softnet};
  node d{noop_fn{}, 4, bsd_level::softnet};
  (void)q.push(a);
  (void)q.push(b);
  CHECK(q.pop() == &a);   // b in the batch
  (void)q.push(c);        // c, d on the shared stack
  (void)q.push(d);
  CHECK(q.erase_slow(c)); // from the stack
  CHECK_FALSE(c.is_queued());
  CHECK_FALSE(q.erase_slow(c));
  CHECK(q.erase_slow(b)); // from the batch head
  CHECK(q.pop() == &d);
  CHECK(q.empty());
  (void)q.push(a);
  CHECK(q.erase_slow(a)); // the tail and only node
  CHECK(q.empty());
  (void)q.push(b);
  CHECK(q.pop() == &b);   // the tail was reset
}

TEST_CASE("mpsc_queue.pop_claimed_keeps_the_claim_until_resumed") {
  kcont::mpsc_queue<> q;
  int total = 0;
  kcont::kc k{[](int, int*& t, int s) { *t += s + 1; }, &total,
              bsd_level::softnet};
  const kcont::kc_hook* seen = nullptr;
  (void)q.push(k);
  kcont::kc_hook* h =
      q.pop_claimed([&](kcont::kc_hook& n) noexcept { seen = &n; });
  CHECK(h == &k);
  CHECK(seen == &k);
  CHECK(q.empty());
  CHECK(k.is_queued());  // still claimed: a racing push is absorbed
  CHECK(q.push(k) == push_result::already_queued);
  CHECK_FALSE(q.erase_slow(k));  // but it is no longer on the queue
  // What a dispatcher does next: resume it; take_saved ends the claim.
  kcont::detail::hook_access::op(*h, kcont::detail::kc_op::resume_shared);
  CHECK(total == 1);
  CHECK_FALSE(k.is_queued());
  CHECK(q.push(k) == push_result::first);
  CHECK(q.pop() == &k);
}

TEST_CASE("mpsc_queue.producers_race_a_consumer") {
  // 2 producers x N distinct nodes (N = 200000 in a plain build, 20000 under
  // a sanitizer) pushed while one consumer pops: every node is popped once,
  // and each producer's nodes come out in push order.
  const std::size_t n = kcont_test::sized(200000, 20000);
  constexpr int producers = 2;
  std::vector<std::unique_ptr<std::optional<node>[]>> nodes;
  for (int p = 0; p < producers; ++p) {
    nodes.push_back(std::make_unique<std::optional<node>[]>(n));
    for (std::size_t i = 0; i < n; ++i)
      nodes[p][i].emplace(noop_fn{}, p, bsd_level::softnet);
  }
  kcont::mpsc_queue<> q;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p)
    threads.emplace_back([&, p] {
      kcont_test::spin_until([&] { return go.load(); });
      for (std::size_t i = 0; i < n; ++i) (void)q.push(*nodes[p][i]);
    });
  go = true;
  std::vector<std::size_t> next(producers, 0);
  std::size_t popped = 0, out_of_order = 0;
  while (popped < producers * n) {
    kcont::kc_hook* h = q.pop();
    if (h == nullptr) {
      std::this_thread::yield();
      continue;
    }
    auto* k = static_cast<node*>(static_cast<kcont::kc_base<int, int, bsd_level>*>(h));
    const int p = k->env();
    if (k != &*nodes[p][next[p]]) ++out_of_order;
    ++next[p];
    ++popped;
  }
  for (auto& t : threads) t.join();
  CHECK(out_of_order == 0);
  CHECK(next[0] == n);
  CHECK(next[1] == n);
  CHECK(q.empty());
}
