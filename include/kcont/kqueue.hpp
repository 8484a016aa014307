// kcont/kqueue.hpp — the kqueue: register changes, scan events.
//
// Defines `kqueue<filters<F...>, Udata, Lock, Level>`: BSD's kqueue in user
// space. A change list registers knotes (ev::add allocates one, as BSD
// allocates knotes) and modifies or deletes them; a scan returns the events
// of the knotes that fired, each once however often it fired (rule 7), with
// the udata of the knote's latest change. The filters are compile-time
// types (the shipped user_filter and timer_filter, or your own); each has a
// `filter_id`.
//
// The kqueue is one continuation among many (the NetBSD patch's point): each
// of its knotes carries the kqueue's own, the patch's kq_func, which links the
// knote on the pending list unless it is there already (the state table in
// kcont/detail/kqueue_core.hpp). knote.hpp and klist.hpp never name it.
//
// Semantics are FreeBSD's kern_event.c (kqueue_register, kqueue_kevent,
// kqueue_scan), which kqueue(2) describes: code ported from a BSD behaves
// the same here, and tests/kqueue_reference.hpp, written from those sources
// alone, checks it change by change. Activation and scan never allocate; a
// scan may free (an ev::oneshot knote is deleted after its report).
//
// Usage:
//   using kq_t = kcont::kqueue<kcont::filters<kcont::user_filter>, session*>;
//   kq_t kq;
//   kq_t::kevent_type ch[] = {{.ident = 1, .filter = kcont::filter_id::user,
//                              .flags = kcont::ev::add | kcont::ev::clear,
//                              .udata = &s}};
//   kq.kevent(ch, {});
//   kq.change({.ident = 1, .filter = kcont::filter_id::user,
//              .fflags = kcont::note::trigger,
//              .udata = &s});  // every change but a delete sets the udata
//   kq_t::kevent_type out[8];
//   auto r = kq.kevent({}, out, std::chrono::milliseconds(10));  // r.ret == 1
#pragma once

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "kcont/detail/kqueue_core.hpp"
#include "kcont/detail/kqueue_entry.hpp"
#include "kcont/detail/kqueue_wait.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/kevent.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"

namespace kcont {

// The filters a kqueue accepts, as a type list: kqueue<filters<user_filter>>.
template <class... F>
struct filters {};

template <class FilterList, class Udata = std::uintptr_t,
          lock_policy Lock = std::mutex, level_set Level = bsd_level>
class kqueue;

// A kqueue of the filters F..., handing back a Udata with each event.
//
//   Udata — the caller's cookie type (a pointer or an integer; trivially
//           copyable): typed, so a session* comes back as a session*.
//   Lock  — guards the knote table, the pending list and the knotes' fields
//           and state; std::mutex (the default) or spin_lock for concurrent
//           use, no_lock for one thread (a blocking scan then only makes
//           sense with a timeout; the sources its knotes are attached to
//           must be fired from that thread too).
//   Level — the level set of the knotes' continuations (the kqueue's own is
//           `immediate`).
// A filter F is a filter_for its knote with `static constexpr filter_id id`;
// if it names a `context_type`, it is built as F(context&) from a context
// given to the kqueue's constructor (timer_filter takes its timer_source),
// else default-constructed. A blocking scan drives the contexts that are
// sources (see scan): bind each one the filters name.
//
// Lifetime contract: the kqueue owns the knotes it allocates; deleting one
// (ev::delete_, an ev::oneshot report, or the kqueue's destructor) detaches
// it, waits for activations in flight, and frees it. A knote whose filter
// says defunct() (a descriptor closed: fd_source::forget) is deleted at
// once, unreported (FreeBSD's knote_fdclose), and freed by the next change
// or scan. Contexts outlive it; no thread may scan when it is destroyed.
// Thread-safety: with a real Lock, kevent/change/scan and the activations
// of its knotes (any klist, any thread) race freely; activations wake scanners.
template <class... F, class Udata, lock_policy Lock, level_set Level>
class kqueue<filters<F...>, Udata, Lock, Level> : private detail::kqueue_core<Udata, Lock> {
  using base = detail::kqueue_core<Udata, Lock>;
  using drive = detail::kqueue_drive<F...>;  // its sources: kcont/detail/kqueue_wait.hpp
  static_assert(sizeof...(F) > 0, "kcont::kqueue: give at least one filter");
  static_assert((detail::has_filter_id<F> && ...),
                "kcont::kqueue: each filter needs `static constexpr "
                "kcont::filter_id id`");
  static_assert(((F::id != filter_id{}) && ...),
                "kcont::kqueue: filter id 0 is not a filter: kevent skips "
                "changes with filter 0, as FreeBSD's kqueue_kevent does");
  static_assert(std::is_trivially_copyable_v<Udata> &&
                    std::default_initializable<Udata>,
                "kcont::kqueue: Udata must be trivially copyable and default-"
                "constructible (a pointer or an integer): scans copy it out");

