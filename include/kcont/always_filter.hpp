// kcont/always_filter.hpp — the filter of an unconditional fan-out.
//
// Defines `always_filter<List>`: a filter (kcont/filter.hpp) whose attach
// links the knote on a klist, whose detach unlinks it, and whose event fires
// on every hint. A klist of knotes with it is a plain observer list: each
// klist::fire runs every subscriber's continuation at its level, with the
// knote as obj (its fields untouched). Write a filter of your own when a
// subscriber fires on some hints only, or when a kqueue reports the knote
// (always_filter has no filter_id: it is not a kqueue filter; a kqueue's
// re-check would find it always true).
//
// Usage:
//   using subscribers_t = kcont::klist<long, kcont::bsd_level, kcont::no_lock>;
//   subscribers_t subscribers;
//   int n = 0;
//   kcont::knote_closure<kcont::always_filter<subscribers_t>, count_fn, int*,
//                        kcont::static_level<kcont::bsd_level::immediate>,
//                        kcont::no_lock>
//       sub{kcont::always_filter{subscribers}, count_fn{}, &n, {}};
//   sub.attach();
//   kcont::immediate_target<kcont::bsd_level> now;
//   subscribers.fire(now, /*hint=*/1, now.lowest);   // every subscriber runs
//   sub.detach();
#pragma once

#include "kcont/klist.hpp"

namespace kcont {

// A filter that fires on every event of its klist.
// Thread-safety: as List (attach/detach take its lock); event reads nothing.
template <class List>
class always_filter {
 public:
  using hint_type = typename List::hint_type;
  using list_type = List;

  // Effects: a filter whose knotes attach to `list`.
  // Lifetime contract: `list` outlives every knote attached through it.
  explicit always_filter(List& list) noexcept : list_(&list) {}

  // The filter_for members (kcont/filter.hpp).
  template <class K>
  int attach(K& kn) {
    (void)list_->insert(kn);
    return 0;
  }
  template <class K>
  void detach(K& kn) {
    (void)list_->erase(kn);
  }
  // Returns: true whatever the hint: every fan-out fires the knote.
  template <class K>
  constexpr bool event(K&, const hint_type&) const noexcept {
    return true;
  }

  // The klist the knotes attach to.
  [[nodiscard]] List& list() const noexcept { return *list_; }

 private:
  List* list_;
};

}  // namespace kcont
