// kcont/detail/kqueue_core.hpp — the kqueue's state and its pending list.
//
// Defines `detail::kqueue_core<Udata, Lock>`, the part of kcont::kqueue that
// does not depend on its filter list: the lock, the registration table
// ((ident, filter) -> entry), the pending list (its state table is in
// kcont/detail/kqueue_pending.hpp, the base of this class), the scan's pass
// over it, the burial of defunct knotes and the blocking wait. kqueue.hpp
// derives from it and adds the filters: kevent, change and the registration
// of each change (FreeBSD's kqueue_kevent and kqueue_register). Users never
// name this class; its contracts are kcont::kqueue's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include "kcont/contract.hpp"
#include "kcont/detail/intrusive_queue.hpp"
#include "kcont/detail/kqueue_entry.hpp"
#include "kcont/detail/kqueue_pending.hpp"
#include "kcont/kcqueue.hpp"
#include "kcont/kevent.hpp"
#include "kcont/knote.hpp"

namespace kcont::detail {

template <class Udata, lock_policy Lock>
class kqueue_core : public kqueue_pending<Udata> {
 protected:
  template <class Owner, class Fi, class U, level_set L, class KL>
  friend struct kqueue_node;

  using pend = kqueue_pending<Udata>;  // the pending list and its state table
  using typename pend::entry;
  using typename pend::drop_list;
  using pend::try_queue, pend::unqueue, pend::is_queued;
  using pend::remove_pending;
  using pend::destroy_all, pend::pending_, pend::pending_count_, pend::defunct_;
  using kevent_type = basic_kevent<Udata>;
  using duration = std::chrono::nanoseconds;
  using key = kqueue_key;

  kqueue_core() = default;
  kqueue_core(const kqueue_core&) = delete;
  kqueue_core& operator=(const kqueue_core&) = delete;

  // Effects: deletes every knote (detached, waited for, freed).
  // Precondition: no thread is scanning.
  ~kqueue_core() {
    drop_list drops;
    {
      std::lock_guard<Lock> g(lock_);
      KCONT_EXPECTS(waiters_ == 0, "kqueue: destroyed while a thread scans it");
      this->reap(drops);  // the defunct knotes (see bury)
      for (auto& kv : table_) {
        entry& e = *kv.second;
        e.dropping = true;
        if (is_queued(e)) remove_pending(e);
        drops.push_front(e);
      }
      table_.clear();
    }
    destroy_all(drops);
  }

  // kqueue_scan's wait: collects; when nothing was pending waits up to `timeout`
  // (kqueue::scan), driving the sources (detail/kqueue_wait.hpp): drive_wait.
  // Precondition: events is not empty; lock_ not held.
  // Step: the kqueue's typed scan step (kqueue_node::scan_step for the
  // entry's filter).
  template <class Drive, class Step>
  std::size_t scan_wait(std::span<kevent_type> events, std::optional<duration> timeout,
                        const Drive& drive, Step step) {
    drop_list drops;
    kqueue_lock(lock_);
    // Held till the unlock below or an exception; a unique_lock only for
    // the wait: a scan that finds events tests no owns flag.
    struct hold {
      Lock& l;
      bool held = true;
      ~hold() { if (held) l.unlock(); }
    } h{lock_};
    const bool sleeper = Drive::drives && source_sleeping_;  // one is in the sources' wait
    std::size_t n = collect(events, drops, step);
    const bool waits = n == 0 && (Drive::drives || !timeout || *timeout > duration::zero());
    if (waits) {
      h.held = false;
      std::unique_lock<Lock> g(lock_, std::adopt_lock);
      n = drive_wait(events, timeout, drive, g, drops, step);
      h.held = g.owns_lock();
      (void)g.release();
    }
    if (h.held) h.held = false, lock_.unlock();
    if (Drive::drives && !waits) drive.poll_now(sleeper);  // one look per scan: no starving
    destroy_all(drops);
    return n;
  }

  using time_point = std::chrono::steady_clock::time_point;
  // When a wait of `timeout` from now ends; nothing: without limit.
  // FreeBSD's kqueue_scan waits without limit when the timeout's tv_sec is
  // above INT32_MAX or the deadline would not fit its clock (asbt = 0); the
  // same here, so nanoseconds::max() blocks instead of overflowing into a
  // deadline in the past.
  static std::optional<time_point> deadline_of(std::optional<duration> timeout) {
    const auto now = std::chrono::steady_clock::now();
    constexpr std::chrono::seconds longest{
        std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1};
    if (timeout && *timeout <= duration::zero()) return now;
    if (!timeout || *timeout >= longest || now > time_point::max() - *timeout)
      return std::nullopt;
    return now + *timeout;
  }