 public:
  using kevent_type = basic_kevent<Udata>;
  using udata_type = Udata;
  using level_type = Level;
  using lock_type = Lock;
  using duration = std::chrono::nanoseconds;

  // Effects: an empty kqueue; each context is bound to the filters whose
  //   context_type it is (e.g. the timer_source of timer_filter).
  template <class... Ctx>
  explicit kqueue(Ctx&... ctx) {
    static_assert((contexts::template is_context<Ctx> && ...),
                  "kcont::kqueue: a constructor argument is no filter's context_type");
    (ctx_.bind(ctx), ...);
    watches_.watch(ctx_);  // a signal_source's descriptor, by the fd_source
    if constexpr (drive::has_waiter)
      if (drive(ctx_).waiter() != nullptr) base::wake_source_ = &wake_one;
  }
  kqueue(const kqueue&) = delete;
  kqueue& operator=(const kqueue&) = delete;

  // Effects: deletes every knote (detached, waited for, freed).
  // Precondition: no thread is scanning.
  ~kqueue() = default;

  // Effects: applies one change, as FreeBSD's kqueue_register does (its
  //   EV_SYSFLAGS bits, EV_EOF and EV_ERROR among them, are ignored, as
  //   kqueue_kevent strips them from every change first):
  //   ev::enable and ev::disable together — refused with EINVAL, whether
  //                  the knote exists or not (kqueue_register's first test);
  //                  so is ev::add with ev::keepudata;
  //   ev::add      — a new knote: allocated, given the change's fflags and
  //                  data as its saved parameters (sfflags, sdata, raw) and
  //                  the change's flags but add/delete/enable/disable as its
  //                  reported flags (ev::receipt and bits kcont does not
  //                  know included), disabled with ev::disable, its filter
  //                  attached. The attach sees no fflags (kqueue_register
  //                  clears them first), so note::trigger in the creating
  //                  change does not fire a user event. On an existing
  //                  knote ev::add is no more than any other change: it
  //                  does not re-enable it, and its oneshot / clear /
  //                  dispatch / receipt bits are ignored;
  //   ev::delete_  — detach and free the knote; a pending event is dropped;
  //   otherwise    — ev::forceoneshot makes the knote one-shot and
  //                  activates it (queued unless disabled); then
  //                  ev::enable clears disabled, ev::disable sets it (a
  //                  queued knote stays queued, in its place: the scan drops
  //                  it while disabled, as kqueue_scan does); the udata is
  //                  replaced (by every change but a delete, a bare
  //                  note::trigger included) unless ev::keepudata is given;
  //                  fflags/data go to the filter's
  //                  touch (how note::trigger reaches a user event), or are
  //                  saved as sfflags/sdata;
  //   then, unless the knote is disabled, the filter is re-checked and the
  //   knote queued if it is active and not queued yet.
  // Returns: 0, or an errno: ENOENT (no such knote and no ev::add), EINVAL
  //   (a filter this kqueue does not have, enable with disable, add with
  //   keepudata), or the filter's attach error.
  // Throws: std::bad_alloc from ev::add (nothing was registered then).
  //   Without exceptions (-fno-exceptions) the knote's allocation failing
  //   returns ENOMEM instead (FreeBSD's kevent(2) error); the table's
  //   insertion (a std::unordered_map) failing still ends the program.
  // Complexity: O(1) expected. Thread-safety: any thread.
  int change(const kevent_type& c) {
    kevent_type k = c;
    k.flags &= ~sysflags;
    return register_change(k);
  }

