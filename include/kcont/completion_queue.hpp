// kcont/completion_queue.hpp — a queue of completions, each with its own
// result, with no dispatcher.
//
// Defines `post(q, k, obj, status)`: pushes k onto a caller's kcqueue with
// its own obj/status saved inside it (as a deferral saves them), and
// `resume_all(q)`: runs the continuations queued on q, each with the values
// its post saved. kcqueue::push carries no values and run_all gives every
// continuation the same ones; an I/O loop that collects completions (read 12
// bytes, write failed with EPIPE...) and runs them later at one place needs
// each to keep its own: this is that queue, without a dispatcher.
//
// Levels are not consulted: resume_all's caller acts as the runner of every
// continuation it runs (as kcont::resume does, kcont/resume.hpp). Post to a
// dispatcher (kcont::defer, kcont/run.hpp) when the level must choose where
// a continuation runs.
//
// Usage:
//   kcont::kcqueue<kcont::kc_base<request*, int>> done;   // or <kc_hook>: mixed
//   if (kcont::post(done, on_read, &rq1, 12) == kcont::push_result::already_queued)
//     ...;                                     // on_read is pending already
//   (void)kcont::post(done, on_write, &rq2, -EPIPE);   // rq2's own result
//   kcont::resume_all(done);   // on_read(&rq1, 12), then on_write(&rq2, -EPIPE)
#pragma once

#include <cstddef>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/kc_base.hpp"
#include "kcont/kc_hook.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/resume.hpp"
#include "kcont/run.hpp"

namespace kcont {

// Effects: pushes k onto q with obj and status saved inside k (the "save"
//   row of the state table in kcont/kc_hook.hpp), unless k is on a queue
//   already. A continuation that still carries a deferral (handed back by a
//   cancel or a hand-back stop) keeps the values it carries (rule 2).
// Returns: as q.push: already_queued (k untouched: no values saved), first
//   or queued.
// Complexity: O(1); no allocation. Thread-safety: as q (any thread when
//   Lock is a real lock).
template <class T, lock_policy Lock, class Obj, class Status, level_set Level>
  requires std::derived_from<kc_base<Obj, Status, Level>, T>
[[nodiscard]] push_result post(kcqueue<T, Lock>& q,
                               kc_base<Obj, Status, Level>& k,
                               std::type_identity_t<Obj> obj,
                               std::type_identity_t<Status> status) {
  constexpr bool concurrent = !std::is_same_v<Lock, no_lock>;
  return q.push(static_cast<T&>(k), [&] {
    detail::save_once<concurrent>(k, obj, status);
  });
}

// Effects: pops the continuations queued on q when the call starts and runs
//   each, on the calling thread, with the obj/status its post saved (a
//   continuation pushed with plain push carries none: caught in debug
//   builds). One posted while the call
//   runs (a completion that re-arms itself) waits for the next call, as in
//   run_all. Each is popped claimed, so a post of it from another thread
//   while it waits to run is refused, not lost (the state table in
//   kcont/kc_hook.hpp); its claim ends just before its function runs.
// Returns: how many ran.
// Throws: what a function throws; that continuation has run, the ones not
//   yet popped stay on q.
// Complexity: O(entries at the start): one walk to count them, one to run.
// Thread-safety: as q; the functions run on the calling thread.
template <class T, lock_policy Lock>
std::size_t resume_all(kcqueue<T, Lock>& q) {
  const std::size_t present = q.size_slow();
  std::size_t n = 0;
  while (n < present) {
    T* k = q.pop_claimed([](T&) noexcept {});
    if (k == nullptr) break;
    ++n;
    KCONT_EXPECTS(k->is_deferred(),
                  "resume_all: a continuation on the queue carries no saved "
                  "obj/status: push it with kcont::post, not kcqueue::push");
    (void)resume(static_cast<kc_hook&>(*k));  // claimed by us: it runs
  }
  return n;
}

}  // namespace kcont