  // The wait over the kqueue's sources: ONE system call sleeps until a
  // descriptor is ready, the next timer is due, another thread's activation
  // wakes it (wake_scanners: the wait source's wake()) or `timeout` ends.
  //
  //   step  | who                         | what
  //   ------+-----------------------------+------------------------------------
  //   sleep | the one scanner that finds  | source_sleeping_, ++waiters_; unlock;
  //         |   no one sleeping in the    |   wait_and_fire(earlier of the
  //         |   wait source               |   timeout and the next deadline)
  //   woken | that scanner, right after   | lock; --waiters_, !source_sleeping_;
  //         |   the system call           |   other waiters notified (one of
  //         |                             |   them becomes the sleeper); unlock;
  //         |                             |   then the ready klists fire
  //   cv    | every other scanner (or no  | ++waiters_; cv_ until the earlier
  //         |   wait source)              |   of timeout and next deadline
  //   tick  | each scanner after its wait | unlocked: the due timers fire
  //   zero  | timeout 0 (or ended)        | wait_and_fire(0) unless a sleeper
  //         |                             |   is there; tick; collect; return
  //
  // The sleeper is a waiter while in the system call only: the knotes its
  // own wait fires find no one to wake (no wake-up system call per event).
  // Under lock_ (g) on entry and on return.
  template <class Drive, class Step>
  std::size_t drive_wait(std::span<kevent_type> events, std::optional<duration> timeout,
                         const Drive& drive, std::unique_lock<Lock>& g, drop_list& drops,
                         Step step) {
    const auto deadline = deadline_of(timeout);
    std::size_t n = 0;
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      const bool ended = deadline && now >= *deadline;
      std::optional<time_point> until = deadline;
      if constexpr (Drive::has_ticks) {
        g.unlock();
        const auto next = drive.next_deadline();
        g.lock();
        if (next && (!until || *next < *until)) until = next;
      }
      bool slept = false;
      if constexpr (Drive::has_waiter) {
        auto* source = drive.waiter();
        if (source != nullptr && !source_sleeping_) {
          std::optional<duration> left;
          if (until) left = *until > now ? *until - now : duration::zero();
          const bool sleeps = !ended && (!left || *left > duration::zero());
          if (sleeps) {
            source_sleeping_ = true;
            ++waiters_;
          }
          g.unlock();
          source->wait_and_fire(ended ? duration::zero() : left, [&]() noexcept {
            if (!sleeps) return;
            std::lock_guard<Lock> w(lock_);
            source_sleeping_ = false;
            if (--waiters_ != 0) cv_.notify_all();  // one of them sleeps next
          });
          g.lock();
          slept = true;
        }
      }
      if (!slept && !ended) {
        ++waiters_;
        if (until)
          (void)cv_.wait_until(g, *until);
        else
          cv_.wait(g);
        --waiters_;
      }
      if constexpr (Drive::has_ticks) {
        g.unlock();
        drive.tick();
        g.lock();
      }
      n = collect(events, drops, step);
      if (n != 0 || ended) return n;
      if (!drops.empty()) [[unlikely]] {  // defunct knotes (bury): freed now, not at return
        g.unlock();
        destroy_all(drops);
        g.lock();
      }
    }
  }

  // Snapshots, O(1), under lock_: the threads blocked in scan now (the destructor's
  // precondition); the wake-ups of blocked scanners (one per push onto an empty pending list
  // while one waits); the registered knotes; the knotes waiting for a scan (FreeBSD's kq_count,
  // disabled ones included, defunct ones not: they are gone).
  using guard = std::lock_guard<Lock>;
  [[nodiscard]] std::size_t waiting() const { guard g(lock_); return waiters_; }
  [[nodiscard]] std::uint64_t wakeups() const { guard g(lock_); return wakeups_; }
  [[nodiscard]] std::size_t size() const { guard g(lock_); return table_.size(); }
  [[nodiscard]] std::size_t pending() const { guard g(lock_); return pending_count_ - defunct_; }

  // The table's entry for k, once no other thread is attaching its filter
  // (FreeBSD's knote in flux: kqueue_register sleeps on KN_INFLUX). g holds
  // lock_ on entry and on return.
  auto find_settled(const key& k, std::unique_lock<Lock>& g) {
    auto it = table_.find(k);
    while (it != table_.end() && it->second->attaching) {
      g.unlock();
      std::this_thread::yield();
      g.lock();
      it = table_.find(k);
    }
    return it;
  }

