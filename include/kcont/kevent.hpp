// kcont/kevent.hpp — the kevent record and the EV_* / NOTE_* vocabulary.
//
// Defines `basic_kevent<Udata>` (BSD's struct kevent, with a typed udata),
// the `ev` flag set (EV_ADD, EV_DELETE, ... as `ev::add`, `ev::delete_`...),
// the `note` constants (NOTE_TRIGGER, NOTE_FF*, timer units) and `filter_id`
// (EVFILT_READ, EVFILT_WRITE, EVFILT_SIGNAL, EVFILT_USER, EVFILT_TIMER
// and your own). Values are FreeBSD's, so a reader
// of kqueue(2) finds the same numbers; the names are scoped, so including
// <sys/event.h> on a BSD alongside kcont causes no macro clash.
//
// Usage:
//   kcont::kevent add{.ident = 1, .filter = kcont::filter_id::user,
//                     .flags = kcont::ev::add | kcont::ev::clear};
//   kcont::kevent fire{.ident = 1, .filter = kcont::filter_id::user,
//                      .fflags = kcont::note::trigger};
#pragma once

#include <cstddef>
#include <cstdint>

namespace kcont {

// The EV_* flags of a change or an event (FreeBSD's values).
enum class ev : std::uint16_t {
  none = 0,
  add = 0x0001,       // EV_ADD: add a knote (enabled unless ev::disable); on an
                      // existing one, just a change: it does not re-enable
  delete_ = 0x0002,   // EV_DELETE: remove the knote
  enable = 0x0004,    // EV_ENABLE: let activation report it again
  disable = 0x0008,   // EV_DISABLE: keep it, report nothing until enabled
  oneshot = 0x0010,   // EV_ONESHOT: delete it after its first report
  clear = 0x0020,     // EV_CLEAR: reset its state after each report
  receipt = 0x0040,   // EV_RECEIPT: report the change's outcome, do not scan
  dispatch = 0x0080,  // EV_DISPATCH: disable it after each report
  forceoneshot = 0x0100,  // EV_FORCEONESHOT: make it one-shot and fire it now
  keepudata = 0x0200,     // EV_KEEPUDATA: leave its udata (not with EV_ADD)
  error = 0x4000,     // EV_ERROR: this entry reports a change; data = errno
  eof = 0x8000,       // EV_EOF: filter-specific end of file
};

// Set operations on EV_* flag sets: union, intersection, complement.
[[nodiscard]] constexpr ev operator|(ev a, ev b) noexcept {
  return static_cast<ev>(static_cast<std::uint16_t>(a) | static_cast<std::uint16_t>(b));
}
[[nodiscard]] constexpr ev operator&(ev a, ev b) noexcept {
  return static_cast<ev>(static_cast<std::uint16_t>(a) & static_cast<std::uint16_t>(b));
}
[[nodiscard]] constexpr ev operator~(ev a) noexcept {
  return static_cast<ev>(static_cast<std::uint16_t>(~static_cast<std::uint16_t>(a)));
}
constexpr ev& operator|=(ev& a, ev b) noexcept { return a = a | b; }
constexpr ev& operator&=(ev& a, ev b) noexcept { return a = a & b; }

// True when every bit of `bits` is set in `flags`.
[[nodiscard]] constexpr bool has(ev flags, ev bits) noexcept {
  return (flags & bits) == bits;
}

// NOTE_* filter flags (FreeBSD's values). fflags is a plain 32-bit word
// because its low 24 bits are the user's own flags for the user filter.
namespace note {
// EVFILT_USER: the operation applied to the knote's saved user flags.
inline constexpr std::uint32_t ffnop = 0x00000000;       // ignore input fflags
inline constexpr std::uint32_t ffand = 0x40000000;       // saved &= input
inline constexpr std::uint32_t ffor = 0x80000000;        // saved |= input
inline constexpr std::uint32_t ffcopy = 0xc0000000;      // saved = input
inline constexpr std::uint32_t ffctrlmask = 0xc0000000;  // the operation bits
inline constexpr std::uint32_t fflagsmask = 0x00ffffff;  // the user's flags
inline constexpr std::uint32_t trigger = 0x01000000;     // fire the user event
// EVFILT_READ / EVFILT_WRITE: `data` in the registration is the low-water mark.
inline constexpr std::uint32_t lowat = 0x00000001;
// EVFILT_TIMER: the unit of `data` (milliseconds when none is given).
inline constexpr std::uint32_t seconds = 0x00000001;
inline constexpr std::uint32_t mseconds = 0x00000002;
inline constexpr std::uint32_t useconds = 0x00000004;
inline constexpr std::uint32_t nseconds = 0x00000008;
// EVFILT_TIMER: `data` is an absolute time (since the clock's epoch) in the
// unit, not a period: the timer expires once, then (NOTE_ABSTIME).
inline constexpr std::uint32_t abstime = 0x00000010;
}  // namespace note

// Which filter a change or event belongs to: FreeBSD's EVFILT_* numbers for
// the shipped filters; user-defined filters pick any other value, e.g.
// `static constexpr kcont::filter_id id{42};`.
enum class filter_id : std::int16_t {
  read = -1,   // EVFILT_READ
  write = -2,  // EVFILT_WRITE
  signal = -6, // EVFILT_SIGNAL
  timer = -7,  // EVFILT_TIMER
  user = -11,  // EVFILT_USER
};

// A change (what to register) or an event (what happened), BSD's kevent.
// Udata is the caller's cookie, handed back unchanged with every event of
// the knote: a pointer type (session*) or an integer; it must be trivially
// copyable, which is what lets a scan copy it out without allocating.
template <class Udata = std::uintptr_t>
struct basic_kevent {
  std::uintptr_t ident = 0;     // the knote's identity with `filter`
  filter_id filter{};           // which filter
  ev flags = ev::none;          // EV_* (a change: actions; an event: state)
  std::uint32_t fflags = 0;     // filter flags (NOTE_*)
  std::int64_t data = 0;        // filter data; errno in an EV_ERROR entry
  Udata udata{};                // the caller's cookie, round-tripped

  friend bool operator==(const basic_kevent&, const basic_kevent&) = default;
};

// The kevent with an integer cookie, as in C.
using kevent = basic_kevent<>;

// What kqueue::kevent returns: C's kevent() return value, its errno, and
// how many entries were written to the event list.
//
//   ret   — what kevent(2) returns: -1 (then `error` is its errno), or the
//           number of entries, as C's int.
//   error — the errno when ret == -1, else 0.
//   count — the entries written to the event list: events, or EV_ERROR
//           entries for changes. Equal to ret when ret >= 0, with one
//           exception; when ret == -1 the entries written for earlier
//           changes are there all the same (C leaves them in the buffer).
//   The exception (FreeBSD kqueue_kevent: `if (nevents == 0) return
//   (error);` with error 0): a change with ev::receipt that succeeds when
//   the event list is already full ends the call with ret == 0, count the
//   entries written before it. Either way, a change that needed an entry
//   and found no room stops the change list: later changes are not applied.
struct kevent_result {
  int ret = 0;
  int error = 0;
  std::size_t count = 0;

  friend bool operator==(const kevent_result&, const kevent_result&) = default;
};

}  // namespace kcont
