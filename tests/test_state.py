from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from mparticle_feed._errors import StateError
from mparticle_feed._sync.state import OutboxBatch, StateEntry, StateStore


def entry(key: str, digest: str = "h", attributes: dict[str, str] | None = None) -> StateEntry:
    return StateEntry(key=key, hash=digest, attributes=attributes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


def test_roundtrip_survives_reopen(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f1")
        store.record_accepted("s", [entry("1", "a"), entry("2", "b", {"x": "hx"})])
        store.finish_sync("s", status="finished")
    with StateStore(path) as store:
        assert store.get("s", "1") == entry("1", "a")
        assert store.get("s", "2") == entry("2", "b", {"x": "hx"})
        assert store.get("s", "3") is None
        assert store.get("other", "1") is None
        assert store.count("s") == 2
        assert store.sync_names() == ["s"]


def test_record_overwrites(path: Path) -> None:
    with StateStore(path) as store:
        store.record_accepted("s", [entry("1", "a")])
        store.record_accepted("s", [entry("1", "b")])
        assert store.get("s", "1") == entry("1", "b")
        assert store.count("s") == 1


def test_get_many_chunks_large_key_sets(path: Path) -> None:
    with StateStore(path) as store:
        store.record_accepted("s", [entry(str(i), f"h{i}") for i in range(1200)])
        found = store.get_many("s", [str(i) for i in range(0, 1500, 3)])
        assert len(found) == 400
        assert found["999"].hash == "h999"


def test_first_run_then_same_mapping(path: Path) -> None:
    with StateStore(path) as store:
        start = store.begin_sync("s", kind="custom_event", fingerprint="f1")
        assert start.first_run
        assert not start.mapping_changed
        store.finish_sync("s", status="finished")
        again = store.begin_sync("s", kind="custom_event", fingerprint="f1")
        assert not again.first_run
        assert not again.resumed
        assert again.previous_status == "finished"


def test_changed_mapping_fails_by_default(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f1")
        store.record_accepted("s", [entry("1")])
        store.finish_sync("s", status="finished")
        with pytest.raises(StateError, match="different mapping") as info:
            store.begin_sync("s", kind="custom_event", fingerprint="f2")
        assert "resend" in str(info.value)
        # The failed check changed nothing.
        assert store.fingerprint("s") == "f1"
        assert store.count("s") == 1


def test_changed_kind_counts_as_changed_mapping(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f1")
        with pytest.raises(StateError):
            store.begin_sync("s", kind="user_attributes", fingerprint="f1")


def test_changed_mapping_resend_clears_state(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f1")
        store.record_accepted("s", [entry("1"), entry("2")])
        store.record_accepted("t", [entry("1")])
        start = store.begin_sync(
            "s", kind="custom_event", fingerprint="f2", on_mapping_change="resend"
        )
        assert start.mapping_changed
        assert start.state_cleared
        assert store.count("s") == 0
        assert store.count("t") == 1
        assert store.fingerprint("s") == "f2"


def test_changed_mapping_keep_keeps_state(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f1")
        store.record_accepted("s", [entry("1")])
        start = store.begin_sync(
            "s", kind="custom_event", fingerprint="f2", on_mapping_change="keep"
        )
        assert start.mapping_changed
        assert not start.state_cleared
        assert store.count("s") == 1


def test_bad_mapping_change_option(path: Path) -> None:
    with StateStore(path) as store, pytest.raises(ValueError, match="on_mapping_change"):
        store.begin_sync("s", kind="k", fingerprint="f", on_mapping_change="maybe")  # type: ignore[arg-type]


def _outbox_batch(rid: str, keys: list[str]) -> OutboxBatch:
    return OutboxBatch(
        source_request_id=rid,
        body=b'{"source_request_id":"' + rid.encode() + b'","environment":"development"}',
        rows=tuple((int(k), k) for k in keys),
        event_rows=(),
        entries=tuple(entry(k) for k in keys),
    )


def test_unsettled_outbox_batches_are_reported_after_a_crash(path: Path) -> None:
    store = StateStore(path)
    store.begin_sync("s", kind="custom_event", fingerprint="f1")
    store.outbox_add(
        "s",
        [("/v2/bulkevents", [_outbox_batch("r1", ["1", "2", "3"]), _outbox_batch("r2", ["4"])])],
        next_seq=7,
    )
    assert store.settle("s", source_request_id="r1", outcome="accepted")
    # Simulate a crash: never finish_sync; drop the connection.
    store.close()
    with StateStore(path) as again:
        assert [r.source_request_id for r in again.in_flight("s")] == ["r2"]
        start = again.begin_sync("s", kind="custom_event", fingerprint="f1")
        assert start.resumed
        assert start.next_seq == 7
        assert [r.source_request_id for r in start.in_flight] == ["r2"]
        assert start.known_keys == 3
        # The outbox keeps the unsettled batch, byte for byte, until its outcome is known.
        (request,) = again.outbox("s")
        assert request.body == b"[" + _outbox_batch("r2", ["4"]).body + b"]"
        assert again.settle("s", source_request_id="r2", outcome="failed")
        assert len(again.in_flight("s")) == 1
        assert again.settle("s", source_request_id="r2", outcome="rejected")
        assert again.in_flight("s") == []
        assert again.outbox("s") == []  # settled bodies (personal data) are deleted
        assert again.get("s", "4") is None


def test_stopped_run_is_resumed(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="k", fingerprint="f")
        store.finish_sync("s", status="stopped")
        assert store.begin_sync("s", kind="k", fingerprint="f").resumed


@pytest.mark.parametrize("in_sqlite", [True, False])
def test_settle_is_atomic(path: Path, in_sqlite: bool) -> None:
    with StateStore(path) as store:
        store._json = in_sqlite  # entries upserted from their JSON inside SQLite, or in Python
        store.begin_sync("s", kind="k", fingerprint="f")
        store.outbox_add("s", [("/v2/bulkevents", [_outbox_batch("r", ["1"])])])
        real = store._store_entries

        def exploding(*args: object) -> object:
            real(*args)  # type: ignore[arg-type]
            raise RuntimeError("boom")

        store._store_entries = exploding  # type: ignore[method-assign,assignment]
        with pytest.raises(RuntimeError):
            store.settle("s", source_request_id="r", outcome="accepted")
        assert store.get("s", "1") is None
        assert len(store.in_flight("s")) == 1


def test_forget(path: Path) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="k", fingerprint="f")
        store.record_accepted("s", [entry("1"), entry("2")])
        assert store.forget("s") == 2
        assert store.sync_names() == []
        assert store.begin_sync("s", kind="k", fingerprint="other").first_run


def test_empty_file_fails_loudly(path: Path) -> None:
    path.write_bytes(b"")
    with pytest.raises(StateError, match="empty"):
        StateStore(path)


def test_not_sqlite_fails_loudly(path: Path) -> None:
    path.write_text("hello, I am a CSV\n1,2,3\n")
    with pytest.raises(StateError, match="not an mparticle_feed state file"):
        StateStore(path)


def test_foreign_sqlite_fails_loudly(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not an mparticle_feed state file"):
        StateStore(path)


def _filled(path: Path, rows: int = 3000) -> None:
    with StateStore(path) as store:
        store.begin_sync("s", kind="k", fingerprint="f")
        store.record_accepted("s", [entry(f"key-{i:06d}", "x" * 32) for i in range(rows)])
        store.finish_sync("s", status="finished")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_file_fails_loudly(path: Path, keep: float) -> None:
    _filled(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(StateError):
        StateStore(path).get("s", "key-000001")


def test_corrupted_pages_fail_loudly(path: Path) -> None:
    _filled(path)
    data = bytearray(path.read_bytes())
    # Overwrite the middle of the file (table b-tree pages) with garbage.
    middle = len(data) // 2
    data[middle : middle + 8192] = b"\xa5" * 8192
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupt"):
        StateStore(path)


def test_newer_schema_version_is_refused(path: Path) -> None:
    _filled(path, rows=1)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="schema version"):
        StateStore(path)


def test_threads_can_share_a_store(path: Path) -> None:
    with StateStore(path) as store:

        def work(offset: int) -> None:
            for i in range(50):
                store.record_accepted("s", [entry(f"{offset}-{i}")])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.count("s") == 200


def test_secret_free_repr(path: Path) -> None:
    with StateStore(path) as store:
        assert repr(store) == f"StateStore({str(path)!r})"


def test_text_that_does_not_decode_is_a_state_error(tmp_path: Path) -> None:
    # Found by R14: noise can leave bytes that are not UTF-8 where SQLite expects text.
    path = tmp_path / "state.db"
    with StateStore(path) as store:
        store.record_accepted("s", [StateEntry(key="k1", hash="h")])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE accepted SET hash = CAST(X'80FF' AS TEXT)")
    conn.commit()
    conn.close()
    with StateStore(path) as store, pytest.raises(StateError, match="cannot read state file"):
        store.get_many("s", ["k1"])
