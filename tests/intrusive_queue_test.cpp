// detail::intrusive_queue: the one list under kcqueue, mpsc_queue, klist and
// the kqueue. Each behaviour runs singly linked (by pointer to member and by
// accessor function) and doubly linked; a checker walks both directions.
#include <kcont/detail/intrusive_queue.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <vector>

namespace {

struct item {
  int id = 0;
  item* next = nullptr;
  item* prev = nullptr;
};

// A node whose link is private, reached through an accessor as kc_hook's is.
class sealed {
 public:
  explicit sealed(int i) : id(i) {}
  int id;

 private:
  friend struct sealed_access;
  sealed* next_ = nullptr;
};
struct sealed_access {
  static sealed*& next(sealed& s) noexcept { return s.next_; }
};

using slist = kcont::detail::intrusive_queue<&item::next>;
using dlist = kcont::detail::intrusive_queue<&item::next, &item::prev>;
using sealed_list = kcont::detail::intrusive_queue<&sealed_access::next>;

static_assert(!slist::doubly_linked && !slist::constant_time_erase);
static_assert(dlist::doubly_linked && dlist::constant_time_erase);
static_assert(!sealed_list::doubly_linked);
static_assert(std::is_same_v<sealed_list::node_type, sealed>);

// The ids front to back; for a doubly linked list also checks that each
// prev link mirrors the next link and that back() is the last node.
template <class Q>
std::vector<int> ids(const Q& q) {
  std::vector<int> out;
  decltype(q.front()) before = nullptr;
  for (auto* p = q.front(); p != nullptr; p = Q::next(*p)) {
    if constexpr (Q::doubly_linked) REQUIRE(Q::prev(*p) == before);
    out.push_back(p->id);
    before = p;
  }
  CHECK(q.back() == before);
  CHECK(q.size_slow() == out.size());
  CHECK(q.empty() == out.empty());
  return out;
}

struct items {
  std::array<item, 6> n{};
  items() {
    for (std::size_t i = 0; i < n.size(); ++i) n[i].id = static_cast<int>(i);
  }
};

bool unlinked(const item& i) { return i.next == nullptr && i.prev == nullptr; }

}  // namespace

using std::vector;

TEST_CASE_TEMPLATE("intrusive_queue.push_back_and_pop_front_keep_fifo_order", Q, slist,
                   dlist) {
  items s;
  Q q;
  CHECK(q.pop_front() == nullptr);
  CHECK(ids(q).empty());
  for (int i = 0; i < 4; ++i) q.push_back(s.n[static_cast<std::size_t>(i)]);
  CHECK(ids(q) == vector<int>{0, 1, 2, 3});
  CHECK(q.pop_front() == &s.n[0]);
  CHECK(unlinked(s.n[0]));
  CHECK(ids(q) == vector<int>{1, 2, 3});
  while (q.pop_front() != nullptr) {
  }
  CHECK(ids(q).empty());
  for (const item& i : s.n) CHECK(unlinked(i));
}

TEST_CASE_TEMPLATE("intrusive_queue.push_front_puts_a_node_first", Q, slist, dlist) {
  items s;
  Q q;
  q.push_front(s.n[1]);  // into an empty queue: it is also the back
  CHECK(ids(q) == vector<int>{1});
  q.push_back(s.n[2]);
  q.push_front(s.n[0]);
  CHECK(ids(q) == vector<int>{0, 1, 2});
  CHECK(q.pop_front() == &s.n[0]);
  CHECK(ids(q) == vector<int>{1, 2});
}

TEST_CASE_TEMPLATE("intrusive_queue.append_moves_the_other_queue_to_the_back", Q, slist,
                   dlist) {
  items s;
  Q a, b;
  a.append(b);  // both empty
  CHECK(ids(a).empty());
  b.push_back(s.n[2]);
  b.push_back(s.n[3]);
  a.append(b);  // into an empty queue
  CHECK(ids(a) == vector<int>{2, 3});
  CHECK(ids(b).empty());
  b.push_back(s.n[4]);
  b.push_back(s.n[5]);
  a.append(b);
  CHECK(ids(a) == vector<int>{2, 3, 4, 5});
  CHECK(ids(b).empty());
  a.append(b);  // an empty one changes nothing
  CHECK(ids(a) == vector<int>{2, 3, 4, 5});
}

TEST_CASE_TEMPLATE("intrusive_queue.take_all_empties_the_queue", Q, slist, dlist) {
  items s;
  Q q;
  q.push_back(s.n[0]);
  q.push_back(s.n[1]);
  Q all = q.take_all();
  CHECK(ids(q).empty());
  CHECK(ids(all) == vector<int>{0, 1});
  q.push_back(s.n[2]);  // the emptied queue is usable again
  CHECK(ids(q) == vector<int>{2});
}

