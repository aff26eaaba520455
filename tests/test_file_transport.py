"""The file transport (``file:///path.jsonl``): a batch's events appended as whole lines, in
order, by one write; several processes appending to one file never interleave their lines;
a partial write is completed; an unwritable path asks for a retry."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from sqreen.transports import FileTransport, from_config


def lines(n: int, tag: str, size: int = 40) -> list[bytes]:
    return [json.dumps({"tag": tag, "n": i, "pad": "x" * size}).encode() for i in range(n)]


def test_a_batch_is_appended_as_its_lines_in_order_with_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    transport = FileTransport(path)
    writes: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    first, second = lines(100, "a"), lines(3, "b")
    assert transport.send({}, first).outcome == "ok"
    assert transport.send({}, []).outcome == "ok"
    assert transport.send({}, second).outcome == "ok"
    transport.close()
    assert len(writes) == 2  # one a batch, none for an empty one
    assert path.read_bytes().split(b"\n") == [*first, *second, b""]


def test_a_partial_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    transport = FileTransport(path)
    real = os.write

    def short(fd: int, data: bytes) -> int:
        return real(fd, bytes(data[:7]))  # what a full disk or a signal can leave

    monkeypatch.setattr(os, "write", short)
    batch = lines(5, "c")
    assert transport.send({}, batch).outcome == "ok"
    transport.close()
    assert path.read_bytes() == b"\n".join(batch) + b"\n"


def test_a_write_that_writes_nothing_or_fails_asks_for_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = FileTransport(tmp_path / "events.jsonl")
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    reply = transport.send({}, lines(2, "d"))
    assert reply.outcome == "retry" and "nothing written" in (reply.detail or "")
    transport.close()
    reply = FileTransport(tmp_path).send({}, lines(1, "e"))  # a directory
    assert reply.outcome == "retry" and str(tmp_path) in (reply.detail or "")


def _append(path: str, tag: str) -> None:
    transport = FileTransport(path)
    for batch in range(40):
        transport.send({}, lines(25, f"{tag}-{batch}", size=3000))
    transport.close()


def test_processes_appending_to_one_file_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(path, f"p{n}")) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    got = [json.loads(line) for line in Path(path).read_bytes().splitlines()]
    assert len(got) == 4 * 40 * 25
    for n in range(4):  # each process's lines whole, each batch's in order
        mine = [(g["tag"], g["n"]) for g in got if g["tag"].startswith(f"p{n}-")]
        assert mine == [(f"p{n}-{b}", i) for b in range(40) for i in range(25)]


def test_without_an_endpoint_the_warning_names_each_framework_s_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    transport = from_config(None, None, None)
    transport.send({"app": {}}, [b'{"id":"1"}'])
    transport.close()
    (message,) = [r.getMessage() for r in sqreen_log.records if "no endpoint" in r.getMessage()]
    for where in (
        "SQREEN_ENDPOINT in a Flask config",
        "Django's settings.SQREEN",
        "add_middleware(SqreenMiddleware, endpoint=...)",
        "init(endpoint=...)",
    ):
        assert where in message
    assert (tmp_path / "sqreen-events.jsonl").read_text().count("\n") == 1


def test_the_file_used_without_an_endpoint_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment that lost its endpoint writes ./sqreen-events.jsonl: it stops growing at
    its bound, and what does not fit is refused (dropped and said, as a collector's refusal),
    where it filled the disk unseen. A file named on purpose (``file://``) has no bound."""
    from sqreen import transports

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(transports, "DEFAULT_FILE_MAX_BYTES", 100)
    default = from_config(None, None, None)
    line = b'{"id":"%d","pad":"' + b"x" * 20 + b'"}'
    assert default.send({}, [line % 1, line % 2]).outcome == "ok"
    refused = default.send({}, [line % 3, line % 4])
    assert refused.outcome == "drop" and "SQREEN_ENDPOINT" in refused.detail
    default.close()
    assert (tmp_path / "sqreen-events.jsonl").read_bytes().count(b"\n") == 2
    named = from_config(f"file://{tmp_path}/named.jsonl", None, None)
    for n in range(10):
        assert named.send({}, [line % n]).outcome == "ok"
    named.close()
