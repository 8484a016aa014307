// A continuation lambda without its environment parameter: fn(obj, status)
// instead of fn(obj, env, status). Once a message about generic lambdas and
// a cascade through run.
// expect-first: kcont::kc: Fn does not take three parameters
// expect: is the env parameter missing?
#include <kcont/kcont.hpp>

struct request {
  int id;
};

int main() {
  kcont::manual_dispatcher<> d;
  request req{1};
  kcont::kc done{[](request* r, int status) { (void)r; (void)status; }, 0,
                 kcont::bsd_level::softnet};
  (void)kcont::run(d, done, &req, 0, kcont::bsd_level::process);
}
