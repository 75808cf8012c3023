"""notebooks/launch_overhead_cards.py: one card's run alone (saying so), two cards side by side once a
second card's trace exists, and per card what each relaxed policy saves over safe. Executed headless as
tests/unit/test_notebooks.py executes the other notebooks (same helpers, same lint)."""

from __future__ import annotations

import pytest

from .test_notebooks import _committed, _execute, _images, _text

pytest.importorskip("nbclient")
NAME = "launch_overhead_cards"


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    from . import notebook_traces

    d = tmp_path_factory.mktemp("card-traces")
    return {gpu: notebook_traces.launch_overhead_trace(d / f"launch_overhead-2099010{i}T000000Z-00000{i}.jsonl",
                                                        gpu=gpu, speed=speed)
            for i, (gpu, speed) in enumerate((("NVIDIA H200", 1.0), ("NVIDIA H100 80GB HBM3", 1.25)))}


def test_two_cards_side_by_side(cards, tmp_path):
    nb = _execute(NAME, {"traces": [str(p) for p in cards.values()]}, tmp_path)
    text = _text(nb)
    assert _images(nb) >= 1 and "One card only" not in text
    for what in ("NVIDIA H200 (synthetic CPU) · safe", "NVIDIA H100 80GB HBM3 (synthetic CPU) · seed", "× ideal",
                 "× C floor", "µs saved per launch over safe", "minimal-checks", "Safe × ideal, NVIDIA H100"):
        assert what in text, what


def test_one_card_alone_says_so(cards, tmp_path):
    nb = _execute(NAME, {"traces": [str(cards["NVIDIA H200"])]}, tmp_path)
    text = _text(nb)
    assert "One card only" in text and "NVIDIA H200" in text and "H100" not in text
    assert "µs saved per launch over safe" in text


def test_runs_on_the_committed_traces(tmp_path):
    if _committed("launch_overhead") is None:
        pytest.skip("no committed traces/launch_overhead-*.jsonl")
    nb = _execute(NAME, {}, tmp_path)  # default: the newest default run per GPU under traces/
    assert _images(nb) >= 1 and "µs saved per launch over safe" in _text(nb)
