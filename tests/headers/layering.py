#!/usr/bin/env python3
"""The layering check: every kcont header belongs to one layer of DESIGN.md,
and its #include "kcont/..." lines point to its own layer or a lower one
(arrows point down only). Also: the portable core (every header outside
kcont/posix/ and kcont/posix.hpp) includes no POSIX or Linux header, and
nothing but the umbrella headers includes kcont/kcont.hpp, and no header
is longer than MAX_LINES (one idea per header: about 400 lines).
Usage: layering.py ROOT   (exit status 1 and one line per violation)."""
import pathlib
import re
import sys

# Lower rank = lower layer. Two layers of one rank are peers: neither may
# include the other (knote and dispatch both stand on run; the kqueue and
# the event sources both stand on knote, and a knote never knows a kqueue;
# an event_loop drives a kqueue and a dispatcher together, above both).
# The kevent vocabulary (kevent.hpp: filter ids, EV_* and NOTE_* bits) is
# what every filter speaks, so it sits in the knote layer; a kqueue reaches
# a source only through its filters' context, never by including it.
RANK = {"kc": 0, "kcqueue": 1, "run": 2, "dispatch": 3, "knote": 3,
        "kqueue": 4, "sources": 4, "loop": 5, "umbrella": 9}

# Each header's layer. A new header must be added here: the check fails on a
# header it does not know, so that its place is decided, not guessed.
LAYER = {
    "contract.hpp": "kc", "level.hpp": "kc", "kc.hpp": "kc",
    "detail/intrusive_queue.hpp": "kc", "detail/fn_signature.hpp": "kc",
    "kc_hook.hpp": "kc", "kc_base.hpp": "kc", "cancel_status.hpp": "kc",
    "make_kc.hpp": "kc", "resume.hpp": "kc", "kc_array.hpp": "kc",
    "kcqueue.hpp": "kcqueue", "mpsc_queue.hpp": "kcqueue", "detail/kcqueue_shared.hpp": "kcqueue",
    "run.hpp": "run", "current_level.hpp": "run", "completion_queue.hpp": "run",
    "dispatcher.hpp": "dispatch", "runner.hpp": "dispatch", "wakeup.hpp": "dispatch",
    "thread_dispatcher.hpp": "dispatch", "posix/fd_wakeup.hpp": "dispatch",
    "drain_budget.hpp": "dispatch", "dispatch_policy.hpp": "dispatch",
    "detail/level_runners.hpp": "dispatch", "detail/run_slot.hpp": "dispatch",
    "detail/spin_hold_off.hpp": "dispatch",
    "immediate_target.hpp": "run",
    "filter.hpp": "knote", "knote.hpp": "knote", "knote_closure.hpp": "knote",
    "detail/knote_state.hpp": "knote", "detail/fire.hpp": "knote", "klist.hpp": "knote",
    "detail/klist_fanout.hpp": "knote", "detail/list_held.hpp": "knote",
    "always_filter.hpp": "knote",
    "detail/kqueue_entry.hpp": "kqueue", "detail/kqueue_core.hpp": "kqueue",
    "detail/kqueue_pending.hpp": "kqueue",
    "detail/kqueue_wait.hpp": "kqueue", "event_loop.hpp": "loop",
    "kevent.hpp": "knote", "kfilters.hpp": "kqueue", "event_source.hpp": "kqueue", "kqueue.hpp": "kqueue",
    "posix/fd_backends.hpp": "sources", "posix/fd_source.hpp": "sources", "posix/fd_filters.hpp": "sources",
    "posix/signal_source.hpp": "sources",
    "timer_source.hpp": "sources", "timer_filter.hpp": "sources", "detail/timer_hook.hpp": "sources",
    "kcont.hpp": "umbrella", "posix.hpp": "umbrella",
}

MAX_LINES = 430

POSIX_HEADERS = re.compile(r"#\s*include\s*<(unistd\.h|poll\.h|fcntl\.h|pthread\.h|sys/[^>]*|"
                           r"netinet/[^>]*|arpa/[^>]*|linux/[^>]*)>")
KCONT_INCLUDE = re.compile(r'#\s*include\s*[<"]kcont/([^">]+)[">]')


def main():
    base = pathlib.Path(sys.argv[1]) / "include" / "kcont"
    bad = []
    for path in sorted(base.rglob("*.hpp")):
        name = path.relative_to(base).as_posix()
        layer = LAYER.get(name)
        if layer is None:
            bad.append(f"kcont/{name}: not in tests/headers/layering.py's LAYER table")
            continue
        portable = not (name == "posix.hpp" or name.startswith("posix/"))
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_LINES:
            bad.append(f"kcont/{name}: {lines} lines, over {MAX_LINES}: one idea per header")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = KCONT_INCLUDE.search(line)
            if m:
                dep = m.group(1)
                dl = LAYER.get(dep)
                if dl is None:
                    continue  # reported on its own
                if dep in ("kcont.hpp", "posix.hpp") and layer != "umbrella":
                    bad.append(f"kcont/{name}:{n}: includes the umbrella kcont/{dep}")
                elif dl != layer and RANK[dl] >= RANK[layer]:
                    bad.append(f"kcont/{name}:{n}: {layer} layer includes kcont/{dep} "
                               f"({dl} layer): arrows point down only")
            if portable and POSIX_HEADERS.search(line):
                bad.append(f"kcont/{name}:{n}: portable core includes a POSIX header: "
                           f"{line.strip()}")
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print(f"layering: {sum(1 for _ in base.rglob('*.hpp'))} headers, every include points down, "
          f"none over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
