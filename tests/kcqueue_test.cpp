// kcqueue: FIFO order, refusal of double enqueue, splice, erase, lock policies.
//
// Policy matrix (TEST_CASE_TEMPLATE): every behaviour below runs with
// no_lock, spin_lock and std::mutex.
#include <kcont/kcqueue.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dispatch_support.hpp"
#include "support.hpp"

namespace {

using kcont::bsd_level;
using base_t = kcont::kc_base<int, int, bsd_level>;

struct record_fn {
  void operator()(int, std::vector<int>*&, int) const {}
};
using node_t = kcont::kc<record_fn, std::vector<int>*, bsd_level>;

struct nodes {
  std::vector<int> log;
  std::array<node_t, 5> n{{{record_fn{}, &log, bsd_level::process},
                           {record_fn{}, &log, bsd_level::process},
                           {record_fn{}, &log, bsd_level::process},
                           {record_fn{}, &log, bsd_level::process},
                           {record_fn{}, &log, bsd_level::process}}};
};

template <class Q>
void drain(Q& q) {
  while (q.pop() != nullptr) {
  }
}

}  // namespace

#define KCQ_LOCKS kcont::no_lock, kcont::spin_lock, std::mutex

static_assert(kcont::lock_policy<kcont::no_lock>);
static_assert(kcont::lock_policy<kcont::spin_lock>);
static_assert(kcont::lock_policy<std::mutex>);
static_assert(!kcont::lock_policy<int>);

TEST_CASE_TEMPLATE("kcqueue.fifo_order", Lock, KCQ_LOCKS) {
  nodes ns;
  kcont::kcqueue<base_t, Lock> q;
  CHECK(q.empty());
  CHECK(q.push(ns.n[0]) == kcont::push_result::first);
  CHECK(q.push(ns.n[1]) == kcont::push_result::queued);
  CHECK(q.push(ns.n[2]) == kcont::push_result::queued);
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(q));
  CHECK(q.size_slow() == 3);
  CHECK(ns.n[1].is_queued());
  CHECK(q.pop() == &ns.n[0]);
  CHECK_FALSE(ns.n[0].is_queued());
  CHECK(q.pop() == &ns.n[1]);
  CHECK(q.pop() == &ns.n[2]);
  CHECK(q.pop() == nullptr);
  CHECK(q.empty());
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(q));
}

TEST_CASE_TEMPLATE("kcqueue.double_enqueue_refused", Lock, KCQ_LOCKS) {
  nodes ns;
  kcont::kcqueue<base_t, Lock> q, other;
  CHECK(kcont::detail::pushed(q.push(ns.n[0])));
  CHECK(kcont::detail::pushed(q.push(ns.n[1])));
  // The same queue, and another queue: refused, the list intact.
  CHECK(q.push(ns.n[0]) == kcont::push_result::already_queued);
  CHECK(q.push(ns.n[1]) == kcont::push_result::already_queued);
  CHECK(other.push(ns.n[1]) == kcont::push_result::already_queued);
  CHECK(other.empty());
  CHECK(q.size_slow() == 2);
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(q));
  // Popped, it may be queued again.
  CHECK(q.pop() == &ns.n[0]);
  CHECK(other.push(ns.n[0]) == kcont::push_result::first);
  drain(q);
  drain(other);
}

TEST_CASE_TEMPLATE("kcqueue.before_link_runs_only_when_claimed", Lock, KCQ_LOCKS) {
  nodes ns;
  kcont::kcqueue<base_t, Lock> q;
  int calls = 0;
  CHECK(kcont::detail::pushed(q.push(ns.n[0], [&] { ++calls; })));
  CHECK(q.push(ns.n[0], [&] { ++calls; }) == kcont::push_result::already_queued);
  CHECK(calls == 1);
  drain(q);
}

TEST_CASE_TEMPLATE("kcqueue.splice_keeps_order", Lock, KCQ_LOCKS) {
  nodes ns;
  kcont::kcqueue<base_t, Lock> a, b;
  (void)a.push(ns.n[0]);
  (void)a.push(ns.n[1]);
  (void)b.push(ns.n[2]);
  (void)b.push(ns.n[3]);
  a.splice(b);
  CHECK(b.empty());
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(a));
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(b));
  for (int i = 0; i < 4; ++i) CHECK(a.pop() == &ns.n[i]);
  // Into an empty queue, from an empty queue, and onto itself.
  (void)b.push(ns.n[4]);
  a.splice(b);
  a.splice(b);
  a.splice(a);
  CHECK(a.pop() == &ns.n[4]);
  CHECK(a.empty());
}

