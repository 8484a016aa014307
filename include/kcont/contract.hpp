// kcont/contract.hpp — debug-mode contract checks.
//
// Defines KCONT_EXPECTS(cond, rule): when checks are on and `cond` is false,
// print "kcont: contract violated: <rule>" and abort. Checks are on unless
// NDEBUG is defined, exactly like assert(); define KCONT_CHECKS to keep them
// in a release build. They guard broken contracts (a queue destroyed while it
// still holds work, a continuation run while it sits on a queue), never
// reportable outcomes: refusing a double enqueue is a result, not a crash.
// Where a release build can still give a defined result for a broken
// contract (a level with no queue, a second attach), the code after the check
// gives it, so release builds never read out of bounds or hang instead.
//
// `cond` must have no side effect: with checks off it is not evaluated at
// all. Compute what the code needs first, then check the computed value
// (`const bool busy = flag.exchange(true); KCONT_EXPECTS(!busy, ...)`).
//
// This is the only macro kcont defines; configuration is done with types.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace kcont {

namespace detail {
// Effects: writes the violated rule and where it was caught to stderr, then
//   aborts. Never returns. Not async-signal-safe (it only runs on a path that
//   is already fatal).
[[noreturn]] inline void contract_violated(const char* rule, const char* file,
                                           int line) noexcept {
  std::fprintf(stderr, "kcont: contract violated: %s (%s:%d)\n", rule, file,
               line);
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

// True when KCONT_EXPECTS checks anything in this translation unit.
#if defined(NDEBUG) && !defined(KCONT_CHECKS)
inline constexpr bool contract_checks = false;
#else
inline constexpr bool contract_checks = true;
#endif

}  // namespace kcont

#if defined(NDEBUG) && !defined(KCONT_CHECKS)
#define KCONT_EXPECTS(cond, rule) ((void)0)
#else
#define KCONT_EXPECTS(cond, rule)                                  \
  ((cond) ? static_cast<void>(0)                                   \
          : ::kcont::detail::contract_violated((rule), __FILE__, __LINE__))
#endif
