#!/usr/bin/env python3
"""examples/tcp_echo under load: every reply checked byte for byte.

Usage: tcp_echo_test.py path/to/tcp_echo

Run 1 (--idle-ms 1000), 32 concurrent connections on one selector loop:
  echo    ping-pong clients: random messages of 1 B .. 64 KiB, some split over
          several sends (each piece's echo awaited before the next, so the
          server sees it alone); then shutdown(SHUT_WR) and wait for the
          server's close (recv 0): counted "closed by peer".
  stream  pipelined clients: 6 MiB sent as fast as the socket takes it, read
          only when a send would block, so the server's replies meet a full
          buffer (its write knote, its reading paused); then as echo.
  reset   clients that exchange 0-2 messages, send part of another and close
          abruptly (SO_LINGER {1, 0}: an RST mid-stream): "reset".
  idle    clients that exchange 0-1 message and go quiet: the server must
          close them (recv 0), never before the idle time since the client's
          last send (or its connect): "closed idle".
Then the test waits for a monitor line saying every connection was accepted
and none is open (the server's own view: no fixed sleep), stops the server
with SIGTERM and checks its totals line against what the clients did; bytes
echoed must lie between what the clients saw echoed and that plus what the
reset clients left in flight.
Run 2 (--max-clients 2, SIGINT): a third concurrent connection is refused.
No fixed sleeps: every wait polls with a deadline of seconds.
"""
import os
import queue
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

IDLE_S = 1.0
TIMEOUT = 30.0  # per wait: generous for sanitizer builds on a loaded machine

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