TEST_CASE_TEMPLATE("kcqueue.erase_slow", Lock, KCQ_LOCKS) {
  nodes ns;
  kcont::kcqueue<base_t, Lock> q;
  for (auto& n : ns.n) (void)q.push(n);
  CHECK(q.erase_slow(ns.n[4]));  // tail
  CHECK(q.erase_slow(ns.n[0]));  // head
  CHECK(q.erase_slow(ns.n[2]));  // middle
  CHECK_FALSE(q.erase_slow(ns.n[2]));
  CHECK_FALSE(ns.n[2].is_queued());
  CHECK(kcont::detail::kcqueue_checker<base_t, Lock>::valid(q));
  (void)q.push(ns.n[4]);  // the tail is right after erasing the old tail
  CHECK(q.pop() == &ns.n[1]);
  CHECK(q.pop() == &ns.n[3]);
  CHECK(q.pop() == &ns.n[4]);
  CHECK(q.pop() == nullptr);
}

TEST_CASE("kcqueue.any_continuation_type") {
  // kcqueue<kc_hook> holds continuations of different signatures.
  kcont::kcqueue<> q;
  kcont::kc a{[](int, kcont::no_env&, int) {}, kcont::no_env{}, bsd_level::process};
  kcont::kc b{[](const char*, kcont::no_env&, long) {}, kcont::no_env{},
              bsd_level::softnet};
  (void)q.push(a);
  (void)q.push(b);
  CHECK(q.pop() == &a);
  CHECK(q.pop() == &b);
}

TEST_CASE("kcqueue.no_allocation") {
  nodes ns;
  kcont::kcqueue<base_t> q;
  kcont::kcqueue<base_t, std::mutex> mq;
  kcont_test::allocation_scope scope;
  for (int round = 0; round < 100; ++round) {
    for (auto& n : ns.n) (void)q.push(n);
    drain(q);
    for (auto& n : ns.n) (void)mq.push(n);
    drain(mq);
  }
  CHECK(scope.count() == 0);
}

TEST_CASE_TEMPLATE("kcqueue.threads_push_and_pop", Lock, kcont::spin_lock,
                   std::mutex) {
  constexpr int per_thread = 20000;
  struct item_fn {
    void operator()(int, int&, int) const {}
  };
  using item = kcont::kc<item_fn, int, bsd_level>;
  std::vector<std::unique_ptr<item>> items;
  for (int i = 0; i < 2 * per_thread; ++i)
    items.push_back(std::make_unique<item>(item_fn{}, i, bsd_level::process));
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  std::atomic<long> popped_sum{0};
  std::atomic<int> popped{0};
  std::atomic<int> refused{0};
  auto producer = [&](int t) {
    for (int i = 0; i < per_thread; ++i)
      if (!kcont::detail::pushed(q.push(*items[static_cast<std::size_t>(t * per_thread + i)])))
        ++refused;
  };
  std::thread p1(producer, 0), p2(producer, 1);
  std::thread consumer([&] {
    while (popped.load() < 2 * per_thread) {
      if (auto* h = q.pop()) {
        popped_sum += static_cast<item*>(static_cast<kcont::kc_base<int, int, bsd_level>*>(h))->env();
        ++popped;
      }
    }
  });
  p1.join();
  p2.join();
  consumer.join();
  CHECK(refused.load() == 0);
  CHECK(popped.load() == 2 * per_thread);
  CHECK(popped_sum.load() == long(2 * per_thread) * (2 * per_thread - 1) / 2);
  CHECK(q.empty());
}

TEST_CASE("kcqueue.destroyed_non_empty_hands_its_nodes_back_in_release" *
          doctest::skip(kcont::contract_checks)) {
  // Before, a release build dropped the nodes and left them marked queued:
  // every later push of them was refused, forever. Now they are handed back
  // to their owners (unlinked, not queued), as erase_slow would. Debug
  // builds abort (below).
  nodes ns;
  {
    kcont::kcqueue<base_t> q;
    REQUIRE(q.push(ns.n[0]) == kcont::push_result::first);
    REQUIRE(q.push(ns.n[1]) == kcont::push_result::queued);
  }
  CHECK_FALSE(ns.n[0].is_queued());
  CHECK_FALSE(ns.n[1].is_queued());
  kcont::kcqueue<base_t> q2;
  CHECK(q2.push(ns.n[1]) == kcont::push_result::first);
  CHECK(q2.push(ns.n[0]) == kcont::push_result::queued);
  CHECK(q2.pop() == &ns.n[1]);
  CHECK(q2.pop() == &ns.n[0]);
  CHECK(q2.pop() == nullptr);
}

