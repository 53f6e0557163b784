"""settle_heap: start-up objects leave the collector's generations."""

from __future__ import annotations

import gc

from falcon.services.heap import settle_heap


def test_settle_heap_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        kept = [[i] for i in range(1000)]  # container objects the collector tracks
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[0] > 700  # fewer young collections than the default
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
