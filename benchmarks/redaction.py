"""Cost of secret redaction per 4 KB of text, with 5 secrets: kasloop's ``Redactor`` vs the old per-secret replace.

The redactor runs on every tool result, model reply, event, inbox message and
JSON log line, so its cost is paid many times per cycle. The old redactor
looked for each secret's clear value with ``in`` and ``str.replace`` (one pass
per secret, clear text only). The new one finds every form of every secret
(clear and any 12+ character prefix, hex, base64 in two alphabets and three
alignments, %-encoding, line-wrapped base64/hex) with one precompiled trie-shaped
regular expression, then extends a match in Python.

Texts (4,096 characters each): prose, JSON-like tool output (paths, ids, a
sha256), a base64 blob (the worst case: every position looks like base64), and
the JSON text with one base64-encoded secret in it. Both redactors run in this
process on the same texts; the table shows the median of ``--repeat`` timings of
``--number`` calls each, in µs per call.

Usage::

    python benchmarks/redaction.py            # 7 x 2,000 calls per cell
    python benchmarks/redaction.py --quick    # 5 x 300
    python benchmarks/redaction.py --regex    # and the single-regex design, for comparison
"""

from __future__ import annotations

import argparse
import base64
import platform
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from kasloop.safety.secrets import Redactor, _matcher, _trie  # noqa: E402

SIZE = 4096


class OldRedactor:
    """The redactor before this change: clear values only, one ``in`` + ``replace`` per secret."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        pairs = [(value, name) for name, value in secrets.items() if value and len(value) >= 6]
        self._pairs = sorted(dict(pairs).items(), key=lambda pair: -len(pair[0]))

    def text(self, text: str) -> str:
        for value, name in self._pairs:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text


def secrets(rng: random.Random) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits
    return {
        "OPENAI_API_KEY": "sk-proj-" + "".join(rng.choice(alphabet) for _ in range(48)),
        "KASLOOP_TELEGRAM_TOKEN": f"{rng.randrange(10**9, 10**10)}:" + "".join(rng.choice(alphabet + "-_") for _ in range(35)),
        "KASLOOP_SMTP_PASSWORD": "".join(rng.choice(alphabet + "!#%&") for _ in range(20)),
        "KASLOOP_WEBHOOK_SECRET": "".join(rng.choice("0123456789abcdef") for _ in range(64)),
        "GITHUB_TOKEN": "ghp_" + "".join(rng.choice(alphabet) for _ in range(36)),
    }


def texts(rng: random.Random, secret: str) -> dict[str, str]:
    words = "the agent read the file and wrote a short summary of what it found in the logs today".split()
    prose = " ".join(rng.choice(words) for _ in range(1200))[:SIZE]
    lines = []
    while sum(map(len, lines)) < SIZE:
        n = len(lines)
        lines.append(
            f'{{"path": "/work/main/src/module_{n}/file_{n}.py", "id": "t-{rng.getrandbits(40):010x}", '
            f'"sha256": "{rng.getrandbits(256):064x}", "ok": true, "lines": {rng.randrange(1000)}}}\n'
        )
    tool_output = "".join(lines)[:SIZE]
    blob = base64.b64encode(rng.randbytes(SIZE))[:SIZE].decode()
    planted = base64.b64encode(f"OPENAI_API_KEY={secret}\n".encode()).decode()
    with_secret = (tool_output[: SIZE // 2] + planted + tool_output[SIZE // 2 :])[:SIZE]
    return {"prose": prose, "tool output (JSON)": tool_output, "base64 blob": blob, "JSON + 1 base64 secret": with_secret}


def timed(call: Callable[[], object], number: int, repeat: int) -> float:
    """Median µs per call."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="5 x 300 calls per cell")
    parser.add_argument("--regex", action="store_true", help="also time one regex alternation of every form start (search only)")
    args = parser.parse_args()
    number, repeat = (300, 5) if args.quick else (args.number, args.repeat)
    rng = random.Random(20260514)
    keys = secrets(rng)

    _matcher.cache_clear()
    start = time.perf_counter()
    new = Redactor(keys)
    built_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    Redactor(keys)
    cached_us = (time.perf_counter() - start) * 1e6
    old = OldRedactor(keys)

    print(f"python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print(f"5 secrets ({', '.join(f'{len(v)}' for v in keys.values())} chars); texts of {SIZE:,} characters")
    print(f"Redactor built in {built_ms:.1f} ms the first time (compiled once per set of secrets), {cached_us:.0f} µs after\n")
    alternation = re.compile(_trie(_matcher(new._pairs).anchors)) if args.regex else None
    print(f"| text | old: clear only, per secret (µs) | new: all forms (µs) | new / old |{' one regex alternation (µs) |' if alternation else ''}")
    print(f"|---|---|---|---|{'---|' if alternation else ''}")
    for label, text in texts(rng, keys["OPENAI_API_KEY"]).items():
        assert len(text) == SIZE
        old_us = timed(lambda: old.text(text), number, repeat)  # noqa: B023 (called right here)
        new_us = timed(lambda: new.text(text), number, repeat)  # noqa: B023
        caught = "[redacted:" in new.text(text)
        regex_us = f" {timed(lambda: alternation.search(text), number, repeat):.1f} |" if alternation else ""  # noqa: B023
        print(f"| {label}{' (caught)' if caught else ''} | {old_us:.1f} | {new_us:.1f} | {new_us / old_us:.1f}x |{regex_us}")


if __name__ == "__main__":
    main()
