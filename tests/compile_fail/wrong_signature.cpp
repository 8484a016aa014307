// A continuation function with two parameters instead of (obj, env, status).
// expect: kcont::kc: cannot deduce the obj and status types
#include <kcont/kc.hpp>

int main() {
  kcont::kc k{[](int*, int) {}, 0, kcont::bsd_level::process};
  (void)k;
}
