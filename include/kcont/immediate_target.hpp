// kcont/immediate_target.hpp — a deferral target for callers that never
// defer.
//
// Defines `immediate_target<Level>`: what to pass to kcont::run,
// knote_base::activate or klist::fire as the deferral target when every
// continuation must run at once, with `current` at its `lowest` level (rule
// 1: at the lowest level nothing is deferred). A kqueue's own knotes
// (immediate continuations) and kcont/kfilters.hpp's sources use it.
//
// Compared with a dispatcher: it owns no queue and no thread; a push is a
// contract violation (debug builds abort), never a silent drop.
#pragma once

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

// A deferral target for activations that must never defer: with `current` at
// the lowest level every continuation runs at once (rule 1), so nothing is
// ever pushed here. kqueue-owned knotes (immediate continuations) use it.
//
// Lifetime contract: stateless; make one where needed.
// Thread-safety: any thread.
// Usage:
//   kcont::immediate_target<> t;
//   source.list.fire(t, hint, t.lowest);   // every continuation runs now
template <level_set Level = bsd_level>
struct immediate_target {
  using level_type = Level;
  static constexpr bool concurrent = true;
  // The level at which running never defers.
  static constexpr Level lowest = level_at<Level>(0);

  template <class BeforeLink>
  push_result push_deferred(kc_hook&, BeforeLink&&) noexcept {
    KCONT_EXPECTS(false,
                  "immediate_target: a continuation was deferred; run it with "
                  "current = immediate_target::lowest or use a dispatcher");
    return push_result::already_queued;
  }
  bool cancel(kc_hook&) noexcept { return false; }
};

}  // namespace kcont
