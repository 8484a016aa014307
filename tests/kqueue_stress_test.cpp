#include <kcont/kqueue.hpp>
#include <doctest/doctest.h>
