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
// The kqueue is nothing but one continuation among many (the NetBSD patch's point):
// each of its knotes carries the kqueue's own continuation, the NetBSD patch's
// kq_func, which links the knote on the kqueue's pending list unless it is
// there already. knote.hpp and klist.hpp know nothing of this header.
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
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "kcont/contract.hpp"
#include "kcont/kc.hpp"
#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/detail/kqueue_entry.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/kevent.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

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
//   Lock  — guards the knote table and the pending list; std::mutex (the
//           default) or spin_lock for concurrent use, no_lock for one thread
//           (a blocking scan then only makes sense with a timeout; its knotes
//           are then single-threaded, knote<F, Level, no_lock>: the sources
//           they are attached to must be fired from that thread too).
//   Level — the level set of the knotes' continuations (the kqueue's own is
//           `immediate`).
// A filter F is a filter_for its knote with `static constexpr filter_id id`;
// if it names a `context_type`, it is built as F(context&) from a context
// given to the kqueue's constructor (timer_filter takes its timer_source),
// else default-constructed.
//
// Lifetime contract: the kqueue owns the knotes it allocates; deleting one
// (ev::delete_, an ev::oneshot report, or the kqueue's destructor) detaches
// it, waits for activations in flight, and frees it. Contexts outlive it.
// No thread may be scanning when it is destroyed.
// Thread-safety: with a real Lock, kevent/change/scan and the activations of
// its knotes (from any klist, any thread) may race freely; blocked scanners
// are woken by activations.
template <class... F, class Udata, lock_policy Lock, level_set Level>
class kqueue<filters<F...>, Udata, Lock, Level> {
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
  }
  kqueue(const kqueue&) = delete;
  kqueue& operator=(const kqueue&) = delete;

  // Effects: deletes every knote (detached, waited for, freed).
  // Precondition: no thread is scanning.
  ~kqueue() {
    drop_list drops;
    {
      std::lock_guard<Lock> g(lock_);
      KCONT_EXPECTS(waiters_ == 0, "kqueue: destroyed while a thread scans it");
      for (auto& kv : table_) {
        entry& e = *kv.second;
        e.dropping = true;
        if (e.core->is_queued()) remove_pending(e);
        drops.push_front(e);
      }
      table_.clear();
    }
    destroy_all(drops);
  }

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
  // Returns: how many events were written.
  // Complexity: O(events written). No allocation.
  // Thread-safety: any thread; several threads may scan at once.
  std::size_t scan(std::span<kevent_type> events,
                   std::optional<duration> timeout = duration::zero()) {
    if (events.empty()) return 0;
    drop_list drops;
    std::unique_lock<Lock> g(lock_);
    std::size_t n = collect(events, drops);
    if (n == 0 && (!timeout || *timeout > duration::zero())) {
      using clock = std::chrono::steady_clock;
      const auto now = clock::now();
      // FreeBSD's kqueue_scan waits without limit when the timeout's
      // tv_sec is above INT32_MAX or the deadline would not fit its clock
      // (asbt = 0); the same here, so nanoseconds::max() blocks instead of
      // overflowing into a deadline in the past.
      constexpr std::chrono::seconds longest{
          std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1};
      const bool limited = timeout && *timeout < longest &&
                           now <= clock::time_point::max() - *timeout;
      const auto deadline = limited ? now + *timeout : clock::time_point::max();
      while (n == 0) {
        ++waiters_;
        bool timed_out = false;
        if (limited)
          timed_out = cv_.wait_until(g, deadline) == std::cv_status::timeout;
        else
          cv_.wait(g);
        --waiters_;
        n = collect(events, drops);
        if (timed_out) break;
      }
    }
    g.unlock();
    destroy_all(drops);
    return n;
  }

  // The number of threads blocked in scan right now (a snapshot): what the
  // destructor's precondition is about.
  [[nodiscard]] std::size_t waiting() const {
    std::lock_guard<Lock> g(lock_);
    return waiters_;
  }

  // The number of registered knotes. Complexity: O(1).
  [[nodiscard]] std::size_t size() const {
    std::lock_guard<Lock> g(lock_);
    return table_.size();
  }

  // The number of knotes waiting for a scan (FreeBSD's kq_count): those
  // disabled while pending are counted until a scan drops them.
  // Complexity: O(1).
  [[nodiscard]] std::size_t pending() const {
    std::lock_guard<Lock> g(lock_);
    return pending_count_;
  }

 private:
  template <class Owner, class Fi, class U, level_set L, class KL>
  friend struct detail::kqueue_node;

  using entry = detail::kqueue_entry<Udata>;
  // With no_lock the kqueue is used from one thread: its knotes are
  // single-threaded too (no field lock, plain state updates).
  using knote_lock = std::conditional_t<std::is_same_v<Lock, no_lock>, no_lock, spin_lock>;
  template <class Fi>
  using node = detail::kqueue_node<kqueue, Fi, Udata, Level, knote_lock>;
  using key = detail::kqueue_key;
  // The pending list (see the state table at push_pending) and the list of
  // knotes to free once lock_ is released, through the same link.
  using pending_list = detail::intrusive_queue<&entry::pnext, &entry::pprev>;
  using drop_list = detail::intrusive_queue<&entry::pnext>;
  using contexts = detail::filter_contexts<F...>;

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
    std::unique_lock<Lock> g(lock_);
    auto it = table_.find(key{kev.ident, kev.filter});
    if (it == table_.end()) {
      if (!has(kev.flags, ev::add)) return is_known(kev.filter) ? ENOENT : EINVAL;
      return add_new(kev);
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
    // pending list: the scan drops it (kqueue_scan), so re-enabling it
    // before a scan keeps its place in the order.
    if (has(kev.flags, ev::forceoneshot)) {
      e.flags |= ev::oneshot;
      (void)e.core->set_active();
      if (!e.core->is_disabled() && e.core->try_queue()) push_pending(e);
    }
    if (has(kev.flags, ev::enable))
      (void)e.core->clear_disabled();
    else if (has(kev.flags, ev::disable))
      e.core->disable();
    if (!has(kev.flags, ev::keepudata)) e.udata = kev.udata;
    knote_change ch{static_cast<std::uint16_t>(kev.flags), kev.fflags, kev.data};
    e.ops->change(e, ch);
    kev.fflags = ch.fflags;
    kev.data = ch.data;
    post_change(e);
    return 0;
  }

  // ev::add of a new knote, under lock_: the filter's attach takes its
  // source's klist lock (kqueue lock, then klist lock: the one order used).
  int add_new(kevent_type& c) {
    int err = EINVAL;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (void)((F::id == c.filter ? (err = add_as<I, F>(c), true) : false) || ...);
    }(std::index_sequence_for<F...>{});
    return err;
  }

  template <std::size_t I, class Fi>
  int add_as(kevent_type& c) {
    node<Fi>* n = nullptr;
#if defined(__cpp_exceptions)
    if constexpr (detail::filter_context<Fi>::needed) {
      auto* ctx = ctx_.template get<I>();
      if (ctx == nullptr) return EINVAL;  // the kqueue was built without it
      n = new node<Fi>(this, Fi(*ctx), c, c.flags & ~actions);
    } else {
      n = new node<Fi>(this, Fi{}, c, c.flags & ~actions);
    }
#else
    if constexpr (detail::filter_context<Fi>::needed) {
      auto* ctx = ctx_.template get<I>();
      if (ctx == nullptr) return EINVAL;  // the kqueue was built without it
      n = new (std::nothrow) node<Fi>(this, Fi(*ctx), c, c.flags & ~actions);
    } else {
      n = new (std::nothrow) node<Fi>(this, Fi{}, c, c.flags & ~actions);
    }
    if (n == nullptr) return ENOMEM;
#endif
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
    if (const int err = n->kn.attach(); err != 0) {
      // A failed attach linked nothing, so no activation can reach it.
      table_.erase(key{c.ident, c.filter});
      delete n;
      return err;
    }
    post_change(*n);
    return 0;
  }

  // Rule 6 done inline for the kqueue's own continuation (calling it here
  // would take lock_ twice): FreeBSD's tail of kqueue_register. Under lock_.
  void post_change(entry& e) {
    if (e.dropping) return;
    knote_core& k = *e.core;
    if (!k.is_disabled() && e.ops->recheck(e)) (void)k.set_active();
    if (k.is_active() && !k.is_disabled() && k.try_queue()) push_pending(e);
  }

  // The pending list and the knote's queued bit: the state table.
  //
  // A knote is "pending" exactly when it is on pending_ and its queued bit
  // (knote_core::try_queue / unqueue) is set: both change together, under
  // lock_, only in push_pending / remove_pending / the scan's re-queue.
  // pending_count_ counts the list (FreeBSD's kq_count). An activation
  // comes from any thread (a klist's fan-out, a filter's event) through
  // the kqueue's continuation, on_activation; the others are kevent calls.
  //
  //   state    | event                                | action -> next state
  //   ---------+--------------------------------------+-------------------------------
  //   idle     | activation; not disabled, not        | try_queue, push_back, wake
  //            |   dropping                           |   scanners -> pending
  //   idle     | activation; disabled or dropping     | none -> idle (still active:
  //            |                                      |   enable's post_change queues it)
  //   idle     | change (post_change): active and     | try_queue, push_back, wake
  //            |   enabled after the re-check, or     |   scanners -> pending
  //            |   ev::forceoneshot                   |
  //   pending  | activation, change                   | none: try_queue fails (rule 7)
  //   pending  | ev::disable                          | none -> pending, in place
  //   pending  | scan: disabled                       | pop, unqueue -> idle (active)
  //   pending  | scan: re-check fails                 | pop, unqueue, clear_active -> idle
  //   pending  | scan: reported, clear or dispatch    | pop, unqueue, clear_active
  //            |                                      |   (dispatch: disable) -> idle
  //   pending  | scan: reported, level-triggered      | pop, unqueue, try_queue,
  //            |                                      |   push_back, no wake -> pending
  //   pending  | scan: ev::oneshot                    | pop, unqueue, report, drop
  //   any      | ev::delete_, destructor              | dropping = true; pop if pending;
  //            |                                      |   table erase; freed unlocked
  //
  // A scan takes at most the entries pending at its start (FreeBSD's
  // marker), so a level-triggered re-queue is not seen twice by one scan.
  // Blocked scanners are woken (cv_) by every push from idle while any waits.

  // The NetBSD patch's kq_func (see the state table above). Any thread.
  void on_activation(entry& e) {
    std::lock_guard<Lock> g(lock_);
    if (e.dropping || e.core->is_disabled()) return;
    if (e.core->try_queue()) push_pending(e);
  }

  // idle -> pending, after a successful try_queue. Under lock_.
  void push_pending(entry& e) noexcept {
    pending_.push_back(e);
    ++pending_count_;
    if (waiters_ != 0) cv_.notify_all();
  }
  // pending -> idle. Under lock_.
  void remove_pending(entry& e) noexcept {
    pending_.erase(e);
    --pending_count_;
    e.core->unqueue();
  }

  // Takes e out of the table and the pending list; activations racing in
  // see `dropping` and leave it alone. Under lock_.
  void unlink_locked(entry& e) {
    e.dropping = true;
    if (e.core->is_queued()) remove_pending(e);
    table_.erase(key{e.ident, e.filter});
  }

  static void destroy_all(drop_list& drops) {
    while (entry* e = drops.pop_front()) e->ops->destroy(*e);
  }

  // One pass over the knotes pending when it starts (FreeBSD's marker):
  // a level-triggered knote re-queued behind them is not seen twice.
  std::size_t collect(std::span<kevent_type> events, drop_list& drops) {
    std::size_t n = 0;
    std::size_t budget = pending_count_;
    while (n < events.size() && budget-- > 0) {
      entry& e = *pending_.pop_front();
      --pending_count_;
      e.core->unqueue();
      knote_core& k = *e.core;
      // kqueue_scan: a knote disabled while queued leaves the queue here,
      // unreported, still active (an enable re-queues it).
      if (k.is_disabled()) continue;
      const bool oneshot = has(e.flags, ev::oneshot);
      if (oneshot) {
        // kqueue_scan reports a one-shot knote without re-checking it and
        // without its filter's touch: `*kevp = kn->kn_kevent`, the knote's
        // own fflags and data (0 for a user event: its touch keeps the
        // user's flags in sfflags/sdata, which only a touch reports).
        const knote_fields f = k.snapshot();
        events[n++] = kevent_type{e.ident, e.filter, e.flags, f.fflags, f.data, e.udata};
        unlink_locked(e);
        drops.push_front(e);
        continue;
      }
      if (!e.ops->recheck(e)) {
        (void)k.clear_active();
        continue;
      }
      const bool clear = has(e.flags, ev::clear);
      const knote_change r =
          e.ops->report(e, static_cast<std::uint16_t>(e.flags), clear);
      events[n++] = kevent_type{e.ident, e.filter, e.flags, r.fflags, r.data, e.udata};
      if (clear || has(e.flags, ev::dispatch)) {
        if (has(e.flags, ev::dispatch)) k.disable();
        (void)k.clear_active();
      } else {
        // Re-queued without waking anyone: the scanner that found it returns.
        (void)k.try_queue();
        pending_.push_back(e);
        ++pending_count_;
      }
    }
    return n;
  }

  mutable Lock lock_;
  std::condition_variable_any cv_;
  std::size_t waiters_ = 0;
  std::unordered_map<key, entry*, detail::kqueue_key_hash> table_;
  pending_list pending_;
  std::size_t pending_count_ = 0;
  contexts ctx_;
};

}  // namespace kcont
