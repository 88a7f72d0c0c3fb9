"""mParticle's published schemas as a test oracle, found outside the repository.

The schemas are mParticle's, not ours to ship. Tests find them in the directory named by
``MPARTICLE_FEED_REFERENCE`` (default: ``../shared/reference`` beside the repository) and
skip, saying what is missing and where mParticle publishes it, when they are absent. CI sets
``MPARTICLE_FEED_REQUIRE_REFERENCE=1`` so that such a skip fails instead.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

FILES = {
    "mparticle.inbound.eventsapi.schema.json": "https://docs.mparticle.com/schema/mparticle.inbound.eventsapi.schema.json",
    "mparticle.inbound.eventsapi.schema.harvested-2026.json": "api-evangelist/mparticle on GitHub (json-schema/mparticle-eventsapi-schema.json)",
    "mparticle.inbound.eventsapi.sample.json": "https://docs.mparticle.com/schema/mparticle.inbound.eventsapi.sample.json",
}
SCHEMAS = {
    "2026": "mparticle.inbound.eventsapi.schema.harvested-2026.json",
    "2021": "mparticle.inbound.eventsapi.schema.json",
}


def reference_dir() -> Path:
    named = os.environ.get("MPARTICLE_FEED_REFERENCE")
    return Path(named) if named else ROOT.parent / "shared" / "reference"


def reference_dir_or_skip() -> Path:
    where = reference_dir()
    missing = [name for name in FILES if not (where / name).is_file()]
    if missing:
        reason = (
            f"mParticle's schemas are not in {where} (set MPARTICLE_FEED_REFERENCE): missing "
            + "; ".join(f"{name} (published at {FILES[name]})" for name in missing)
        )
        if os.environ.get("MPARTICLE_FEED_REQUIRE_REFERENCE"):
            pytest.fail(reason)
        pytest.skip(reason)
    return where


class SchemaOracle:
    """Validates a batch or a bulk array with the schemas' quirks handled.

    Format checking is on (the ``ip`` field's ``oneOf`` of IPv4/IPv6 needs it), and each
    schema is registered under its ``$id`` so a bulk schema's remote ``$ref`` resolves offline.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @cached_property
    def _validators(self) -> dict[str, Any]:
        import jsonschema
        from referencing import Registry, Resource

        validators = {}
        for which, name in SCHEMAS.items():
            schema = json.loads((self.directory / name).read_text(encoding="utf-8"))
            registry = Registry().with_resource(
                schema.get("$id", f"urn:mparticle-feed:{which}"), Resource.from_contents(schema)
            )
            cls = jsonschema.validators.validator_for(schema)
            validators[which] = cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)
        return validators

    def problems(self, document: Any, which: str = "2026") -> list[str]:
        """One ``"batch i: $.path: message"`` per problem; [] when the document is valid."""
        validator = self._validators[which]
        batches = document if isinstance(document, list) else [document]
        out = []
        for index, batch in enumerate(batches):
            for error in validator.iter_errors(batch):
                path = "$" + "".join(
                    f"[{part}]" if isinstance(part, int) else f".{part}"
                    for part in error.absolute_path
                )
                out.append(f"batch {index}: {path}: {error.message[:200]}")
        return out
