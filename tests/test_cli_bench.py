"""The command line and the step benchmark's plumbing (no timings are asserted)."""

from __future__ import annotations

import pytest
import torch

import smto
from smto.bench.cli import DEFAULT_WORKLOADS, WORKLOAD_NAMES, build_parser, selected_workloads
from smto.bench.step import WORKLOADS, format_table, lenet_workload, run_benchmark
from smto.cli import main


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in smto.available():
        assert name in out
    assert "alpha=0.5" in out  # CAGrad's default is listed


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["bench", "step", "--methods", "adamw"]) == 2
    assert "unknown method 'adamw'; valid methods:" in capsys.readouterr().err


def test_benchmark_rows_and_ratios():
    timings = run_benchmark(lenet_workload(batch_size=4), ["pcgrad"], repeats=2, warmup=1)
    names = [t.method for t in timings]
    assert names == ["floor:sequential", "floor:batched", "unit_scal", "pcgrad"]
    assert all(t.median_s > 0 for t in timings)
    table = format_table(timings).splitlines()
    unit_row = next(line for line in table if "| Unit. Scal. |" in line)
    assert unit_row.split("|")[5].strip() == "1.00"
    floors = [float(line.split("|")[6]) for line in table if "| Jacobian floor (" in line]
    assert min(floors) == 1.0


def test_the_floor_can_be_left_out():
    timings = run_benchmark(lenet_workload(batch_size=4), [], repeats=1, warmup=0, floor=())
    assert [t.method for t in timings] == ["unit_scal"]
    (row,) = [line for line in format_table(timings).splitlines() if "| Unit. Scal. |" in line]
    assert row.split("|")[5].strip() == "1.00" and row.split("|")[6].strip() == "-"


def test_the_command_offers_exactly_the_benchmark_workloads():
    assert tuple(WORKLOADS) == WORKLOAD_NAMES


def test_one_or_more_models_are_chosen_and_all_leaves_out_the_pyg_reference():
    parse = build_parser().parse_args
    assert parse(["step"]).model == ["all"]
    assert parse(["step", "--model", "lenet"]).model == ["lenet"]
    assert parse(["step", "--models", "mpnn", "mpnn_pyg"]).model == ["mpnn", "mpnn_pyg"]
    assert selected_workloads(["all"]) == list(DEFAULT_WORKLOADS)
    assert "mpnn_pyg" not in DEFAULT_WORKLOADS and set(DEFAULT_WORKLOADS) < set(WORKLOAD_NAMES)
    assert selected_workloads(["mpnn_pyg", "all", "mpnn"]) == ["mpnn_pyg", *DEFAULT_WORKLOADS]


@pytest.mark.parametrize(("name", "n_tasks"), [("lenet4", 4), ("heavy_heads", 3), ("mpnn", 11)])
def test_workloads_train_every_head(name, n_tasks):
    workload = WORKLOADS[name](4, "cpu")
    assert workload.n_tasks == n_tasks
    model = workload.make_model()
    _, outputs = model(workload.inputs)
    losses = workload.losses(outputs)
    assert losses.shape == (n_tasks,)
    losses.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow  # two ~25M-parameter models: seconds each on a CPU
@pytest.mark.parametrize("name", ["nyuv2-segnet", "nyuv2-deeplab-r50"])
def test_the_nyuv2_workloads_train_every_head_at_their_shape(name):
    workload = WORKLOADS[name](2, "cpu", shape=(64, 32))
    assert workload.n_tasks == 3
    model = workload.make_model()
    _, outputs = model(workload.inputs)
    assert outputs["S"].shape == (2, 13, 32, 64) and outputs["N"].shape == (2, 3, 32, 64)
    losses = workload.losses(outputs)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    losses.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_segnet_workload_refuses_a_shape_it_cannot_pool(capsys):
    assert main(["bench", "step", "--models", "nyuv2-segnet", "--nyuv2-shape", "192", "144",
                 "--methods", "unit_scal"]) == 2  # fmt: skip
    assert "multiples of 32" in capsys.readouterr().err


def test_the_two_mpnn_workloads_are_one_model_on_one_batch():
    """mpnn (the fast encoder) and mpnn_pyg (PyG's layers): under one seed, the same
    weights and the same losses."""
    pytest.importorskip("torch_geometric")
    import torch

    losses = []
    for name in ("mpnn", "mpnn_pyg"):
        workload = WORKLOADS[name](4, "cpu")
        assert workload.name == name
        torch.manual_seed(0)
        model = workload.make_model()
        losses.append(workload.losses(model(workload.inputs)[1]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_train_command_runs_and_resumes(tmp_path, capsys):
    argv = [
        "train", "--problem", "toy_regression", "--tasks", "T1_T2", "--method", "cagrad",
        "--param", "alpha=0.2", "--epochs", "2", "--batch-size", "64", "--out", str(tmp_path),
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| CAGrad | completed |" in out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run.name.startswith("toy_regression-T1_T2-cagrad-seed0-")
    assert (run / "record.json").exists() and (run / "checkpoint.pt").exists()
    assert main(argv) == 0  # a finished run is returned, not retrained
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_train_command_rejects_bad_input(tmp_path, capsys):
    base = ["train", "--problem", "toy_regression", "--tasks", "T1_T2", "--out", str(tmp_path)]
    assert main([*base, "--method", "cagrad", "--param", "alpah=0.2"]) == 2
    assert "unknown hyperparameter(s) ['alpah']" in capsys.readouterr().err
    assert main([*base, "--param", "oops"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["train", "--problem", "cityscape"]) == 2
    assert "unknown problem 'cityscape'" in capsys.readouterr().err


def test_problems_lists_tasks_and_options(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    assert "multi_mnist" in out and "CL, CR, RL, RR" in out and "right_indices='seed'" in out


def test_torchjd_peers_run_in_the_same_step_and_agree_with_smto():
    """Each peer is timed beside its method; UPGrad's peer gives smto's update."""
    import torch

    from smto.bench.peers import TORCHJD, TorchjdPeer

    timings = run_benchmark(
        lenet_workload(batch_size=4), ["upgrad", "si"], repeats=1, warmup=0, peers=True
    )
    names = [t.method for t in timings]
    assert names[-3:] == ["upgrad", "torchjd:upgrad", "si"]  # si has no torchjd peer
    assert set(TORCHJD) <= set(smto.available())
    matrix = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    peer = TorchjdPeer(2, "upgrad").aggregate(matrix, torch.ones(2))
    ours = smto.create("upgrad", 2).aggregate(matrix, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(peer.direction, ours.direction, rtol=1e-3, atol=1e-3)
