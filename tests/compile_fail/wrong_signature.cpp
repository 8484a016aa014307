// A continuation function with two parameters instead of (obj, env, status).
// expect-first: kcont::kc: Fn does not take three parameters
#include <kcont/kc.hpp>

int main() {
  kcont::kc k{[](int*, int) {}, 0, kcont::bsd_level::process};
  (void)k;
}
