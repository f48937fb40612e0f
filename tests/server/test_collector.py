"""``serve`` tunes the garbage collector: full collections ten times rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from torchannels.server.run import FULL_COLLECTION_EVERY, tune_collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_full_collections_are_rarer_and_young_ones_unchanged() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector()
    assert gc.get_threshold() == (700, 10, FULL_COLLECTION_EVERY)
    assert FULL_COLLECTION_EVERY == 100
    gc.set_threshold(1234, 7, 3)  # an operator's own young thresholds stay
    tune_collector()
    assert gc.get_threshold() == (1234, 7, FULL_COLLECTION_EVERY)
