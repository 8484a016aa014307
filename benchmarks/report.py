#!/usr/bin/python3
"""Writes benchmarks/results/report.md from a Google Benchmark JSON file.

Usage:
  report.py annotate <json> <builddir> key=value...
                                           add to the JSON's context the flags the
                                           suite was built with (from
                                           <builddir>/compile_commands.json) and
                                           the given run settings
  report.py count <json> <exe> <regex>    count with callgrind the instructions
                                           per item of the cases matching regex
                                           (their out-of-line round_* functions)
                                           and add them to the JSON
  report.py render <json> <report.md>      write the report

Every figure comes from the JSON: Google Benchmark's own aggregates over the
repetitions (median, plus the `min` and `max` statistics that support.hpp
registers), its context (date, host, CPU count and frequency, load average)
and the context the suite adds (compiler, CPU model, compile flags, contract
checks). Nothing is typed by hand; a case absent from the JSON is reported as
pending, a case that failed its item check as ERROR.
Pure standard library, plus gbench.util (Google Benchmark's tools) when
present, to load the results the same way compare.py does.
"""
import json
import math
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, "/usr/share/benchmark")
try:  # Google Benchmark's own loader (tools/gbench), when installed
    from gbench.util import load_benchmark_results
except ImportError:  # pragma: no cover
    def load_benchmark_results(fname):
        with open(fname) as f:
            return json.load(f)


