"""Importing an integration without its framework says which extra to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("sqreen.integrations.flask", "flask", "flask"),
        ("sqreen.integrations.django", "django", "django"),
        ("sqreen.integrations.fastapi", "fastapi", "fastapi"),
    ],
)
def test_a_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # what an absent package looks like
    with pytest.raises(ImportError, match=rf"pip install 'sqreen-sdk\[{extra}\]'"):
        importlib.import_module(module)


def test_the_generic_middlewares_need_no_framework() -> None:
    code = (
        "import sys\n"
        "for name in ('flask', 'django', 'fastapi'):\n"
        "    sys.modules[name] = None\n"
        "import sqreen.middleware.wsgi, sqreen.middleware.asgi, sqreen.integrations.starlette\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
