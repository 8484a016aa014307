// kcont/klist.hpp — a list of knotes and the fan-out of one event over it.
//
// Defines `klist<Hint, Level, Lock>`: the BSD klist an event source owns (an
// interface, a timer source), an intrusive doubly linked list of knotes, and
// `fire(d, hint, current)`, BSD's knote(klist, hint): each knote's filter
// decides from the hint whether it fires, and those that fire are activated
// (rule 6), each running its own continuation at its own level.
//
// A subscriber may detach itself, or any other subscriber, from inside its
// continuation while the fan-out runs: the fan-out keeps a cursor that erase
// moves past the removed knote, and the lock is not held while a continuation
// runs. Thread-safety is the Lock policy (no_lock, spin_lock, std::mutex);
// with a real lock, fire, insert and erase may race from any thread.
// Continuations that never touch their list may run with its lock held
// across the whole fan-out instead (FreeBSD's KNOTE_LOCKED): kcont::hold_lock.
//
// Compared with a std::vector<std::function<void(Hint)>>: no allocation on
// subscribe or fire, O(1) unsubscribe, safe unsubscription during the fan-out.
//
// Usage:
//   kcont::klist<long, kcont::bsd_level, std::mutex> link_events;
//   // a filter's attach calls link_events.insert(kn), its detach erase(kn)
//   link_events.fire(dispatcher, /*hint=*/1, kcont::bsd_level::softserial);
//   // continuations that never insert, erase or fire on link_events:
//   link_events.fire(dispatcher, 1, kcont::bsd_level::softserial, kcont::hold_lock);
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "kcont/contract.hpp"
#include "kcont/detail/fire.hpp"
#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/detail/klist_fanout.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/knote.hpp"
#include "kcont/level.hpp"
#include "kcont/run.hpp"

namespace kcont {

namespace detail {
template <class Hint, level_set Level, lock_policy Lock>
struct klist_checker;
}  // namespace detail

// The tag of klist::fire's held-lock fan-out: `fire(d, hint, current,
// kcont::hold_lock)` keeps the list lock across every continuation.
struct hold_lock_t {
  explicit hold_lock_t() = default;
};
inline constexpr hold_lock_t hold_lock{};

// An intrusive list of knotes with a lock policy. Hint is what an event
// carries to the filters (BSD's long hint); Level is the knotes' level set.
//
// Lifetime contract: the list never owns its knotes; each stays linked from
// its filter's attach to its detach. The list must be empty when destroyed
// (debug builds abort): detach the knotes first.
// Thread-safety: every member, from any thread, when Lock is a real lock.
// The lock is held while filters' `event` run, never while a continuation
// runs (but for the kqueue's own, which it links under its own lock and
// never touches a klist: kcont/detail/kqueue_entry.hpp, and for every
// continuation of a fire with kcont::hold_lock); so a continuation may
// fire, insert or erase on this same list (not under hold_lock). Knotes of
// policy list_guarded (the default, kcont/knote.hpp): their fields are
// guarded by this list's lock, which guard() takes for their users.
// With no_lock, one thread at a time fires and touches the list, and so the
// fields of its list_guarded knotes (guard() is a no-op); those and
// single-threaded knotes (knote<F, Level, no_lock>) take no field lock, the
// cheapest fan-out; spin_lock knotes are accepted too. A single-threaded
// knote must never be linked on a list fired from several threads.
template <class Hint = long, level_set Level = bsd_level, lock_policy Lock = no_lock>
class klist {
  using access = detail::knote_access;
  // The subscribers, doubly linked through detail::knote_core's private links
  // (reached through knote_access: see kcont/detail/intrusive_queue.hpp).
  using list_type = detail::intrusive_queue<&access::next, &access::prev>;

  static constexpr bool unlocked = std::is_same_v<Lock, no_lock>;
  // A fan-out's position (the cursor table: kcont/detail/klist_fanout.hpp).
  using cursor = detail::klist_cursor;
  using locked_step = detail::locked_step;

  // What fire holds: the list lock, dropped around each continuation; for
  // no_lock nothing (std::unique_lock<no_lock> would still keep and test an
  // owns flag on every fan-out).
  struct no_guard {
    void lock() noexcept {}
    void unlock() noexcept {}
    [[nodiscard]] bool owns_lock() const noexcept { return true; }
  };
  using fire_guard = std::conditional_t<unlocked, no_guard, std::unique_lock<Lock>>;
  fire_guard lock_for_fire() {
    if constexpr (unlocked)
      return no_guard{};
    else
      return std::unique_lock<Lock>(lock_);
  }