# ----------------------------------------------------------------- the cases
# Each scenario lists its cases: (benchmark name, role, like-for-like baseline,
# what it is). `role` is "kcont" (a library path: must not allocate, except
# where `allocs` says otherwise) or "baseline". The ratio column divides a
# case's median by its baseline's median, both from this run.
SCENARIOS = [
    {
        "id": "A",
        "title": "Immediate run (one call)",
        "cases": [
            ("BM_ImmediateRun_Direct", "baseline", None,
             "handler called directly, inlined"),
            ("BM_ImmediateRun_FunctionPointer", "baseline", "BM_ImmediateRun_Direct",
             "through a laundered fn(obj, env, status) pointer"),
            ("BM_ImmediateRun_StdFunction", "baseline", "BM_ImmediateRun_FunctionPointer",
             "through std::function"),
            ("BM_ImmediateRun_KcStaticLevel", "kcont", "BM_ImmediateRun_Direct",
             "kc at kcont::at<immediate>, concrete type"),
            ("BM_ImmediateRun_KcRuntimeLevel", "kcont", "BM_ImmediateRun_FunctionPointer",
             "kc with a runtime level, through kc_base&"),
            ("BM_ImmediateRun_MakeKc", "kcont-alloc", "BM_ImmediateRun_KcRuntimeLevel",
             "make_kc + run (the allocating maker)"),
        ],
    },
    {
        "id": "B",
        "title": "Defer N = 1024, then drain (per item: push, pop, call)",
        "cases": [
            ("BM_DeferDrain_RawFifo", "baseline", None,
             "raw intrusive FIFO, fn pointer per node, no lock (the floor)"),
            ("BM_DeferDrain_DequeMutexFunction", "baseline", "BM_DeferDrain_RawFifo",
             "std::deque<std::function<void()>> + std::mutex"),
            ("BM_DeferDrain_DequeMutexSwap", "baseline", "BM_DeferDrain_RawFifo",
             "std::deque<std::function<void()>> + std::mutex, drained by swapping the deque out under one lock"),
            ("BM_DeferDrain_RawFifoSpinLock", "baseline", "BM_DeferDrain_RawFifo",
             "raw intrusive FIFO under kcont::spin_lock"),
            ("BM_DeferDrain_GuardedFifo", "baseline", "BM_DeferDrain_RawFifo",
             "the floor + kcont's guarantees, by hand (refuse if queued, save once, per-level queue)"),
            ("BM_DeferDrain_KcontNoLock", "kcont", "BM_DeferDrain_RawFifo",
             "kcont defer + drain, no_lock"),
            ("BM_DeferDrain_KcontSpinLock", "kcont", "BM_DeferDrain_RawFifoSpinLock",
             "kcont defer + drain, spin_lock"),
            ("BM_DeferDrain_KcontMutex", "kcont", "BM_DeferDrain_DequeMutexSwap",
             "kcont defer + drain, std::mutex"),
        ],
    },
    {
        "id": "C",
        "title": "Coalesced activation: N = 64 objects, each activated twice, consumed once (per object)",
        "cases": [
            ("BM_Activate_RawQueuedFlag", "baseline", None,
             "raw intrusive FIFO, plain queued flag: ++count, link if not queued; pop, run (the floor)"),
            ("BM_Activate_RawQueuedFlagSpinLock", "baseline", "BM_Activate_RawQueuedFlag",
             "the same FIFO under BM_Activate_Kqueue's locks, as often as a minimal locked design "
             "takes them: std::mutex per post, spin_lock per activation and per scan"),
            ("BM_Activate_RawQueuedFlagSpinLockPerPost", "baseline", "BM_Activate_RawQueuedFlag",
             "the same, the spin_lock held once over each post's walk (as the kqueue's batched "
             "fan-out holds its lock: once per run of one kqueue's knotes)"),
            ("BM_Activate_KnoteFifo", "kcont", "BM_Activate_RawQueuedFlag",
             "single-threaded knotes (knote<F, L, no_lock>) on a klist<no_lock>, immediate continuation links on the caller's FIFO once"),
            ("BM_Activate_KnoteFifoThreadSafe", "kcont", "BM_Activate_RawQueuedFlag",
             "the same with thread-safe knotes (knote<F>: field lock, atomic state)"),
            ("BM_Activate_Kqueue", "kcont", "BM_Activate_RawQueuedFlagSpinLock",
             "kqueue<counting_filter, request*, spin_lock> + event_source (std::mutex): 2 posts, 1 scan"),
            ("BM_Activate_KqueueNoLock", "kcont", "BM_Activate_RawQueuedFlag",
             "the same kqueue and source with no_lock (its knotes single-threaded)"),
        ],
    },
] + [
    {
        "id": "D",
        "title": f"Fan-out of one event to K = {k} subscribers (per subscriber)",
        "cases": [
            (f"BM_FanOut_RawList/{k}", "baseline", None,
             "intrusive list of {next, fn, request}, one indirect call each (the floor)"),
            (f"BM_FanOut_StdFunctionVector/{k}", "baseline", f"BM_FanOut_RawList/{k}",
             "std::vector<std::function<void(long)>>"),
            (f"BM_FanOut_VirtualObserver/{k}", "baseline", f"BM_FanOut_RawList/{k}",
             "std::vector<observer*>, virtual on_event (reference)"),
            (f"BM_FanOut_KnoteClosure/{k}", "kcont", f"BM_FanOut_RawList/{k}",
             "klist<long, bsd_level, no_lock>::fire over knote_closure<filter, fn, request*, "
             "at<immediate>, no_lock>: handler and data in the node, as the floor's"),
            (f"BM_FanOut_KnoteClosureDefault/{k}", "kcont", f"BM_FanOut_RawList/{k}",
             "the same with the default knote policy (no policy written: kcont::list_guarded, "
             "FreeBSD's knlist discipline: the no_lock list's thread guards the fields, no "
             "field lock; atomic state)"),
            (f"BM_FanOut_KnoteClosureThreadSafe/{k}", "kcont", f"BM_FanOut_RawList/{k}",
             "the same with kcont::spin_lock knote_closures (the opt-in per-knote field lock, "
             "for fields read from any thread; atomic state)"),
            (f"BM_FanOut_Klist/{k}", "kcont", f"BM_FanOut_RawList/{k}",
             "the same list over knote<filter, bsd_level, no_lock> + a separate kc at immediate "
             "(continuation type-erased: its trampoline is a second indirect call)"),
            (f"BM_FanOut_KlistThreadSafe/{k}", "kcont", f"BM_FanOut_RawList/{k}",
             "the same with kcont::spin_lock knotes (knote<filter, bsd_level, spin_lock>: field "
             "lock, atomic state)"),
            (f"BM_FanOut_RawListMutex/{k}", "baseline", f"BM_FanOut_RawList/{k}",
             "the raw intrusive list walked under one hold of a std::mutex (the floor under a lock)"),
            (f"BM_FanOut_KnoteClosureMutex/{k}", "kcont", f"BM_FanOut_RawListMutex/{k}",
             "klist<long, bsd_level, std::mutex>::fire over kcont::spin_lock knote_closures "
             "(the list lock dropped around each handler; a detach from another thread waits for it)"),
            (f"BM_FanOut_KnoteClosureMutexHoldLock/{k}", "kcont", f"BM_FanOut_RawListMutex/{k}",
             "the same list and knote_closures fired with the opt-in kcont::hold_lock (handlers "
             "that never touch the list: the lock held across the fan-out, FreeBSD's KNOTE_LOCKED)"),
            (f"BM_FanOut_KnoteClosureMutexListGuarded/{k}", "kcont", f"BM_FanOut_RawListMutex/{k}",
             "locked fan-out, knotes guarded by the list's lock (FreeBSD's knlist): knote_closures "
             "of policy kcont::list_guarded (no field lock) fired with kcont::hold_lock, handlers "
             "called under the std::mutex as the floor calls them"),
            (f"BM_FanOut_RawListNodeLock/{k}", "baseline", f"BM_FanOut_RawList/{k}",
             "the raw list with a spin_lock per node, taken to store the hint in the node before "
             "the call (the floor of a per-subscriber lock, as a thread-safe knote's field lock)"),
            (f"BM_FanOut_RawListMutexNodeLock/{k}", "baseline", f"BM_FanOut_RawListMutex/{k}",
             "the same under one hold of a std::mutex"),
        ],
    }
    for k in (1, 8, 64)
] + [
    {
        "id": "E",
        "title": "kqueue activate + scan, one event per round",
        "cases": [
            ("BM_ActivateScan_DequeMutex", "baseline", None,
             "std::deque of event records + std::mutex: push, pop"),
            ("BM_ActivateScan_RawQueuedFlag", "baseline", "BM_ActivateScan_DequeMutex",
             "raw queued-flag FIFO, one object"),
            ("BM_ActivateScan_Kqueue", "kcont", "BM_ActivateScan_DequeMutex",
             "src.post(1); kq.scan(out) (spin_lock kqueue, std::mutex source)"),
        ],
    },
    {
        "id": "F",
        "title": "Cross-thread: throughput, a batch of N = 1024 per iteration, "
                 "and back-to-back wake-up, one task per iteration (dispatch_benchmark.cpp)",
        "cases": [
            ("BM_CrossThread_MutexCondvar/real_time", "baseline", None,
             "1 producer, 1 worker: std::deque<std::function> + std::mutex + std::condition_variable"),
            ("BM_CrossThread_Kcont/real_time", "kcont",
             "BM_CrossThread_MutexCondvar/real_time",
             "1 producer: kcont::defer to a thread_dispatcher (mpsc_queue + atomic_wakeup, idle_spin 2 us), 1 runner thread"),
            ("BM_CrossThread_KcontNoSpin/real_time", "kcont",
             "BM_CrossThread_MutexCondvar/real_time",
             "the same with idle_spin = no_spin"),
            ("BM_CrossThreadTwoProducers_MutexCondvar/real_time", "baseline", None,
             "2 producers (N/2 each), 1 worker: the same hand-written queue"),
            ("BM_CrossThreadTwoProducers_Kcont/real_time", "kcont",
             "BM_CrossThreadTwoProducers_MutexCondvar/real_time",
             "2 producers (N/2 each): kcont::defer, 1 runner thread"),
            ("BM_Wakeup_MutexCondvar/real_time", "baseline", None,
             "post one task to the hand-written worker, wait until it ran"),
            ("BM_Wakeup_SpinningThread/real_time", "baseline", None,
             "the machine's floor: a thread spinning on a sequence number (no queue, no sleep)"),
            ("BM_Wakeup_Kcont/real_time", "kcont", "BM_Wakeup_MutexCondvar/real_time",
             "defer one continuation to the runner (atomic_wakeup, idle_spin 2 us), wait until it ran"),
            ("BM_Wakeup_KcontNoSpin/real_time", "kcont", "BM_Wakeup_MutexCondvar/real_time",
             "the same with idle_spin = no_spin: the runner sleeps after each task"),
            ("BM_Wakeup_KcontCondvarWakeup/real_time", "kcont",
             "BM_Wakeup_MutexCondvar/real_time", "the same with condvar_wakeup"),
            ("BM_Wakeup_KcontFdWakeup/real_time", "kcont",
             "BM_Wakeup_MutexCondvar/real_time", "the same with fd_wakeup (eventfd)"),
        ],
    },
    {
        "id": "G",
        "title": "Signal push: one deferral as a signal handler does it, "
                 "N = 1024 per iteration timed by hand",
        "cases": [
            ("BM_DeferOne_RawFifoSpinLock/manual_time", "baseline", None,
             "no signal: raw intrusive push under spin_lock"),
            ("BM_DeferOne_KcontSpinLock/manual_time", "kcont",
             "BM_DeferOne_RawFifoSpinLock/manual_time",
             "no signal: kcont::defer, manual_dispatcher with spin_lock"),
            ("BM_DeferOne_KcontLockFree/manual_time", "kcont",
             "BM_DeferOne_RawFifoSpinLock/manual_time",
             "no signal: kcont::defer, lock-free mpsc_queue + fd_wakeup (the signal-safe dispatcher)"),
            ("BM_SignalPush_EmptyHandler/manual_time", "baseline", None,
             "raise(SIGUSR1), the handler does the item's work itself"),
            ("BM_SignalPush_Kcont/manual_time", "kcont",
             "BM_SignalPush_EmptyHandler/manual_time",
             "raise(SIGUSR1), the handler calls defer_from_signal (mpsc_queue + fd_wakeup)"),
        ],
    },
] + [
    {
        "id": "H",
        "title": f"Timers with N = {n} armed (timer_benchmark.cpp): one idle tick; "
                 "arm + cancel and arm + expire, K = 64 timers per iteration, per timer",
        "cases": [
            (f"BM_TimerTickNoneDue_PriorityQueue/{n}", "baseline", None,
             "std::priority_queue of (deadline, generation, timer): compare now with the top"),
            (f"BM_TimerTickNoneDue_Kcont/{n}", "kcont", f"BM_TimerTickNoneDue_PriorityQueue/{n}",
             "basic_timer_source<bsd_level, no_lock>::tick(now), nothing due"),
            (f"BM_TimerTickNoneDue_KcontMutex/{n}", "kcont", f"BM_TimerTickNoneDue_PriorityQueue/{n}",
             "the default timer_source (std::mutex), nothing due"),
            (f"BM_TimerArmCancel_PriorityQueue/{n}", "baseline", None,
             "push; cancel by generation (lazy deletion: the tick pops and skips the stale entry)"),
            (f"BM_TimerArmCancel_Kcont/{n}", "kcont", f"BM_TimerArmCancel_PriorityQueue/{n}",
             "standalone knote<timer_filter, no_lock>: attach (heap push), detach (heap erase), tick"),
            (f"BM_TimerArmExpire_PriorityQueue/{n}", "baseline", None,
             "push; the tick pops the due entries and calls each handler"),
            (f"BM_TimerArmExpire_Kcont/{n}", "kcont", f"BM_TimerArmExpire_PriorityQueue/{n}",
             "source.arm(kn, delay) (no_lock); the tick fires them: event, activation, continuation"),
            (f"BM_TimerArmExpire_KcontMutex/{n}", "kcont", f"BM_TimerArmExpire_PriorityQueue/{n}",
             "the same with the default locks (std::mutex source, spin_lock knotes)"),
        ],
    }
    for n in (1000, 1000000)
] + [
    {
        "id": "I",
        "title": f"Echo round trips over loopback TCP, C = {c}: each connection sends 64 bytes, "
                 "the client reads every reply (echo_benchmark.cpp), per round trip; "
                 "the server thread's CPU time per reply beside it",
        "cases": [
            (f"BM_Echo_RawEpoll/{c}/real_time", "baseline", None,
             "hand-written epoll loop: epoll_wait, EPOLLET; recv until EAGAIN, each chunk sent back"),
            (f"BM_Echo_KcontLoop/{c}/real_time", "kcont", f"BM_Echo_RawEpoll/{c}/real_time",
             "examples/tcp_echo's shape: event_loop over kqueue<read_filter, user_filter> on an "
             "fd_source; a plain knote per connection reads its data count at softnet and defers "
             "the reply to process level (kqueue_schedule)"),
            (f"BM_Echo_KcontLoopUntilEagain/{c}/real_time", "kcont",
             f"BM_Echo_RawEpoll/{c}/real_time",
             "the same, reading until EAGAIN as the floor and tcp_echo do (the read filter's "
             "FIONREAD, its data, unused)"),
            (f"BM_Echo_KcontKqueue/{c}/real_time", "kcont", f"BM_Echo_RawEpoll/{c}/real_time",
             "the kqueue(2) way: a read knote per socket in the kqueue (ev::clear), the loop's "
             "handler reads e.data bytes and sends them back"),
        ],
    }
    for c in (1, 64)
]

