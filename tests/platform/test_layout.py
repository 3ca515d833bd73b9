"""The layout's one rule: imports run one way. platform imports no domain; ledger stands on
platform only; usage and topups stand on ledger and platform, never on each other;
autotopup on topups; the worker (jobs) on the domains whose work it runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import billing_gateway

PACKAGE = Path(billing_gateway.__file__).resolve().parent
# What each package may import from billing_gateway (besides itself).
ALLOWED = {
    "platform": set(),
    "ledger": {"platform"},
    "usage": {"platform", "ledger"},
    "topups": {"platform", "ledger"},
    "notifications": {"platform", "ledger"},
    "autotopup": {"platform", "ledger", "topups"},
    "jobs": {"platform", "notifications", "autotopup", "topups"},
    "portal": {"platform", "ledger", "usage", "topups", "notifications", "autotopup"},
}


def _imported_packages(path: Path) -> set[str]:
    """The billing_gateway subpackages (or top modules) a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "billing_gateway":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from billing_gateway import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "billing_gateway" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        outside = _imported_packages(path) - {package} - ALLOWED[package]
        if outside:
            wrong[str(path.relative_to(PACKAGE))] = sorted(outside)
    assert wrong == {}


def test_every_module_belongs_to_a_domain_or_is_an_entry_point() -> None:
    """A new module goes into its domain's package, not back into a flat billing_gateway/."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "app.py", "cli.py", "client.py", "gunicorn_conf.py",
                   "gunicorn_worker.py"]
