// quickstart: a continuation asked for softnet, requested from softserial, is
// deferred to the softnet queue and runs when that level is drained.
#include <kcont/kcont.hpp>

#include <cstdio>

using kcont::bsd_level;

struct request { int id; };

int main() {
  kcont::manual_dispatcher<> levels;  // one deferral queue per level

  kcont::kc done{[](request* r, const char*& who, int status) {
                   std::printf("%s: request %d finished, status %d\n", who, r->id, status);
                 },
                 "done", bsd_level::softnet};

  request req{42};
  // We are at softserial, above softnet: deferred, obj and status saved.
  kcont::run(levels, done, &req, 0, bsd_level::softserial);
  std::printf("deferred: %d\n", done.is_deferred());
  levels.drain(bsd_level::softnet);  // the softnet runner's job
}
// Expected output:
//   deferred: 1
//   done: request 42 finished, status 0
