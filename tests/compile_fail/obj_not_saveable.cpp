// An obj that cannot be saved by a deferral (not trivially destructible).
// expect: kcont::kc_base: Obj must be a copyable, default-constructible, trivially destructible value
#include <kcont/kc.hpp>

#include <string>

int main() {
  kcont::kc k{[](std::string, int&, int) {}, 0, kcont::bsd_level::process};
  (void)k;
}
