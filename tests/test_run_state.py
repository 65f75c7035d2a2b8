"""RunState: best score and patience for both directions, and a checkpoint round trip."""

import json
import math
from dataclasses import dataclass

import pytest

from tslrec.core.errors import InputError
from tslrec.core.run_state import RunState


def test_higher_is_better_tracks_best_and_patience():
    s = RunState()
    s.elapsed = 1.5
    assert s.record(0.2, at=1) and (s.best_score, s.best_at, s.bad, s.seconds_to_best) == (0.2, 1, 0, 1.5)
    s.elapsed = 3.0
    assert not s.record(0.2, at=2)  # a tie is no improvement
    assert not s.record(0.1, at=3) and s.bad == 2 and s.should_stop(2) and not s.should_stop(3)
    assert s.record(0.3, at=4) and (s.best_at, s.bad, s.seconds_to_best) == (4, 0, 3.0)
    assert s.best_text() == "0.3000@4"


def test_lower_is_better_with_min_delta():
    s = RunState()
    assert s.best_text() == "none"
    assert s.record(1.0, at=5, higher_is_better=False)
    assert not s.record(1.0 - 1e-12, at=6, higher_is_better=False, min_delta=1e-9)  # within min_delta
    assert s.record(0.5, at=7, higher_is_better=False, min_delta=1e-9) and s.best_at == 7 and s.bad == 0


def test_nan_never_improves():
    s = RunState()
    assert not s.record(math.nan, at=1) and s.best_score is None and s.bad == 1
    assert s.record(0.1, at=2) and not s.record(math.nan, at=3)


@dataclass
class CountingState(RunState):
    tokens: int = 0  # a trainer's own counter


def test_round_trip_through_json_keeps_every_field():
    s = CountingState(epoch=2, step=17, batch=3, tokens=99, stopped=True)
    s.record(0.25, at=17)
    s.history.append({"step": 17, "loss": 0.1})
    saved = json.loads(json.dumps({**s.to_dict(), "scheduler": {"x": 1}}))  # other keys beside it are ignored
    back = CountingState.from_dict(saved)
    assert back == s and isinstance(back, CountingState)
    del saved["tokens"]
    with pytest.raises(InputError, match="ckpt.pt: the saved run state lacks tokens"):
        CountingState.from_dict(saved, "ckpt.pt")
