"""Generator processes that fail on purpose, for tests/test_online.py (spawned processes import
them by module name; the test process's ``sys.path`` reaches them). Each wraps the real
:func:`kryflow.generation.generator_main`; what it does is steered by environment variables, which
a spawned process inherits."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kryflow.generation import generator_main


class _Stop(Exception):
    pass


class _Queue:
    """The real queue, with a hook after every message handed over."""

    def __init__(self, q, after):
        self.q, self.after = q, after

    def put(self, msg, timeout=None):
        self.q.put(msg, timeout=timeout)
        self.after(msg)

    def close(self):
        self.q.close()

    def join_thread(self):
        self.q.join_thread()


def crash_once(k, spec, start, q, parent):
    """Exits with code 3 (without a word) after handing over index ``KRYFLOW_TEST_CRASH_AT``, the
    first time only (a marker file ``KRYFLOW_TEST_MARKER`` remembers)."""
    at, marker = int(os.environ["KRYFLOW_TEST_CRASH_AT"]), Path(os.environ["KRYFLOW_TEST_MARKER"])

    def after(msg):
        if msg[0] in ("sample", "rejected") and msg[2] == at and not marker.exists():
            marker.write_text("crashed")
            q.close()
            q.join_thread()  # what was handed over is in the pipe
            os._exit(3)

    generator_main(k, spec, start, _Queue(q, after), parent)


def crash_always(k, spec, start, q, parent):
    """Raises before making anything: the error is handed over, the process exits with code 1."""
    generator_main(k, {**spec, "family": "no_such_family"}, start, q, parent)


def stall(k, spec, start, q, parent):
    """Hands over two samples, then never another (alive, but stuck)."""
    seen = []

    def after(msg):
        if msg[0] == "sample":
            seen.append(msg[2])
            if len(seen) == 2:
                while True:
                    time.sleep(60)

    generator_main(k, spec, start, _Queue(q, after), parent)