 public:
  using knote_type = knote_base<Hint, Level>;
  using hint_type = Hint;
  using level_type = Level;
  // Capabilities: erase is O(1) (doubly linked); size is not kept.
  static constexpr bool constant_time_erase = true;
  static constexpr bool constant_time_size = false;

  klist() = default;
  klist(const klist&) = delete;
  klist& operator=(const klist&) = delete;
  ~klist() {
    KCONT_EXPECTS(list_.empty(),
                  "klist: destroyed with knotes on it (detach them first: rule 8)");
  }

  // Effects: links kn at the back (a filter's attach calls this), unless kn
  //   is on a klist already: then nothing changes (a second link would make
  //   kn its own successor and a fan-out would never end).
  // Returns: true when kn was linked; false when it was on a klist already.
  // Precondition: kn is on no klist (debug builds abort; release builds
  //   refuse as above). Complexity: O(1); no allocation.
  bool insert(knote_type& kn) {
    detail::held_fanout::expect_none(this);
    std::lock_guard<Lock> g(lock_);
    const bool linked = access::linked(kn);
    KCONT_EXPECTS(!linked, "klist: insert of a knote already on a klist");
    if (linked) return false;
    access::linked(kn) = true;
    if constexpr (unlocked) access::on_unlocked_list(kn, true);  // list_guarded: its thread's
    list_.push_back(kn);
    return true;
  }

  // Effects: unlinks kn if it is on this list (a filter's detach calls this);
  //   a fan-out in progress on any thread skips it from now on.
  // Precondition: kn is on this list or on none.
  // Returns: true when kn was unlinked. Complexity: O(1) plus the number of
  //   fan-outs in progress.
  //   With a real lock, a fan-out on another thread running kn's
  //   continuation holds a pin on kn from now on, which detach waits for
  //   (the cursor table in kcont/detail/klist_fanout.hpp; rule 8).
  bool erase(knote_type& kn) noexcept {
    detail::held_fanout::expect_none(this);
    std::lock_guard<Lock> g(lock_);
    return erase_locked(kn);
  }

  // Effects: BSD knote(list, hint): runs each knote's filter event with
  //   `hint` (oldest subscriber first) and activates the knotes that fire:
  //   each runs its continuation at `current` (or defers it to its level)
  //   unless it is disabled. Knotes inserted during the fan-out may be
  //   visited; knotes erased during it are not.
  // Returns: how many knotes fired and were activated (not disabled).
  // Complexity: O(knotes). No allocation.
  // Reentrancy: a continuation may detach its own knote or any other, and
  //   may fire this list again (a nested fan-out).
  // With no_lock, activations are not pinned (no detach can run on another
  //   thread during the fan-out: it would erase from this unlocked list), so
  //   a fan-out costs no atomic read-modify-write beyond the filters' field
  //   locks once the knotes are active, and none at all with single-threaded
  //   knotes (knote<F, Level, no_lock>). Each knote then costs one call of
  //   its fused fire function (knote_base::fire_fn); only a continuation
  //   that must be deferred, is queued or carries a deferral goes through
  //   kcont::run with `d`. With a real lock, each continuation runs with
  //   the lock dropped (retaken for the next knote, not after the last
  //   one), unpinned but published as the cursor's current knote (the
  //   cursor table), the last one pinned; a kqueue's knotes are the
  //   exception: their fused fire runs under the lock, unpinned.
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t fire(D& d, const Hint& hint, Level current) {
    if constexpr (unlocked) {
      // One subscriber (the common case: one waiter on a source) needs no
      // cursor: nothing follows it that an erase could pull from under the
      // fan-out, and a knote inserted by its continuation need not be
      // visited. Kept apart from the loop, so that it does not pay the
      // loop's register saves.
      detail::knote_core* first = list_.front();
      if (first == nullptr) return 0;
      if (access::next(*first) == nullptr) [[likely]] {
        fire_guard g = lock_for_fire();  // nothing to lock: no_lock
        return fire_one(d, hint, current, g, static_cast<knote_type&>(*first)) ? 1 : 0;
      }
    }
    return fire_all(d, hint, current);
  }

  // Effects: as fire(d, hint, current), with the list lock held from the
  //   first filter to the last continuation (FreeBSD's KNOTE_LOCKED): no
  //   cursor, no lock dropped and retaken per knote. An erase (a detach) on
  //   another thread waits for the whole fan-out. With no_lock: fire(d,
  //   hint, current).
  // Returns: as fire. Complexity: O(knotes), one lock hold. No allocation.
  // Precondition (the promise this option makes): no filter or continuation
  //   it runs inserts, erases or fires on this list, nor attaches or
  //   detaches one of its knotes: that would take the held lock again, a
  //   deadlock (debug builds abort). They may detach knotes of other lists,
  //   defer, enable or disable. Thread-safety: as fire.
  //   Never chosen for you: no continuation type says it leaves the list
  //   alone (a noexcept immediate handler may still detach its own knote).
  template <deferral_target D>
    requires std::same_as<typename D::level_type, Level>
  std::size_t fire(D& d, const Hint& hint, Level current, hold_lock_t) {
    if constexpr (unlocked) {
      return fire(d, hint, current);
    } else {
      detail::held_fanout::expect_none(this);
      std::lock_guard<Lock> g(lock_);
      return detail::fire_held<knote_type>(
          this, &links, list_.front(), hint, current,
          [&d](Level c, knote_type& kn) { detail::run_later(d, c, kn); });
    }
  }