  // Runs `attach` (the filter's attach of e's knote, new in the table) without lock_, which g
  // holds on entry and on return: the attach links the knote on its source's klist, whose fan-out
  // takes lock_ under the list lock (kqueue_node::fire_kq), so the one lock order is klist, then
  // kqueue (FreeBSD's kqueue_register calls f_attach unlocked too). Meanwhile e is `attaching`:
  // changes wait (find_settled), activations leave it unqueued (still active: the caller's
  // post_change queues it); one that found it defunct (bury) left it to this attach's end, which
  // buries it (the caller's post_change then sees `dropping`: FreeBSD's knote_fdclose waits for a
  // knote in flux, then drops it). With no_lock there is no other thread: nothing to drop.
  template <class Attach>
  int attach_unlocked(entry& e, std::unique_lock<Lock>& g, Attach attach) {
    if constexpr (std::is_same_v<Lock, no_lock>) {
      return attach();
    } else {
      e.attaching = true;
      g.unlock();
      struct relock {
        kqueue_core& q;
        std::unique_lock<Lock>& g;
        entry& e;
        ~relock() {
          g.lock();
          e.attaching = false;
          if (e.dropping) [[unlikely]] q.bury(e);
        }
      } r{*this, g, e};
      return attach();
    }
  }

  // Rule 6 done inline for the kqueue's own continuation (calling it here
  // would take lock_ twice): FreeBSD's tail of kqueue_register. Under lock_.
  void post_change(entry& e) {
    if (e.dropping) return;
    knote_core& k = *e.core;
    if (!k.is_disabled() && e.ops->recheck(e)) (void)k.set_active();
    if (k.is_active() && !k.is_disabled() && try_queue(e)) push_pending(e);
  }

  // The NetBSD patch's kq_func (the state table in
  // kcont/detail/kqueue_pending.hpp). Any thread.
  void on_activation(entry& e) {
    // A knote already pending needs nothing (rule 7), so this activation
    // does not take lock_: read the queued flag first. Only knote::activate
    // and enable come here (a fan-out's activation is fire_kq, below): they
    // carry no filter event a re-check could miss, so a scan that popped
    // the knote a moment ago has reported what this one would have.
    if (is_queued(e)) return;
    std::lock_guard<Lock> g(lock_);
    if (e.dropping || e.attaching || e.core->is_disabled()) return;
    if (try_queue(e)) push_pending(e);
  }
  // A fan-out's activation is the same row, done by the knote's fused fire
  // under lock_ together with the filter's event (kqueue_node::fire_kq).

  // idle -> pending, after a successful try_queue (or a batch's knotes,
  // kqueue_node::fire_batched, at its end). Under lock_. Blocked scanners
  // are woken only when the list goes from empty to not empty: a scanner
  // waits only after its collect found nothing, which leaves the list empty
  // (collect re-queues only what it reported), so a push onto a non-empty
  // list finds no scanner that needs waking; a notify per activation would
  // be a system call per event.
  void push_pending(entry& e) noexcept {
    const bool was_empty = pending_.push_back(e);  // push_back's own test: no load
    ++pending_count_;
    if (was_empty && (waiters_ != 0 || pollable_)) [[unlikely]] wake_scanners();
  }
  void push_pending(typename pend::pending_batch& b) noexcept {
    if (b.n != 0 && this->append_pending(b) && (waiters_ != 0 || pollable_)) wake_scanners();
  }
  // Effects: wakes every waiting scanner, which re-reads the next deadline
  // (a timer armed by a change). Under lock_.
  void rouse() noexcept {
    if (waiters_ == 0) return;
    cv_.notify_all();
    if (source_sleeping_ && wake_source_ != nullptr) wake_source_(*this);
  }
  // Out of line: an activation's fused fire (kqueue_node::fire_kq) then
  // saves no registers for a call it rarely makes. Under lock_.
  // A scanner asleep in the wait source, or a loop watching the kqueue's
  // descriptor (pollable_), is woken through the source's wake().
  [[gnu::cold, gnu::noinline]] void wake_scanners() noexcept {
    if (waiters_ != 0) {
      ++wakeups_;
      cv_.notify_all();
    }
    if ((source_sleeping_ || pollable_) && wake_source_ != nullptr) wake_source_(*this);
  }
  // Takes e out of the table and the pending list; activations racing in
  // see `dropping` and leave it alone. Under lock_.
  void unlink_locked(entry& e) {
    e.dropping = true;
    if (is_queued(e)) remove_pending(e);
    table_.erase(key{e.ident, e.filter});
  }

