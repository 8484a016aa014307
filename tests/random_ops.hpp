// A random-operation driver over kc, kcqueue, run/defer/run_all and the
// manual dispatcher, checked step by step against a reference model written
// here from docs/design.md's rules, not from the library's code. Bytes in, verdict
// out: the doctest suite feeds it thousands of fixed-seed sequences and the
// libFuzzer target (tests/fuzz/fuzz_ops.cpp) feeds it whatever it finds.
#pragma once

#include <kcont/kcont.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace kcont_test {

struct logged_call {
  int id;
  int obj;
  int status;
  bool operator==(const logged_call&) const = default;
};

namespace ops_detail {

using kcont::bsd_level;
using base_t = kcont::kc_base<int, int, bsd_level>;

struct env_t {
  int id;
  std::vector<logged_call>* log;
};
struct log_fn {
  void operator()(int obj, env_t& e, int status) const {
    e.log->push_back({e.id, obj, status});
  }
};
using static_kc = kcont::kc<log_fn, env_t, bsd_level>;
using immediate_kc = kcont::kc<log_fn, env_t, kcont::static_level<bsd_level::immediate>>;

constexpr int n_static = 6;   // ids 0..5, runtime levels below
constexpr int immediate_id = 6;  // compile-time immediate
constexpr std::array<bsd_level, n_static> static_levels{
    bsd_level::process, bsd_level::softclock, bsd_level::softnet,
    bsd_level::softserial, bsd_level::immediate, bsd_level::softnet};

// The model of one continuation.
struct model_kc {
  bsd_level level{};
  int user_queue = -1;     // which kcqueue holds it, or -1
  bool in_level = false;   // on the dispatcher's level queue
  bool deferred = false;
  int saved_obj = 0, saved_status = 0;
  bool queued() const { return user_queue >= 0 || in_level; }
};

class byte_source {
 public:
  byte_source(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  bool done() const { return i_ >= n_; }
  int next(int mod) { return i_ < n_ ? p_[i_++] % mod : 0; }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t i_ = 0;
};

inline bool runs_now_model(bsd_level requested, bsd_level current) {
  return requested == bsd_level::immediate ||
         static_cast<int>(current) <= static_cast<int>(requested);
}

}  // namespace ops_detail

// Effects: interprets `data` as a sequence of operations, runs each against
//   kcont and the model. Returns: an empty string when every result, every
//   state bit and the log of calls agreed; else what differed first.
inline std::string run_ops(const std::uint8_t* data, std::size_t size) {
  using namespace ops_detail;
  std::vector<logged_call> real_log, model_log;

  // Continuations first: they outlive the queues and the dispatcher below.
  std::deque<static_kc> kcs;
  for (int i = 0; i < n_static; ++i)
    kcs.emplace_back(log_fn{}, env_t{i, &real_log}, static_levels[static_cast<std::size_t>(i)]);
  immediate_kc imm{log_fn{}, env_t{immediate_id, &real_log},
                   kcont::at<bsd_level::immediate>};

  std::array<model_kc, n_static + 1> m{};
  for (int i = 0; i < n_static; ++i) m[static_cast<std::size_t>(i)].level = static_levels[static_cast<std::size_t>(i)];
  m[immediate_id].level = bsd_level::immediate;

  // Allocated continuations (make_kc) live only on the dispatcher.
  struct allocated {
    int id;
    base_t* k;
  };
  std::vector<allocated> live_allocated;
  std::vector<model_kc> m_alloc;  // indexed by id - 100
  int next_alloc_id = 100;

  std::array<kcont::kcqueue<base_t>, 2> queues;
  kcont::manual_dispatcher<> d;
  std::array<std::deque<int>, 2> mq;
  std::array<std::deque<int>, kcont::level_count<bsd_level>> mlevel;

  auto base_of = [&](int id) -> base_t& {
    if (id == immediate_id) return imm;
    return kcs[static_cast<std::size_t>(id)];
  };
  auto model_of = [&](int id) -> model_kc& {
    return id >= 100 ? m_alloc[static_cast<std::size_t>(id - 100)] : m[static_cast<std::size_t>(id)];
  };
  auto id_of = [&](const kcont::kc_hook* h) -> int {
    for (int i = 0; i < n_static; ++i)
      if (h == &kcs[static_cast<std::size_t>(i)]) return i;
    if (h == &imm) return immediate_id;
    for (auto& a : live_allocated)
      if (h == a.k) return a.id;
    return -2;
  };
  auto forget_allocated = [&](int id) {
    live_allocated.erase(std::remove_if(live_allocated.begin(), live_allocated.end(),
                                        [&](const allocated& a) { return a.id == id; }),
                         live_allocated.end());
  };

  // Model of run(): the value run() must return.
  auto model_run = [&](int id, int obj, int status, bsd_level cur) -> kcont::run_result {
    model_kc& k = model_of(id);
    if (k.queued()) return kcont::run_result::refused;
    if (runs_now_model(k.level, cur)) {
      if (k.deferred) {
        obj = k.saved_obj;
        status = k.saved_status;
        k.deferred = false;
      }
      model_log.push_back({id, obj, status});
      if (id >= 100) forget_allocated(id);
      return kcont::run_result::ran;
    }
    if (!k.deferred) {
      k.deferred = true;
      k.saved_obj = obj;
      k.saved_status = status;
    }
    k.in_level = true;
    mlevel[static_cast<std::size_t>(k.level)].push_back(id);
    return kcont::run_result::deferred;
  };
  auto model_resume_one = [&](std::size_t level) {
    const int id = mlevel[level].front();
    mlevel[level].pop_front();
    model_kc& k = model_of(id);
    k.in_level = false;
    k.deferred = false;
    model_log.push_back({id, k.saved_obj, k.saved_status});
    if (id >= 100) forget_allocated(id);
  };

  std::ostringstream why;
  byte_source in(data, size);
  int step = 0;
  for (; !in.done() && why.tellp() == 0; ++step) {
    const int op = in.next(11);
    const int id = in.next(n_static + 1);
    const int qi = in.next(2);
    const int obj = in.next(100);
    const int status = in.next(100);
    const auto cur = static_cast<bsd_level>(in.next(4));
    model_kc& mk = m[static_cast<std::size_t>(id)];
    switch (op) {
      case 0: {  // push onto an object's queue
        const auto want = mk.queued() ? kcont::push_result::already_queued
                          : mq[static_cast<std::size_t>(qi)].empty() ? kcont::push_result::first
                                                                     : kcont::push_result::queued;
        const auto got = queues[static_cast<std::size_t>(qi)].push(base_of(id));
        if (want != kcont::push_result::already_queued) {
          mk.user_queue = qi;
          mq[static_cast<std::size_t>(qi)].push_back(id);
        }
        if (got != want) why << "push result";
        break;
      }
      case 1: {  // pop
        auto& q = mq[static_cast<std::size_t>(qi)];
        const int want = q.empty() ? -1 : q.front();
        base_t* got = queues[static_cast<std::size_t>(qi)].pop();
        if (!q.empty()) {
          m[static_cast<std::size_t>(q.front())].user_queue = -1;
          q.pop_front();
        }
        if ((got == nullptr ? -1 : id_of(got)) != want) why << "pop returned another";
        break;
      }
      case 2: {  // erase_slow
        auto& q = mq[static_cast<std::size_t>(qi)];
        auto it = std::find(q.begin(), q.end(), id);
        const bool want = it != q.end();
        if (want) {
          q.erase(it);
          mk.user_queue = -1;
        }
        if (queues[static_cast<std::size_t>(qi)].erase_slow(base_of(id)) != want) why << "erase_slow";
        break;
      }
      case 3: {  // splice the other queue onto this one
        auto& to = mq[static_cast<std::size_t>(qi)];
        auto& from = mq[static_cast<std::size_t>(1 - qi)];
        for (int x : from) m[static_cast<std::size_t>(x)].user_queue = qi;
        to.insert(to.end(), from.begin(), from.end());
        from.clear();
        queues[static_cast<std::size_t>(qi)].splice(queues[static_cast<std::size_t>(1 - qi)]);
        break;
      }
      case 4: {  // run one
        if (id == immediate_id) {
          if (mk.queued()) break;  // a precondition of the direct path
          const auto want = model_run(id, obj, status, cur);
          if (kcont::run(d, imm, obj, status, cur) != want) why << "run (static immediate)";
        } else {
          // A deferred continuation is run with Obj{} (a fresh obj is a
          // contract violation); status is ignored for it either way.
          const int pass_obj = mk.deferred ? 0 : obj;
          const auto want = model_run(id, pass_obj, status, cur);
          const auto got = (obj & 1) ? kcont::run(d, kcs[static_cast<std::size_t>(id)], pass_obj, status, cur)
                                     : kcont::run(d, base_of(id), pass_obj, status, cur);
          if (got != want) why << "run result";
        }
        break;
      }
      case 5: {  // defer
        if (mk.level == bsd_level::immediate) break;  // a contract violation
        kcont::run_result want = kcont::run_result::refused;
        if (!mk.queued()) {
          if (!mk.deferred) {
            mk.deferred = true;
            mk.saved_obj = obj;
            mk.saved_status = status;
          }
          mk.in_level = true;
          mlevel[static_cast<std::size_t>(mk.level)].push_back(id);
          want = kcont::run_result::deferred;
        }
        if (kcont::defer(d, base_of(id), obj, status) != want) why << "defer result";
        break;
      }
      case 6: {  // run_all over an object's queue
        auto& q = mq[static_cast<std::size_t>(qi)];
        std::size_t want = q.size();
        bool imm_in_queue = false;
        while (!q.empty()) {
          const int x = q.front();
          q.pop_front();
          m[static_cast<std::size_t>(x)].user_queue = -1;
          if (x == immediate_id) imm_in_queue = true;
          (void)model_run(x, obj, status, cur);
        }
        (void)imm_in_queue;
        if (kcont::run_all(d, queues[static_cast<std::size_t>(qi)], obj, status, cur) != want)
          why << "run_all count";
        break;
      }
      case 7: {  // drain one level, with a budget
        const auto level = static_cast<std::size_t>(cur);
        const std::size_t budget = static_cast<std::size_t>(obj % 4);  // 0: unbounded
        std::size_t want = 0;
        while (!mlevel[level].empty() && (budget == 0 || want < budget)) {
          model_resume_one(level);
          ++want;
        }
        const std::size_t got = budget == 0 ? d.drain(cur) : d.drain(cur, kcont::drain_budget::items(budget));
        if (got != want) why << "drain count";
        break;
      }
      case 8: {  // drain_all, highest level first
        std::size_t want = 0;
        for (std::size_t l = mlevel.size(); l-- > 0;)
          while (!mlevel[l].empty()) {
            model_resume_one(l);
            ++want;
          }
        if (d.drain_all() != want) why << "drain_all count";
        break;
      }
      case 9: {  // cancel a deferred one (static or allocated)
        if ((obj & 3) == 0 && !live_allocated.empty()) {
          const allocated a = live_allocated[static_cast<std::size_t>(status) % live_allocated.size()];
          model_kc& ak = model_of(a.id);
          auto& lq = mlevel[static_cast<std::size_t>(ak.level)];
          auto it = std::find(lq.begin(), lq.end(), a.id);
          const bool want = it != lq.end();
          if (want) {
            lq.erase(it);
            ak.in_level = false;
            forget_allocated(a.id);
          }
          const bool got = d.cancel(*a.k);
          if (got) kcont::dispose(*a.k);
          if (got != want) why << "cancel (allocated)";
        } else {
          auto& lq = mlevel[static_cast<std::size_t>(mk.level == bsd_level::immediate ? 0 : static_cast<int>(mk.level))];
          const bool want = mk.in_level;
          if (want) {
            lq.erase(std::find(lq.begin(), lq.end(), id));
            mk.in_level = false;
          }
          if (d.cancel(base_of(id)) != want) why << "cancel";
        }
        break;
      }
      case 10: {  // make_kc, then run it (it frees itself when it runs)
        const int aid = next_alloc_id++;
        const auto level = static_cast<bsd_level>(in.next(5));
        m_alloc.push_back(model_kc{});
        m_alloc.back().level = level;
        base_t& k = kcont::make_kc(log_fn{}, env_t{aid, &real_log}, level);
        live_allocated.push_back({aid, &k});
        const auto want = model_run(aid, obj, status, cur);
        if (kcont::run(d, k, obj, status, cur) != want) why << "run (allocated)";
        break;
      }
      default:
        break;
    }
    if (why.tellp() == 0 && real_log != model_log) why << "log of calls";
    if (why.tellp() == 0) {
      for (int i = 0; i <= immediate_id; ++i) {
        const model_kc& k = m[static_cast<std::size_t>(i)];
        const base_t& b = base_of(i);
        if (b.is_queued() != k.queued() || b.is_deferred() != k.deferred) {
          why << "state bits of continuation " << i;
          break;
        }
      }
    }
    if (why.tellp() == 0)
      for (std::size_t q = 0; q < 2; ++q)
        if (queues[q].size_slow() != mq[q].size() ||
            !kcont::detail::kcqueue_checker<base_t, kcont::no_lock>::valid(queues[q]))
          why << "queue " << q << " links or size";
  }

  // Leave nothing queued: the queues, the dispatcher and the continuations
  // are destroyed next, and every allocated continuation must be freed.
  for (auto& q : queues)
    while (q.pop() != nullptr) {
    }
  d.drain_all();
  if (why.tellp() != 0) why << " (at step " << step << ")";
  return why.str();
}

}  // namespace kcont_test
