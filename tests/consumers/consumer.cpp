// The program every consumer builds: kcont found through the consumer's own
// build system (meson subproject, pkg-config, CMake find_package).
#include <kcont/kcont.hpp>

#include <cstdio>

int main() {
  kcont::manual_dispatcher<> d;
  int total = 0;
  kcont::kc k{[](int* obj, int*& sum, int status) { *sum += *obj + status; },
              &total, kcont::bsd_level::softnet};
  int obj = 40;
  (void)kcont::run(d, k, &obj, 2, kcont::bsd_level::softserial);
  d.drain(kcont::bsd_level::softnet);
  std::printf("consumer: %d\n", total);
  return total == 42 ? 0 : 1;
}
