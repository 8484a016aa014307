// kcont/kc_array.hpp — N continuations built in place, in one object.
//
// Defines `kc_array<K, N>`: N continuations of one type K (a kc, or any type
// derived from kc_hook) built in place by a factory, with no allocation and
// no per-element flag. A kc is immovable (queues link it in place) and has
// no default constructor, so neither `K[N]` / `std::array<K, N>` nor
// `std::vector<K>` can hold it: kc_array can, as can
// `std::deque<K>::emplace_back` (grows, one allocation per block) and
// `std::array<std::optional<K>, N>` (a flag per element).
//
// Usage:
//   auto on_read = [](request* r, conn*& c, int status) {...};
//   using K = kcont::kc<decltype(on_read), conn*, kcont::bsd_level>;
//   kcont::kc_array<K, 8> reads{[&](std::size_t i) {
//     return K{on_read, &conns[i], kcont::bsd_level::softnet};   // built in place
//   }};
//   kcont::defer(d, reads[3], &req, 0);
#pragma once

#include <concepts>
#include <cstddef>
#include <new>
#include <type_traits>

#include "kcont/kc_hook.hpp"

namespace kcont {

// N continuations of type K, built in place.
//
// Lifetime contract: as each K's: none may be queued or deferred when the
// array is destroyed (each K's destructor checks it in debug builds).
// Neither copyable nor movable, like its elements.
// Thread-safety: as K's; the array itself is immutable after construction.
template <class K, std::size_t N>
class kc_array {
  static_assert(std::derived_from<K, kc_hook>,
                "kcont::kc_array<K, N>: K must be a continuation type (a kc, "
                "or a type derived from kc_hook)");
  static_assert(N > 0, "kcont::kc_array<K, N>: N must be at least 1");

 public:
  using value_type = K;
  using iterator = K*;
  using const_iterator = const K*;

  // Effects: builds element i as `make(i)`, i = 0 .. N-1, in place: make
  //   returns a K by value (a prvalue, so nothing is moved: C++17's
  //   guaranteed copy elision).
  // Throws: what make throws; the elements already built are destroyed.
  // Complexity: N calls of make; no allocation.
  template <class Make>
    requires std::invocable<Make&, std::size_t> &&
             std::same_as<std::invoke_result_t<Make&, std::size_t>, K>
  explicit kc_array(Make make) {
    // Destroys the elements built so far unless the loop completes (an
    // exception from make), with or without exceptions enabled.
    struct unwind {
      kc_array* self;
      std::size_t built = 0;
      ~unwind() {
        while (built > 0) self->at(--built)->~K();
      }
    } guard{this};
    for (; guard.built < N; ++guard.built)
      ::new (static_cast<void*>(storage_ + guard.built * sizeof(K))) K(make(guard.built));
    guard.built = 0;
  }

  kc_array(const kc_array&) = delete;
  kc_array& operator=(const kc_array&) = delete;

  // Effects: destroys the elements, last first.
  ~kc_array() {
    for (std::size_t i = N; i > 0; --i) at(i - 1)->~K();
  }

  // Element i. Precondition: i < N.
  [[nodiscard]] K& operator[](std::size_t i) noexcept { return *at(i); }
  [[nodiscard]] const K& operator[](std::size_t i) const noexcept { return *at(i); }

  [[nodiscard]] static constexpr std::size_t size() noexcept { return N; }
  [[nodiscard]] K* data() noexcept { return at(0); }
  [[nodiscard]] const K* data() const noexcept { return at(0); }
  [[nodiscard]] iterator begin() noexcept { return data(); }
  [[nodiscard]] iterator end() noexcept { return data() + N; }
  [[nodiscard]] const_iterator begin() const noexcept { return data(); }
  [[nodiscard]] const_iterator end() const noexcept { return data() + N; }

 private:
  K* at(std::size_t i) noexcept {
    return std::launder(reinterpret_cast<K*>(storage_ + i * sizeof(K)));
  }
  const K* at(std::size_t i) const noexcept {
    return std::launder(reinterpret_cast<const K*>(storage_ + i * sizeof(K)));
  }

  alignas(K) unsigned char storage_[N * sizeof(K)];
};

}  // namespace kcont
