// Running a bsd_level continuation on a dispatcher of another level set.
// expect-first: kcont::run: the continuation's level set is not the dispatcher's
#include <kcont/kcont.hpp>

enum class app_level : unsigned char { low, high, immediate };

int main() {
  kcont::manual_dispatcher<app_level> d;
  kcont::kc k{[](int*, int&, int) {}, 0, kcont::bsd_level::process};
  (void)kcont::run(d, k, nullptr, 0, app_level::low);
}
