"""Mapping stage: mParticle's documented limits, as the compiled mapping applies them.

The policy (documented in docs/mapping.md):

- event name over 256 characters: truncated to 256, as mParticle does for S2S (counted);
- attribute name over 256 characters, attribute value over 4096 characters, more than 100
  attributes on an event, more than 100 user attributes on a row, a user attribute list over
  1000 entries or with an entry over 512 characters: the row is rejected;
- rows of one user whose user attributes would exceed 100 together go to separate batches
  (:mod:`.run`).
"""

from __future__ import annotations

__all__ = [
    "MAX_ATTRIBUTE_NAME",
    "MAX_ATTRIBUTE_VALUE",
    "MAX_EVENT_ATTRIBUTES",
    "MAX_EVENT_NAME",
    "MAX_USER_ATTRIBUTES",
    "MAX_USER_ATTRIBUTE_LIST",
    "MAX_USER_ATTRIBUTE_LIST_ENTRY",
]

MAX_EVENT_NAME = 256
MAX_ATTRIBUTE_NAME = 256
MAX_ATTRIBUTE_VALUE = 4096
MAX_EVENT_ATTRIBUTES = 100
MAX_USER_ATTRIBUTES = 100
MAX_USER_ATTRIBUTE_LIST = 1000
MAX_USER_ATTRIBUTE_LIST_ENTRY = 512
#: An mpid and an integer attribute value are signed 64-bit.
_INT64 = 2**63
