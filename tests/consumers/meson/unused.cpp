// Would fail under kcont's own -Wall -Werror: proves they do not leak here.
int consumer_unused_probe() {
  int unused_variable;
  return 0;
}
