"""The error tree (``mparticle_feed._errors``): one root, and the tree as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mparticle_feed as mpf
from mparticle_feed import _errors

DOC = Path(__file__).resolve().parents[1] / "docs" / "exceptions.md"

ERRORS = sorted(
    (
        value
        for value in vars(_errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ),
    key=lambda cls: cls.__name__,
)


def test_every_error_derives_from_the_root_and_is_exported() -> None:
    assert len(ERRORS) >= 10
    for cls in ERRORS:
        assert issubclass(cls, mpf.MParticleFeedError), cls
        assert getattr(mpf, cls.__name__) is cls, cls
        # A bug must not hide behind ``except MParticleFeedError``.
        assert not issubclass(cls, (AssertionError, RuntimeError)), cls


def test_payload_errors_are_also_value_errors() -> None:
    assert issubclass(mpf.PayloadError, mpf.MParticleFeedError)
    assert issubclass(mpf.PayloadError, ValueError)


def _tree(text: str) -> dict[str, tuple[str, bool]]:
    """Class name -> (parent name, marked as a ValueError), from a drawn tree."""
    found: dict[str, tuple[str, bool]] = {}
    parents = ["MParticleFeedError"]
    for line in text.splitlines():
        match = re.match(r"^\s*((?:[│ ] {3})*)[├└]── (\w+)( \(ValueError\))?", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4
        del parents[depth + 1 :]
        found[match.group(2)] = (parents[depth], bool(match.group(3)))
        parents.append(match.group(2))
    return found


@pytest.mark.parametrize(
    "text",
    [_errors.__doc__ or "", DOC.read_text(encoding="utf-8")],
    ids=["module docstring", "docs/exceptions.md"],
)
def test_the_drawn_tree_is_the_real_one(text: str) -> None:
    tree = _tree(text)
    assert set(tree) == {cls.__name__ for cls in ERRORS} - {"MParticleFeedError"}
    for name, (parent, is_value_error) in tree.items():
        cls = getattr(mpf, name)
        assert cls.__bases__[0] is getattr(mpf, parent), name
        # A subclass of a ValueError is one too; the tree marks it on the first level only.
        assert issubclass(cls, ValueError) == (
            is_value_error or issubclass(cls.__bases__[0], ValueError)
        )


def test_errors_carry_the_evidence() -> None:
    row = mpf.RowError(row_number=3, primary_key="k3", field="event_name", reason="missing")
    assert str(row) == "row 3 (primary key 'k3'), field event_name: missing"
    plan = mpf.PlanFileError("plan.jsonl", 4, "not JSON")
    assert (plan.source, plan.line, str(plan)) == (
        "plan.jsonl",
        4,
        "plan file plan.jsonl, line 4: not JSON",
    )
    payload = mpf.PayloadError([f"$.events[{i}]: bad" for i in range(25)])
    assert len(payload.problems) == 25
    assert "... and 5 more" in str(payload)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "null"), (1, "int"), ("", "str"), ([1], "list"), (True, "bool")]
)
def test_values_are_named_by_type_in_messages(value: object, expected: str) -> None:
    assert _errors.type_name(value) == expected
