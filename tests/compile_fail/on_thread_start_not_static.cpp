// on_thread_start as a non-static member function: neither form of the knob
// (kcont/dispatch_policy.hpp); rejected, not silently ignored.
// expect: must be a static member function
#include <kcont/kcont.hpp>

struct policy {
  void on_thread_start(kcont::bsd_level, unsigned) {}
};

int main() {
  using plan = kcont::plan_for<kcont::bsd_level, kcont::thread_runner,
                               kcont::no_runner>;
  kcont::thread_dispatcher<kcont::bsd_level, plan, policy> d;
  (void)d;
}
