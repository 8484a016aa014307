// kcont/cancel_status.hpp — the status that tells a continuation "you were
// cancelled".
//
// Defines `cancel_status<Status>`, the value of a status type that means
// "cancelled" (Fuchsia's handlers receive ZX_ERR_CANCELED), and the tag
// `kcont::cancelled` that asks kcont::resume (kcont/resume.hpp) to pass it
// instead of the saved status. A list of mixed continuations handed back at
// shutdown can so be told, each in its own status type, that it was
// cancelled. Provided: int (ECANCELED, the BSD kernels' positive errno),
// std::error_code (std::errc::operation_canceled) and any enum with an
// enumerator named `cancelled`. Specialise it for your own status type:
//
//   template <> struct kcont::cancel_status<my_status> {
//     static constexpr my_status value() noexcept { return my_status::aborted; }
//   };
#pragma once

#include <cerrno>
#include <concepts>
#include <system_error>
#include <type_traits>

namespace kcont {

// The tag of resume(h, kcont::cancelled).
struct cancelled_t {
  explicit cancelled_t() = default;
};
inline constexpr cancelled_t cancelled{};

// The primary template has no value: a status type that cannot say
// "cancelled" until it is specialised.
template <class Status>
struct cancel_status {};

template <>
struct cancel_status<int> {
  static constexpr int value() noexcept { return ECANCELED; }
};

template <class Status>
  requires std::is_enum_v<Status> && requires {
    { Status::cancelled } -> std::convertible_to<Status>;
  }
struct cancel_status<Status> {
  static constexpr Status value() noexcept { return Status::cancelled; }
};

template <>
struct cancel_status<std::error_code> {
  static std::error_code value() noexcept {
    return std::make_error_code(std::errc::operation_canceled);
  }
};

namespace detail {
// True when Status has a cancel value.
template <class Status>
concept has_cancel_status = requires {
  { cancel_status<Status>::value() } -> std::convertible_to<Status>;
};
}  // namespace detail

}  // namespace kcont