TEST_CASE("kcqueue.destroyed_non_empty_is_a_contract_violation" *
          doctest::skip(!kcont::contract_checks)) {
  CHECK(kcont_test::dies_with(
      [] {
        static nodes ns;  // outlives the queue, so only the queue check fires
        kcont::kcqueue<base_t> q;
        (void)q.push(ns.n[0]);
      },
      "kcqueue: destroyed while it still holds continuations"));
}

// ---- the batch of a locked queue (the batch table in kcont/kcqueue.hpp) ----

namespace {
// Ends the claim pop_claimed leaves on a node (what take_saved does).
void end_claim(kcont::kc_hook& h) {
  kcont::detail::hook_access::clear<true>(h, kcont::detail::hook_access::queued_bit);
}
constexpr auto no_publish = [](kcont::kc_hook&) noexcept {};
}  // namespace

TEST_CASE_TEMPLATE("kcqueue.batch_taken_with_one_lock_keeps_fifo_ahead_of_later_pushes",
                   Lock, kcont::spin_lock, std::mutex) {
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  nodes ns;
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(kcont::detail::pushed(q.push(ns.n[i])));
  CHECK(q.pop_claimed(no_publish) == &ns.n[0]);  // takes n[0..2] as the batch
  CHECK(ns.n[0].is_queued());  // claimed, not yet resumed
  end_claim(ns.n[0]);
  REQUIRE(kcont::detail::pushed(q.push(ns.n[3])));  // behind the batch
  CHECK_FALSE(q.empty());
  CHECK(q.size_slow() == 3);
  CHECK(kcont::detail::kcqueue_checker<kcont::kc_hook, Lock>::valid(q));
  CHECK(q.pop() == &ns.n[1]);
  CHECK(q.pop() == &ns.n[2]);
  CHECK(q.pop() == &ns.n[3]);
  CHECK(q.pop() == nullptr);
  CHECK(q.empty());
}

// A cancel from another thread of a node in the batch a popper has taken,
// while that popper holds the batch's first node claimed ("running" it and
// doing nothing else): the cancel returns at once, the node is never
// popped, and its owner frees it right away (ASan would see a later touch).
TEST_CASE_TEMPLATE("kcqueue.cancel_of_a_batched_node_from_another_thread_returns_at_once",
                   Lock, kcont::spin_lock, std::mutex) {
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  nodes ns;
  std::vector<int> log;
  auto victim = std::make_unique<node_t>(record_fn{}, &log, bsd_level::process);
  REQUIRE(kcont::detail::pushed(q.push(ns.n[0])));
  REQUIRE(kcont::detail::pushed(q.push(ns.n[1])));
  REQUIRE(kcont::detail::pushed(q.push(*victim)));
  REQUIRE(kcont::detail::pushed(q.push(ns.n[3])));
  CHECK(q.pop_claimed(no_publish) == &ns.n[0]);  // the batch is taken
  bool result = false;
  std::thread canceller([&] {
    result = q.erase_slow(*victim);
    if (result) victim.reset();  // the owner may free it at once
  });
  canceller.join();  // with n[0] still claimed: nobody waits for its run
  CHECK(result);
  CHECK(victim == nullptr);
  // The head of the batch too: the next node a pop would take.
  std::thread head_canceller([&] { CHECK(q.erase_slow(ns.n[1])); });
  head_canceller.join();
  CHECK_FALSE(ns.n[1].is_queued());
  end_claim(ns.n[0]);
  CHECK(q.pop_claimed(no_publish) == &ns.n[3]);
  end_claim(ns.n[3]);
  CHECK(q.pop_claimed(no_publish) == nullptr);
  CHECK(q.empty());
}

// Splice moves a taken batch first (it is older than the pending list).
TEST_CASE_TEMPLATE("kcqueue.splice_moves_a_taken_batch_ahead_of_the_pending_list", Lock,
                   kcont::spin_lock, std::mutex) {
  kcont::kcqueue<kcont::kc_hook, Lock> a;
  kcont::kcqueue<kcont::kc_hook, Lock> b;
  nodes ns;
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(kcont::detail::pushed(b.push(ns.n[i])));
  CHECK(b.pop_claimed(no_publish) == &ns.n[0]);  // n[1], n[2]: b's batch
  end_claim(ns.n[0]);
  REQUIRE(kcont::detail::pushed(b.push(ns.n[3])));
  a.splice(b);
  CHECK(b.empty());
  CHECK(kcont::detail::kcqueue_checker<kcont::kc_hook, Lock>::valid(a));
  CHECK(a.pop() == &ns.n[1]);
  CHECK(a.pop() == &ns.n[2]);
  CHECK(a.pop() == &ns.n[3]);
  CHECK(a.pop() == nullptr);
}

