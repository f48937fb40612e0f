"""The outbox's two seams with idempotent publishing (issue 22, part A).

TEMPORARY until the idempotency keys are merged: the key check follows the
spec, and the publish passes no keys. Switched to
``torchannels.protocol.check_idempotency_key`` and
``broker.publish_many(..., keys=...)`` at the merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..brokers.base import Broker
from ..errors import BadRequest
from ..frames import Publication


def check_idempotency_key(key: object) -> str:
    """A str of 1-128 printable ASCII characters, else BadRequest."""
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= 128
        or any(not 0x20 <= ord(c) <= 0x7E for c in key)
    ):
        raise BadRequest(
            "invalid_idempotency_key",
            "idempotency key must be 1-128 printable ASCII characters",
        )
    return key


async def publish(
    broker: Broker, messages: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str]
) -> list[Publication]:
    """Publish ``messages`` in order with their ``keys``; each result is new
    or a duplicate of an earlier publish with the same key."""
    return await broker.publish_many(messages)


def is_duplicate(result: object) -> bool:
    """Whether a publish result is a duplicate (its key was used already)."""
    return False
