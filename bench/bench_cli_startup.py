"""How long the ``sqreen`` command takes to start: ``--version``, ``--help``, an admin command.

Method
------
Each command runs as the installed ``sqreen`` script does (a fresh interpreter that imports
``sqreen.server.cli`` and calls ``main``), once per round, for two trees: ``base``, the
package as it was at ``--base-rev`` (extracted with ``git archive`` into a temporary
directory and put first on ``PYTHONPATH``), and ``this``, the working tree. The trees
alternate within each round (the machine is shared and noisy), and the table gives the best
and the median wall time over ``--rounds`` rounds, the median CPU time of the child (user +
system, from ``getrusage(RUSAGE_CHILDREN)``), and the median cumulative import time of
``sqreen.server.cli`` (``python -X importtime``, its last line), with the number of modules
``--version`` leaves in ``sys.modules``.

Run: ``.venv/bin/python bench/bench_cli_startup.py [--base-rev main] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from revisions import extract  # noqa: E402

#: Where the children run: ``python -c`` puts its working directory first on sys.path, so
#: from the checkout every child would import this tree, whatever PYTHONPATH says.
ELSEWHERE = tempfile.gettempdir()
RUN = "import sys; from sqreen.server.cli import main; sys.exit(main())"
COUNT = (
    "import sys; from sqreen.server.cli import main\n"
    "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\nprint(len(sys.modules))"
)


def run(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``sqreen ARGS`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", RUN, *args], env=env, check=True, capture_output=True, cwd=ELSEWHERE
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def import_ms(tree: Path) -> float:
    """Cumulative import time of ``sqreen.server.cli``, in milliseconds."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import sqreen.server.cli"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ELSEWHERE,
    )
    last = done.stderr.strip().splitlines()[-1]  # the module asked for comes last
    return int(last.split("|")[1]) / 1000


def modules(tree: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", COUNT],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ELSEWHERE,
    )
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-rev", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        extract(opts.base_rev, base)
        db = str(Path(tmp) / "x.db")
        subprocess.run(  # a database with one key, for `keys list`
            [sys.executable, "-c", RUN, "keys", "create", "--db", db],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
        )
        commands = {
            "--version": ["--version"],
            "--help": ["--help"],
            "keys list": ["keys", "list", "--db", db],
            "blocks": ["blocks", "--db", db],
        }
        trees = {"base": base, "this": ROOT}
        walls: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        imports: dict[str, list[float]] = {t: [] for t in trees}
        for _ in range(opts.rounds):
            for tree_name, tree in trees.items():
                imports[tree_name].append(import_ms(tree))
                for name, args in commands.items():
                    wall, cpu = run(tree, args)
                    walls.setdefault((name, tree_name), []).append(wall)
                    cpus.setdefault((name, tree_name), []).append(cpu)
        load = os.getloadavg()[0]
        print(f"{opts.rounds} rounds, trees alternating; load average {load:.2f} at the end")
        print(f"{'command':<12} {'tree':<5} {'best ms':>8} {'median ms':>10} {'cpu ms':>7}")
        for name in commands:
            for tree_name in trees:
                w = walls[name, tree_name]
                c = cpus[name, tree_name]
                print(
                    f"{name:<12} {tree_name:<5} {min(w) * 1000:8.0f} "
                    f"{statistics.median(w) * 1000:10.0f} {statistics.median(c) * 1000:7.0f}"
                )
        for tree_name, tree in trees.items():
            print(
                f"import sqreen.server.cli, {tree_name}: "
                f"{statistics.median(imports[tree_name]):.0f} ms cumulative (median), "
                f"{modules(tree)} modules after --version"
            )


if __name__ == "__main__":
    main()
