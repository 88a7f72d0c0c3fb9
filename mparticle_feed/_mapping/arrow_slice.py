"""Mapping stage: one slice of a record batch converted for the Arrow engine (:mod:`.arrow`).

Per row: its primary key, its user part, its event's fields (or its event written as data,
:mod:`.written`), and whether the row path must map it (``flagged``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._errors import ModelError
from .._wire.codegen import compile_function
from .._wire.models import CustomEvent
from .arrow_columns import (
    FLAG,
    ArrowValues,
    Columns,
    arrow_compute,
    attribute_kept,
    attribute_values,
    by_row,
    event_field,
    event_names,
    event_types,
    identity_kept,
    identity_texts,
    identity_values,
    is_int,
    is_text,
    keys,
    plain_type,
    same_as_before,
)
from .arrow_json import written_blobs
from .compile import _KnownMapped, _Mapped
from .written import WrittenField
from .written_structs import written_struct

if TYPE_CHECKING:
    from .arrow import ArrowEngine

__all__ = ["WRITTEN_FIELDS", "Converted"]

#: Custom event fields written as data, with the model's converter for each (their outputs
#: are ints and text, written as the model writes them).
WRITTEN_FIELDS: dict[str, Callable[[Any], Any]] = {
    name: cast("Callable[[Any], Any]", field.converter)
    for name, field in attrs.fields_dict(CustomEvent).items()
    if name in ("timestamp_unixtime_ms", "source_message_id", "session_uuid")
}


def dict_maker(names: Sequence[str]) -> Callable[..., dict[str, Any]]:
    """A function of one value per name that makes the dict of ``names`` and those values,
    as ``dict(zip(names, values))`` does (a repeated name: its last value, at its first
    place), at about half the cost: the dict is built in one step. The names are the
    function's globals, never its source."""
    keys = {f"name_{index}": name for index, name in enumerate(names)}
    params = ", ".join(f"value_{index}" for index in range(len(names)))
    items = ", ".join(f"name_{index}: value_{index}" for index in range(len(names)))
    return compile_function(
        "make",
        [f"def make({params}):", f"    return {{{items}}}"],
        keys,
        filename=f"<mparticle_feed dict of {len(names)} attributes>",
    )


def _sameness(
    engine: ArrowEngine, columns: Columns, user_lists: list[list[Any]], rows: int
) -> list[bool]:
    """Per row after the first, whether it shares the row before's user part."""
    names = [column for _, column in engine.identity_columns]
    for field, _, _, attr_columns in engine.attribute_maps:
        if field == "user_attributes":
            names.extend(attr_columns)
    same = same_as_before(columns, names, rows)
    if same is None:
        same = [a == b for a, b in itertools.pairwise(by_row(user_lists, rows))]
    return same


def _kept(columns: Columns, name: str, values: list[Any]) -> bool:
    """Whether the model's converter keeps every value: a timestamp column's own values,
    64-bit integers (which ``timestamp_ms`` hands back as they are)."""
    if name != "timestamp_unixtime_ms":
        return False
    column = columns.source_of(values)
    return column is not None and bool(columns.pa.types.is_signed_integer(column.type))


def _joined_as_is(columns: Columns, column: str) -> bool:
    """Whether an attribute column's values are kept as they are and written from the column
    itself (text, integers, booleans): its Python values are then not read unless a row is
    written otherwise (:class:`ArrowValues`)."""
    pa = columns.pa
    tp = columns.type_of(column)
    return (is_text(pa, tp) or is_int(pa, tp) or pa.types.is_boolean(tp)) and attribute_kept(
        columns, column
    )