# The targets (issue 5). kind: "le" ratio impl/base <= limit; "speedup"
# base/impl >= limit; "abs" the counter `counter` of impl <= limit; "le_both"
# as "le", with the fastest/fastest ratio held to the limit too (issue 12).
TARGETS = [
    ("A", "immediate, level known at run time <= 1.1x the function-pointer call",
     "le", "BM_ImmediateRun_KcRuntimeLevel", "BM_ImmediateRun_FunctionPointer", 1.1, None),
    ("A", "immediate, level known at compile time <= 1.1x the direct call",
     "le", "BM_ImmediateRun_KcStaticLevel", "BM_ImmediateRun_Direct", 1.1, None),
    ("B", "defer + drain <= 1.25x the raw intrusive FIFO (no_lock), on the median and on fastest/fastest",
     "le_both", "BM_DeferDrain_KcontNoLock", "BM_DeferDrain_RawFifo", 1.25, None),
    ("B", "defer + drain >= 4x faster than deque + mutex + std::function (no_lock)",
     "speedup", "BM_DeferDrain_KcontNoLock", "BM_DeferDrain_DequeMutexFunction", 4.0, None),
    ("B", "defer + drain, spin_lock, <= 1.5x the raw FIFO under the same spin_lock (issue 14)",
     "le", "BM_DeferDrain_KcontSpinLock", "BM_DeferDrain_RawFifoSpinLock", 1.5, None),
    ("B", "defer + drain, std::mutex, at least as fast as deque + std::mutex drained by swap (issue 14)",
     "speedup", "BM_DeferDrain_KcontMutex", "BM_DeferDrain_DequeMutexSwap", 1.0, None),
    ("C", "coalesced activation <= 1.5x the raw queued-flag FIFO (kqueue and source no_lock)",
     "le", "BM_Activate_KqueueNoLock", "BM_Activate_RawQueuedFlag", 1.5, None),
    ("C", "coalesced activation <= 1.5x the raw queued-flag FIFO under the same locks "
          "(spin_lock kqueue, std::mutex source)",
     "le", "BM_Activate_Kqueue", "BM_Activate_RawQueuedFlagSpinLock", 1.5, None),
    ("E", "kqueue activate + scan at least as fast as std::deque + std::mutex of event records",
     "le", "BM_ActivateScan_Kqueue", "BM_ActivateScan_DequeMutex", 1.0, None),
] + [
    ("D", f"fan-out <= 1.2x the raw intrusive list, per subscriber (K = {k}; knote_closure)",
     "le", f"BM_FanOut_KnoteClosure/{k}", f"BM_FanOut_RawList/{k}", 1.2, None)
    for k in (1, 8, 64)
] + [
    ("D", f"locked fan-out, knotes guarded by the list's lock (FreeBSD's knlist: "
          f"kcont::list_guarded knote_closures, kcont::hold_lock, handlers under the lock as "
          f"the floor's) <= 2x the raw list under the same lock (std::mutex, K = {k})",
     "le", f"BM_FanOut_KnoteClosureMutexListGuarded/{k}", f"BM_FanOut_RawListMutex/{k}", 2.0,
     None)
    for k in (1, 8, 64)
] + [
    ("D", f"the default knote policy's fan-out (knote_closure with no policy written: "
          f"kcont::list_guarded, FreeBSD's knlist discipline; no_lock klist) "
          f"<= 1.5x the raw list (K = {k})",
     "le", f"BM_FanOut_KnoteClosureDefault/{k}", f"BM_FanOut_RawList/{k}", 1.5, None)
    for k in (1, 8, 64)
] + [
    ("F", "cross-thread throughput >= 4x mutex + condvar (1 producer)",
     "speedup", "BM_CrossThread_Kcont/real_time", "BM_CrossThread_MutexCondvar/real_time", 4.0, None),
    ("H", "one tick with none due is O(1): 10^6 timers armed <= 1.5x 10^3 armed (no_lock source)",
     "le", "BM_TimerTickNoneDue_Kcont/1000000", "BM_TimerTickNoneDue_Kcont/1000", 1.5, None),
    ("F", "back-to-back wake-up p50 <= 600 ns: post to the continuation's start "
          "(counter wake_p50_ns, median over repetitions)",
     "abs", "BM_Wakeup_Kcont/real_time", None, 600.0, "wake_p50_ns"),
] + [
    ("I", f"echo round trips >= 0.9x the raw epoll loop, {c} connection{'s' if c > 1 else ''} "
          "(event_loop + plain knotes, tcp_echo's shape)",
     "speedup", f"BM_Echo_KcontLoop/{c}/real_time", f"BM_Echo_RawEpoll/{c}/real_time", 0.9, None)
    for c in (1, 64)
]

