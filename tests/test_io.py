"""Atomic saves: no stray temporary files after a killed save, concurrent saves of one directory."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from spacy_el.io import atomic_dir, atomic_write


def test_a_killed_saves_leftovers_are_removed_by_the_next_save(tmp_path):
    # a process that dies (SIGKILL-like: os._exit) in the middle of writing
    code = ("import os, sys; from spacy_el.io import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n    (tmp / 'part').write_text('x'); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "index")])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.")]  # the leftover
    with atomic_dir(tmp_path / "index") as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    with atomic_write(tmp_path / "f.txt") as f:
        f.write("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "index"]


def test_concurrent_saves_of_one_directory_all_succeed(tmp_path):
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            for _ in range(20):
                with atomic_dir(tmp_path / "index") as tmp:
                    (tmp / "a").write_text(str(i))
                    (tmp / "b").write_text(str(i))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    index = Path(tmp_path / "index")
    assert (index / "a").read_text() == (index / "b").read_text()  # one save's files, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert os.listdir(index) == sorted(os.listdir(index)) or set(os.listdir(index)) == {"a", "b"}
