// kcont/kcont.hpp — the portable core of kcont, in one include.
//
// kcont: continuations (a function, its environment and the priority level it
// must run at, run at once or deferred to a lower-priority queue) and knotes
// (event subscriptions whose activation runs a continuation), after the BSD
// kernels' kcont and kqueue. Include the single headers to pay only for what
// you use.
//
// Standard C++20 library only: no POSIX or OS header, so it builds for any
// target with threads (Windows included). The POSIX pieces (fd_wakeup, a
// pollable wake-up descriptor) are in kcont/posix/; kcont/posix.hpp includes
// them with everything here.
#pragma once

#include "kcont/contract.hpp"             // IWYU pragma: export
#include "kcont/level.hpp"                // IWYU pragma: export
#include "kcont/kc_hook.hpp"              // IWYU pragma: export
#include "kcont/cancel_status.hpp"        // IWYU pragma: export
#include "kcont/kc_base.hpp"              // IWYU pragma: export
#include "kcont/make_kc.hpp"              // IWYU pragma: export
#include "kcont/kc.hpp"                   // IWYU pragma: export
#include "kcont/kc_array.hpp"             // IWYU pragma: export
#include "kcont/resume.hpp"               // IWYU pragma: export
#include "kcont/kcqueue.hpp"              // IWYU pragma: export
#include "kcont/run.hpp"                  // IWYU pragma: export
#include "kcont/completion_queue.hpp"     // IWYU pragma: export
#include "kcont/drain_budget.hpp"         // IWYU pragma: export
#include "kcont/dispatcher.hpp"           // IWYU pragma: export
#include "kcont/current_level.hpp"        // IWYU pragma: export
#include "kcont/mpsc_queue.hpp"           // IWYU pragma: export
#include "kcont/wakeup.hpp"               // IWYU pragma: export
#include "kcont/runner.hpp"               // IWYU pragma: export
#include "kcont/dispatch_policy.hpp"      // IWYU pragma: export
#include "kcont/thread_dispatcher.hpp"    // IWYU pragma: export
#include "kcont/immediate_target.hpp"     // IWYU pragma: export
#include "kcont/filter.hpp"               // IWYU pragma: export
#include "kcont/knote.hpp"                // IWYU pragma: export
#include "kcont/knote_closure.hpp"        // IWYU pragma: export
#include "kcont/klist.hpp"                // IWYU pragma: export
#include "kcont/always_filter.hpp"        // IWYU pragma: export
#include "kcont/kevent.hpp"               // IWYU pragma: export
#include "kcont/event_source.hpp"         // IWYU pragma: export
#include "kcont/timer_source.hpp"         // IWYU pragma: export
#include "kcont/timer_filter.hpp"         // IWYU pragma: export
#include "kcont/kfilters.hpp"             // IWYU pragma: export
#include "kcont/kqueue.hpp"               // IWYU pragma: export
#include "kcont/event_loop.hpp"           // IWYU pragma: export
