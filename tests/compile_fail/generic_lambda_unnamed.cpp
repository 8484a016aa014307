// A generic lambda: the obj and status types cannot be deduced from it.
// expect-first: kcont::kc: cannot deduce the obj and status types
// expect: for a generic lambda name them
#include <kcont/kc.hpp>

int main() {
  kcont::kc k{[](auto*, int&, auto) {}, 0, kcont::bsd_level::process};
  (void)k;
}