class Server:
    def __init__(self, exe, *args):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([exe, *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = queue.Queue()
        self.all = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line(TIMEOUT)
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)", first or "")
        if not m:
            self.kill()
            sys.exit(f"first line is not 'listening on 127.0.0.1:PORT': {first!r}")
        self.port = int(m.group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is not None:
            self.all.append(line)
        return line

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.line(deadline - time.monotonic())
            if line is None:
                return None
            if re.search(pattern, line):
                return line
        return None

    def stop(self, sig):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            fail(f"the server did not stop on signal {sig}")
            return None
        totals = None
        while (line := self.line(TIMEOUT)) is not None:
            if line.startswith("totals:"):
                totals = line
        self.err.seek(0)
        err = self.err.read().decode(errors="replace")
        if rc != 0 or err.strip():
            fail(f"the server exited with {rc}; its stderr:\n{err}")
        return totals

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connect: the window it advertises stays small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


class Client:
    """One connection's script: pieces to send, each awaited (ping-pong) or not."""

    def __init__(self, kind, port, pieces, pipelined=False, then=None):
        self.kind = kind
        self.t_last = time.monotonic()  # before connect: the server's clock starts later
        self.sock = connect(port, 16384 if pipelined else None)
        self.pieces = pieces      # bytes objects, sent in order
        self.pipelined = pipelined
        self.then = then          # None (shut down, expect close), "reset", "idle"
        self.expect = bytearray() # what the server must echo, in order
        self.got = 0              # bytes echoed and checked
        self.out = b""            # the piece being sent
        self.done = False
        self.in_flight = 0        # bytes of the last piece of a reset client

    def want_write(self):
        if self.done:
            return False
        if self.out:
            return True
        if not self.pieces:
            return False
        return self.pipelined or self.got == len(self.expect)

    def on_writable(self):
        if not self.out and self.pieces:
            if self.then == "reset" and len(self.pieces) == 1:
                return self.reset()
            self.out = self.pieces.pop(0)
            self.expect += self.out
        self.t_last = time.monotonic()  # before the send: the server reads later
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        self.out = self.out[n:]
        if not self.out and not self.pieces and self.then is None:
            self.sock.shutdown(socket.SHUT_WR)

    def reset(self):
        # Part of the last piece, then an RST: SO_LINGER {on, 0 s} aborts.
        piece = self.pieces.pop(0)
        self.in_flight = len(piece)
        try:
            self.sock.send(piece)
        except BlockingIOError:
            pass
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.finish()

    def on_readable(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            fail(f"{self.kind} client: reset by the server")
            return self.finish()
        if not data:
            return self.on_eof()
        want = self.expect[self.got:self.got + len(data)]
        if data != want:
            fail(f"{self.kind} client: byte {self.got}: echo differs "
                 f"(got {len(data)} bytes, {len(self.expect) - self.got} expected)")
            return self.finish()
        self.got += len(data)

    def on_eof(self):
        now = time.monotonic()
        if self.got != len(self.expect) or self.out or self.pieces:
            fail(f"{self.kind} client: closed by the server with "
                 f"{len(self.expect) - self.got} bytes not echoed")
        elif self.then == "idle" and now - self.t_last < IDLE_S:
            fail(f"idle client closed {now - self.t_last:.3f} s after its last send "
                 f"(idle time {IDLE_S} s)")
        self.finish()

    def finish(self):
        self.done = True
        self.sock.close()


def messages(rng, n):
    """n random messages of 1 B .. 64 KiB, some split into 2-4 pieces."""
    pieces = []
    for _ in range(n):
        size = rng.choice([1, 2, 63, 64, 1000, 4096, 65535, 65536, rng.randint(1, 65536)])
        msg = rng.randbytes(size)
        if size >= 4 and rng.random() < 0.4:
            cuts = sorted(rng.sample(range(1, size), rng.randint(1, 3)))
            pieces += [msg[a:b] for a, b in zip([0] + cuts, cuts + [size])]
        else:
            pieces.append(msg)
    return pieces


def run_clients(clients, timeout):
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    while any(not c.done for c in clients):
        if time.monotonic() > deadline:
            for c in clients:
                if not c.done:
                    fail(f"{c.kind} client: stuck ({c.got}/{len(c.expect)} echoed)")
            return
        for c in clients:
            if c.done:
                continue
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.want_write() else 0)
            sel.modify(c.sock, events, c)
        for key, mask in sel.select(timeout=1.0):
            c = key.data
            # A pipelined client reads only when its send would block or all
            # is sent, so the server's replies meet a full buffer.
            if mask & selectors.EVENT_WRITE and not c.done:
                c.on_writable()
            if mask & selectors.EVENT_READ and not c.done and \
                    (not c.pipelined or not c.want_write() or not mask & selectors.EVENT_WRITE):
                c.on_readable()
        for c in clients:
            if c.done:
                try:
                    sel.unregister(c.sock)
                except (KeyError, ValueError):
                    pass


def totals_of(line):
    m = re.fullmatch(r"totals: (\d+) accepted, (\d+) closed by peer, (\d+) reset, "
                     r"(\d+) closed idle, (\d+) refused, (\d+) open at stop, "
                     r"(\d+) bytes echoed", line or "")
    if not m:
        fail(f"no totals line: {line!r}")
        return None
    return [int(x) for x in m.groups()]


def load_run(exe, rng):
    srv = Server(exe, "--port", "0", "--idle-ms", str(int(IDLE_S * 1000)))
    try:
        clients = []
        for _ in range(18):
            clients.append(Client("echo", srv.port, messages(rng, rng.randint(2, 8))))
        for _ in range(2):
            stream = [rng.randbytes(65536) for _ in range(96)]
            clients.append(Client("stream", srv.port, stream, pipelined=True))
        for i in range(6):
            pieces = messages(rng, i % 3) + [rng.randbytes(rng.randint(1, 65536))]
            clients.append(Client("reset", srv.port, pieces, then="reset"))
        for i in range(6):
            clients.append(Client("idle", srv.port, messages(rng, i % 2), then="idle"))
        run_clients(clients, TIMEOUT)
        n = len(clients)
        if not srv.wait_for(rf"now {n} accepted, 0 open,", TIMEOUT):
            fail(f"the monitor never reported {n} accepted, 0 open")
        t = totals_of(srv.stop(signal.SIGTERM))
    finally:
        srv.kill()
    if t is None:
        return
    kinds = [c.kind for c in clients]
    graceful = kinds.count("echo") + kinds.count("stream")
    echoed = sum(c.got for c in clients)
    in_flight = sum(c.in_flight for c in clients)
    want = [n, graceful, kinds.count("reset"), kinds.count("idle"), 0, 0]
    if t[:6] != want:
        fail(f"totals {t[:6]} (accepted, peer, reset, idle, refused, open), expected {want}")
    if not echoed <= t[6] <= echoed + in_flight:
        fail(f"{t[6]} bytes echoed; the clients saw {echoed} echoed, "
             f"{in_flight} more were in flight when they reset")
    monitor = [x for x in srv.all if x.startswith("monitor:")]
    print(f"load run: {n} connections, {echoed} bytes checked, {len(monitor)} monitor "
          f"reports; {srv.all[-1]}")


def refuse_run(exe):
    srv = Server(exe, "--max-clients", "2")
    try:
        a, b = connect(srv.port), connect(srv.port)
        for s in (a, b):  # a round trip each: both are accepted and watched
            s.setblocking(True)
            s.sendall(b"ping")
            if s.recv(16) != b"ping":
                fail("max-clients run: no echo")
        c = connect(srv.port)
        c.setblocking(True)
        try:
            if c.recv(16) != b"":
                fail("max-clients run: the third connection was served")
        except ConnectionResetError:
            pass
        for s in (a, b, c):
            s.close()
        if not srv.wait_for(r"now 3 accepted, 0 open,", TIMEOUT):
            fail("max-clients run: the monitor never reported 3 accepted, 0 open")
        t = totals_of(srv.stop(signal.SIGINT))
    finally:
        srv.kill()
    if t is not None and t != [3, 2, 0, 0, 1, 0, 8]:
        fail(f"max-clients run: totals {t}, expected [3, 2, 0, 0, 1, 0, 8]")
    print(f"max-clients run: {srv.all[-1]}")


def main():
    exe = sys.argv[1]
    seed = int(os.environ.get("TCP_ECHO_SEED", "13"))
    print(f"seed {seed} (TCP_ECHO_SEED)")
    start = time.monotonic()
    load_run(exe, random.Random(seed))
    refuse_run(exe)
    print(f"{time.monotonic() - start:.1f} s")
    if failures:
        sys.exit(f"{len(failures)} failure(s)")
    print("tcp_echo: every reply checked, totals as the clients did")


if __name__ == "__main__":
    main()
