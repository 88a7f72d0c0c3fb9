"""The public surface: a sorted ``__all__`` that holds every name of DESIGN.md's contract."""

from __future__ import annotations

import re
from pathlib import Path

import mparticle_feed

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


# Contract words that are not exports: attribute names quoted as examples, a method, and
# "Mapping", which the contract allows as "one class per sync kind" (exported below).
NOT_EXPORTS = {"event_name", "timestamp_unixtime_ms", "upload", "Mapping"}


def test_every_contract_name_is_exported() -> None:
    missing = sorted(_contract_names() - NOT_EXPORTS - set(mparticle_feed.__all__))
    assert missing == [], f"in DESIGN.md's public API contract, not exported: {missing}"


def test_the_contract_exceptions_are_accounted_for() -> None:
    assert _contract_names() >= NOT_EXPORTS  # stale entries would hide a missing export
    for kind in ("CustomEventMapping", "CommerceEventMapping", "UserAttributeMapping"):
        assert kind in mparticle_feed.__all__
    assert callable(mparticle_feed.EventsClient.upload)
