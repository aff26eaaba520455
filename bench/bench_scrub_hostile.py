"""What a hostile request costs the flusher: the worst shapes found, through the wire's encoding.

    .venv/bin/python bench/bench_scrub_hostile.py [--against REV] [--limit 2.0]

Method
------
Each shape is a unit repeated to fill a body of ``max_body_size`` (64 KiB, cut there like a
real capture) or 14 form fields of 4 KiB (what the parameters keep of a value), sent as the
content types that reach each scrubber: JSON (parsed, or cut and read as text), text/plain,
a urlencoded form, multipart. Each request snapshot goes through
``sqreen._wire.encode_request`` (parameters and, with ``collect_body``, the body: what the
flusher does for one tracked event), timed with ``time.process_time``, the best of
``--repeat``. ``--against REV`` times REV's package on the same snapshots beside this tree
(``bench/revisions.py``); a run over ``--limit`` seconds is stopped being repeated (a
quadratic scrubber takes seconds a request, and holds the GIL meanwhile: every thread of
the app's process waits). The table shows the 20 worst, by the slower of the two.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from revisions import getter, load_revision  # noqa: E402

BODY = 64 * 1024
FIELD = 4400
UNITS = [
    "eyJ",
    "eyJab.",
    "1.",
    "4 ",
    "1234 ",
    "a-",
    "1a",
    "Basic Q",
    "AKIA",
    "a://b:",
    "%41",
    '"a":',
    "password=",
    "content-disposition: name=x\n",
    "content-disposition:",
    "{[",
    '"\\u0077',
]
SHAPES = [  # (content type, the body is a form of fields, collect_body)
    ("application/json", False, True),
    ("text/plain", False, True),
    ("multipart/form-data; boundary=b", False, True),
    ("application/x-www-form-urlencoded", True, False),
    ("application/x-www-form-urlencoded", True, True),
    ("application/json", True, False),
]


def body_of(unit: str, ctype: str, form: bool) -> tuple[bytes, bool]:
    if not form:
        text = (unit * (BODY // len(unit) + 2))[: BODY + 64]
        data = text.encode()
        return data[:BODY], len(data) > BODY
    value = (unit * (FIELD // len(unit) + 1))[:FIELD]
    if ctype.startswith("application/json"):
        data = ("{" + ",".join(f'"f{i}": "{value}"' for i in range(14)) + "}").encode()
    else:
        data = "&".join(f"f{i}={quote(value)}" for i in range(14)).encode()
    return data[:BODY], len(data) > BODY


def timed(pkg: Any, snapshot: tuple[Any, ...], collect: bool, repeat: int, limit: float) -> float:
    request_cls, encode, config = pkg
    best = float("inf")
    for _ in range(repeat):
        snap = request_cls(*snapshot[:7], body_chunks=snapshot[7], body_truncated=snapshot[8])
        start = time.process_time()
        encode(snap, config, collect)
        best = min(best, time.process_time() - start)
        if best > limit:
            break
    return best


def package(get: Any) -> tuple[Any, ...]:
    return (
        get("_request", "RequestSnapshot"),
        get("_wire", "encode_request"),
        get("_config", "Config")(),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", metavar="REV")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=float, default=2.0, help="seconds: repeat no more")
    args = parser.parse_args()
    ours = package(getter("sqreen"))
    theirs = None
    if args.against:
        theirs = package(getter(load_revision(args.against, tempfile.mkdtemp())))
    rows = []
    for unit in UNITS:
        for ctype, form, collect in SHAPES:
            body, cut = body_of(unit, ctype, form)
            snapshot = ("POST", "/p", "", "203.0.113.9", "ua", None, ctype, (body,), cut)
            now = timed(ours, snapshot, collect, args.repeat, args.limit)
            then = timed(theirs, snapshot, collect, args.repeat, args.limit) if theirs else None
            rows.append((now, then, unit, ctype.partition(";")[0], form, collect))
    rows.sort(key=lambda r: -max(r[0], r[1] or 0.0))
    print(
        f"The flusher's CPU for one tracked request, best of {args.repeat} (ms): hostile shapes,"
        f" a 64 KiB body or 14 fields of {FIELD} bytes"
    )
    print()
    head = "| unit repeated | content type | as | collect_body | now ms |"
    print(head + (f" {args.against} ms |" if theirs else ""))
    print("|---|---|---|---|--:|" + ("--:|" if theirs else ""))
    for now, then, unit, ctype, form, collect in rows[:20]:
        shown = repr(unit)[1:-1].replace("|", "\\|")
        kind = "fields" if form else "body"
        line = f"| `{shown}` | {ctype} | {kind} | {collect} | {now * 1e3:.1f} |"
        print(line + (f" {then * 1e3:.1f} |" if then is not None else ""))


if __name__ == "__main__":
    main()
