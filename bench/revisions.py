"""Another revision's ``sqreen`` package beside this tree's, in one process (``--against``).

``git archive`` extracts REV's package under another name: its modules import each other
relatively, so both load, and a bench can alternate between them run by run.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "sqreen_against"


def extract(rev: str, into: str | Path) -> Path:
    """REV's ``sqreen`` package extracted into the folder ``into`` (as ``into/sqreen``), for
    a process run with ``PYTHONPATH=into``; return ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "sqreen"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return Path(into)


def load_revision(rev: str, tmpdir: str) -> str:
    """Extract REV's package into ``tmpdir``, importable as :data:`NAME`; return that name."""
    extract(rev, tmpdir)
    Path(tmpdir, "sqreen").rename(Path(tmpdir, NAME))
    sys.path.insert(0, tmpdir)
    _tolerate_twin_metrics()
    return NAME


def _tolerate_twin_metrics() -> None:
    """Let the other revision's modules define their Prometheus metrics too: they register
    under the names this tree's did (prometheus_client refuses a name twice), and are left
    unregistered (a bench reads neither's)."""
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # the collector's extra is not installed: nothing registers
        return
    if getattr(REGISTRY.register, "tolerant", False):
        return
    register = REGISTRY.register

    def tolerant(collector: Any) -> None:
        try:
            register(collector)
        except ValueError as exc:  # DuplicateTimeseries (3.x: a ValueError)
            if "Duplicated timeseries" not in str(exc):
                raise

    tolerant.tolerant = True  # type: ignore[attr-defined]
    REGISTRY.register = tolerant  # type: ignore[method-assign]


def getter(package: str) -> Callable[[str, str], Any]:
    """``get(module, attr)``: the attribute of ``package.module``."""

    def get(module: str, attr: str) -> Any:
        return getattr(importlib.import_module(f"{package}.{module}"), attr)

    return get