# CPU per reply beside the echo targets (issue 13: "CPU per reply beside
# it"): the server thread's CPU time per reply (counter
# server_cpu_ns_per_reply, median over repetitions), kcont / raw, no verdict.
BESIDE = [
    ("I", f"server CPU per reply, {c} connection{'s' if c > 1 else ''}: {what} vs the raw epoll loop",
     f"BM_Echo_{case}/{c}/real_time", f"BM_Echo_RawEpoll/{c}/real_time", "server_cpu_ns_per_reply")
    for c in (1, 64)
    for case, what in (("KcontLoop", "event_loop + plain knotes"),
                       ("KcontLoopUntilEagain", "the same reading until EAGAIN"),
                       ("KcontKqueue", "kqueue read knotes"))
]

# The same latency taken over the whole round trip (the wake-up, the item,
# and its completion seen back by the poster), reported next to the target
# with the machine's floor measured the same way, no verdict of its own.
ROUND_TRIP = [
    ("F", "back-to-back round trip p50 (post, run, completion seen by the poster)",
     "BM_Wakeup_Kcont/real_time", "BM_Wakeup_SpinningThread/real_time", "p50_ns"),
    ("F", "back-to-back wake-up p50, the machine's floor measured the same way",
     "BM_Wakeup_SpinningThread/real_time", None, "wake_p50_ns"),
]

