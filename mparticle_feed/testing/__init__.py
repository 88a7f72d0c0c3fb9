"""Test helpers for code that uses mparticle_feed.

:class:`FakeEventsServer` is a loopback stand-in for mParticle's Events API. Hypothesis
strategies live in :mod:`mparticle_feed.testing.strategies` (imported on its own, so this
package works without hypothesis installed).
"""

from __future__ import annotations

from ._fake_server import FakeEventsServer, ReceivedRequest, Reply

__all__ = ["FakeEventsServer", "ReceivedRequest", "Reply"]
