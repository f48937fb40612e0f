"""``serve`` tunes the garbage collector: full collections ten times rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from torchannels.server.run import FULL_COLLECTION_EVERY, PYTHON_DEFAULT, tune_collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_full_collections_are_ten_times_rarer() -> None:
    gc.set_threshold(*PYTHON_DEFAULT)
    tune_collector()
    assert gc.get_threshold() == (700, 10, FULL_COLLECTION_EVERY)
    assert FULL_COLLECTION_EVERY == 100


@pytest.mark.usefixtures("thresholds")
def test_thresholds_set_by_someone_else_stay() -> None:
    gc.set_threshold(20000, 20, 20)  # bench/gcprobe's GCTHRESH, an operator's sitecustomize
    tune_collector()
    assert gc.get_threshold() == (20000, 20, 20)
