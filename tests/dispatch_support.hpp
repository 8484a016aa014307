// Test support for the dispatch tests: stress sizes and waiting helpers.
#pragma once

#include <cstddef>
#include <thread>

namespace kcont_test {

// True under ThreadSanitizer or AddressSanitizer, where the stress and
// lost-wake-up loops run fewer iterations (each test states both sizes).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

// Picks the iteration count: `normal` in a plain build, `small` under a
// sanitizer.
constexpr std::size_t sized(std::size_t normal, std::size_t small) noexcept {
  return sanitized ? small : normal;
}

// Yields until pred() is true. No timeout: a lost wake-up shows as a hang,
// which meson's test timeout reports.
template <class Pred>
void spin_until(Pred&& pred) {
  while (!pred()) std::this_thread::yield();
}

}  // namespace kcont_test
