"""The public surface: a sorted ``__all__`` that holds every contract name built so far."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mparticle_feed

PACKAGE_DIR = Path(mparticle_feed.__file__).resolve().parent
DESIGN = Path(__file__).resolve().parents[1].parent / "shared" / "DESIGN.md"


def _contract_names() -> set[str]:
    """Identifiers named in DESIGN.md's "Public API contract" section."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## Public API contract", 1)[1].split("\n## ", 1)[0]
    names = set()
    for code in re.findall(r"`([^`]+)`", section):
        if "." in code.split("(", 1)[0]:
            continue  # dotted paths (mparticle_feed.testing...) are modules, not exports
        match = re.match(r"[A-Za-z_]\w*", code)
        if match:
            names.add(match.group())
    return names


def _defined_in_package() -> set[str]:
    """Top-level classes, functions and assignments of the package's private modules.

    Parsed, not imported, so a module another change is still writing cannot break this test.
    """
    names: set[str] = set()
    for path in PACKAGE_DIR.glob("_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return names


def test_all_is_sorted() -> None:
    assert mparticle_feed.__all__ == sorted(mparticle_feed.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(mparticle_feed.__all__)) == len(mparticle_feed.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in mparticle_feed.__all__ if not hasattr(mparticle_feed, name)]
    assert missing == []


def test_public_names_are_exported_where_defined() -> None:
    exported = {
        name
        for name, value in vars(mparticle_feed).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("mparticle_feed")
    }
    assert exported <= set(mparticle_feed.__all__)


def test_contract_parsing_finds_the_models() -> None:
    names = _contract_names()
    assert {"Batch", "CustomEvent", "dumps", "loads", "MParticleFeedError", "IdentityType"} <= names


def test_every_contract_name_built_so_far_is_exported() -> None:
    built = _contract_names() & _defined_in_package()
    missing = sorted(built - set(mparticle_feed.__all__))
    assert missing == [], (
        f"in DESIGN.md's contract, defined in the package, not exported: {missing}"
    )
