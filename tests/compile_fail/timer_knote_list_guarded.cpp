// A timer knote with list_guarded: a tick fires it without a klist, so no
// list lock could guard its fields; the timer filter names spin_lock as its
// knotes' policy and list_guarded is refused, naming why.
// expect: list_guarded on a filter that names another knote_policy
#include <kcont/timer_filter.hpp>

int main() {
  kcont::timer_source timers;
  kcont::kc k{[](kcont::timer_source::knote_type*, int&, kcont::knote_cause) {}, 0,
              kcont::bsd_level::immediate};
  kcont::knote<kcont::timer_filter<>, kcont::bsd_level, kcont::list_guarded> t{
      kcont::timer_filter<>{timers, std::chrono::milliseconds(1)}, k};
  (void)t;
}
