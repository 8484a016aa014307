// A runner plan whose lowest level has no runner to fall back to.
// expect: the lowest level must have a runner
#include <kcont/kcont.hpp>

int main() {
  using plan = kcont::runner_plan<kcont::no_runner, kcont::thread_runner,
                                  kcont::thread_runner, kcont::thread_runner>;
  kcont::thread_dispatcher<kcont::bsd_level, plan> d;
  (void)d;
}
