"""Summarize a ``bench.run --profile`` capture (py-spy raw/collapsed stacks, ``--idle``, so
waits on the database count): where the pool processes' wall time went.

    python -m bench.profile_summary /tmp/prof/initial.txt [--top 25] [--focus load_chunk_task]

Only stacks that pass through ``--focus`` (default: the load_chunk task) are counted, so an
idle pool process waiting for work does not dilute the picture. "inclusive" is the share of
those samples with one of chordload's functions anywhere on the stack (library frames are
left out there: they sit under everything); "self" is the share with a function on top.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


_OWN = ("shared/", "workers/", "coordinator/")
_REPO = f"{Path(__file__).resolve().parent.parent}/"
FOCUS = "load_chunk_task (workers/tasks.py"  # py-spy's frame of the chunk task


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", _REPO, "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(path: Path, focus: str, top: int) -> str:
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if focus and not any(focus in f for f in frames):
            continue
        n = int(count)
        total += n
        names = [_name(f) for f in frames]
        for name in set(names):
            if name.split(" (", 1)[-1].startswith(_OWN):
                inclusive[name] += n
        if names:
            self_time[names[-1]] += n
    if not total:
        return f"{path}: no samples through {focus!r}"
    out = [f"{path}: {total} samples through {focus!r}", "", "inclusive  chordload function"]
    out += [f"{100 * n / total:8.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self       function"]
    out += [f"{100 * n / total:8.1f}%  {name}" for name, n in self_time.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--focus",
        default=FOCUS,
        help="count only stacks with a frame containing this text",
    )
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarize(path, args.focus, args.top))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