# Like-for-like comparisons the issue sets no target for: the same queue
# under the same lock. Reported with their ratio, no verdict.
ALSO = [
    ("B", "defer + drain, no_lock, vs the floor + the same guarantees by hand",
     "le", "BM_DeferDrain_KcontNoLock", "BM_DeferDrain_GuardedFifo"),
    ("B", "defer + drain, std::mutex, vs deque + std::mutex + std::function popped one by one",
     "speedup", "BM_DeferDrain_KcontMutex", "BM_DeferDrain_DequeMutexFunction"),
    ("C", "coalesced activation, thread-safe kqueue vs the locked floor holding its queue lock "
          "once per post, as the kqueue's batched fan-out does",
     "le", "BM_Activate_Kqueue", "BM_Activate_RawQueuedFlagSpinLockPerPost"),
    ("C", "coalesced activation, thread-safe kqueue vs the raw queued-flag FIFO with no lock",
     "le", "BM_Activate_Kqueue", "BM_Activate_RawQueuedFlag"),
    ("C", "coalesced activation, plain knotes + the caller's FIFO vs the raw queued-flag FIFO",
     "le", "BM_Activate_KnoteFifo", "BM_Activate_RawQueuedFlag"),
    ("C", "coalesced activation, no_lock kqueue vs plain knotes + the caller's FIFO (what the "
          "kqueue adds to the klist's fan-out)",
     "le", "BM_Activate_KqueueNoLock", "BM_Activate_KnoteFifo"),
] + [
    ("D", f"{what} ({lock}K = {k})", "le", f"BM_FanOut_{case}/{k}", f"BM_FanOut_{base}/{k}")
    for what, lock, case, base in (
        ("fan-out, plain knote + separate kc (type-erased continuation) vs the raw intrusive list",
         "", "Klist", "RawList"),
        ("fan-out, kcont::spin_lock knote_closure (the opt-in per-knote field lock; no_lock "
         "klist) vs the raw list with a spin_lock per node", "", "KnoteClosureThreadSafe",
         "RawListNodeLock"),
        ("fan-out, kcont::spin_lock knote_closure (the opt-in per-knote field lock) vs the "
         "raw intrusive list", "", "KnoteClosureThreadSafe", "RawList"),
        ("fan-out, the default knote policy (list_guarded) vs single-threaded knote_closures "
         "(no_lock: what the atomic state word costs)", "", "KnoteClosureDefault",
         "KnoteClosure"),
        ("locked fan-out, kcont::spin_lock knote_closures (the list lock dropped around each "
         "handler) vs the raw list under the same lock", "std::mutex, ", "KnoteClosureMutex",
         "RawListMutex"),
        ("locked fan-out, kcont::hold_lock over kcont::spin_lock knotes (a field lock each) vs "
         "the raw list under the same lock", "std::mutex, ", "KnoteClosureMutexHoldLock",
         "RawListMutex"),
        ("locked fan-out, kcont::hold_lock, vs the raw list with a spin_lock per node under the "
         "same std::mutex", "", "KnoteClosureMutexHoldLock", "RawListMutexNodeLock"),
    )
    for k in (1, 8, 64)
] + [
    ("D", "fan-out to 8, klist (knote_closure) vs std::vector<std::function>",
     "le", "BM_FanOut_KnoteClosure/8", "BM_FanOut_StdFunctionVector/8"),
    ("D", "fan-out to 8, klist (knote_closure) vs virtual observers",
     "le", "BM_FanOut_KnoteClosure/8", "BM_FanOut_VirtualObserver/8"),
    ("D", "fan-out to 8, klist (plain knote + kc) vs std::vector<std::function>",
     "le", "BM_FanOut_Klist/8", "BM_FanOut_StdFunctionVector/8"),
    ("E", "kqueue activate + scan vs the raw queued-flag FIFO (one object)",
     "le", "BM_ActivateScan_Kqueue", "BM_ActivateScan_RawQueuedFlag"),
    ("G", "one deferral, spin_lock, vs a raw push under the same spin_lock",
     "le", "BM_DeferOne_KcontSpinLock/manual_time", "BM_DeferOne_RawFifoSpinLock/manual_time"),
    ("G", "one deferral, lock-free queue, vs a raw push under a spin_lock",
     "le", "BM_DeferOne_KcontLockFree/manual_time", "BM_DeferOne_RawFifoSpinLock/manual_time"),
    ("G", "one deferral, lock-free queue, vs kcont's spin_lock queue",
     "le", "BM_DeferOne_KcontLockFree/manual_time", "BM_DeferOne_KcontSpinLock/manual_time"),
    ("G", "raise + handler with defer_from_signal, vs raise + a handler doing the item's work",
     "le", "BM_SignalPush_Kcont/manual_time", "BM_SignalPush_EmptyHandler/manual_time"),
    ("F", "cross-thread throughput, 2 producers, vs mutex + condvar",
     "speedup", "BM_CrossThreadTwoProducers_Kcont/real_time",
     "BM_CrossThreadTwoProducers_MutexCondvar/real_time"),
    ("F", "back-to-back wake-up (mean round trip), vs mutex + condvar",
     "speedup", "BM_Wakeup_Kcont/real_time", "BM_Wakeup_MutexCondvar/real_time"),
] + [
    ("H", f"timers, {n} armed: {what}, kcont vs std::priority_queue",
     "le", f"BM_Timer{case}_Kcont/{n}", f"BM_Timer{case}_PriorityQueue/{n}")
    for n in (1000, 1000000)
    for case, what in (("TickNoneDue", "one idle tick"), ("ArmCancel", "arm + cancel"),
                       ("ArmExpire", "arm + expire"))
] + [
    ("H", "one idle tick, default timer_source (std::mutex): 10^6 armed vs 10^3",
     "le", "BM_TimerTickNoneDue_KcontMutex/1000000", "BM_TimerTickNoneDue_KcontMutex/1000"),
] + [
    ("I", f"echo round trips, {c} connection{'s' if c > 1 else ''}: {what}, vs the raw epoll loop",
     "speedup", f"BM_Echo_{case}/{c}/real_time", f"BM_Echo_RawEpoll/{c}/real_time")
    for c in (1, 64)
    for case, what in (("KcontLoopUntilEagain",
                        "event_loop + plain knotes reading until EAGAIN (tcp_echo's read)"),
                       ("KcontKqueue", "kqueue read knotes, the handler echoes"))
]


# --------------------------------------------------------------- the numbers
def metric_field(name):
    """The time a case is judged on: CPU time of the benchmark thread for the
    single-threaded cases (least disturbed by the other processes on a loaded
    machine), the measured real time for manual-time and real-time cases."""
    return "real_time" if ("/manual_time" in name or "/real_time" in name) else "cpu_time"


TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


class Case:
    def __init__(self, name):
        self.name = name
        self.agg = {}        # aggregate name -> entry
        self.error = None
        self.repetitions = 0

    def ns_per_item(self, aggregate):
        e = self.agg.get(aggregate)
        if e is None:
            return None
        items = e.get("items_per_iteration") or 1.0
        return e[metric_field(self.name)] * TO_NS[e["time_unit"]] / items

    def counter(self, name, aggregate="median"):
        e = self.agg.get(aggregate)
        return None if e is None else e.get(name)

    @property
    def ok(self):
        return self.error is None and "median" in self.agg


def collect(results):
    cases = {}
    for b in results["benchmarks"]:
        name = b.get("run_name", b["name"])
        c = cases.setdefault(name, Case(name))
        if b.get("error_occurred"):
            c.error = b.get("error_message", "error")
        if b.get("run_type") == "aggregate":
            c.agg[b["aggregate_name"]] = b
            c.repetitions = b.get("repetitions", c.repetitions)
    return cases


