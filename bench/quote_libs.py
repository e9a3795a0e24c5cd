"""``split_reply`` against the reply parsers on PyPI, on the same thread corpus (issue 18).

Not a dependency of the project: install the libraries in a scratch environment and put its
site-packages on ``PYTHONPATH`` (or ``--site``); absent ones are skipped.
``python -m bench.quote_libs --site /tmp/qlibs/lib/python3.11/site-packages``
prints, per library, the thread table of ``bench.threads`` and the seconds taken by the
corpus and by hostile bodies (5 MB without a newline, 1.25 million ``>`` lines).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable

from bench.threads import report
from worker.text.quotes import split_reply

Split = Callable[[str], str]


def _candidates() -> dict[str, Split]:
    found: dict[str, Split] = {"split_reply": lambda b: split_reply(b).new}
    try:
        mpr = importlib.import_module("mailparser_reply").EmailReplyParser(
            languages=["en", "fr", "de", "es"]
        )
        found["mail-parser-reply"] = lambda b: mpr.parse_reply(b) or ""
    except ImportError:
        pass
    try:
        qq = importlib.import_module("quotequail")
        found["quotequail"] = lambda b: "\n".join(
            t for keep, t in qq.quote(b, quote_intro_line=True) if keep
        )
    except ImportError:
        pass
    try:
        erp = importlib.import_module("email_reply_parser").EmailReplyParser
        found["email-reply-parser"] = erp.parse_reply
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", help="a site-packages folder holding the libraries")
    parser.add_argument("--per-length", type=int, default=10)
    args = parser.parse_args()
    if args.site:
        sys.path.append(args.site)
    hostile = {"5 MB, no newline": "a" * 5_000_000, "1.25M '>' lines": "> x\n" * 1_250_000}
    for name, split in _candidates().items():
        start = time.perf_counter()
        report(split, name, args.per_length)
        print(f"corpus: {time.perf_counter() - start:.2f} s (tokenizing included)")
        for label, body in hostile.items():
            start = time.perf_counter()
            split(body)
            print(f"{label}: {time.perf_counter() - start:.2f} s")
        print()


if __name__ == "__main__":
    main()
