"""Test helpers for code that uses mparticle_feed.

:class:`FakeEventsServer` is a loopback stand-in for mParticle's Events API, with scripted
faults (:class:`Reply`, :class:`PerBody`); :class:`FakeClock` makes the library's waits
instant and recorded. Hypothesis strategies live in :mod:`mparticle_feed.testing.strategies`
(imported on its own, so this package works without hypothesis installed).
"""

from __future__ import annotations

from ._clock import FakeClock
from ._fake_replies import PerBody, ReceivedRequest, Reply
from ._fake_server import FakeEventsServer, Responder

__all__ = ["FakeClock", "FakeEventsServer", "PerBody", "ReceivedRequest", "Reply", "Responder"]
