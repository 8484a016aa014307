// doctest's runner: its implementation and main(), alone in a translation
// unit that includes nothing of kcont. tests/meson.build builds it without
// optimization in every configuration: nothing in it is under test, and at
// -O2 under a sanitizer it was one of the slowest files to compile.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
