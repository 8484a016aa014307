// kevent: flag arithmetic and the record's shape.
#include <kcont/kevent.hpp>

#include <doctest/doctest.h>

#include <type_traits>

using kcont::ev;

static_assert((ev::add | ev::clear) == static_cast<ev>(0x21));
static_assert(kcont::has(ev::add | ev::clear, ev::clear));
static_assert(!kcont::has(ev::add, ev::add | ev::clear));
static_assert((~ev::add & (ev::add | ev::oneshot)) == ev::oneshot);
static_assert(std::is_trivially_copyable_v<kcont::kevent>);
static_assert(kcont::note::ffcopy == (kcont::note::ffand | kcont::note::ffor));
static_assert((kcont::note::trigger & kcont::note::fflagsmask) == 0);

TEST_CASE("kevent.flags_compose_and_compare") {
  ev f = ev::add;
  f |= ev::dispatch;
  CHECK(kcont::has(f, ev::dispatch));
  f &= ~ev::add;
  CHECK(f == ev::dispatch);
  kcont::basic_kevent<int*> a{.ident = 1, .filter = kcont::filter_id::user};
  auto b = a;
  CHECK(a == b);
  int x = 0;
  b.udata = &x;
  CHECK(!(a == b));
}
