// The function's environment parameter cannot take the stored environment.
// expect: kcont::kc: Fn is not callable as fn(obj, env, status)
#include <kcont/kc.hpp>

struct other {};

int main() {
  kcont::kc k{[](int*, other&, int) {}, 0, kcont::bsd_level::process};
  (void)k;
}
