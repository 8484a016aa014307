// kcont/event_source.hpp — a generic event source and the filters that
// count its posts on a kqueue.
//
// Defines `basic_event_source` (a klist that `post(hint)` fans a hint out
// over), `counting_filter` (one source per kqueue, given as the kqueue's
// context) and `object_filter` (one source per object, named by the knote's
// ident: `ident_of(src)`). kcont/kfilters.hpp includes this header.
#pragma once

#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "kcont/contract.hpp"
#include "kcont/immediate_target.hpp"
#include "kcont/kevent.hpp"
#include "kcont/klist.hpp"
#include "kcont/level.hpp"

namespace kcont {

// A generic event source: a klist of knotes that `post(hint)` fans a
// non-zero hint out over (an interface, a device, a socket buffer). Pair it
// with counting_filter to register its events on a kqueue.
//
// Lifetime contract: outlives every knote attached to it.
// Thread-safety: post and attach/detach may race when Lock is a real lock.
// Usage:
//   kcont::event_source rx;
//   kcont::kqueue<kcont::filters<kcont::counting_filter<kcont::filter_id{1}>>> kq{rx};
//   kq.change({.ident = 0, .filter = kcont::filter_id{1}, .flags = kcont::ev::add | kcont::ev::clear});
//   rx.post(1);   // the knote fires; a scan reports data == 1
template <level_set Level = bsd_level, lock_policy Lock = std::mutex>
class basic_event_source {
 public:
  using list_type = klist<long, Level, Lock>;

  // Effects: fans `hint` out over the attached knotes (klist::fire).
  //   A hint of 0 is reserved: filters read it as the scan's re-check.
  // Returns: how many knotes fired. Complexity: O(knotes); no allocation.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t post(D& d, long hint, Level current) {
    KCONT_EXPECTS(hint != 0, "event_source: hint 0 is the scan's re-check");
    return list_.fire(d, hint, current);
  }
  // Effects: post for knotes whose continuations all run at once.
  std::size_t post(long hint) {
    immediate_target<Level> t;
    return post(t, hint, t.lowest);
  }

  // The klist the knotes are linked on.
  [[nodiscard]] list_type& list() noexcept { return list_; }

 private:
  list_type list_;
};

// The event source with bsd_level and a std::mutex.
using event_source = basic_event_source<>;

// A filter for an event source: each post whose hint shares a bit with the
// knote's sfflags (any post when sfflags is 0) adds 1 to data and ORs those
// hint bits into fflags; a report returns both, and ev::clear resets them.
// Without ev::clear the knote stays level-triggered while data != 0.
// Thread-safety: its members run as the filter concept says.
template <filter_id Id, class Source = event_source>
struct counting_filter {
  static constexpr filter_id id = Id;
  using context_type = Source;
  using hint_type = long;

  // Effects: a filter on `source` (the kqueue passes its context).
  explicit counting_filter(Source& source) noexcept : source_(&source) {}

  // The filter_for members (kcont/knote.hpp).
  template <class K>
  int attach(K& kn) {
    source_->list().insert(kn);
    return 0;
  }
  template <class K>
  void detach(K& kn) {
    (void)source_->list().erase(kn);
  }
  template <class K>
  static bool event(K& kn, long hint) {
    const auto bits = static_cast<std::uint32_t>(hint);
    const std::uint32_t wanted = kn.sfflags != 0 ? kn.sfflags : ~std::uint32_t{0};
    const std::uint32_t seen = bits & wanted;
    // The re-check (hint 0) shares no bit with anything: tested only here,
    // off the path of a post that counts.
    if (seen == 0) return hint == 0 && kn.data != 0;
    kn.data += 1;
    kn.fflags |= seen;
    return true;
  }

 private:
  Source* source_;
};

// The ident that names `src` to an object_filter.
template <class Source>
[[nodiscard]] std::uintptr_t ident_of(Source& src) noexcept {
  return reinterpret_cast<std::uintptr_t>(&src);
}

// counting_filter with one source per object: a knote's ident is its own
// source, ident_of(src), so a kqueue holds any number of them, and code
// outside the kqueue activates "object i" by posting to object i's source
// (no table lookup, no other object's knote visited). Ident 0 is EINVAL.
// Lifetime contract: each source outlives its knote (delete it first).
// Usage:
//   struct conn { kcont::event_source rx; };  // one per object
//   kcont::kqueue<kcont::filters<kcont::object_filter<kcont::filter_id{2}>>, conn*> kq;
//   kq.change({.ident = kcont::ident_of(c.rx), .filter = kcont::filter_id{2},
//              .flags = kcont::ev::add | kcont::ev::clear, .udata = &c});
//   c.rx.post(1);  // a scan reports {ident_of(c.rx), data == 1, &c}
template <filter_id Id, class Source = event_source>
struct object_filter {
  static constexpr filter_id id = Id;
  using hint_type = long;

  // The filter_for members (kcont/knote.hpp); event is counting_filter's.
  template <class K>
  int attach(K& kn) {
    if (kn.ident == 0) return EINVAL;
    source(kn).list().insert(kn);
    return 0;
  }
  template <class K>
  void detach(K& kn) {
    (void)source(kn).list().erase(kn);
  }
  template <class K>
  bool event(K& kn, long hint) {
    return counting_filter<Id, Source>::event(kn, hint);
  }

 private:
  template <class K>
  static Source& source(K& kn) noexcept {
    return *reinterpret_cast<Source*>(kn.ident);
  }
};

}  // namespace kcont
