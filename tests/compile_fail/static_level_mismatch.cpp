// A level fixed in the type (static_level<softnet>) and another one passed
// (at<process>). Once "no matching constructor" / "could not convert
// brace-enclosed initializer list".
// expect-first: kcont::kc: the level argument differs from the level in the type
#include <kcont/kc.hpp>

struct on_done {
  void operator()(int*, int&, int) const {}
};

int main() {
  kcont::kc<on_done, int, kcont::static_level<kcont::bsd_level::softnet>> k{
      on_done{}, 0, kcont::at<kcont::bsd_level::process>};
  (void)k;
}
