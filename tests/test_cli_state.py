"""``mparticle-feed convert-state``: SQLite file ⇄ table-state folder (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from mparticle_feed import StateStore, TableState
from mparticle_feed._cli import EXIT_OK, EXIT_USAGE, main
from mparticle_feed._sync.records import StateEntry


def test_convert_state_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [StateEntry(key=f"k{n}", hash=f"{n:032x}") for n in range(5)]
    with StateStore(tmp_path / "a.sqlite") as store:
        for name in ("orders", "views"):
            store.begin_sync(name, kind="custom_event", fingerprint="f" * 64)
            store.record_accepted(name, entries)
            store.finish_sync(name, status="finished")
    assert (
        main(["convert-state", str(tmp_path / "a.sqlite"), str(tmp_path / "t"), "--name", "views"])
        == EXIT_OK
    )
    assert "sync 'views': 5 entries copied" in capsys.readouterr().out
    assert TableState(tmp_path / "t").sync_names() == ["views"]
    assert main(["convert-state", str(tmp_path / "t"), str(tmp_path / "b.sqlite")]) == EXIT_OK
    with StateStore(tmp_path / "b.sqlite") as back:
        assert list(back.entries("views")) == entries
    # The target already holds the sync: refused, naming it.
    assert main(["convert-state", str(tmp_path / "t"), str(tmp_path / "b.sqlite")]) == EXIT_USAGE
    assert "already holds sync 'views'" in capsys.readouterr().err
    assert main(["convert-state", str(tmp_path / "missing"), str(tmp_path / "c")]) == EXIT_USAGE
