// kcont/detail/intrusive_queue.hpp — the one intrusive list under kcont's
// queues and lists (stdexec's __intrusive_queue<&T::next>, with an optional
// back link).
//
// Defines `detail::intrusive_queue<Next, Prev = nullptr>`: head and tail
// pointers over nodes that carry their own links, so linking and unlinking
// never allocate. Next (and Prev) name a node's link in one of two ways:
//   - a pointer to a data member, `&T::next` (stdexec's form);
//   - a function `T*& link(T&) noexcept` returning a reference to the link.
// The second form exists because kcont's links are private: kc_hook's
// `next_` and knote_core's `next_`/`prev_` are reached only through their
// friend access classes (detail::hook_access, detail::knote_access), and a
// pointer to a private member cannot be named outside the class and its
// friends. Both forms are constants of the type, so every access inlines to
// one load or store at a fixed offset: no indirection at run time.
//
// Without Prev the queue is singly linked (kcqueue, the MPSC batch): erase is
// by predecessor (erase_after) or a walk (erase_slow). With Prev it is doubly
// linked (klist, the kqueue's pending list): erase(n) is O(1).
//
// Contracts: the queue never owns its nodes; a node is on at most one queue
// through a given link, and its owner keeps it alive while linked. A node
// leaving the queue has its links reset to nullptr. Not thread-safe: the
// containing queue holds whatever lock it needs.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace kcont::detail {

// How a queue reaches one link of a node: see the banner.
template <auto Link>
struct link_of;
template <class T, T* T::*Member>
struct link_of<Member> {
  using node = T;
  static T*& get(T& n) noexcept { return n.*Member; }
};
template <class T, T*& (*Accessor)(T&) noexcept>
struct link_of<Accessor> {
  using node = T;
  static T*& get(T& n) noexcept { return Accessor(n); }
};

// Node is link_of<Next>::node, passed as a type as well: a class whose only
// template arguments are pointers to members of a local type is not seen by
// g++ as local, and -Wsubobject-linkage then rejects its fields.
template <class Node, auto Next, auto Prev>
class basic_intrusive_queue {
  using next_link = link_of<Next>;
  static_assert(std::is_same_v<Node, typename next_link::node>);

 public:
  using node_type = Node;
  // Capabilities, as kcont's queues state them.
  static constexpr bool doubly_linked = !std::is_null_pointer_v<decltype(Prev)>;
  static constexpr bool constant_time_erase = doubly_linked;
  static constexpr bool constant_time_size = false;
  using T = node_type;

  basic_intrusive_queue() = default;
  basic_intrusive_queue(basic_intrusive_queue&& o) noexcept
      : head_(std::exchange(o.head_, nullptr)), tail_(std::exchange(o.tail_, nullptr)) {}
  // Precondition: this queue is empty (its nodes would be lost).
  basic_intrusive_queue& operator=(basic_intrusive_queue&& o) noexcept {
    head_ = std::exchange(o.head_, nullptr);
    tail_ = std::exchange(o.tail_, nullptr);
    return *this;
  }

  // The link to the node after n (nullptr at the back), for walking the queue.
  static T*& next(T& n) noexcept { return next_link::get(n); }
  // The link to the node before n (nullptr at the front). Doubly linked only.
  static T*& prev(T& n) noexcept
    requires doubly_linked
  {
    return link_of<Prev>::get(n);
  }

  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  [[nodiscard]] T* front() const noexcept { return head_; }
  [[nodiscard]] T* back() const noexcept { return tail_; }

  // Effects: links n at the back. Precondition: n is on no queue through
  //   these links. Returns: true when the queue was empty before (so a
  //   caller need not read it again). Complexity: O(1).
  bool push_back(T& n) noexcept {
    next(n) = nullptr;
    if constexpr (doubly_linked) prev(n) = tail_;
    const bool was_empty = tail_ == nullptr;
    if (was_empty)
      head_ = &n;
    else
      next(*tail_) = &n;
    tail_ = &n;
    return was_empty;
  }

  // Effects: links n at the front. Precondition: as push_back. O(1).
  void push_front(T& n) noexcept {
    next(n) = head_;
    if constexpr (doubly_linked) {
      prev(n) = nullptr;
      if (head_ != nullptr) prev(*head_) = &n;
    }
    if (head_ == nullptr) tail_ = &n;
    head_ = &n;
  }

  // Effects: unlinks the front node. Returns: it, or nullptr when empty. O(1).
  T* pop_front() noexcept {
    T* n = head_;
    if (n == nullptr) return nullptr;
    T* after = next(*n);
    next(*n) = nullptr;
    if (after == nullptr)
      tail_ = nullptr;
    else if constexpr (doubly_linked)
      prev(*after) = nullptr;
    // Stored last: a caller's empty() right after reads it without a reload
    // (the stores to links above may alias head_ as far as the compiler knows).
    head_ = after;
    return n;
  }

  // Effects: unlinks the front node as pop_front does, but leaves the
  //   node's own link as it was (stale): for a caller that hands the node at
  //   once to code that never reads that link before the node is linked
  //   again (every push stores it), i.e. a drain that runs it. Singly linked
  //   queues only (a successor's back link would need clearing anyway).
  // Returns: the node, or nullptr when empty. Complexity: O(1).
  T* pop_front_unreset() noexcept
    requires(!doubly_linked)
  {
    T* n = head_;
    if (n == nullptr) return nullptr;
    T* after = next(*n);
    if (after == nullptr) tail_ = nullptr;
    head_ = after;  // stored last, as in pop_front
    return n;
  }

