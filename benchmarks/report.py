"""What every benchmark needs: the shared data folder (`--data`), the CPU it ran on, and its section
of RESULTS.md replaced in place. Imported by the benchmark scripts (run from this folder, so it is
on their path)."""
from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path


#: The data folder of a clone that sits beside `../shared/`: the default of every `--data`.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir() -> Path:
    """The `--data DIR` of the command line (default `DEFAULT_DATA`), read before the script's own
    parser because the scripts' file constants are built from it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data", type=Path, default=DEFAULT_DATA)
    return pre.parse_known_args()[0].data


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    """Declare `--data` on a script's parser, so that `--help` shows it and its default."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder: corpora, dictionaries, KBs (default: ../shared/data beside "
                             f"this clone, {DEFAULT_DATA})")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the processor or architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(path: Path, section: str, block: str) -> None:
    """Replace (or append) the `section` heading's part of the markdown file at `path` (up to the
    next `## ` heading) with `block`, leaving the other sections alone."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
