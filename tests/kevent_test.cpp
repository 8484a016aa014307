#include <kcont/kevent.hpp>
#include <doctest/doctest.h>
