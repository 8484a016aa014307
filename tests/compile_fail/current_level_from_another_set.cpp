// run's current level (the last argument) from another level set than the
// dispatcher's. Once a 35-line overload failure.
// expect-first: kcont::run: the current level (the last argument) is not a level of the dispatcher's level set
#include <kcont/kcont.hpp>

enum class app_level : unsigned char { low, high, immediate };

int main() {
  kcont::manual_dispatcher<> d;
  kcont::kc k{[](int*, int&, int) {}, 0, kcont::bsd_level::process};
  (void)kcont::run(d, k, nullptr, 0, app_level::low);
}
