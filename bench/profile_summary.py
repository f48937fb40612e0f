"""Summarize a py-spy raw profile (``bench/fanout.py --profile DIR``).

Each line of py-spy's ``--format raw`` output is one call stack (frames
joined by ``;``, outermost first) and its sample count. This prints the
functions with the most samples on top of the stack (self) and anywhere in
it (inclusive), as percentages of all samples or of those under ``--under``:

    .venv/bin/python bench/profile_summary.py /tmp/prof/torchannels-websocket.txt
    .venv/bin/python bench/profile_summary.py FILE --under Hub._dispatch --top 15
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "Hub._dispatch (torchannels/hub.py:159)": drop the line number so all lines
# of one function count together.
_LINE = re.compile(r":\d+\)$")


def load(path: Path, under: str | None) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        if under is not None:
            starts = [i for i, f in enumerate(frames) if f.startswith(under + " ")]
            if not starts:
                continue
            frames = frames[starts[0] :]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="a py-spy --format raw file")
    parser.add_argument("--under", help="only stacks through this function (e.g. Hub._dispatch)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    own, inclusive, total = load(args.profile, args.under)
    scope = f"under {args.under}" if args.under else "all"
    print(f"{args.profile}: {total} samples ({scope})")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"\n{title:>9}  function")
        for frame, n in counts.most_common(args.top):
            print(f"{n / max(total, 1):9.1%}  {frame}")


if __name__ == "__main__":
    main()