def fmt_ns(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def fmt_speedup(v):
    if v is None:
        return "–"
    return f"{v:.2f}× faster" if v >= 1 else f"{1 / v:.2f}× slower"


def ratio(cases, a, b, aggregate="median"):
    ca, cb = cases.get(a), cases.get(b)
    if not (ca and cb and ca.ok and cb.ok):
        return None
    x, y = ca.ns_per_item(aggregate), cb.ns_per_item(aggregate)
    if x is None or y is None or y == 0:
        return None
    return x / y


def short(name):
    return name.replace("BM_", "", 1)


def alloc_verdict(case, role):
    a = case.counter("allocs_per_item")
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return None, "–"
    text = f"{a:.4g}"
    if role == "kcont":
        return a == 0, text
    if role == "kcont-alloc":
        return a == 1, text
    return None, text


# ---------------------------------------------------------------- the report
def compile_flags(builddir):
    """The flags of the suite's compile command in compile_commands.json,
    without include paths, dependency-file and output arguments."""
    path = os.path.join(builddir, "compile_commands.json")
    with open(path) as f:
        commands = json.load(f)
    for c in commands:
        if "kcont_bench" in c.get("output", c.get("command", "")) and \
                c["file"].endswith("_benchmark.cpp"):
            args = shlex.split(c["command"])
            compiler = os.path.basename(args[0])
            out, skip = [], False
            for a in args[1:]:
                if skip:
                    skip = False
                    continue
                if a in ("-MD",):
                    continue
                if a in ("-MQ", "-MF", "-o", "-c"):
                    skip = True
                    continue
                if a.startswith(("-I", "-fdiagnostics-color", "-isystem")):
                    continue
                if a.endswith(".cpp"):
                    continue
                out.append(a)
            return compiler + " " + " ".join(out)
    return "unknown"


TOGGLE = "--toggle-collect=*(anonymous namespace)::round_*"


def count_instructions(exe, regex, only=None):
    """Runs each case matching `regex` once (one iteration) under callgrind,
    collecting only inside the suite's functions named round_* (one batch
    each; the pattern names the anonymous namespace, because a bare *round_*
    also matched glibc's strtod helper round_and_return, run while parsing
    --benchmark_min_time, and added its instructions to every case), with
    eager binding (LD_BIND_NOW) so that resolving a PLT entry on a round's
    first call is not counted either, and
    returns {case: {"instructions", "items", "per_item"}}. Instruction counts
    do not depend on the load on the machine."""
    names = subprocess.run(
        [exe, "--benchmark_list_tests=true", f"--benchmark_filter={regex}"],
        check=True, capture_output=True, text=True).stdout.split()
    counts = {}
    for name in names:
        if only is not None and name not in only:
            continue  # not in this run (KCONT_BENCH_FILTER)
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             TOGGLE, exe,
             f"--benchmark_filter=^{re.escape(name)}$",
             "--benchmark_min_time=0", "--benchmark_repetitions=1",
             "--benchmark_format=json"],
            capture_output=True, text=True,
            env=dict(os.environ, LD_BIND_NOW="1"))
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or not m:
            continue
        run = [b for b in json.loads(p.stdout)["benchmarks"]
               if b.get("run_type") == "iteration"][0]
        if run.get("error_occurred"):
            continue
        items = run["iterations"] * run.get("items_per_iteration", 1)
        ir = int(m.group(1))
        counts[run.get("run_name", name)] = {
            "instructions": ir, "items": items, "per_item": ir / items}
    return counts


def instr(results, name):
    c = results.get("kcont_instructions", {}).get(name)
    return None if c is None else c["per_item"]


def instr_ratio(results, a, b):
    x, y = instr(results, a), instr(results, b)
    return None if x is None or y is None or y == 0 else x / y


# The sizes benchmarks/sizes.hpp adds to the context ("kcont_sizeof <type>"),
# with what each field is for (benchmarks/README.md, "Object sizes", has the
# field-by-field table; tests/layout_test.cpp pins the figures on LP64).
SIZES = [
    ("kc", "a stateless lambda, no env: kc_base<T*, int>; Fn and Env cost 0 bytes"),
    ("kc_base<T*, int>", "link 8 (every queue), op 8 (a queue drains any signature), "
     "state 1 (claim protocol), level 1 (rule 1), saved status 4 (rule 2, in kc_hook's "
     "tail padding), invoke 8 (run with fresh values), saved obj 8 (rule 2); "
     "2 bytes of padding"),
    ("knote<user_filter>", "kevent fields 34 (ident, flags, sfflags, sdata, fflags, data), "
     "field lock 1, single 1, linked 1, owner flags 1 (fires under a list lock; list_guarded), state 4 (rules 6-8), "
     "klist links 16, ops 8, continuation 8, fused fire 8, the filter 1; "
     "13 bytes of padding"),
    ("knote_closure", "its kc (40) and knote<user_filter> (96) in one object"),
    ("manual_dispatcher<>", "a kcqueue (head + tail) per deferrable level; no_lock and "
     "the schedule hook cost 0 bytes"),
    ("thread_dispatcher<>", "an mpsc_queue per level (128: producers' and runner's cache "
     "lines apart), runner pointers, run slots, the stop flag on its own cache line, "
     "stop()'s mutex; each runner (its wake-up, its threads) is allocated once, at "
     "construction"),
]


def render_sizes(ctx, w):
    rows = [(name, ctx.get("kcont_sizeof " + name), why) for name, why in SIZES]
    if all(v is None for _, v, _ in rows):
        return
    w("")
    w("## Object sizes")
    w("")
    w("sizeof on this build (LP64); what each field is for: benchmarks/README.md, "
      "\"Object sizes\".")
    w("")
    w("| type | bytes | fields |")
    w("|---|---|---|")
    for name, v, why in rows:
        w(f"| `{name}` | {'?' if v is None else v} | {why} |")


