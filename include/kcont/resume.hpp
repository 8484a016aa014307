// kcont/resume.hpp — run a continuation the caller holds: popped from a
// queue, or handed back by cancel or by a hand-back stop.
//
// Defines `resume(h)`: runs a continuation with the obj/status its deferral
// saved, as its level's runner does when it drains it; `resume(h,
// kcont::cancelled)`: the same, with its Status's cancel value
// (kcont/cancel_status.hpp) instead of the saved status, so that every
// continuation of a mixed list handed back at shutdown learns it was
// cancelled; and `resume(k, status)`, for a continuation whose type is
// known, with any status. The three are the "resume" row of the state table
// in kcont/kc_hook.hpp. Nothing here allocates.
//
// Usage (a thread_dispatcher<L, Plan, Policies> with hand_back_on_stop):
//   kcont::kcqueue<kcont::kc_hook> out;
//   d.stop(out);
//   while (kcont::kc_hook* h = out.pop()) kcont::resume(*h, kcont::cancelled);
#pragma once

#include <cstdint>
#include <type_traits>

#include "kcont/cancel_status.hpp"
#include "kcont/contract.hpp"
#include "kcont/kc_base.hpp"
#include "kcont/kc_hook.hpp"
#include "kcont/level.hpp"

namespace kcont {

namespace detail {
// The claim a resume runs under (see the state table): kept when the
// caller popped h claimed, taken when h is handed back (off every queue).
// Returns: false when a deferral by another thread claimed h first.
inline bool claim_for_resume(kc_hook& h) noexcept {
  const std::uint8_t st =
      hook_access::state(h).load(std::memory_order_acquire);
  KCONT_EXPECTS((st & hook_access::busy_bits) != 0,
                "resume: nothing to resume: the continuation is neither "
                "claimed nor carrying a deferral (never deferred, or run "
                "already); call it through run with an obj and a status");
  KCONT_EXPECTS(hook_access::next(h) == nullptr,
                "resume: the continuation is still linked on a queue; pop it "
                "first");
  if (st & hook_access::queued_bit) return true;
  return (hook_access::set<true>(h, hook_access::queued_bit) &
          hook_access::queued_bit) == 0;
}
}  // namespace detail

// Effects: calls h's function now, on the calling thread, with the obj and
//   status its deferral saved, then (for a make_kc one) frees it: what its
//   level's runner does when it drains it. Its level is not compared with
//   the caller's (rule 1): the caller acts as that runner. Unlike a drain it
//   leaves the thread's current level (kcont/current_level.hpp) as it is: a
//   kc_hook does not know its level set; set it with a level_guard around
//   the call if the function defers by the current level.
// Precondition: the caller holds h: popped from a queue (pop, or
//   pop_claimed: the claim is then the caller's), or handed back by cancel
//   or a hand-back stop (and popped from `out`), and h carries a deferral or
//   a claim. Resuming a continuation with neither (one never deferred, or
//   resumed already) or one still linked on a queue is caught in debug
//   builds.
// Returns: true when the function ran (h may be gone then); false when,
//   h being handed back, another thread deferred it meanwhile: that pending
//   run absorbs this one (as run's `refused`), and h stays queued there.
// Throws: what the function throws; h has then run (and is freed when the
//   library allocated it).
// Complexity: O(1); no allocation. Thread-safety: the holder's thread;
//   concurrent deferrals of h by others are refused or absorb it, as above.
inline bool resume(kc_hook& h) {
  if (!detail::claim_for_resume(h)) return false;
  detail::hook_access::op(h, detail::kc_op::resume_shared);
  return true;
}

// Effects: resume(h), but the function receives cancel_status<Status>::
//   value() (ECANCELED for int, std::errc::operation_canceled for
//   std::error_code, `cancelled` for an enum that has it) instead of the
//   saved status; the saved obj stays. For a handed-back list of
//   continuations of mixed signatures: each is told in its own status type.
// Precondition: as resume(h), and h's Status has a cancel_status: when it
//   has none, a debug build aborts naming it, and a release build hands h
//   back as dispose() would (not called; freed when the library allocated
//   it). For a continuation whose type is known, resume(k, cancelled)
//   checks this at compile time.
// Returns: true when h was resumed (or, so handed back, disposed); false
//   as resume(h): a racing deferral absorbed it.
// Throws, Complexity, Thread-safety: as resume(h).
inline bool resume(kc_hook& h, cancelled_t) {
  if (!detail::claim_for_resume(h)) return false;
  detail::hook_access::op(h, detail::kc_op::resume_cancelled);
  return true;
}

// Effects: resume(k), but the function receives `status` instead of the
//   saved status (the saved obj stays): e.g. the cancel status of a
//   protocol that has several.
// Precondition, Returns, Throws, Complexity, Thread-safety: as resume(h).
template <class Obj, class Status, level_set Level>
bool resume(kc_base<Obj, Status, Level>& k,
            std::type_identity_t<Status> status) {
  if (!detail::claim_for_resume(k)) return false;
  using A = detail::kc_base_access<Obj, Status, Level>;
  const Obj obj = A::take_saved(k, detail::kc_op::resume_shared).first;
  A::invoke(k, obj, status);
  return true;
}

// Effects: resume(k, cancel_status<Status>::value()); a Status with no
//   cancel_status is rejected at compile time.
template <class Obj, class Status, level_set Level>
bool resume(kc_base<Obj, Status, Level>& k, cancelled_t) {
  static_assert(detail::has_cancel_status<Status>,
                "kcont::resume(k, cancelled): Status has no kcont::"
                "cancel_status; specialise it, or pass the status: "
                "resume(k, status)");
  return resume(k, static_cast<Status>(cancel_status<Status>::value()));
}

}  // namespace kcont
