// rethrow_exceptions with a runner thread: there is no caller to rethrow to.
// expect: a runner thread has none
#include <kcont/kcont.hpp>

struct policy {
  using on_exception = kcont::rethrow_exceptions;
};

int main() {
  using plan = kcont::plan_for<kcont::bsd_level, kcont::thread_runner,
                               kcont::no_runner>;
  kcont::thread_dispatcher<kcont::bsd_level, plan, policy> d;
  (void)d;
}