def render(results, out):
    ctx = results["context"]
    cases = collect(results)
    known = set()
    w = out.append

    w("# kcont benchmark report")
    w("")
    w("Generated by `benchmarks/report.sh` from `report.json` (beside this file); "
      "every figure below is taken from that JSON. How to read it and the method: "
      "[benchmarks/README.md](../README.md).")
    w("")
    reps = max((c.repetitions for c in cases.values()), default=0)
    w("| run | |")
    w("|---|---|")
    w(f"| date | {ctx.get('date', '?')} |")
    w(f"| kcont commit | {ctx.get('kcont_commit', '?')} |")
    w(f"| host | {ctx.get('host_name', '?')} |")
    w(f"| CPU | {ctx.get('kcont_cpu_model', '?')}, {ctx.get('num_cpus', '?')} CPUs "
      f"at {ctx.get('mhz_per_cpu', '?')} MHz, frequency scaling "
      f"{'on' if ctx.get('cpu_scaling_enabled') else 'off'} |")
    la = ctx.get("load_avg")
    if la:
        w(f"| load average at start | {', '.join(f'{x:.2f}' for x in la)} "
          f"(on {ctx.get('num_cpus', '?')} CPUs: other work shared the machine) |")
    w(f"| compiler | {ctx.get('kcont_compiler', '?')} |")
    w(f"| flags | `{ctx.get('kcont_compile_flags', '?')}` |")
    w(f"| kcont contract checks | {ctx.get('kcont_contract_checks', '?')} |")
    w(f"| Google Benchmark library build | {ctx.get('library_build_type', '?')} |")
    if "kcont_callgrind" in ctx:
        w(f"| instruction counts | {ctx['kcont_callgrind']} (`{TOGGLE}`, LD_BIND_NOW=1, "
          f"one batch per case) |")
    w(f"| repetitions per case | {reps} (randomly interleaved: "
      f"{ctx.get('kcont_interleaved', '?')}); min time per repetition "
      f"{ctx.get('kcont_min_time', '?')} s |")
    w("")
    w("Times are nanoseconds per item: the median over the repetitions, then the "
      "fastest..slowest repetition. Ratio = this case's median / its baseline's "
      "median, both measured in this run. Single-threaded cases use the thread's "
      "CPU time; manual- and real-time cases use wall time.")
    w("")

    # Targets first: the summary.
    w("## Targets")
    w("")
    w("| | target | measured (median) | fastest/fastest | verdict |")
    w("|---|---|---|---|---|")
    verdicts = []
    for sid, text, kind, impl, base, limit, counter in TARGETS:
        ci = cases.get(impl)
        cb = cases.get(base) if base else None
        if ci is None or (base and cb is None):
            w(f"| {sid} | {text} | – | – | pending |")
            verdicts.append("pending")
            continue
        if not ci.ok or (cb is not None and not cb.ok):
            bad = ci if not ci.ok else cb
            w(f"| {sid} | {text} | ERROR in {short(bad.name)}: {bad.error} | – | MISS |")
            verdicts.append("MISS")
            continue
        ir = None
        if kind in ("le", "le_both"):
            m, f = ratio(cases, impl, base), ratio(cases, impl, base, "min")
            # le_both: the fastest/fastest ratio must hold the limit too.
            ok = m <= limit and (kind == "le" or f <= limit)
            meas, fast = fmt_ratio(m), fmt_ratio(f)
            ir = instr_ratio(results, impl, base)
            if ir is not None:
                meas += f" (instructions: {fmt_ratio(ir)})"
        elif kind == "speedup":
            m, f = ratio(cases, base, impl), ratio(cases, base, impl, "min")
            ok = m >= limit
            meas, fast = fmt_speedup(m), fmt_speedup(f)
            ir = instr_ratio(results, base, impl)
            if ir is not None:
                meas += f" (instructions: {ir:.2f}×)"
        else:
            m = ci.counter(counter)
            f = ci.counter(counter, "min")
            ok = m is not None and m <= limit
            meas, fast = f"{fmt_ns(m)} ns", f"{fmt_ns(f)} ns"
        v = "PASS" if ok else "MISS"
        verdicts.append(v)
        w(f"| {sid} | {text} | {meas} | {fast} | **{v}** |")
    # The round trip next to the wake-up target: information, no verdict.
    for sid, text, impl, floor, counter in ROUND_TRIP:
        ci, cf = cases.get(impl), (cases.get(floor) if floor else None)
        if ci is None or not ci.ok or ci.counter(counter) is None:
            w(f"| {sid} | {text} | pending | – | – |")
            continue
        meas = f"{fmt_ns(ci.counter(counter))} ns"
        if cf is not None and cf.ok and cf.counter(counter) is not None:
            meas += (f" (floor {fmt_ns(cf.counter(counter))} ns, "
                     f"{fmt_ratio(ci.counter(counter) / cf.counter(counter))})")
        w(f"| {sid} | {text} | {meas} | {fmt_ns(ci.counter(counter, 'min'))} ns | no target |")
    for sid, text, impl, base, counter in BESIDE:
        ci, cb = cases.get(impl), cases.get(base)
        if not (ci and cb and ci.ok and cb.ok) or ci.counter(counter) is None \
                or cb.counter(counter) is None:
            w(f"| {sid} | {text} | pending | – | no target |")
            continue
        m = [c.counter(counter) for c in (ci, cb)]
        f = [c.counter(counter, "min") for c in (ci, cb)]
        w(f"| {sid} | {text} | {fmt_ns(m[0])} ns vs {fmt_ns(m[1])} ns ({fmt_ratio(m[0] / m[1])}) | "
          f"{fmt_ns(f[0])} ns vs {fmt_ns(f[1])} ns ({fmt_ratio(f[0] / f[1])}) | no target |")
    # Allocations: one row for every kcont case measured.
    alloc_rows = []
    for sc in SCENARIOS:
        for name, role, _, _ in sc["cases"]:
            c = cases.get(name)
            if c is None or not c.ok or not role.startswith("kcont"):
                continue
            good, text = alloc_verdict(c, role)
            alloc_rows.append((name, role, good, text))
    if alloc_rows:
        bad = [r for r in alloc_rows if r[2] is False]
        zero = [r for r in alloc_rows if r[1] == "kcont"]
        maker = [r for r in alloc_rows if r[1] == "kcont-alloc"]
        v = "PASS" if not bad else "MISS"
        verdicts.append(v)
        detail = (f"{len(zero)} caller-owned kcont cases: "
                  + ", ".join(sorted({r[3] for r in zero}))
                  + " allocs/item; make_kc: "
                  + ", ".join(r[3] for r in maker) + " allocs/item")
        if bad:
            detail += "; off: " + ", ".join(f"{short(r[0])} = {r[3]}" for r in bad)
        w(f"| all | zero allocations per item, except make_kc: exactly 1 | {detail} | – | **{v}** |")
    w("")
    w(f"**{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, "
      f"{verdicts.count('pending')} pending.** Verdicts are on the medians; "
      "the fastest/fastest column divides the fastest repetitions, the least "
      "disturbed by other work on the machine.")
    w("")
    w("Also measured, no target (like for like: the same guarantees, or the same lock, on both sides):")
    w("")
    w("| | comparison | measured (median) | fastest/fastest |")
    w("|---|---|---|---|")
    for sid, text, kind, impl, base in ALSO:
        ci, cb = cases.get(impl), cases.get(base)
        if ci is None or cb is None:
            w(f"| {sid} | {text} | pending | – |")
        elif not (ci.ok and cb.ok):
            w(f"| {sid} | {text} | ERROR | – |")
        elif kind == "le":
            ir = instr_ratio(results, impl, base)
            note = "" if ir is None else f" (instructions: {fmt_ratio(ir)})"
            w(f"| {sid} | {text} | {fmt_ratio(ratio(cases, impl, base))}{note} | "
              f"{fmt_ratio(ratio(cases, impl, base, 'min'))} |")
        else:
            ir = instr_ratio(results, base, impl)
            note = "" if ir is None else f" (instructions: {ir:.2f}×)"
            w(f"| {sid} | {text} | {fmt_speedup(ratio(cases, base, impl))}{note} | "
              f"{fmt_speedup(ratio(cases, base, impl, 'min'))} |")
    w("")

    # The cases, scenario by scenario.
    w("## Cases")
    for sc in SCENARIOS:
        present = [c for c in sc["cases"] if c[0] in cases]
        for c in sc["cases"]:
            known.add(c[0])
        w("")
        w(f"### {sc['id']}. {sc['title']}")
        w("")
        if not present:
            w("Pending: " + ", ".join(f"`{c[0]}`" for c in sc["cases"])
              + " (see benchmarks/README.md).")
            continue
        counted = any(instr(results, c[0]) is not None for c in present)
        extra_h = " instructions/item (callgrind) |" if counted else ""
        extra_s = "---|" if counted else ""
        # Latency cases (F) carry p50_ns / p99_ns counters: medians over the
        # repetitions, fastest..slowest repetition.
        latency = any(cases[c[0]].counter("p50_ns") is not None for c in present)
        lat_keys = ("wake_p50_ns", "wake_p99_ns", "p50_ns", "p99_ns")
        if latency:
            extra_h += (" wake-up p50 ns (fastest..slowest) | wake-up p99 ns |"
                        " round trip p50 ns | round trip p99 ns |")
            extra_s += "---|---|---|---|"
        # Echo cases (I) carry the server thread's CPU time per reply.
        cpu = any(cases[c[0]].counter("server_cpu_ns_per_reply") is not None for c in present)
        if cpu:
            extra_h += " server CPU ns/reply (fastest..slowest) |"
            extra_s += "---|"
        w("| case | what | ns/item (median) | fastest..slowest | vs baseline | allocs/item |" + extra_h)
        w("|---|---|---|---|---|---|" + extra_s)
        for name, role, base, what in sc["cases"]:
            c = cases.get(name)
            pad = (" |" if counted else "") + (" | | | |" if latency else "") + (" |" if cpu else "")
            if c is None:
                w(f"| `{short(name)}` | {what} | pending | | | |" + pad)
                continue
            if not c.ok:
                w(f"| `{short(name)}` | {what} | ERROR: {c.error} | | | |" + pad)
                continue
            r = ratio(cases, name, base) if base else None
            vs = f"{fmt_ratio(r)} {short(base)}" if r is not None else ("baseline" if base is None else "–")
            _, allocs = alloc_verdict(c, role)
            # Latency cases (F) report their percentiles as counters.

            extra = ""
            if counted:
                n = instr(results, name)
                extra = f" {n:.1f} |" if n is not None else " – |"
            if latency:
                for k in lat_keys:
                    v = c.counter(k)
                    extra += (" – |" if v is None else
                              f" {fmt_ns(v)} ({fmt_ns(c.counter(k, 'min'))}.."
                              f"{fmt_ns(c.counter(k, 'max'))}) |")
            if cpu:
                v = c.counter("server_cpu_ns_per_reply")
                extra += (" – |" if v is None else
                          f" {fmt_ns(v)} ({fmt_ns(c.counter('server_cpu_ns_per_reply', 'min'))}.."
                          f"{fmt_ns(c.counter('server_cpu_ns_per_reply', 'max'))}) |")
            w(f"| `{short(name)}` | {what} | {fmt_ns(c.ns_per_item('median'))} | "
              f"{fmt_ns(c.ns_per_item('min'))}..{fmt_ns(c.ns_per_item('max'))} | "
              f"{vs} | {allocs} |" + extra)

    others = [c for n, c in sorted(cases.items()) if n not in known]
    if others:
        w("")
        w("### Other cases (not yet described in report.py)")
        w("")
        w("| case | ns/item (median) | fastest..slowest | allocs/item |")
        w("|---|---|---|---|")
        for c in others:
            if not c.ok:
                w(f"| `{short(c.name)}` | ERROR: {c.error} | | |")
                continue
            _, allocs = alloc_verdict(c, "baseline")
            w(f"| `{short(c.name)}` | {fmt_ns(c.ns_per_item('median'))} | "
              f"{fmt_ns(c.ns_per_item('min'))}..{fmt_ns(c.ns_per_item('max'))} | {allocs} |")
    render_sizes(ctx, w)
    w("")
    return verdicts


def main(argv):
    if len(argv) >= 4 and argv[1] == "annotate":
        # Google Benchmark's --benchmark_context cannot carry a value with '='
        # or ',' in it (compile flags have both): add them to the JSON here.
        results = load_benchmark_results(argv[2])
        results["context"]["kcont_compile_flags"] = compile_flags(argv[3])
        for kv in argv[4:]:
            k, _, v = kv.partition("=")
            results["context"][k] = v
        with open(argv[2], "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        return 0
    if len(argv) == 5 and argv[1] == "count":
        results = load_benchmark_results(argv[2])
        measured = {b.get("run_name", b["name"]) for b in results["benchmarks"]}
        results["kcont_instructions"] = count_instructions(argv[3], argv[4], measured)
        v = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
        results["context"]["kcont_callgrind"] = v.stdout.strip()
        with open(argv[2], "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        return 0
    if len(argv) == 4 and argv[1] == "render":
        results = load_benchmark_results(argv[2])
        out = []
        render(results, out)
        with open(argv[3], "w") as f:
            f.write("\n".join(out))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
