"""`python -m benchmarks.report`: rewrite README's "Performance" section from benchmarks/results/.

Everything between the two markers below in README.md is replaced by, for each machine folder,
its speed, quality, whole-frame, crossover, detection, gating, pipeline, CPU-scaling and throughput tables and plots (the Markdown
each benchmark wrote).
"""
from __future__ import annotations

import re
from pathlib import Path

from .common import RESULTS_ROOT

START, END = "<!-- performance:start -->", "<!-- performance:end -->"
KINDS = ("speed", "quality", "frames", "crossover", "detection", "gating", "pipeline", "cpu_scaling", "throughput",
         "triton")


def section(results_root: Path = RESULTS_ROOT, readme_dir: Path | None = None) -> str:
    readme_dir = readme_dir or results_root.parent.parent
    parts = []
    for machine in sorted(p for p in results_root.iterdir() if p.is_dir()) if results_root.is_dir() else []:
        parts.append(f"### Machine `{machine.name}`\n")
        for kind in KINDS:
            for md in sorted(machine.glob(f"{kind}*.md")):  # e.g. speed_dic.md, speed_pfsr.md
                # demote the file's own headings below the machine heading
                parts.append(re.sub(r"^# ", "#### ", md.read_text(), flags=re.M))
                png = md.with_suffix(".png")
                if png.is_file():
                    parts.append(f"![{md.stem} on {machine.name}]({png.relative_to(readme_dir).as_posix()})\n")
    return "\n".join(parts) if parts else "No results yet: run the benchmark commands.\n"


def update_readme(readme: Path, results_root: Path = RESULTS_ROOT) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{section(results_root, readme.parent)}\n{END}{tail}")


def main() -> int:
    readme = RESULTS_ROOT.parent.parent / "README.md"
    update_readme(readme)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