  // Effects: kevent(2), as FreeBSD's kqueue_kevent: applies `changes` in
  //   order (a change with filter 0 is skipped; its EV_SYSFLAGS bits are
  //   cleared first); a change that fails, or that carries ev::receipt, is
  //   reported in the next entry of `events`: the change as kqueue_register
  //   left it (a new knote's fflags and data cleared; a user event's fflags
  //   masked to the user bits) with flags = ev::error exactly and data = its
  //   errno (0 for a success). When such an entry finds no room left, the
  //   call ends there: later changes are not applied. When any entry was
  //   written, no scan is done; else `scan(events, timeout)` (at most
  //   INT_MAX events: C's nevents is an int).
  //   `timeout`: zero polls, std::nullopt blocks until an event arrives; a
  //   negative one is EINVAL (ret -1) when `events` is not empty, as in
  //   FreeBSD, whose kqueue_scan checks it after the changes were applied.
  // Returns: C's return value, errno and the entries written: see
  //   kevent_result.
  // Throws: std::bad_alloc from ev::add.
  kevent_result kevent(std::span<const kevent_type> changes,
                       std::span<kevent_type> events,
                       std::optional<duration> timeout = duration::zero()) {
    constexpr auto c_max = static_cast<std::size_t>(std::numeric_limits<int>::max());
    if (events.size() > c_max) events = events.first(c_max);
    std::size_t written = 0;
    for (const auto& c : changes) {
      if (c.filter == filter_id{}) continue;
      kevent_type k = c;
      k.flags &= ~sysflags;
      const int err = register_change(k);
      if (err == 0 && !has(k.flags, ev::receipt)) continue;
      if (written == events.size()) return {err == 0 ? 0 : -1, err, written};
      k.flags = ev::error;
      k.data = err;
      events[written++] = k;
    }
    if (written != 0) return {static_cast<int>(written), 0, written};
    // kqueue_scan returns at once when nevents is 0, and only then checks
    // the timeout: a negative one is EINVAL (timespecvalid_interval), after
    // the changes were applied.
    if (!events.empty() && timeout && *timeout < duration::zero())
      return {-1, EINVAL, 0};
    const std::size_t n = scan(events, timeout);
    return {static_cast<int>(n), 0, n};
  }

  // Effects: BSD kqueue_scan: moves up to events.size() pending knotes, in
  //   the order they became pending, into `events`; the rest stay pending, in
  //   order. A knote disabled while pending leaves the list unreported (it
  //   does not count against events.size()). Each other knote is re-checked
  //   first (the filter's event with Hint{}); one whose condition no longer
  //   holds is dropped silently. An ev::oneshot knote is not re-checked and
  //   is reported as its knote stands, without the filter's touch (fflags
  //   and data are the knote's own: FreeBSD copies kn_kevent), then deleted.
  //   After its report a knote with ev::clear is reset;
  //   with ev::dispatch it is disabled; otherwise it stays pending behind the
  //   others (level-triggered: reported again by the next scan).
  //   When nothing is pending, waits up to `timeout` (std::nullopt: without
  //   limit) for an activation. As in FreeBSD, a timeout of INT32_MAX + 1
  //   seconds or more (nanoseconds::max() included) waits without limit.
  //   With sources among the contexts (detail/kqueue_wait.hpp) every scan
  //   drives them once. Nothing pending (even with a zero timeout): ONE wait
  //   in the fd_source (or the signal_source) up to the earlier of the
  //   timeout and the next timer, which a ready descriptor, a signal or an
  //   activation (the source's wake()) ends; what is ready, due or delivered
  //   fires. Events found: a look that does not block, then the due timers
  //   and signals: nothing starves. timer_source::arm: seen at the next wake.
  // Returns: how many events were written.
  // Complexity: O(events written). No allocation.
  // Thread-safety: any thread; several threads may scan at once.
  std::size_t scan(std::span<kevent_type> events,
                   std::optional<duration> timeout = duration::zero()) {
    if (events.empty()) return 0;
    return base::scan_wait(events, timeout, drive(ctx_), [](entry& e, kevent_type& out) {
      return detail::scan_step_of<node<F>...>(e, out);  // inline, by filter id
    });
  }

