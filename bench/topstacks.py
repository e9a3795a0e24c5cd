"""Summarize py-spy ``--format raw`` (collapsed) output: self and inclusive time per frame.

python -m bench.topstacks PROFILE.txt [N]
"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        c = int(count)
        frames = stack.split(";")
        total += c
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    print(f"total samples {total}")
    print("-- inclusive")
    for f, c in incl.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f}")
    print("-- self")
    for f, c in self_t.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
