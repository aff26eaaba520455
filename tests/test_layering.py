"""The package's seams, held by reading its source: private names stay private, imports run
one way (integrations -> middleware -> core; server -> core)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sqreen"


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _is_module(name: str) -> bool:
    if name.partition(".")[0] != "sqreen":
        # Not ours, so neither check looks at it; and finding it would import its parents,
        # some of which cannot be imported outside their framework's set-up (Django's
        # django.contrib.auth.models before its apps are loaded).
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _violations(module: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            module_aliases.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = _resolve(module, path, node)
            for alias in node.names:
                if _is_module(f"{source}.{alias.name}"):
                    module_aliases.add(alias.asname or alias.name)  # a module: public or not
                elif _private(alias.name):
                    found.append(f"line {node.lineno}: imports {alias.name} from {source}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
        ):
            found.append(f"line {node.lineno}: reads {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_module_uses_a_private_name_of_another(module: str, path: Path) -> None:
    assert _violations(module, path) == []


LAYERS = {  # a module of the first kind may import from these kinds only
    "core": {"core"},
    "middleware": {"core", "middleware"},
    "integrations": {"core", "middleware", "integrations"},
    "server": {"core", "server"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("middleware", "integrations", "server"):
        return parts[1]
    return "core"  # sqreen, sqreen._*, sqreen.transports, sqreen.testing


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_run_one_way(module: str, path: Path) -> None:
    layer = _layer(module)
    tree = ast.parse(path.read_text(), str(path))
    wrong = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = _resolve(module, path, node)
            targets = [
                f"{source}.{a.name}" if _is_module(f"{source}.{a.name}") else source
                for a in node.names
            ]
        for target in targets:
            if target == "sqreen" or target.startswith("sqreen."):
                if _layer(target) not in LAYERS[layer]:
                    wrong.append(f"line {node.lineno}: {layer} imports {target}")
    assert wrong == []


def test_the_checks_see_a_violation() -> None:
    """The walker itself: a private import and a private attribute are found."""
    probe = PACKAGE / "_layering_probe.py"
    probe.write_text("from ._client import _default_app_name\nfrom . import _hub\nx = _hub._lock\n")
    try:
        assert len(_violations("sqreen._layering_probe", probe)) == 2
    finally:
        probe.unlink()