TEST_CASE_TEMPLATE("intrusive_queue.erase_after_unlinks_front_middle_and_back", Q, slist,
                   dlist) {
  items s;
  Q q;
  for (int i = 0; i < 5; ++i) q.push_back(s.n[static_cast<std::size_t>(i)]);
  CHECK(q.erase_after(nullptr) == &s.n[0]);  // the front
  CHECK(ids(q) == vector<int>{1, 2, 3, 4});
  CHECK(q.erase_after(&s.n[1]) == &s.n[2]);  // a middle node
  CHECK(ids(q) == vector<int>{1, 3, 4});
  CHECK(q.erase_after(&s.n[3]) == &s.n[4]);  // the back: tail moves to pred
  CHECK(ids(q) == vector<int>{1, 3});
  q.push_back(s.n[5]);  // appends after the new tail
  CHECK(ids(q) == vector<int>{1, 3, 5});
  CHECK(unlinked(s.n[0]));
  CHECK(unlinked(s.n[2]));
  CHECK(unlinked(s.n[4]));
}

TEST_CASE_TEMPLATE("intrusive_queue.erase_slow_finds_the_node_or_reports_absence", Q, slist,
                   dlist) {
  items s;
  Q q;
  for (int i = 0; i < 3; ++i) q.push_back(s.n[static_cast<std::size_t>(i)]);
  CHECK_FALSE(q.erase_slow(s.n[4]));
  CHECK(ids(q) == vector<int>{0, 1, 2});
  CHECK(q.erase_slow(s.n[2]));
  CHECK(ids(q) == vector<int>{0, 1});
  CHECK(q.erase_slow(s.n[0]));
  CHECK(ids(q) == vector<int>{1});
  CHECK(q.erase_slow(s.n[1]));
  CHECK(ids(q).empty());
  CHECK_FALSE(q.erase_slow(s.n[1]));
}

TEST_CASE("intrusive_queue.erase_of_a_doubly_linked_node_is_direct") {
  items s;
  dlist q;
  for (int i = 0; i < 4; ++i) q.push_back(s.n[static_cast<std::size_t>(i)]);
  q.erase(s.n[2]);
  CHECK(ids(q) == vector<int>{0, 1, 3});
  q.erase(s.n[0]);
  CHECK(ids(q) == vector<int>{1, 3});
  q.erase(s.n[3]);
  CHECK(ids(q) == vector<int>{1});
  q.erase(s.n[1]);
  CHECK(ids(q).empty());
  for (const item& i : s.n) CHECK(unlinked(i));
  q.push_back(s.n[5]);
  CHECK(ids(q) == vector<int>{5});
}

TEST_CASE("intrusive_queue.from_lifo_reverses_a_stack_into_fifo_order") {
  items s;
  // A Treiber stack as producers leave it: newest (3) first.
  item* top = nullptr;
  for (int i = 0; i < 4; ++i) {
    s.n[static_cast<std::size_t>(i)].next = top;
    top = &s.n[static_cast<std::size_t>(i)];
  }
  vector<int> visited;
  slist q = slist::from_lifo(top, [&](item& n) { visited.push_back(n.id); });
  CHECK(visited == vector<int>{3, 2, 1, 0});  // each node once, before relinking
  CHECK(ids(q) == vector<int>{0, 1, 2, 3});
  CHECK(ids(slist::from_lifo(nullptr, [](item&) {})).empty());
  // Appended behind a batch already there, as the MPSC consumer does.
  slist batch;
  batch.push_back(s.n[4]);
  s.n[5].next = nullptr;
  batch.append(slist::from_lifo(&s.n[5], [](item&) {}));
  batch.append(q);
  CHECK(ids(batch) == vector<int>{4, 5, 0, 1, 2, 3});
}

TEST_CASE("intrusive_queue.accessor_reaches_a_private_link") {
  sealed a{1}, b{2}, c{3};
  sealed_list q;
  q.push_back(a);
  q.push_back(b);
  q.push_front(c);
  CHECK(ids(q) == vector<int>{3, 1, 2});
  CHECK(q.erase_slow(a));
  CHECK(ids(q) == vector<int>{3, 2});
  CHECK(q.pop_front() == &c);
  CHECK(sealed_access::next(c) == nullptr);
  CHECK(q.pop_front() == &b);
  CHECK(q.empty());
}

TEST_CASE_TEMPLATE("intrusive_queue.unlink_front_before_cuts_off_the_walked_nodes", Q, slist,
                   dlist) {
  items s;
  Q q;
  for (int i = 0; i < 4; ++i) (void)q.push_back(s.n[static_cast<std::size_t>(i)]);
  // A walk of the first two nodes, their links left as they were.
  auto* p = q.front();
  p = Q::next(*p);
  p = Q::next(*p);
  REQUIRE(p == &s.n[2]);
  q.unlink_front_before(p);
  CHECK(ids(q) == vector<int>{2, 3});  // ids() checks the new front's back link too
  CHECK(s.n[0].next == &s.n[1]);       // stale: the caller's promise
  (void)q.push_back(s.n[0]);           // a push stores every link again
  CHECK(ids(q) == vector<int>{2, 3, 0});
  q.unlink_front_before(nullptr);  // all of them
  CHECK(ids(q).empty());
  (void)q.push_back(s.n[1]);
  CHECK(ids(q) == vector<int>{1});
}
