"""math-verify in persistent worker subprocesses, with a hard time bound per comparison.

math-verify's own timeouts use `signal.alarm`, which only works on a process's main thread,
and no signal interrupts a long C call (a huge sympy power). So comparisons run in a child
process, on its main thread, under a soft `setitimer` alarm; the parent waits on the pipe with
its own deadline and kills the child when that passes. The parent side is thread-safe: a
small pool hands each caller its own worker; a dead or killed worker is replaced on next use.

Protocol (JSON lines): the child prints "ready"; each request is
`{"timeout": s, "pairs": [[gold, pred], ...]}` and each pair is answered as soon as it is done
with `[index, result]`, result one of "true", "false", "timeout", "error: <type>".
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

POOL_SIZE = 2  # workers per process (each holds sympy, ~150 MB)
STARTUP_TIMEOUT_S = 120.0  # import of sympy/antlr on a cold, busy machine
MEMORY_LIMIT_BYTES = 4 << 30  # address space of a worker; a runaway fails instead of swapping
_SOFT_FRACTION = 0.9  # the child gives up at this fraction of the bound; the parent kills at 1.0
_CHILD_CMD = "from lema.verify_worker import serve; serve()"


class _ItemTimeout(BaseException):
    """Raised by the child's alarm; a BaseException so math-verify's `except Exception` lets
    it through."""


class VerifyWorker:
    """One child process and its pipes (used by one thread at a time, via the pool)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CMD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._buf = b""
        try:
            line = self._readline(time.monotonic() + STARTUP_TIMEOUT_S)
        except EOFError:
            line = None
        if line != "ready":
            self.kill()
            raise RuntimeError(
                f"math-verify worker did not start (got {line!r}, exit code {self.proc.poll()})"
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def _readline(self, deadline: float) -> str | None:
        """The next line, None past the deadline; EOFError when the child is gone."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def verify(self, pairs: list[tuple[str, str]], timeout_s: float) -> list[str]:
        """Results for a prefix of `pairs` (all of them unless the child died or was killed;
        then the last result is "timeout" or "error: worker died")."""
        assert self.proc.stdin is not None
        request = json.dumps({"timeout": timeout_s, "pairs": pairs}) + "\n"
        results: list[str] = []
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
            while len(results) < len(pairs):
                line = self._readline(time.monotonic() + timeout_s)
                if line is None:
                    self.kill()
                    return results + ["timeout"]
                index, result = json.loads(line)
                assert index == len(results), f"worker answered pair {index}, expected {len(results)}"
                results.append(result)
        except (BrokenPipeError, EOFError):
            self.kill()
            return results + ["error: worker died"]
        return results


class WorkerPool:
    """Up to `size` workers shared by the threads of one process (reset after a fork)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cond = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        self._idle: list[VerifyWorker] = []
        self._count = 0
        self._pid = os.getpid()

    def acquire(self) -> VerifyWorker:
        with self._cond:
            if self._pid != os.getpid():  # a forked child must not share its parent's pipes
                self._reset()
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return VerifyWorker()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, worker: VerifyWorker) -> None:
        with self._cond:
            if worker.alive and self._pid == os.getpid():
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            if self._pid == os.getpid():
                for worker in self._idle:
                    worker.kill()
            self._reset()


_POOL = WorkerPool(POOL_SIZE)
atexit.register(_POOL.close)


def verify_latex_pairs(pairs: list[tuple[str, str]], timeout_s: float) -> list[str]:
    """math-verify on (gold, pred) LaTeX answers, each bounded by `timeout_s` seconds.

    Returns:
        Per pair "true", "false", "timeout" or "error: <reason>".
    """
    results: list[str] = []
    while len(results) < len(pairs):
        worker = _POOL.acquire()
        try:
            results += worker.verify(pairs[len(results):], timeout_s)
        finally:
            _POOL.release(worker)
    return results


def _verify_one(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)  # type: ignore[arg-type]
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)  # type: ignore[arg-type]
    return verify(gold_parsed, pred_parsed, timeout_seconds=None)


def _on_alarm(signum: int, frame: object) -> None:
    raise _ItemTimeout


def serve() -> None:
    """The child's main loop: answer requests from stdin until it closes."""
    import logging
    import resource

    import math_verify  # noqa: F401  (imported before "ready", so no call pays for it)

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # timeouts are ours to report
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ValueError, OSError):
        pass  # a lower hard limit is already in place
    signal.signal(signal.SIGALRM, _on_alarm)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        soft = max(0.01, request["timeout"] * _SOFT_FRACTION)
        for i, (gold, pred) in enumerate(request["pairs"]):
            try:
                signal.setitimer(signal.ITIMER_REAL, soft)
                try:
                    result = "true" if _verify_one(gold, pred) else "false"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _ItemTimeout:
                result = "timeout"
            except Exception as e:  # noqa: BLE001  (a bad expression is a verdict, not a crash)
                result = f"error: {type(e).__name__}"
            out.write(json.dumps([i, result]) + "\n")
            out.flush()