// A popper and a canceller race over the same batches while a producer
// pushes: each node is popped once or cancelled once, never both, never
// lost (rule 9), and a node the canceller won is freed at once (its owner
// may: ASan / TSan see any later touch by the popper). For TSan.
TEST_CASE_TEMPLATE("kcqueue.batch_stress_pop_and_cancel_each_node_once", Lock,
                   kcont::spin_lock, std::mutex) {
  constexpr std::size_t count = kcont_test::sized(20000, 3000);
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  std::vector<int> log;
  std::vector<std::unique_ptr<node_t>> ns(count);
  std::vector<std::atomic<node_t*>> live(count);  // the canceller's view
  for (std::size_t i = 0; i < count; ++i) {
    ns[i] = std::make_unique<node_t>(record_fn{}, &log, bsd_level::process);
    live[i].store(ns[i].get());
  }
  std::unordered_map<const kcont::kc_hook*, std::size_t> id_of;
  for (std::size_t i = 0; i < count; ++i) id_of[ns[i].get()] = i;
  std::vector<int> popped(count, 0);
  std::atomic<bool> produced{false};
  std::atomic<std::size_t> cancelled{0};
  std::thread producer([&] {
    for (std::size_t i = 0; i < count; ++i) CHECK(kcont::detail::pushed(q.push(*ns[i])));
    produced.store(true);
  });
  std::thread canceller([&] {
    for (std::size_t round = 0; round < 3; ++round)
      for (std::size_t i = round; i < count; i += 3) {
        node_t* n = live[i].load();
        if (n == nullptr || !q.erase_slow(*n)) continue;
        live[i].store(nullptr);
        delete n;  // won: the owner frees it at once
        cancelled.fetch_add(1);
      }
  });
  // The popper: a node's id comes from its address (never a read of it).
  std::size_t got = 0;
  for (;;) {
    kcont::kc_hook* h = q.pop_claimed(no_publish);
    if (h == nullptr) {
      if (produced.load() && q.empty()) break;
      std::this_thread::yield();
      continue;
    }
    ++got;
    ++popped[id_of.at(h)];
    end_claim(*h);
  }
  producer.join();
  canceller.join();
  CHECK(got + cancelled.load() == count);
  for (std::size_t i = 0; i < count; ++i) {
    const bool was_cancelled = live[i].load() == nullptr;
    CHECK(popped[i] == (was_cancelled ? 0 : 1));
    if (was_cancelled) (void)ns[i].release();  // the canceller deleted it
  }
}

// ---- the staged stack (a std::mutex queue's pushes; spin_lock's link under
// the lock: both run every case) ---------------------------------------------

// A cancel racing a push of the same node from another thread: either the
// cancel wins (the node is unqueued, no pop ever returns it) or it comes
// first and finds nothing (false: the push then links the node, which a pop
// returns once, behind what was queued before). Half the rounds have a
// taken batch for the cancel to walk as well.
TEST_CASE_TEMPLATE("kcqueue.cancel_racing_a_push_from_another_thread_wins_or_comes_first",
                   Lock, kcont::spin_lock, std::mutex) {
  const std::size_t rounds = kcont_test::sized(20000, 2000);
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  nodes ns;
  std::atomic<std::size_t> go{0};
  std::atomic<std::size_t> done{0};
  std::thread pusher([&] {
    for (std::size_t r = 1; r <= rounds; ++r) {
      kcont_test::spin_until([&] { return go.load() == r; });
      CHECK(kcont::detail::pushed(q.push(ns.n[2])));
      done.store(r);
    }
  });
  std::size_t won = 0;
  for (std::size_t r = 1; r <= rounds; ++r) {
    REQUIRE(kcont::detail::pushed(q.push(ns.n[0])));
    REQUIRE(kcont::detail::pushed(q.push(ns.n[1])));
    const bool batch = r % 2 == 0;
    if (batch) {  // n[0] popped (claimed); n[1] is the batch
      REQUIRE(q.pop_claimed(no_publish) == &ns.n[0]);
      end_claim(ns.n[0]);
    }
    go.store(r);
    // One round in four, one try (mostly before the push). The others race
    // the push until it is done: a cancel after that always wins.
    bool erased = q.erase_slow(ns.n[2]);
    if (r % 4 != 0) {
      for (bool was_done = false; !erased && !was_done;) {
        was_done = done.load() == r;
        erased = q.erase_slow(ns.n[2]);
      }
      CHECK(erased);
    }
    kcont_test::spin_until([&] { return done.load() == r; });
    CHECK(ns.n[2].is_queued() == !erased);
    CHECK(kcont::detail::kcqueue_checker<kcont::kc_hook, Lock>::valid(q));
    if (!batch) CHECK(q.pop() == &ns.n[0]);
    CHECK(q.pop() == &ns.n[1]);
    if (!erased) CHECK(q.pop() == &ns.n[2]);
    CHECK(q.pop() == nullptr);
    CHECK(q.empty());
    won += erased ? 1 : 0;
  }
  pusher.join();
  MESSAGE("the cancel won " << won << " of " << rounds << " rounds");
}

