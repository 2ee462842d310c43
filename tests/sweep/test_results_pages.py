"""The published reproductions in docs/results/ (``smto reproduce NAME --report --export``):
each directory's table is what smto's evaluation makes of the records committed beside it, so
the page can neither drift from its records nor from the code that evaluates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from smto.sweep.reproduce import EXPORTED, exported_comparison

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGES = sorted(p.parent for p in RESULTS.glob(f"*/{EXPORTED}"))


def test_there_is_a_published_reproduction():
    assert [p.name for p in PAGES] == ["multi_mnist-CL_RR"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_the_table_is_made_again_from_its_records(page):
    assert exported_comparison(page).markdown() == (page / "comparison.md").read_text()
    assert not list(page.glob("**/*.pt"))  # records only: no checkpoints or models
