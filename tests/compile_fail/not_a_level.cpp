// A level that is not a level set (an int).
// expect: kcont::manual_dispatcher<int>
#include <kcont/kcont.hpp>

int main() {
  kcont::manual_dispatcher<int> d;
  (void)d;
}