  // Effects: unlinks every node before `first` (a node on this queue, or
  //   nullptr: every node) at once, leaving their own links stale: for a
  //   caller that walked them through next() and hands each to code that
  //   never reads those links before the node is linked again (every push
  //   stores them): a pass that takes a whole list stores nothing per node.
  // Complexity: O(1).
  void unlink_front_before(T* first) noexcept {
    if (first == nullptr)
      tail_ = nullptr;
    else if constexpr (doubly_linked)
      prev(*first) = nullptr;
    head_ = first;
  }
  // Effects: links the chain first..last (linked through both links,
  //   next(last) == nullptr, prev(first) ignored) at the back, in order.
  //   Doubly linked only. Returns: true when the queue was empty. O(1).
  bool append_chain(T& first, T& last) noexcept
    requires doubly_linked
  {
    prev(first) = tail_;
    const bool was_empty = tail_ == nullptr;
    (was_empty ? head_ : next(*tail_)) = &first;
    tail_ = &last;
    return was_empty;
  }
  // Effects: moves every node of `other` to the back of this queue, in
  //   order; `other` is left empty. Precondition: &other != this. O(1).
  void append(basic_intrusive_queue& other) noexcept { append(std::move(other)); }
  void append(basic_intrusive_queue&& other) noexcept {
    if (other.head_ == nullptr) return;
    if (tail_ == nullptr) {
      head_ = other.head_;
    } else {
      next(*tail_) = other.head_;
      if constexpr (doubly_linked) prev(*other.head_) = tail_;
    }
    tail_ = other.tail_;
    other.head_ = other.tail_ = nullptr;
  }

  // Effects: empties this queue. Returns: what it held, as a queue. O(1).
  [[nodiscard]] basic_intrusive_queue take_all() noexcept { return std::move(*this); }

  // Effects: unlinks the node after `pred` (the front when pred is nullptr).
  // Precondition: pred is nullptr or on this queue, and has a successor.
  // Returns: the unlinked node. Complexity: O(1).
  T* erase_after(T* pred) noexcept {
    T* n = pred == nullptr ? head_ : next(*pred);
    T* after = next(*n);
    if (pred == nullptr)
      head_ = after;
    else
      next(*pred) = after;
    if (after == nullptr)
      tail_ = pred;
    else if constexpr (doubly_linked)
      prev(*after) = pred;
    next(*n) = nullptr;
    if constexpr (doubly_linked) prev(*n) = nullptr;
    return n;
  }

  // Effects: unlinks n. Precondition: n is on this queue. Complexity: O(1).
  void erase(T& n) noexcept
    requires doubly_linked
  {
    T* before = prev(n);
    T* after = next(n);
    if (before == nullptr)
      head_ = after;
    else
      next(*before) = after;
    if (after == nullptr)
      tail_ = before;
    else
      prev(*after) = before;
    next(n) = nullptr;
    prev(n) = nullptr;
  }

  // Effects: unlinks n if it is on this queue, found by a walk.
  // Returns: true when n was unlinked. Complexity: O(position of n).
  bool erase_slow(T& n) noexcept {
    T* pred = nullptr;
    for (T* p = head_; p != nullptr; pred = p, p = next(*p)) {
      if (p != &n) continue;
      (void)erase_after(pred);
      return true;
    }
    return false;
  }

  // Effects: counts the nodes. Complexity: O(n).
  [[nodiscard]] std::size_t size_slow() const noexcept {
    std::size_t count = 0;
    for (T* p = head_; p != nullptr; p = next(*p)) ++count;
    return count;
  }

  // Effects: builds a queue from a FIFO chain (oldest first, linked through
  //   Next, nullptr-terminated: what kcqueue's batch holds), in order.
  // Complexity: O(length of the chain), to find its tail. Singly linked only.
  [[nodiscard]] static basic_intrusive_queue from_chain(T* oldest) noexcept
    requires(!doubly_linked)
  {
    basic_intrusive_queue q;
    q.head_ = oldest;
    for (T* p = oldest; p != nullptr; p = next(*p)) q.tail_ = p;
    return q;
  }

  // Effects: builds a FIFO queue from a LIFO chain (newest first, linked
  //   through Next, nullptr-terminated: what an MPSC Treiber stack hands its
  //   consumer), so the oldest node comes out first. `visit(node)` is called
  //   on each node before its link is read (the MPSC batch prefetches there).
  // Complexity: O(length of the chain). Singly linked queues only.
  template <class Visit>
  [[nodiscard]] static basic_intrusive_queue from_lifo(T* newest, Visit&& visit) noexcept
    requires(!doubly_linked)
  {
    basic_intrusive_queue q;
    q.tail_ = newest;  // the newest becomes the tail
    T* reversed = nullptr;
    while (newest != nullptr) {
      visit(*newest);
      T* older = next(*newest);
      next(*newest) = reversed;
      reversed = newest;
      newest = older;
    }
    q.head_ = reversed;
    return q;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
};

template <auto Next, auto Prev = nullptr>
using intrusive_queue = basic_intrusive_queue<typename link_of<Next>::node, Next, Prev>;

}  // namespace kcont::detail
