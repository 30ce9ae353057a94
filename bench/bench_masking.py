"""Benchmark: secret masking stays linear in the text, whatever the text and the number of secrets.

Run: .venv/bin/python bench/bench_masking.py

For each hostile input the text is masked at size N and 8N, with 500 registered secrets; the
growth factor is printed next to the one-regex-per-secret approach stageflow used before (whose
URL pattern backtracked quadratically on long scheme-like runs). Linear is ×8; quadratic ×64.
Both are measured side by side in this one run.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stageflow.masking import Masker

SECRETS = [f"secret-value-{i:04d}" for i in range(500)]
_OLD_URL = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<post>@)", re.I)


def old_mask(text: str) -> str:
    """The previous approach: one replace per secret, then the backtracking URL regex."""
    for v in sorted(SECRETS, key=len, reverse=True):
        if v in text:
            text = text.replace(v, "******")
    return _OLD_URL.sub(lambda m: m.group("pre") + "******" + m.group("post"), text)


def seconds(fn: Callable[[str], str], text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    masker = Masker()
    masker.extend(SECRETS)
    inputs = {
        "letters (a URL scheme that never ends)": "a" * 2_000,
        "colons": "a:" * 1_000,
        "url starts": "x://" * 500,
        "userinfo without host": "x://a:" * 350 + "@",
        "secret prefixes": "secret-value-" * 150,
        "a log line with URLs": "GET redis://:pw@h/0 postgres://u:p@ss@db/x ok " * 50,
    }
    print(f"{'input':<40} {'N':>8} {'new ms':>8} {'new ×8':>8} {'old ms':>9} {'old ×8':>8}")
    for name, text in inputs.items():
        big = text * 8
        new_small, new_big = seconds(masker.mask, text), seconds(masker.mask, big)
        old_small, old_big = seconds(old_mask, text), seconds(old_mask, big, runs=1)
        print(f"{name:<40} {len(text):>8} {new_big * 1000:>8.2f} {new_big / max(new_small, 1e-6):>7.1f}× "
              f"{old_big * 1000:>9.2f} {old_big / max(old_small, 1e-6):>7.1f}×")


if __name__ == "__main__":
    main()
