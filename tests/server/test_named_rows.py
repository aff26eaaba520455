"""Rows have names, not positions: no ``row[0]`` anywhere in the collector.

A row read by position breaks silently when a column is added or reordered; the storage
layer hands out named rows (``storage/_rows.py``) and values. This walks the source and fails
on an integer index or slice of a variable named like a row.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sqreen.server

SERVER = Path(sqreen.server.__file__).parent
ROW_NAME = re.compile(r"(?:\w+_)?(?:r|row|rows|record|records)")


def _is_int(node: ast.expr | None) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _positional(node: ast.Subscript) -> bool:
    index = node.slice
    if isinstance(index, ast.Slice):
        return any(_is_int(bound) for bound in (index.lower, index.upper))
    return _is_int(index)


def positional_row_reads(source: str) -> list[str]:
    """``row[0]``, ``rows[0][1]``, ``record[:7]``... in ``source``, as ``line: text``."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and ROW_NAME.fullmatch(node.value.id)
            and _positional(node)
        ):
            found.append((node.lineno, node.col_offset, ast.unparse(node)))
    return [f"{line}: {text}" for line, _, text in sorted(found)]


def test_the_check_finds_what_it_looks_for() -> None:
    source = "a = row[0]\nb = rows[0][0]\nc = record[:7]\nd = r[-1]\ne = user_row[2]\n"
    assert [hit.split(": ")[1] for hit in positional_row_reads(source)] == [
        "row[0]",
        "rows[0]",
        "record[:7]",
        "r[-1]",
        "user_row[2]",
    ]
    assert positional_row_reads("a = row.id\nb = rows[i]\nc = points[0]\nd = arrow[0]\n") == []


def test_no_row_is_read_by_position() -> None:
    offenders = [
        f"{path.relative_to(SERVER)}:{hit}"
        for path in sorted(SERVER.rglob("*.py"))
        for hit in positional_row_reads(path.read_text())
    ]
    assert offenders == [], "read rows by name (storage/_rows.py), not by position"