  // A descriptor readable while an event is pending (FreeBSD's kqueue_poll),
  //   for another loop to watch, then kevent() with a zero timeout: the wait
  //   source's (an fd_source's epoll descriptor; a scan finding nothing
  //   pending resets it). Effects: from now on every push onto an empty
  //   pending list calls the source's wake() (a write(2)). Returns: -1 when
  //   the source has none (poll backend). Thread-safety: any thread.
  [[nodiscard]] int native_handle()
    requires drive::has_waiter
  {
    auto* source = drive(ctx_).waiter();
    if (source == nullptr) return -1;
    std::lock_guard<Lock> g(lock_);
    base::pollable_ = true;
    if (pending_count_ != 0) source->wake();
    return source->native_handle();
  }

  // Observability: blocked scanners, their wake-ups, knotes, knotes pending
  // (FreeBSD's kq_count). Contracts: kcont/detail/kqueue_core.hpp.
  using base::waiting, base::wakeups, base::size, base::pending;

 private:
  using typename base::drop_list;
  using typename base::entry;
  using typename base::key;
  using base::lock_;
  using base::pending_count_;
  using base::table_;
  using base::waiters_;
  using base::wakeups_;
  using base::post_change;
  using base::push_pending;
  using base::unlink_locked;
  // The knotes are single-threaded (no field lock, plain state updates)
  // whatever Lock is: every operation on one is serialized by lock_, but for
  // its attach (before it is linked) and its detach (after it is unlinked
  // and marked dropping under lock_): kcont/detail/kqueue_entry.hpp.
  using knote_lock = no_lock;
  template <class Fi>
  using node = detail::kqueue_node<base, Fi, Udata, Level, knote_lock>;
  using contexts = detail::filter_contexts<F...>;
  // What the core calls to wake a scanner asleep in the wait source.
  static void wake_one(base& k) noexcept { drive(static_cast<kqueue&>(k).ctx_).waiter()->wake(); }

  // FreeBSD's EV_SYSFLAGS: bits the system owns (EV_EOF, EV_ERROR, EV_DROP,
  // EV_FLAG1), cleared from every change before it is applied.
  static constexpr ev sysflags = static_cast<ev>(0xF000);
  // The action bits, which kqueue_register strips from a new knote's flags.
  static constexpr ev actions =
      ev::add | ev::delete_ | ev::enable | ev::disable | ev::forceoneshot;

  [[nodiscard]] static constexpr bool is_known(filter_id id) noexcept {
    return ((F::id == id) || ...);
  }

  // FreeBSD's kqueue_register, step by step (see change()). `kev` is left
  // as kqueue_register leaves its kevent, which is what an EV_ERROR entry
  // reports: a new knote's fflags and data cleared, a touch's edits kept.
  int register_change(kevent_type& kev) {
    if (has(kev.flags, ev::enable | ev::disable)) return EINVAL;
    if (has(kev.flags, ev::add | ev::keepudata)) return EINVAL;
    if (const int err = detail::check_ident<F...>(kev.filter, kev.ident)) return err;
    typename base::change_lock g(*this);  // frees the defunct knotes too
    auto it = base::find_settled(key{kev.ident, kev.filter}, g);
    if (it == table_.end()) {
      if (!has(kev.flags, ev::add)) return is_known(kev.filter) ? ENOENT : EINVAL;
      return add_new(kev, g);
    }
    entry& e = *it->second;
    if (has(kev.flags, ev::delete_)) {
      unlink_locked(e);
      g.unlock();
      e.ops->destroy(e);
      return 0;
    }
    // EV_FORCEONESHOT's KNOTE_ACTIVATE, enable or disable, then udata and
    // touch, as kqueue_register. A disabled knote stays where it is on the
    // pending list (see the state table in kcont/detail/kqueue_core.hpp).
    if (has(kev.flags, ev::forceoneshot)) {
      e.or_flags(ev::oneshot);
      // kn_flags |= EV_ONESHOT: the filter sees it too (a timer's re-arm in
      // the touch below is then one-shot, as filt_timervalidate reads it).
      e.core->flags = static_cast<std::uint16_t>(e.core->flags | static_cast<std::uint16_t>(ev::oneshot));
      (void)e.core->set_active();
      if (!e.core->is_disabled() && base::try_queue(e)) push_pending(e);
    }
    if (has(kev.flags, ev::enable))
      (void)e.core->clear_disabled();
    else if (has(kev.flags, ev::disable))
      e.core->disable();
    if (!has(kev.flags, ev::keepudata)) e.udata = kev.udata;
    knote_change ch{static_cast<std::uint16_t>(kev.flags), kev.fflags, kev.data};
    e.ops->change(e, ch);
    // Flags the filter's touch added to the knote (FreeBSD's filt_timertouch:
    // kn_flags |= EV_ERROR on a bad re-add) are reported from now on; a touch
    // that deactivated it (filt_timertouch on a re-add: knote_dequeue,
    // ~KN_ACTIVE) takes it off the pending list.
    e.or_flags(static_cast<ev>(e.core->flags));
    if (!e.core->is_active() && base::is_queued(e)) base::remove_pending(e);
    kev.fflags = ch.fflags;
    kev.data = ch.data;
    post_change(e);
    if (drive::moves_deadlines(kev.filter)) base::rouse();  // a timer may have moved
    return 0;
  }

