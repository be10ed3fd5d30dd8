"""What every benchmark's report needs: the CPU it ran on, and its section of RESULTS.md replaced
in place. Imported by the benchmark scripts (run from this folder, so it is on their path)."""
from __future__ import annotations

import platform
import re
from pathlib import Path


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