  // FreeBSD's knote_fdclose -> knote_drop for one knote: its filter refused an event and said
  // defunct() (kcont/filter.hpp: its source is gone, a descriptor forgotten), so it is dropped as
  // if deleted, unreported, and freed by the next change or scan (the state table's "defunct"
  // rows). Called by the knote's fused fire (kqueue_node::fire_kq) under its klist's lock and
  // lock_, so it frees nothing (the detach takes the klist's lock); an attaching knote is left to
  // its attach's end (attach_unlocked). Out of line: only a close pays. Under lock_.
  [[gnu::cold, gnu::noinline]] void bury(entry& e) noexcept {
    e.dropping = true;  // no activation queues it from now on
    if (e.attaching) return;
    unlink_locked(e);
    if (this->push_defunct(e) && (waiters_ != 0 || pollable_)) wake_scanners();
  }

  // lock_ for a change (kqueue::register_change), which first takes the
  // defunct knotes off the list; they are freed once lock_ is released.
  struct change_lock : std::unique_lock<Lock> {
    drop_list drops;
    explicit change_lock(kqueue_core& q) : std::unique_lock<Lock>(q.lock_) {
      if (q.defunct_ != 0) [[unlikely]] q.reap(drops);
    }
    ~change_lock() {
      if (this->owns_lock()) this->unlock();
      destroy_all(drops);
    }
    change_lock(const change_lock&) = delete;
    change_lock& operator=(const change_lock&) = delete;
  };

  // One pass over the knotes pending when it starts (FreeBSD's marker): they are taken off the
  // list, so a level-triggered knote re-queued behind them is not seen twice, and those this pass
  // does not reach go back in front of the re-queued ones (`rest`, also if a filter throws). Each
  // knote's re-check and report is `step` (kqueue_node::scan_step), inline. The taken list is
  // walked, not popped (the entries passed are cut off at the end: unlink_front_before), and the
  // count is written once, so a step stores no link and waits for no previous step's stores.
  template <class Step>
  std::size_t collect(std::span<kevent_type> events, drop_list& drops, Step step) {
    struct rest {
      kqueue_core& q;
      typename pend::pending_list taken;
      kevent_type* const begin;
      entry* next = taken.front();  // the first entry not taken yet
      kevent_type* out = begin;  // the next event: a pointer, no index to scale
      // Left the list: every reported entry but the re-queued (kept) ones,
      // and the unreported ones; counted apart, the common step counts none.
      std::size_t kept = 0, unreported = 0;
      ~rest() {
        taken.unlink_front_before(next);
        if (!taken.empty()) {
          taken.append(std::move(q.pending_));
          q.pending_ = std::move(taken);
        }
        q.pending_count_ -= static_cast<std::size_t>(out - begin) - kept + unreported;
      }
    } r{*this, std::move(pending_), events.data()};
    for (kevent_type* const end = r.begin + events.size(); r.out != end;) {
      entry* front = r.next;
      if (front == nullptr) break;
      entry& e = *front;
      // Read before a step re-links e. The step unqueues e (its queued bit, in the store of the
      // knote's state word it makes anyway), all but a level one, kept queued.
      r.next = pend::pending_list::next(e);
      switch (step(e, *r.out)) {
        case scan_kind::level:
          // Re-queued without waking anyone: the scanner that found it returns.
          ++r.out;
          ++r.kept;
          pending_.push_back(e);
          break;
        case scan_kind::cleared:
          ++r.out;
          break;
        case scan_kind::dropped:
          ++r.unreported;
          break;
        case scan_kind::oneshot:  // deleted after its report
          ++r.out;
          unlink_locked(e);
          drops.push_front(e);
          break;
        case scan_kind::disabled:
          // kqueue_scan: a knote disabled while queued leaves the queue here, unreported, still
          // active (an enable re-queues it). A defunct one (bury: dropping, at the front) is
          // freed once lock_ is released.
          ++r.unreported;
          if (e.dropping) [[unlikely]] {
            --defunct_;
            drops.push_front(e);
          }
          break;
      }
    }
    return static_cast<std::size_t>(r.out - r.begin);
  }

  mutable Lock lock_;
  std::condition_variable_any cv_;
  std::size_t waiters_ = 0;
  std::uint64_t wakeups_ = 0;  // notify calls (kqueue::wakeups)
  bool source_sleeping_ = false;  // a scanner is in the wait source (drive_wait)
  bool pollable_ = false;         // native_handle() was asked for: wake on every push
  // The wait source's wake(), set by a kqueue that has one.
  void (*wake_source_)(kqueue_core&) noexcept = nullptr;
  std::unordered_map<key, entry*, kqueue_key_hash> table_;
};

}  // namespace kcont::detail
