"""Small file helpers shared by every job: atomic writes and line-numbered readers."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Sequence

import srsly

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (see `locked`)
    fcntl = None  # type: ignore[assignment]


class InputError(ValueError):
    """Bad user input: the message names the file, line or setting and how to fix it."""


def _temp_prefix(path: Path) -> str:
    """Temporary siblings of `path` are named `.NAME.PID.*.tmp`: a later save can tell the
    leftovers of a killed process (its pid is gone) from a live concurrent save."""
    return f".{path.name}.{os.getpid()}."


def _remove_stale_siblings(path: Path) -> None:
    """Delete temporary siblings of `path` left by processes that no longer exist (a job killed
    while saving cannot clean up after itself)."""
    for other in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = other.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    other.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on `directory` itself (flock on its descriptor: no lock file is left
    behind), so concurrent saves into it swap their results one at a time."""
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory `path` (an index, a pipeline) for a whole
    read-modify-replace, so two jobs that change it in place run one after the other: without
    it both read the old directory and the second save drops the first job's change. A job that
    finds the lock taken says so on stderr and waits.

    The lock is `flock` on the directory itself (no lock file to leave behind). A save replaces
    the directory by a new one, so a job that waited holds the lock of the directory that was
    replaced: it then locks the current one instead. Without `fcntl` (Windows) nothing is locked
    and a warning says to run one job at a time. A missing `path` is not locked (the caller's
    read reports it)."""
    path = Path(path)
    if fcntl is None:
        warnings.warn(f"{path}: cannot lock it on this system (no fcntl); run one job at a time that changes it")
        yield
        return
    fd, said = None, False
    for _ in range(200):  # between a save's two renames the path is briefly missing: retry
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            time.sleep(0.01)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                print(f"{path}: another job is changing it; waiting for it to finish", file=sys.stderr, flush=True)
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the directory was replaced while we waited: lock the new one
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside `path` and rename it into place only on success,
    so a killed job never leaves a half-written file behind (and the next save removes the
    temporary file a killed job leaves)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the path of a file to write")
    _make_parent(path)
    _remove_stale_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` whole.
    Concurrent saves of one `path` each write their own temporary directory and swap it in
    under a lock on the parent directory, so the last one wins and none fails; temporary
    directories of killed saves are removed by the next save."""
    path = Path(path)
    if path.is_file():  # one stat: a concurrent save may be swapping the directory right now
        raise InputError(f"{path}: is a file; give the path of a directory to write")
    _make_parent(path)
    _remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        with _dir_lock(path.parent):
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
                os.replace(path, old)  # an empty directory is replaced by a rename
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _make_parent(path: Path) -> None:
    """Create `path`'s parent directories, or say which part of the path is a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise InputError(f"{path}: cannot write it, {blocking} is a file, not a directory") from None


def check_output_dir(path: str | Path, marker: str, what: str, force: bool = False) -> None:
    """Refuse to replace a directory this kind of job did not write: a job that writes OUTPUT
    whole deletes whatever else was in it, so an existing non-empty OUTPUT must hold `marker`
    (the file every `what` holds, e.g. `config.cfg` of a pipeline), unless `force`. A file at
    `path` is refused too."""
    path = Path(path)
    if path.is_file():
        raise InputError(f"{path}: is a file; give the path of a directory to write")
    if force or not path.is_dir() or (path / marker).exists():
        return
    found = sorted(p.name for p in path.iterdir())
    if found:
        shown = ", ".join(found[:5]) + (f", … ({len(found)} entries)" if len(found) > 5 else "")
        raise InputError(f"{path}: exists and holds {shown} but no {marker}, so it is not {what}; writing it would "
                         "delete them: give a new or empty directory, or pass --force to replace it")


def _umask() -> int:
    """The process umask (read by setting and restoring it), so atomic files get normal modes."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_lines(path: str | Path, start: int = 0, end: int | None = None,
               first_line: int = 1) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline), with a clear error on bad UTF-8.
    `start`/`end`: only the lines that begin in that byte range (`start` at a line start),
    numbered from `first_line`, the number of the line at `start`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    with path.open("rb") as f:
        f.seek(start)
        offset = start
        for lineno, raw in enumerate(f, start=first_line):
            if end is not None and offset >= end:
                return
            offset += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}, line {lineno}: not valid UTF-8 ({err.reason} at byte {err.start}); "
                    "re-encode the file as UTF-8"
                ) from None
            yield lineno, line.rstrip("\r\n")


def dir_to_bytes(save: Callable[[Path], None]) -> bytes:
    """What `save(directory)` writes, as one msgpack map of relative path → file bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "part"
        save(root)
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return srsly.msgpack_dumps(files)


def bytes_to_dir(data: bytes, root: Path) -> None:
    """Write the files of `dir_to_bytes` under `root` (refusing paths that leave it)."""
    for rel, content in srsly.msgpack_loads(data).items():
        target = (root / rel).resolve()
        if os.path.commonpath([target, root.resolve()]) != str(root.resolve()):
            raise InputError(f"serialized directory holds a file outside it ({rel!r}); refusing to unpack")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def available_memory() -> Optional[int]:
    """Bytes of memory available without swapping (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def prefetch_files(paths: Sequence[Path], chunk_bytes: int = 16 << 20) -> Optional[threading.Thread]:
    """Read `paths` sequentially in a background thread, so that memory maps of them find their
    pages in the page cache instead of reading them at random from disk on first touch.
    Returns the thread (join it to wait), or None when there is nothing to read or the files
    exceed the available memory (they would push their own first pages out before the last are
    read). The page cache gives way to processes that need the memory, so a read never costs RAM."""
    sizes = {Path(p): Path(p).stat().st_size for p in paths if Path(p).is_file()}
    paths = sorted(sizes, key=sizes.get)
    size = sum(sizes.values())
    available = available_memory()
    if not size or (available is not None and size > available):
        return None

    def read() -> None:
        # smallest first, so the first searches find the small files every search touches (the
        # inverted lists, the table's columns), then the largest; pages read once sit on the
        # kernel's inactive list, where reading the large file pushes out the small ones, so these
        # are read again last (a second touch keeps them)
        buffer = bytearray(chunk_bytes)
        for path in paths + paths[:-1]:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass

    thread = threading.Thread(target=read, name="prefetch index files", daemon=True)
    thread.start()
    return thread