  // The list lock held (FreeBSD's KNL_LOCK), from guard() to its end.
  class guard_type {
   public:
    // no_lock: nothing held, nothing recorded (its one thread is the lock).
    explicit guard_type(klist& l)
        : g_((detail::held_fanout::expect_none(&l), l.lock_)),
          held_(unlocked ? nullptr : &l, &klist::links) {}

   private:
    std::lock_guard<Lock> g_;
    detail::held_fanout held_;  // with contract checks: this thread holds it
  };

  // Effects: takes the list lock until the returned guard is destroyed: no
  //   fire, insert or erase runs meanwhile. The way to touch a list_guarded
  //   knote's fields or filter from outside its fan-out (snapshot,
  //   filter_change, filter_report, filter(); kcont/knote.hpp). With
  //   no_lock: nothing (the caller is the list's one thread).
  // Precondition: this thread does not hold it (a guard, or a hold_lock
  //   fan-out's continuation: debug builds abort; a deadlock otherwise).
  // Complexity: one lock. Thread-safety: any thread.
  // Usage: { auto g = events.guard(); kn.filter().threshold = 5; }
  [[nodiscard]] guard_type guard() { return guard_type(*this); }

  // True when no knote is linked (a snapshot with a real lock).
  [[nodiscard]] bool empty() const noexcept {
    detail::held_fanout::expect_none(this);
    std::lock_guard<Lock> g(lock_);
    return list_.empty();
  }

  // Effects: counts the linked knotes. Complexity: O(n).
  [[nodiscard]] std::size_t size_slow() const noexcept {
    detail::held_fanout::expect_none(this);
    std::lock_guard<Lock> g(lock_);
    return list_.size_slow();
  }

 private:
  template <class D>
  [[gnu::noinline]] std::size_t fire_all(D& d, const Hint& hint, Level current) {
    detail::held_fanout::expect_none(this);
    fire_guard g = lock_for_fire();
    if constexpr (!unlocked) {
      // One knote whose fused fire runs under this lock (a kqueue's) needs
      // no cursor (nothing runs with the lock dropped, nothing after it).
      detail::knote_core* first = list_.front();
      if (first != nullptr && access::next(*first) == nullptr &&
          access::fires_under_lock(*first)) [[likely]] {
        auto& kn = static_cast<knote_type&>(*first);
        const detail::fire_outcome r = detail::knote_fire_access::fire_unpinned(kn, hint, current);
        if (r == detail::fire_outcome::needs_run) [[unlikely]]
          detail::run_later(d, current, kn);
        return r != detail::fire_outcome::skipped ? 1 : 0;
      }
    }
    // The hint in a register, not reloaded after each fused fire's call.
    [[maybe_unused]] const detail::fire_hint_arg<Hint> h = hint;
    std::size_t n = 0;
    knote_type* last = nullptr;  // a locked list's last knote, pinned, to run
    {
      cursor c{nullptr, cursors_};
      if constexpr (!unlocked) c.owner = &detail::klist_thread_mark;
      cursors_ = &c;
      cursor_guard guard{*this, c, g, c.outer};
      detail::knote_core* next = list_.front();
      while (detail::knote_core* core = next) {
        // The cursor in memory is where erase finds the next knote (and moves
        // it past one it removes); reading it back after the call is one load.
        c.next = access::next(*core);
        auto& kn = static_cast<knote_type&>(*core);
        if constexpr (unlocked) {
          if (fire_one(d, h, current, g, kn, &c)) ++n;
        } else {
          const locked_step r = detail::fire_locked(d, hint, current, g, c, kn);
          if (r == locked_step::last) {
            ++n;
            last = &kn;
            break;
          }
          if (r == locked_step::fired) ++n;
        }
        next = c.next;
      }
      n += c.fired;  // the knotes fused fires fired in batches
    }  // the cursor leaves the list, under the lock
    if constexpr (!unlocked) {
      // The last knote's continuation runs after the cursor left the list,
      // and the lock is not retaken after it: nothing is left to visit (a
      // knote inserted by that continuation need not be).
      if (last != nullptr) {
        g.unlock();
        (void)last->run_pinned(d, current, knote_cause::event);
      }
    }
    return n;
  }

