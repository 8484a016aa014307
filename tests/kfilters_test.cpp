#include <kcont/kfilters.hpp>
#include <doctest/doctest.h>
