"""The runnable examples in examples/: each one trains briefly and does what it shows, the
README's loop is an excerpt of examples/foreign_loop.py, and no example goes untested."""

from __future__ import annotations

import importlib
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import torch

import smto

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
README_SECTION = "## Use a method in your own training loop"
BEGIN, END = "# --- README begin ---", "# --- README end ---"
STEPS = 30

Test = TypeVar("Test", bound=Callable[..., None])
RUN_BY_TESTS: set[str] = set()
"""The examples some test below runs (filled by :func:`runs`)."""


def runs(name: str) -> Callable[[Test], Test]:
    """Gives the test the module examples/<name>.py as its ``example`` argument, and records
    that ``name`` is tested."""
    RUN_BY_TESTS.add(name)
    return pytest.mark.parametrize("example", [name], indirect=True)


@pytest.fixture
def example(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, imported as ``python examples/<name>.py`` sees its siblings."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(request.param)


def assert_loss_went_down(run: Any) -> None:
    assert run.end_loss < 0.9 * run.start_loss, run.summary()


def declared_sum(method: smto.Method) -> float | None:
    """What the weights sum to under the method's declared scale (None for CUSTOM)."""
    return {smto.Scale.MEAN: 1.0, smto.Scale.SUM: float(method.n_tasks)}.get(method.scale)


@runs("foreign_loop")
@pytest.mark.parametrize("method_name", ["nash_mtl", "unit_scal", "mgda", "rlw_dirichlet"])
def test_foreign_loop_trains_with_the_declared_scale(example: ModuleType, method_name: str):
    run = example.main(steps=STEPS, method_name=method_name)
    assert_loss_went_down(run)
    assert run.weights.shape == (STEPS, 2)
    assert torch.isfinite(run.weights).all()
    total = declared_sum(run.method)
    if total is None:
        assert (run.weights > 0).all()  # Nash-MTL's bargaining weights are positive
    else:
        sums = run.weights.sum(dim=1)
        assert torch.allclose(sums, torch.full_like(sums, total), atol=1e-5), sums


@runs("foreign_loop")
def test_the_readme_loop_is_the_example(example: ModuleType):
    """Fails if the README's code block or the example's marked region changes alone."""
    source = Path(example.__file__).read_text()
    assert source.count(BEGIN) == 1 and source.count(END) == 1
    region = source.split(BEGIN + "\n", 1)[1].split(END, 1)[0]
    assert textwrap.dedent(region.rstrip(" ")) == readme_code_block()


def readme_code_block() -> str:
    """The first Python code block of the README's foreign-loop section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(README_SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```\n", section, re.DOTALL)
    assert match is not None, f"no Python code block under {README_SECTION!r}"
    return match.group(1)


@runs("famo_post_step")
def test_famo_learns_its_logits_in_post_step(example: ModuleType):
    run = example.main(steps=STEPS)
    assert_loss_went_down(run)
    assert isinstance(run.method, smto.PostStep)
    assert not torch.equal(run.method.logits, torch.zeros(2))  # only post_step moves them
    sums = run.weights.sum(dim=1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)  # Scale.MEAN


@runs("rotograd_head_inputs")
def test_rotograd_trains_its_rotations_in_their_own_group(example: ModuleType):
    run = example.main(steps=STEPS)
    assert_loss_went_down(run)
    rotations = run.method.rotation_params
    groups = [g for g in run.optimizer.param_groups if any(p is rotations for p in g["params"])]
    assert len(groups) == 1
    assert groups[0]["lr"] == run.optimizer.param_groups[0]["lr"] * run.method.lr_relation
    assert rotations.abs().max() > 0  # initialized at 0


@runs("auto_lambda_validation")
def test_auto_lambda_moves_its_weights(example: ModuleType):
    run = example.main(steps=STEPS)
    assert_loss_went_down(run)
    start = torch.full((2,), run.method.init_weight)
    assert ((run.method.meta_weights - start).abs() > 1e-4).all()
    assert torch.equal(run.weights[-1], run.method.meta_weights)


def test_every_example_is_run_by_a_test():
    files = {p.stem for p in EXAMPLES.glob("*.py")}
    assert files == RUN_BY_TESTS, (
        f"untested examples: {sorted(files - RUN_BY_TESTS)}; "
        f"tests of missing examples: {sorted(RUN_BY_TESTS - files)}"
    )