// Producers push while a consumer drains and a third thread keeps moving the
// staged nodes to the pending list (size_slow, empty, a cancel of a node
// never pushed): every node comes out exactly once, and each producer's
// nodes in the order it pushed them (rule 9, and FIFO per producer).
TEST_CASE_TEMPLATE("kcqueue.producers_keep_their_order_and_lose_nothing_with_a_concurrent_drain",
                   Lock, kcont::spin_lock, std::mutex) {
  constexpr std::size_t producers = 3;
  const std::size_t per = kcont_test::sized(20000, 3000);
  struct item_fn {
    void operator()(int, std::size_t&, int) const {}
  };
  using item = kcont::kc<item_fn, std::size_t, bsd_level>;
  using item_base = kcont::kc_base<int, int, bsd_level>;
  std::vector<std::unique_ptr<item>> items;
  for (std::size_t i = 0; i < producers * per; ++i)  // env: producer * per + index
    items.push_back(std::make_unique<item>(item_fn{}, i, bsd_level::process));
  item sentinel(item_fn{}, 0, bsd_level::process);  // never pushed
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  std::atomic<std::size_t> finished{0};
  std::vector<std::thread> threads;
  for (std::size_t p = 0; p < producers; ++p)
    threads.emplace_back([&, p] {
      for (std::size_t i = 0; i < per; ++i) CHECK(kcont::detail::pushed(q.push(*items[p * per + i])));
      finished.fetch_add(1);
    });
  threads.emplace_back([&] {  // the flusher
    while (finished.load() < producers) {
      (void)q.size_slow();
      (void)q.empty();
      CHECK_FALSE(q.erase_slow(sentinel));
    }
  });
  std::vector<std::size_t> next(producers, 0);
  std::size_t got = 0, out_of_order = 0;
  for (;;) {
    kcont::kc_hook* h = q.pop();
    if (h == nullptr) {
      if (finished.load() == producers && q.empty()) break;
      std::this_thread::yield();
      continue;
    }
    auto* it = static_cast<item*>(static_cast<item_base*>(h));
    const std::size_t id = it->env();
    if (id % per != next[id / per]) ++out_of_order;
    next[id / per] = id % per + 1;
    ++got;
  }
  for (auto& t : threads) t.join();
  CHECK(out_of_order == 0);
  CHECK(got == producers * per);
  for (std::size_t p = 0; p < producers; ++p) CHECK(next[p] == per);
  CHECK(q.pop() == nullptr);
}

// empty() never says "empty" while a pushed node is still queued, however
// the lock holders move it (from the staged stack to the pending list, to a
// batch): a runner that believed it could sleep on work.
TEST_CASE_TEMPLATE("kcqueue.empty_never_misses_a_node_being_moved", Lock, kcont::spin_lock,
                   std::mutex) {
  const std::size_t rounds = kcont_test::sized(20000, 2000);
  kcont::kcqueue<kcont::kc_hook, Lock> q;
  nodes ns;
  std::atomic<bool> stop{false};
  std::thread mover([&] {
    while (!stop.load()) {
      (void)q.size_slow();
      CHECK_FALSE(q.erase_slow(ns.n[4]));  // never pushed: a flush and a walk
    }
  });
  std::size_t said_empty = 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    REQUIRE(kcont::detail::pushed(q.push(ns.n[r % 2])));
    for (int look = 0; look < 8; ++look) said_empty += q.empty() ? 1 : 0;
    CHECK(q.pop() == &ns.n[r % 2]);
  }
  stop.store(true);
  mover.join();
  CHECK(said_empty == 0);
  CHECK(q.empty());
}
