"""spacy_el.models' fork hooks: `nlp.pipe(n_process=2)` workers do not outlive a killed parent
(Linux), while a plain `os.fork` child is left alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

#: A parent that feeds spaCy's workers four texts, prints their pids (and a plain fork's), then
#: blocks in its text generator, as a parent would be mid-stream when killed.
PARENT = """
import json, multiprocessing, os, sys, time
import spacy
import spacy_el  # installs the fork hooks

plain = os.fork()
if plain == 0:  # a plain fork (as a daemon's) is not tied to the parent
    time.sleep(600)  # killed by the test
    os._exit(0)
nlp = spacy.blank("en")
nlp.add_pipe("sentencizer")

def texts():
    yield from ["One text. Two sentences."] * 4
    print(json.dumps({"workers": [p.pid for p in multiprocessing.active_children()], "plain": plain}), flush=True)
    time.sleep(120)
    yield "never reached"

for doc in nlp.pipe(texts(), n_process=2, batch_size=1):
    pass
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return False
    return "Z" not in state.split()[1]


def test_workers_die_with_a_killed_parent_and_plain_forks_do_not():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line, "the parent printed nothing"
        pids = json.loads(line)
        assert len(pids["workers"]) == 2 and all(_alive(p) for p in pids["workers"])
        parent.kill()  # SIGKILL: no cleanup in the parent
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids["workers"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids["workers"]), "spaCy's workers outlived their killed parent"
        assert _alive(pids["plain"]), "a plain os.fork child was killed with the parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in (pids.get("workers", []) + [pids.get("plain")]) if "pids" in locals() else []:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_die_with_parent_is_a_no_op_outside_linux(monkeypatch):
    from spacy_el import models

    monkeypatch.setattr(models.sys, "platform", "darwin")
    assert models.die_with_parent() is False


def test_onnx_runtime_threads_follow_omp_num_threads(monkeypatch):
    from spacy_el.models import runtime_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime_threads(None) == 0 and runtime_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime_threads(None) == 1 and runtime_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    assert runtime_threads(None) == 0