  // ev::add of a new knote, under lock_ (g), which the filter's attach runs
  // without: see add_as.
  int add_new(kevent_type& c, std::unique_lock<Lock>& g) {
    int err = EINVAL;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (void)((F::id == c.filter ? (err = add_as<I, F>(c, g), true) : false) || ...);
    }(std::index_sequence_for<F...>{});
    return err;
  }

  template <std::size_t I, class Fi>
  int add_as(kevent_type& c, std::unique_lock<Lock>& g) {
    auto make = [&](Fi f) {
#if defined(__cpp_exceptions)
      return new node<Fi>(this, std::move(f), c, c.flags & ~actions);
#else
      return new (std::nothrow) node<Fi>(this, std::move(f), c, c.flags & ~actions);
#endif
    };
    node<Fi>* n = nullptr;
    if constexpr (detail::filter_context<Fi>::needed) {
      auto* ctx = ctx_.template get<I>();
      if (ctx == nullptr) return EINVAL;  // the kqueue was built without it
      n = make(Fi(*ctx));
    } else {
      n = make(Fi{});
    }
    if (n == nullptr) return ENOMEM;  // only without exceptions
    // BSD kqueue_register: the new knote's saved parameters come from the
    // change, raw, its flags from the EV_ADD, before the filter's attach
    // sees it; the change's own fflags and data are cleared (so the attach
    // sees none in the knote's fflags/data, and a receipt reports 0).
    n->kn.flags = static_cast<std::uint16_t>(n->flags);
    n->kn.sfflags = c.fflags;
    n->kn.sdata = c.data;
    c.fflags = 0;
    c.data = 0;
    if (has(c.flags, ev::disable)) n->kn.disable();
    // Into the table before the attach: the insertion may throw, and undoing
    // an attach here would wait for activations that need lock_ (held).
#if defined(__cpp_exceptions)
    try {
      table_.emplace(key{c.ident, c.filter}, n);
    } catch (...) {
      delete n;
      throw;
    }
#else
    table_.emplace(key{c.ident, c.filter}, n);
#endif
    // Without lock_ (see attach_unlocked): post_change below queues what
    // fired meanwhile.
    const int err = base::attach_unlocked(*n, g, [n] { return n->kn.attach(); });
    if (err != 0) {
      // A failed attach linked nothing, so no activation can reach it.
      table_.erase(key{c.ident, c.filter});
      delete n;
      return err;
    }
    // A filter's attach may add flags to the knote (FreeBSD's
    // filt_timerattach: kn_flags |= EV_CLEAR); scans report and obey them.
    n->or_flags(static_cast<ev>(n->kn.flags));
    post_change(*n);
    if (drive::moves_deadlines(c.filter)) base::rouse();  // a new timer
    return 0;
  }

  contexts ctx_;
  [[no_unique_address]] typename drive::watches watches_;  // after ctx_: uses it
};

}  // namespace kcont
