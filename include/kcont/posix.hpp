// kcont/posix.hpp — the portable core (kcont/kcont.hpp) and the POSIX pieces.
//
// For POSIX systems (Linux, the BSDs, macOS): adds to kcont/kcont.hpp the
// parts that need POSIX headers: fd_wakeup (kcont/posix/fd_wakeup.hpp), the
// eventfd/pipe wake-up policy that makes thread_dispatcher::wait_fd a
// descriptor a poll/epoll loop can watch, and defer_from_signal's
// async-signal-safe wake-up; and descriptor readiness as an event source:
// fd_source (kcont/posix/fd_source.hpp, epoll or poll) with the EVFILT_READ /
// EVFILT_WRITE filters (kcont/posix/fd_filters.hpp); and signals: signal_source
// with EVFILT_SIGNAL (kcont/posix/signal_source.hpp). Include the single headers to pay only for
// what you use.
#pragma once

#include "kcont/kcont.hpp"             // IWYU pragma: export
#include "kcont/posix/fd_wakeup.hpp"   // IWYU pragma: export
#include "kcont/posix/fd_backends.hpp" // IWYU pragma: export
#include "kcont/posix/fd_source.hpp"   // IWYU pragma: export
#include "kcont/posix/fd_filters.hpp"  // IWYU pragma: export
#include "kcont/posix/signal_source.hpp"  // IWYU pragma: export