  // One knote of a no_lock fan-out. Returns: whether it fired and was
  // activated.
  template <class D>
  static bool fire_one(D& d, detail::fire_hint_arg<Hint> hint, Level current, fire_guard& g,
                       knote_type& kn, detail::fire_batch* batch = nullptr) {
    // No lock: every detach erases from this list, so none runs on another
    // thread during this fan-out; nothing to pin (knote.hpp,
    // begin_activation<false>), no lock to drop around the call. The knote's
    // fused fire function does filter, activation and, when it may run at
    // once, the continuation; only a continuation to defer (or queued, or
    // carrying a deferral) needs `d`: that one is run here through
    // kcont::run, as before. (A locked list: fire_locked.) With `batch`
    // (the fan-out's cursor) it may fire the knotes after kn as well
    // (kcont/detail/fire.hpp: fire_batch).
    static_assert(unlocked);
    (void)g;
    const detail::fire_outcome r = kn.fire_unpinned(hint, current, batch);
    if (r == detail::fire_outcome::needs_run) [[unlikely]]
      detail::run_later(d, current, kn);
    return r != detail::fire_outcome::skipped;
  }

  struct cursor_guard {
    klist& list;
    cursor& c;
    fire_guard& g;
    // c.outer as it was linked. One thread: fan-outs nest, so nothing
    // changes c.outer and this one's cursor is the innermost at the end;
    // restoring from here rather than from c spares a reload of a value
    // stored a moment ago, on the path from one fan-out to the next.
    cursor* outer;
    // Always inlined into fire_all: g++ (-Wdangling-pointer, -O1 and up)
    // then sees that every way out of the fan-out, an exception included,
    // unlinks the cursor it stored; out of line, it warns at `cursors_ = &c`.
    [[gnu::always_inline]] ~cursor_guard() {
      if constexpr (unlocked) {
        KCONT_EXPECTS(list.cursors_ == &c && c.outer == outer,
                      "klist: fan-out cursors out of order");
        list.cursors_ = outer;
      } else {
        if (!g.owns_lock()) g.lock();
        // A continuation that threw: return the pin an erase took for it.
        if (c.pinned && c.current != nullptr) access::pin(*c.current, false);
        cursor** p = &list.cursors_;
        while (*p != &c) p = &(*p)->outer;
        *p = c.outer;
      }
    }
  };

  bool erase_locked(detail::knote_core& kn) noexcept {
    if (!access::linked(kn)) return false;
    detail::knote_core* next = access::next(kn);
    list_.erase(kn);
    for (cursor* c = cursors_; c != nullptr; c = c->outer) {
      if (c->next == &kn) c->next = next;
      if constexpr (!unlocked) {
        if (c->current != &kn) continue;
        if (c->owner == &detail::klist_thread_mark) {
          c->current = nullptr;  // its own run: kn may be freed, forget it
        } else if (!c->pinned) {
          access::pin(kn, true);
          c->pinned = true;
        }
      }
    }
    access::linked(kn) = false;
    if constexpr (unlocked) access::on_unlocked_list(kn, false);
    return true;
  }

  // held_fanout's contains_fn: whether list `l` links `kn` (its lock held).
  static bool links(const void* l, const void* kn) noexcept {
    const auto& self = *static_cast<const klist*>(l);
    for (detail::knote_core* p = self.list_.front(); p != nullptr; p = access::next(*p))
      if (p == kn) return true;
    return false;
  }

  template <class, level_set, lock_policy>
  friend struct detail::klist_checker;

  list_type list_;
  cursor* cursors_ = nullptr;
  [[no_unique_address]] mutable Lock lock_;
};

namespace detail {

// Validates a klist's links (fbl's checker idea): every node is marked
// linked, each prev link mirrors the next link, the tail is the last node,
// and no fan-out cursor is left behind. For tests.
template <class Hint, level_set Level, lock_policy Lock>
struct klist_checker {
  static bool valid(const klist<Hint, Level, Lock>& l) noexcept {
    using access = knote_access;
    std::lock_guard<Lock> g(l.lock_);
    if ((l.list_.front() == nullptr) != (l.list_.back() == nullptr)) return false;
    if (l.cursors_ != nullptr) return false;
    detail::knote_core* prev = nullptr;
    for (detail::knote_core* p = l.list_.front(); p != nullptr; p = access::next(*p)) {
      if (!access::linked(*p) || access::prev(*p) != prev) return false;
      prev = p;
    }
    return prev == l.list_.back();
  }
};

}  // namespace detail
}  // namespace kcont
