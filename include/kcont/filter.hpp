// kcont/filter.hpp — the filter concept: what decides when a knote fires.
//
// Defines `filter_for<F, K>`, the C++ form of BSD's filterops (attach,
// detach, event, and optionally touch), and the vocabulary of touch:
// `knote_change` (a change or a report) and `touch_op` (which of the two).
// A filter is the per-knote state of a subscription (BSD's kn_hook, kn_ptr
// and friends); kcont::knote<F> (kcont/knote.hpp) stores one inline and
// kcont/kfilters.hpp ships two (user_filter, timer_filter).
//
// Compared with an observer's predicate: the filter also links and unlinks
// the knote on its source (attach/detach), and it updates the knote's
// fields (data, fflags) that a kqueue reports.
//
// Usage:
//   struct link_filter {               // fires on hints with bit 1 set
//     int attach(kcont::knote_base<long>&) { return 0; }
//     void detach(kcont::knote_base<long>&) {}
//     bool event(kcont::knote_base<long>& kn, long hint) {
//       if (hint & 1) ++kn.data;
//       return kn.data != 0;
//     }
//   };
//   static_assert(kcont::filter_for<link_filter, kcont::knote_base<long>>);
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

namespace kcont {

// A change or a report as a filter's `touch` sees it: the owner's flags (for
// a kqueue, its EV_* bits; opaque here), the filter flags and the data.
struct knote_change {
  std::uint16_t flags = 0;
  std::uint32_t fflags = 0;
  std::int64_t data = 0;
};

// What `touch` is asked to do: apply a change to the knote's saved
// parameters (BSD EVENT_REGISTER), or fill a report from the knote's state
// (EVENT_PROCESS) and reset what the report consumes.
enum class touch_op : std::uint8_t { change, process };

namespace detail {

template <class F>
struct filter_hint {
  using type = long;
};
template <class F>
  requires requires { typename F::hint_type; }
struct filter_hint<F> {
  using type = typename F::hint_type;
};

// The hint type a filter's `event` takes: F::hint_type, or long (BSD's
// `long hint`) when F does not say.
template <class F>
using filter_hint_t = typename filter_hint<F>::type;

// The threading policy of a knote<F> that names none: F::knote_policy, or
// Default when F does not say (kcont/knote.hpp: list_guarded).
template <class F, class Default>
struct filter_knote_policy {
  using type = Default;
};
template <class F, class Default>
  requires requires { typename F::knote_policy; }
struct filter_knote_policy<F, Default> {
  using type = typename F::knote_policy;
};
template <class F, class Default>
using filter_knote_policy_t = typename filter_knote_policy<F, Default>::type;

// The parts of the filter concept, one per member, so that a failed check
// (knote's static_asserts) names the missing member.
template <class F, class K>
concept filter_has_attach = requires(F& f, K& kn) {
  { f.attach(kn) } -> std::convertible_to<int>;
};
template <class F, class K>
concept filter_has_detach = requires(F& f, K& kn) { f.detach(kn); };
template <class F, class K>
concept filter_has_event =
    requires(F& f, K& kn, const typename K::hint_type& h) {
      { f.event(kn, h) } -> std::convertible_to<bool>;
    };
template <class F, class K>
concept filter_has_touch =
    requires(F& f, K& kn, knote_change& c, touch_op op) { f.touch(kn, c, op); };
template <class F>
concept filter_has_defunct = requires(const F& f) {
  { f.defunct() } -> std::convertible_to<bool>;
};
template <class F>
concept filter_checks_ident = requires(std::uintptr_t ident) {
  { F::check_ident(ident) } -> std::convertible_to<int>;
};

// FreeBSD's f_isfd: kqueue_register fget()s a descriptor filter's ident
// before it looks for the knote, so every change naming a closed descriptor
// fails with EBADF. Returns: the check_ident of the filter among F... whose
// id is `id` (0 when it has none).
template <class... F, class Id>
[[nodiscard]] int check_ident(Id id, std::uintptr_t ident) {
  int err = 0;
  (void)((F::id == id && ((err = [&] {
            if constexpr (filter_checks_ident<F>) return static_cast<int>(F::check_ident(ident));
            else return 0;
          }()), true)) || ...);
  return err;
}

}  // namespace detail

// A filter for knotes of type K (a knote_base<Hint, Level>), the C++ form of
// BSD's filterops:
//   int  attach(K& kn)          start watching (link kn on a klist...); 0 or
//                               an errno value, reported by kqueue's EV_ERROR;
//   void detach(K& kn)          stop watching (unlink kn); never fails;
//   bool event(K& kn, Hint h)   an event with hint h happened: update kn's
//                               fields and say whether kn fires. A kqueue scan
//                               also calls it with Hint{} to ask "does the
//                               condition still hold?" (BSD's f_event(kn, 0));
//   void touch(K& kn, knote_change& c, touch_op op)   optional: apply a
//                               change (op == change) or fill a report
//                               (op == process); without it the owner saves
//                               fflags/data on a change and reports kn's
//                               fflags/data, resetting them on EV_CLEAR;
//   bool defunct() const        optional: true once the knote's source is
//                               gone for good (a descriptor closed: BSD's
//                               knote_fdclose); asked, under the lock
//                               event ran under, after it returned false.
//                               An owner that can drop the knote drops it
//                               then (a kqueue: as if deleted, no report);
//                               a plain knote just never fires again;
//   static int check_ident(std::uintptr_t ident)   optional: an errno value
//                               when ident cannot name a watched object
//                               (EBADF: no such descriptor); a kqueue asks
//                               it before every change (FreeBSD's fget).
// Hint is F::hint_type when F names one, else long. `using knote_policy =
// kcont::spin_lock;` (optional) names the policy of a knote<F> that names
// none, for a filter whose knotes no klist lock the user can take guards
// (a timer fires without a klist); otherwise it is list_guarded.
// event/touch run under the knote's field lock (spin_lock), its klist's lock
// (list_guarded) or on its one thread (no_lock): keep them
// short, never block, never activate, attach or detach knotes inside them.
// attach/detach run without it (they take the source's klist lock); attach
// may write the fields because nobody else sees the knote before it links it.
template <class F, class K>
concept filter_for =
    std::is_object_v<F> && std::default_initializable<typename K::hint_type> &&
    detail::filter_has_attach<F, K> && detail::filter_has_detach<F, K> &&
    detail::filter_has_event<F, K>;

}  // namespace kcont
