// The sizes of the library's objects, pinned on LP64 (issue 12: the report
// shows them, each field justified: benchmarks/README.md, "Object sizes";
// benchmarks/sizes.hpp adds the same figures to the report). A field added
// to one of these types fails here first: justify it there, then update
// both.
#include <kcont/kcont.hpp>

#include <doctest/doctest.h>

#include <climits>
#include <cstddef>
#include <cstdint>

namespace {

using kcont::bsd_level;

struct request;
// Stateless function objects: what a captureless lambda is.
struct plain_fn {
  void operator()(request*, kcont::no_env&, int) const {}
};
struct knote_fn {
  void operator()(kcont::knote_base<long>*, kcont::no_env&, kcont::knote_cause) const {}
};

using plain_kc = kcont::kc<plain_fn, kcont::no_env, bsd_level>;
using static_kc =
    kcont::kc<plain_fn, kcont::no_env, kcont::static_level<bsd_level::softnet>>;
using closure = kcont::knote_closure<kcont::user_filter, knote_fn,
                                     kcont::no_env, bsd_level>;

constexpr bool lp64 = sizeof(void*) == 8 && sizeof(long) == 8 && sizeof(int) == 4 &&
                      CHAR_BIT == 8;

}  // namespace

#if defined(__x86_64__) || defined(__aarch64__)
// kc_hook: link 8, trampoline 8, state 1, level 1 (+6 padding).
static_assert(!lp64 || sizeof(kcont::kc_hook) == 24);
// kc_base<T*, int>: kc_hook + saved status 4 (in kc_hook's tail padding)
// + invoke 8 + saved obj 8.
static_assert(!lp64 || sizeof(kcont::kc_base<request*, int>) == 40);
// A stateless lambda and no_env cost nothing; a static level is in the type
// (its runtime byte sits in padding, so the size is the same).
static_assert(!lp64 || sizeof(plain_kc) == sizeof(kcont::kc_base<request*, int>));
static_assert(!lp64 || sizeof(static_kc) == sizeof(plain_kc));
// knote<user_filter>: knote_core (fields 40; field lock, single, linked
// and the state word in one 8; links 16) + ops, continuation, fire 24 +
// filter 1 (+7). The same in every build: the mutual-detach check keeps
// its records on the waiting thread's stack, not in the knote.
static_assert(!lp64 || sizeof(kcont::knote_base<long>) == 88);
static_assert(!lp64 || sizeof(kcont::knote<kcont::user_filter>) == 96);
// A single-threaded knote is no smaller: its lock is one idle byte.
static_assert(!lp64 || sizeof(kcont::knote<kcont::user_filter, bsd_level, kcont::no_lock>) ==
                           sizeof(kcont::knote<kcont::user_filter>));
// knote_closure: its kc and its knote, nothing else.
static_assert(!lp64 || sizeof(closure) == sizeof(plain_kc) + sizeof(kcont::knote<kcont::user_filter>));
static_assert(!lp64 || sizeof(closure) == 136);
// manual_dispatcher<>: one kcqueue (head, tail) per deferrable level.
static_assert(!lp64 || sizeof(kcont::manual_dispatcher<>) == 4 * 2 * sizeof(void*));
// thread_dispatcher<>: 4 mpsc_queues of two cache lines, then the runners,
// slots, stop flag (own cache line) and stop mutex: 640 with glibc's
// 40-byte std::mutex.
static_assert(!lp64 || sizeof(kcont::mpsc_queue<>) == 128);
#if defined(__GLIBCXX__) && defined(__linux__)
static_assert(!lp64 || sizeof(kcont::thread_dispatcher<>) == 640);
#endif
#endif

TEST_CASE("layout.sizes_are_pinned_at_compile_time") {
  // The static_asserts above are the test; this case names it in the list.
  CHECK(sizeof(plain_kc) >= sizeof(kcont::kc_hook));
}
