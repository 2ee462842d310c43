"""The whole QM9 (slow: the offline build takes about 2 minutes on 2 cores the first time,
then loads from the cache in a second) with the study's split file (needs SMTO_DATA)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from smto.data import qm9 as qm9_data
from smto.problems import QM9
from smto.train import RunConfig, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir() -> Path:
    pytest.importorskip("rdkit", reason="the offline QM9 build needs rdkit (the qm9 extra)")
    if qm9_data.find_spec("qm9pack") is None:
        pytest.skip("the offline QM9 build needs qm9pack (the qm9 extra)")
    root = os.environ.get("SMTO_DATA")
    if not root or not (Path(root) / qm9_data.SPLIT_FILE).is_file():
        pytest.skip("the study's QM9 split file is not here: set SMTO_DATA to ../shared/data")
    return Path(root)


@pytest.fixture(scope="module")
def full(data_dir) -> qm9_data.QM9Data:
    return qm9_data.load_qm9("qm9pack", data_dir=data_dir)


def test_the_whole_build_has_pygs_statistics(full):
    assert len(full) == qm9_data.N_MOLECULES
    assert torch.equal(full.x[:, :5].sum(dim=1), torch.ones(len(full.x)))
    assert int(full.atom_counts.min()) == 3 and int(full.atom_counts.max()) == 29
    # PyG's QM9 documentation: about 18.0 nodes and 37.3 (directed) edges per molecule
    assert float(full.atom_counts.float().mean()) == pytest.approx(18.0, abs=0.05)
    assert float(2 * full.bond_counts.float().mean()) == pytest.approx(37.3, abs=0.05)
    assert full.index[-1] == qm9_data.N_INDEXED - 1
    assert torch.isfinite(full.y).all()


def test_the_study_split_and_a_short_training_on_it(data_dir, tmp_path):
    whole = QM9(data_dir=data_dir)
    sizes = [whole.split_size(s) for s in ("train", "val", "test")]
    assert sizes == [110_831, 10_000, 10_000]
    problem = QM9(data_dir=data_dir, limits=(2400, 600, 600))
    torch.testing.assert_close(problem.std, whole.std)  # the whole dataset's statistics
    config = RunConfig(
        problem="qm9",
        tasks=QM9.default_tasks(),
        method="unit_scal",
        epochs=2,
        batch_size=120,
        lr=1e-3,
        scheduler="plateau",
        problem_options={"limits": [2400, 600, 600]},
    )
    record = train(config, tmp_path, problem=problem)
    assert record.status == "completed"
    losses = [sum(e["train_loss"].values()) for e in record.history]
    assert losses[1] < losses[0]
    assert all(math.isfinite(v["mae"]) for v in record.history[-1]["val"].values())