class Converted:
    """A slice's columns converted for one mapping: per row, its key, user part and event
    fields, and the rows the row path must map (``flagged``)."""

    def __init__(self, engine: ArrowEngine, columns: Columns, rows: int) -> None:
        compiled = engine.compiled
        self.keys = keys(compiled, columns, rows)
        self.identity_names = [name for name, _ in engine.identity_columns]
        self._columns = columns
        self._identity_sources = [column for _, column in engine.identity_columns]
        self._user_sources: tuple[str, ...] = ()
        self.has_user_attributes = False
        #: What mapped rows are: _KnownMapped where the header's values are proven plain.
        self.mapped_cls: type[_Mapped] = _KnownMapped if engine.known_headers else _Mapped
        self._user_attribute_dict = engine.user_attribute_dict
        self.user_names: tuple[str, ...] = ()
        self.zeros: set[int] = set()
        event_attributes, plain, joinable, user_builder = self._attributes(engine, columns)
        same = self._same_users(columns, rows) if joinable else None
        #: Whether the user part's values are read at the runs' first rows only (``users_at``).
        self._deferred = same is not None
        #: Per row read (``users_at``), in order: its number, identities (name, text) and user
        #: attributes.
        self._user_parts: Iterator[tuple[int, tuple[tuple[str, str], ...], Any]] = iter(())
        identity_lists: list[list[Any]] = []
        user_lists: list[list[Any]] = []
        if not self._deferred:
            identity_lists = [
                identity_texts(compiled, columns, column) for column in self._identity_sources
            ]
            user_pairs: list[tuple[str, str]] = list(
                zip(self.user_names, self._user_sources, strict=True)
            )
            user_lists = [
                attribute_values(columns, user_builder, attr, column) for attr, column in user_pairs
            ]
        event_columns = self._event_columns(engine, columns, rows, plain=plain)
        self.flagged: set[int] = set()
        for values in (
            self.keys,
            *identity_lists,
            *user_lists,
            *(values for _, _, lists in event_attributes for values in lists),
            *(values for _, values in event_columns),
            self.names,
            *([] if self.types is None else [self.types]),
        ):
            # A column's own list holds no FLAG: not scanned.
            if columns.source_of(values) is None and FLAG in values:
                self.flagged.update(i for i, value in enumerate(values) if value is FLAG)
        #: Per user field, its values by row (read row by row: not ``_deferred``).
        self.identity_columns: list[tuple[str, list[Any]]] = []
        self.user_columns: list[tuple[str, list[Any]]] = []
        if not self._deferred:
            self.identity_columns = list(zip(self.identity_names, identity_lists, strict=True))
            self.user_columns = list(zip(self.user_names, user_lists, strict=True))
        if same is None:
            user_part = [*identity_lists, *user_lists]
            same = _sameness(engine, columns, user_part, rows) if joinable else [False] * rows
        self.same = same
        # Read by index, row by row: no tuple per row for the event's fields.
        self.event_columns = event_columns
        self.attribute_columns = [
            (field, list(zip(attr_names, lists, strict=True)))
            for field, attr_names, lists in event_attributes
        ]
        #: Per row, the event written as JSON (bytes), and its timestamp in ``stamps``; None
        #: where the row's event is a model (or the row path maps the row).
        self.written: list[bytes | None] | None = None
        self.stamps: Sequence[int | None] = ()
        if plain:
            self.written, self.stamps = written_blobs(
                columns,
                self._written_fields(engine, columns, rows, event_attributes),
                self.flagged,
                engine.event_type,
                frozenset(engine.struct_writers),
            )
            if engine.struct_writers:
                # Its objects are data, not models: a row JSON cannot carry goes the row path.
                self.flagged.update(i for i, event in enumerate(self.written) if event is None)

    def _attributes(
        self, engine: ArrowEngine, columns: Columns
    ) -> tuple[list[tuple[str, tuple[str, ...], list[Any]]], bool, bool, Any]:
        """The event's attribute maps read (name, attribute names, values per attribute);
        whether they are plain (written as data); whether a row may share the row before's
        user part; the user attributes' builder (their columns are read later)."""
        # Per attribute, its values, or its column left in Arrow (ArrowValues).
        event_attributes: list[tuple[str, tuple[str, ...], list[Any]]] = []
        # A row may share the user part of the row before only when equal values are written
        # alike: text, integers, booleans and floats (but not a float zero: 0.0 == -0.0).
        joinable = not engine.per_row_user
        pa = columns.pa
        plain = engine.writes
        user_builder: Any = None
        for field, builder, attr_names, attr_columns in engine.attribute_maps:
            if field == "user_attributes":
                self.has_user_attributes = True
                self.user_names, self._user_sources = attr_names, attr_columns
                user_builder = builder
                joinable = self._user_columns(engine, columns, attr_columns) and joinable
                continue
            lists = [
                ArrowValues(column, columns.batch.column(column))
                if engine.writes and _joined_as_is(columns, column)
                else attribute_values(columns, builder, attr, column)
                for attr, column in zip(attr_names, attr_columns, strict=True)
            ]
            event_attributes.append((field, attr_names, lists))
            # Values orjson writes as the model's hook does: their converter
            # (optional_scalar_map) hands them back unchanged.
            plain = plain and all(plain_type(pa, columns.type_of(c)) for c in attr_columns)
        return event_attributes, plain, joinable, user_builder

    def _same_users(self, columns: Columns, rows: int) -> list[bool] | None:
        """Per row after the first, whether it repeats the row before's user part, compared
        in Arrow, when the user part's values need not be read row by row: every identity
        column is text or integers and the policy keeps every user attribute as it is, so
        no row is flagged for them and only each run's first row is read. Else None."""
        if not all(identity_kept(columns, column) for column in self._identity_sources):
            return None
        if not all(attribute_kept(columns, column) for column in self._user_sources):
            return None
        return same_as_before(columns, [*self._identity_sources, *self._user_sources], rows)

    def users_at(self, starts: list[int]) -> None:
        """Read the user part of rows ``starts`` (each run's first row, unflagged): ``mapped``
        is to be asked for these rows, in this order, and no other."""
        if not self._deferred:
            return
        columns = self._columns
        pa = columns.pa
        indices = pa.array(starts, pa.int64())
        identity_lists = []
        for column in self._identity_sources:
            taken = columns.batch.column(column).take(indices)
            nulls = taken.null_count > 0
            identity_lists.append(identity_values(columns, column, taken.to_pylist(), nulls=nulls))
        # Iterators, each run's made as ``mapped`` asks for it: made all at once, the slice's
        # containers would set the garbage collector going while the window frees as many.
        pairs: Iterator[tuple[tuple[str, str], ...]]
        if not identity_lists:
            pairs = repeat((), len(starts))
        elif all(map(all, identity_lists)):
            # No identity left out (none null or empty): each row's pairs zipped in C.
            named = [
                zip(repeat(name), texts)
                for name, texts in zip(self.identity_names, identity_lists, strict=True)
            ]
            pairs = zip(*named, strict=True)
        else:
            pairs = (
                tuple(
                    [
                        (name, text)
                        for name, text in zip(self.identity_names, texts, strict=True)
                        if text
                    ]
                )
                for texts in zip(*identity_lists, strict=True)
            )
        attributes: Iterator[dict[str, Any] | None]
        if not self.has_user_attributes:
            attributes = repeat(None, len(starts))
        elif not self._user_sources:
            attributes = ({} for _ in starts)
        else:
            taken_columns = [
                columns.batch.column(column).take(indices) for column in self._user_sources
            ]
            user_lists = [taken.to_pylist() for taken in taken_columns]
            names = self.user_names
            make = self._user_attribute_dict
            if make is not None and not any(taken.null_count for taken in taken_columns):
                attributes = map(make, *user_lists)
            else:
                attributes = (
                    {
                        name: value
                        for name, value in zip(names, values, strict=True)
                        if value is not None
                    }
                    for values in zip(*user_lists, strict=True)
                )
        self._user_parts = zip(starts, pairs, attributes, strict=True)

    def _user_columns(
        self, engine: ArrowEngine, columns: Columns, attr_columns: tuple[str, ...]
    ) -> bool:
        """Note the user attribute columns' float zeros and whether the header's values are
        proven plain (``mapped_cls``); whether equal values are written alike (joinable)."""
        pa = columns.pa
        compute = arrow_compute()
        if engine.known_headers and not all(
            plain_type(pa, columns.type_of(c)) for c in attr_columns
        ):
            self.mapped_cls = _Mapped
        joinable = True
        for column in attr_columns:
            tp = columns.type_of(column)
            if pa.types.is_floating(tp):
                zeros = compute.equal(columns.batch.column(column), 0.0)
                self.zeros.update(compute.indices_nonzero(zeros.fill_null(False)).to_pylist())
            elif not (pa.types.is_boolean(tp) or is_text(pa, tp) or is_int(pa, tp)):
                joinable = False
        return joinable

    def _event_columns(
        self, engine: ArrowEngine, columns: Columns, rows: int, *, plain: bool
    ) -> list[tuple[str, list[Any]]]:
        """The event's fields, name and type per row (none for a user-attribute mapping)."""
        compiled = engine.compiled
        self.event_cls = compiled.event_cls
        self.fixed_type = compiled.fixed_event_type
        self.names: list[Any] = [None] * rows
        self.truncated: list[int] = [0] * rows
        self.types: list[Any] | None = None
        if self.event_cls is None:
            return []
        # Objects written as data only where the whole event is (plain attributes).
        writers = engine.struct_writers if plain else {}
        event_columns = [
            (
                name,
                written_struct(columns, rows, source, writers[name])
                if name in writers
                else event_field(compiled, columns, rows, name, source, get, coerce),
            )
            for name, source, get, coerce in engine.event_fields
        ]
        self.names, self.truncated = event_names(compiled, columns, rows)
        self.types = event_types(compiled, columns, rows)
        return event_columns

    def _written_fields(
        self,
        engine: ArrowEngine,
        columns: Columns,
        rows: int,
        event_attributes: list[tuple[str, tuple[str, ...], list[Any]]],
    ) -> list[WrittenField]:
        """Each written key's values (None: left out), in the codec's key order; an attribute
        map's are its names and its columns' values."""
        fields: list[WrittenField] = [("event_name", None, self.names)]
        if self.event_cls is CustomEvent:  # a commerce event's type is never mapped here
            types = [self.fixed_type] * rows if self.types is None else self.types
            fields.append(("custom_event_type", None, types))
        flagged = self.flagged
        for name, values in self.event_columns:
            convert = WRITTEN_FIELDS.get(name)
            if convert is None or _kept(columns, name, values):
                fields.append((name, None, values))  # written (written_struct), or kept as is
                continue
            converted: list[Any] = []
            for index, value in enumerate(values):
                if value is None or value is FLAG:
                    converted.append(value)
                    continue
                try:
                    converted.append(convert(value))
                except ModelError:
                    flagged.add(index)  # the row path rejects it, with the reason
                    converted.append(FLAG)
            fields.append((name, None, converted))
        for field, attr_names, lists in event_attributes:
            if lists:  # no attributes: the key is left out, as the model leaves it
                fields.append((field, attr_names, lists))
        order = engine.order
        fields.sort(key=lambda item: order[item[0]])
        return fields

    def events(self, rows: int) -> list[Any]:
        """Every row's event (None for a flagged row, and for a user-attribute mapping); a
        row whose event the model refuses is flagged (the row path rejects it)."""
        if self.event_cls is None:
            return [None] * rows
        flagged = self.flagged
        written = self.written
        out: list[Any] = [None] * rows if written is None else list(written)
        missing: Any = range(rows)
        if written is not None:
            missing = [i for i, e in enumerate(out) if e is None] if None in out else ()
        for index in missing:
            if index in flagged:
                continue
            try:
                out[index] = self.event(index)
            except ModelError:
                flagged.add(index)
        return out

    def event(self, index: int) -> Any:
        """The row's event, as bytes where written (its timestamp in ``stamps``), else a model
        (None for a user-attribute mapping); raises ModelError."""
        if self.event_cls is None:
            return None
        written = self.written
        if written is not None:
            event = written[index]
            if event is not None:
                return event
        kwargs: dict[str, Any] = {}
        for name, values in self.event_columns:
            value = values[index]
            if value is not None:
                kwargs[name] = value
        if self.names[index] is not None:
            kwargs["event_name"] = self.names[index]
        if self.fixed_type is not None:
            kwargs["custom_event_type"] = self.fixed_type
        elif self.types is not None:
            kwargs["custom_event_type"] = self.types[index]
        listed = self._columns.listed
        for field, attribute_columns in self.attribute_columns:
            built: dict[str, Any] = {}
            for name, values in attribute_columns:
                value = listed(values)[index]
                if value is not None:
                    built[name] = value
            if built:
                kwargs[field] = built
        return self.event_cls(**kwargs)

    def mapped(self, index: int, event: Any, truncated: int) -> _Mapped | None:
        """What the row path maps the row to; None when it has no identity."""
        user_attributes: dict[str, Any] | None
        if self._deferred:
            read, identity_pairs, user_attributes = next(self._user_parts)
            if read != index:
                msg = f"row {index} asked for; row {read} was read for it"
                raise AssertionError(msg)
        else:
            identity_pairs = tuple(
                [(name, values[index]) for name, values in self.identity_columns if values[index]]
            )
            user_attributes = (
                {
                    name: value
                    for name, values in self.user_columns
                    if (value := values[index]) is not None
                }
                if self.has_user_attributes
                else None
            )
        if not identity_pairs:
            return None
        return self.mapped_cls(
            # compile.py's user key, field for field: a row the row path maps joins the same batch.
            (identity_pairs, (), None, None, None, None, None, ()),
            identity_pairs,
            (),
            None,
            None,
            None,
            None,
            None,
            user_attributes,
            event,
            truncated,
        )
