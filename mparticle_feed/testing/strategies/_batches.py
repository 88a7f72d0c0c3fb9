"""Strategies for whole batches (models stage): one user's events, identities, device,
consent and context.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..._dataplan import DataPlanVersion, LoadedDataPlan
from ..._dataplan._strategies import plan_batches
from ..._wire.common import UserIdentities
from ..._wire.enums import Environment
from ..._wire.models import Batch, Event
from ._events import events
from ._objects import (
    application_infos,
    attribution_infos,
    consent_states,
    contexts,
    device_infos,
    user_identities,
)
from ._values import (
    _MAX_ITEMS,
    _int64,
    _maybe,
    _names,
    _only,
    _string_maps,
    _user_attribute_maps,
    _uuid_strings,
    _values,
)


def batches(
    *,
    min_events: int = 0,
    max_events: int = 5,
    event_strategy: st.SearchStrategy[Event] | None = None,
    with_timestamps: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
    environment: Environment | None = None,
    user_identities_strategy: st.SearchStrategy[UserIdentities | None] | None = None,
    data_plan: LoadedDataPlan | DataPlanVersion | None = None,
    fields: Collection[str] | None = None,
) -> st.SearchStrategy[Batch]:
    """Whole batches: one user's events, identities, device, consent and context.

    With ``data_plan``, only batches the plan allows: tagged with the plan's
    ``context.data_plan``, in an environment where a version is active (or ``environment``),
    holding planned events and the planned user attributes and identities. Only
    ``min_events``, ``max_events`` and ``environment`` combine with it; see
    :func:`violating_batches` for negative tests.

    * ``min_events`` / ``max_events`` bound the number of events. With ``min_events=0`` the
      ``events`` field is sometimes left unset.
    * ``event_strategy`` replaces :func:`events` (for example ``custom_events()``).
    * ``with_timestamps``, ``min_timestamp`` and ``max_timestamp`` shape the events'
      ``timestamp_unixtime_ms`` as for :func:`custom_events`; they apply to the default event
      strategy only, so they cannot be combined with ``event_strategy``.
    * ``environment`` fixes the environment (either value otherwise).
    * ``user_identities_strategy`` replaces the default (sometimes unset) identities, for
      example ``user_identities(min_size=1)``.
    * ``fields`` limits the batch's optional fields generated (``events`` and
      ``environment`` are always), for example ``["user_identities", "user_attributes"]``:
      fewer draws, faster examples (see ``benchmarks/strategies.py``).
    """
    if min_events < 0 or max_events < min_events:
        raise InvalidArgument(f"need 0 <= min_events <= max_events, got {min_events}, {max_events}")
    if data_plan is not None:
        others = (event_strategy, with_timestamps, min_timestamp, max_timestamp)
        if any(option is not None for option in (*others, user_identities_strategy, fields)):
            raise InvalidArgument("a data plan shapes the events and identities itself")
        return plan_batches(
            data_plan, min_events=min_events, max_events=max_events, environment=environment
        )
    timestamp_options = (with_timestamps, min_timestamp, max_timestamp)
    if event_strategy is None:
        event_strategy = events(
            with_timestamp=with_timestamps, min_timestamp=min_timestamp, max_timestamp=max_timestamp
        )
    elif any(option is not None for option in timestamp_options):
        raise InvalidArgument("timestamp options apply to the default events; shape your own")
    event_lists: st.SearchStrategy[list[Event] | None] = st.lists(
        event_strategy, min_size=min_events, max_size=max_events
    )
    if min_events == 0:
        event_lists = _maybe(event_lists)
    identities = (
        _maybe(user_identities()) if user_identities_strategy is None else user_identities_strategy
    )
    if user_identities_strategy is not None and fields is not None:
        fields = {*fields, "user_identities"}
    return st.builds(
        Batch,
        events=event_lists,
        environment=_values(list(Environment)) if environment is None else st.just(environment),
        **_only(_batch_fields(identities), fields, "Batch"),
    )


def _batch_fields(identities: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    """Strategies for a batch's optional fields, by name."""
    return {
        "source_request_id": _maybe(_uuid_strings | _names),
        "ip": _maybe(st.ip_addresses().map(str)),
        "device_info": _maybe(device_infos()),
        "application_info": _maybe(application_infos()),
        "user_attributes": _maybe(_user_attribute_maps()),
        "deleted_user_attributes": _maybe(st.lists(_names, max_size=_MAX_ITEMS)),
        "user_identities": identities,
        "partner_identities": _maybe(st.dictionaries(_names, _names, max_size=2)),
        "integration_attributes": _maybe(
            st.dictionaries(st.integers(1, 10_000).map(str), _string_maps(), max_size=2)
        ),
        "context": _maybe(contexts()),
        "mpid": _maybe(_int64),
        "mp_deviceid": _maybe(_uuid_strings),
        "consent_state": _maybe(consent_states()),
        "attribution_info": _maybe(attribution_infos()),
    }
