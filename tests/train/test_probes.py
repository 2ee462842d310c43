"""Gradient probes: the measures on hand-set gradients, the pairs, the per-sample gradients
against a loop, the per-epoch summaries, and a probed run's numbers against an unprobed one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.problems.toy import ToyRegression
from smto.train import RunConfig, find_runs, load_run, load_runs, train
from smto.train import probes as probes_module
from smto.train.probes import (
    GradientProbe,
    ProbeSpec,
    batch_task_gradients,
    pair_index,
    pair_metrics,
    per_sample_task_gradients,
    summarize,
)

TOY = {"problem": "toy_regression", "tasks": "T1_T2", "batch_size": 64, "lr": 3e-3}


@pytest.fixture(scope="module", autouse=True)
def _functorch_loaded():
    """torch.func's first transform imports torch._dynamo (seconds, once per process): paid
    here rather than inside the first test's time."""
    torch.func.vmap(torch.func.grad(lambda x: (x**2).sum()))(torch.ones(2, 3))


# Hand-set per-sample gradients (sample, task, parameter), see HandSet.
G = torch.tensor(
    [
        [[3.0, 4.0, 0.0, 0.0], [4.0, -3.0, 0.0, 0.0]],
        [[1.0, 0.0, 1.0, 0.0], [-2.0, 0.0, -2.0, 0.0]],
    ],
    dtype=torch.float64,
)


class _Dot(nn.Module):
    """z_i = x_i @ theta for x_i the (K, N) gradients of sample i: task k's loss of sample i,
    z_ik, then has the gradient x_i[k] with respect to theta."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.theta


class _Column(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, z: Tensor) -> Tensor:
        return z[:, self.k]


def hand_set_model() -> SharedEncoderModel:
    return SharedEncoderModel(_Dot(4), {"A": _Column(0), "B": _Column(1)})


def mean_losses(outputs, targets) -> Tensor:
    return torch.stack([outputs[t].mean() for t in ("A", "B")])


NO_TARGETS = {"A": torch.zeros(2), "B": torch.zeros(2)}


def test_measures_of_hand_set_gradients():
    first = torch.stack([G[0, 0], G[1, 0], G[0, 0]])
    second = torch.stack([G[0, 1], G[1, 1], G[1, 0]])
    values = pair_metrics(first, second)
    # (3,4) . (4,-3) = 0; (1,0,1) vs (-2,0,-2): opposite; (3,4,0) vs (1,0,1): 3 / (5 sqrt 2).
    assert values["cosine"].tolist() == pytest.approx([0.0, -1.0, 3 / (5 * math.sqrt(2))])
    # 2 |g||g'| / (|g|^2 + |g'|^2): 2*5*5/50, 2*sqrt2*2sqrt2/(2+8), 2*5*sqrt2/(25+2).
    assert values["magnitude"].tolist() == pytest.approx([1.0, 0.8, 10 * math.sqrt(2) / 27])
    # Opposite signs: parameter 1 of 4; parameters 0 and 2; none (a zero conflicts with none).
    assert values["conflict_ratio"].tolist() == [0.25, 0.5, 0.0]
    assert values["dot"].tolist() == [0.0, -4.0, 3.0]


def test_zero_gradients_have_defined_measures():
    zero, g = torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 2.0]])
    values = pair_metrics(torch.cat([zero, zero]), torch.cat([g, zero]))
    assert values["cosine"].tolist() == [0.0, 0.0]
    assert values["magnitude"].tolist() == [0.0, 1.0]
    assert values["conflict_ratio"].tolist() == [0.0, 0.0]


def test_chunked_blocks_give_the_measures_of_each_pair(monkeypatch):
    """The Gram route over parameter blocks and column chunks equals the measures taken pair
    by pair in numpy."""
    monkeypatch.setattr(probes_module, "_CHUNK_ELEMENTS", 7)  # chunks of 7 // rows columns
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 4, 23, generator=generator, dtype=torch.float64)
    grads[grads.abs() < 0.3] = 0.0  # zeros conflict with nothing
    blocks = list(grads.split([5, 1, 17], dim=2))
    values = probes_module.step_pairs(blocks)
    g = grads.numpy()
    first, second = pair_index(3, 4, "inter_sample")
    for i, ((s, t), (s2, t2)) in enumerate(zip(first.tolist(), second.tolist())):
        a, b = g[s, t], g[s2, t2]
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        mag = 2 * np.linalg.norm(a) * np.linalg.norm(b) / (a @ a + b @ b)
        assert values["inter_sample"]["cosine"][i].item() == pytest.approx(cos, abs=1e-12)
        assert values["inter_sample"]["magnitude"][i].item() == pytest.approx(mag, abs=1e-12)
        assert values["inter_sample"]["conflict_ratio"][i].item() == np.mean(a * b < 0)
    by_sample = g.mean(axis=1)
    a, b = by_sample[0], by_sample[2]  # the second pair of (0, 1), (0, 2), (1, 2)
    assert values["inter_sample_averaged"]["dot"][1].item() == pytest.approx(a @ b, abs=1e-12)
    whole = probes_module.step_pairs(grads)
    for family, measures in whole.items():
        for name, value in measures.items():
            torch.testing.assert_close(values[family][name], value, rtol=0, atol=1e-12)


def test_inter_task_pairs_share_the_sample_and_inter_sample_pairs_the_task():
    first, second = pair_index(3, 4, "inter_task")
    assert len(first) == 3 * 6
    assert torch.equal(first[:, 0], second[:, 0]) and (first[:, 1] < second[:, 1]).all()
    assert {tuple(r) for r in torch.cat([first, second], 1).tolist()} == {
        (s, a, s, b) for s in range(3) for a in range(4) for b in range(a + 1, 4)
    }
    first, second = pair_index(3, 4, "inter_sample")
    assert len(first) == 4 * 3
    assert torch.equal(first[:, 1], second[:, 1]) and (first[:, 0] < second[:, 0]).all()
    assert {tuple(r) for r in torch.cat([first, second], 1).tolist()} == {
        (a, t, b, t) for t in range(4) for a in range(3) for b in range(a + 1, 3)
    }
    assert len(pair_index(5, 1, "inter_task")[0]) == 0  # one task: no inter-task pair
    with pytest.raises(ConfigError, match="inter_task"):
        pair_index(2, 2, "inter_batch")


def test_the_model_gives_the_hand_set_gradients():
    model = hand_set_model()
    grads = per_sample_task_gradients(model, mean_losses, G, NO_TARGETS, [0, 1])
    assert torch.equal(grads, G)
    assert torch.equal(per_sample_task_gradients(model, mean_losses, G, NO_TARGETS, [1]), G[:, 1:])
    batch = batch_task_gradients(model, mean_losses, G, NO_TARGETS)
    assert torch.equal(batch, G.mean(0))


def test_a_probed_step_on_hand_set_gradients():
    probe = GradientProbe(
        ProbeSpec(cosine_every=1, pairs_every=1), hand_set_model(), mean_losses, 0
    )
    probe.observe(0, 0, G, NO_TARGETS)
    summary = probe.end_epoch()
    inter_task, inter_sample = summary["inter_task"], summary["inter_sample"]
    assert inter_task["cosine"]["mean"] == pytest.approx(-0.5)
    assert inter_task["magnitude"]["mean"] == pytest.approx(0.9)
    assert inter_task["conflict_ratio"]["mean"] == pytest.approx(0.375)
    assert inter_task["dot"]["mean"] == pytest.approx(-2.0)
    # Fig. A6: the conflicting pair (cos -1) and the supporting one (cos 0) apart.
    assert inter_task["cosine_conflicting"]["mean"] == pytest.approx(-1.0)
    assert inter_task["cosine_supporting"]["mean"] == pytest.approx(0.0)
    assert inter_task["conflicting_share"] == 0.5
    # Task A: (3,4,0,0) vs (1,0,1,0); task B: (4,-3,0,0) vs (-2,0,-2,0).
    cos_a, cos_b = 3 / (5 * math.sqrt(2)), -8 / (5 * 2 * math.sqrt(2))
    assert inter_sample["cosine"]["mean"] == pytest.approx((cos_a + cos_b) / 2)
    mag_a, mag_b = 10 * math.sqrt(2) / 27, 20 * math.sqrt(2) / 33
    assert inter_sample["magnitude"]["mean"] == pytest.approx((mag_a + mag_b) / 2)
    assert inter_sample["conflict_ratio"]["mean"] == pytest.approx(0.125)
    assert inter_sample["dot"]["mean"] == pytest.approx((3 - 8) / 2)
    # Fig. A5: task A averaged (2, 2, .5, 0) vs task B averaged (1, -1.5, -1, 0); the samples
    # averaged over tasks: (3.5, .5, 0, 0) vs (-.5, 0, -.5, 0).
    averaged = summary["inter_task_averaged"]
    assert averaged["dot"]["mean"] == pytest.approx(-1.5)
    assert averaged["cosine"]["mean"] == pytest.approx(-1.5 / math.sqrt(8.25 * 4.25))
    assert averaged["conflict_ratio"]["mean"] == pytest.approx(0.5)
    assert summary["inter_sample_averaged"]["dot"]["mean"] == pytest.approx(-1.75)
    # The main study's metric: the task gradients of the batch against their mean.
    tasks = G.mean(0).numpy()
    mean = tasks.mean(0)
    cosines = tasks @ mean / (np.linalg.norm(tasks, axis=1) * np.linalg.norm(mean))
    assert summary["cosine_to_mean"] == pytest.approx(cosines.mean())
    assert summary["steps"] == {"cosine": 1, "pairs": 1}
    assert summary["seconds"] > 0


def test_the_epoch_summary_pools_the_pairs_of_its_steps():
    assert summarize([0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        {"mean": 2.0, "std": math.sqrt(2.0), "p2_5": 0.1, "p97_5": 3.9}
    )
    assert all(math.isnan(v) for v in summarize([]).values())
    probe = GradientProbe(
        ProbeSpec(cosine_every=None, pairs_every=1), hand_set_model(), mean_losses, 0
    )
    probe.observe(0, 0, G, NO_TARGETS)  # inter-task cosines 0 and -1
    parallel = G.clone()
    parallel[:, 1] = 2 * parallel[:, 0]  # inter-task cosines 1 and 1
    probe.observe(0, 1, parallel, NO_TARGETS)
    cosine = probe.end_epoch()["inter_task"]["cosine"]
    assert cosine == pytest.approx(summarize([0.0, -1.0, 1.0, 1.0]))
    assert cosine["mean"] == pytest.approx(0.25)  # pooled, as is the mean of the step means
    assert cosine["std"] == pytest.approx(np.std([0.0, -1.0, 1.0, 1.0]))
    assert probe.end_epoch()["steps"] == {"pairs": 0, "cosine": 0}  # a fresh epoch


def test_the_subsets_are_at_most_the_spec_and_seeded():
    torch.manual_seed(0)
    x = torch.randn(20, 3, 4, dtype=torch.float64)
    model = SharedEncoderModel(_Dot(4), {t: _Column(k) for k, t in enumerate("ABC")})
    losses = lambda outputs, targets: torch.stack([outputs[t].mean() for t in "ABC"])  # noqa: E731
    spec = ProbeSpec(cosine_every=None, pairs_every=1, samples=4, tasks=2)
    summaries = []
    for _ in range(2):
        probe = GradientProbe(spec, model, losses, seed=3)
        probe.observe(1, 5, x, {})
        summaries.append(probe.end_epoch())
    first, second = summaries
    assert first["inter_task"]["cosine"] == second["inter_task"]["cosine"]
    probe = GradientProbe(spec, model, losses, seed=3)
    probe.observe(1, 5, x, {})
    kept = probe._pairs
    assert len(kept["inter_task"]["cosine"][0]) == 4 * 1  # 4 samples, one pair of 2 tasks
    assert len(kept["inter_sample"]["cosine"][0]) == 2 * 6  # 2 tasks, 6 pairs of 4 samples


def _loop_gradients(model, loss_fn, x, targets, shared) -> Tensor:
    rows = []
    for i in range(x.shape[0]):
        _, outputs = model(x[i : i + 1])
        losses = loss_fn(outputs, {k: v[i : i + 1] for k, v in targets.items()})
        rows.append(
            torch.stack(
                [
                    torch.cat(
                        [g.flatten() for g in torch.autograd.grad(loss, shared, retain_graph=True)]
                    )
                    for loss in losses
                ]
            )
        )
    return torch.stack(rows)


def test_vmapped_gradients_equal_a_loop_of_autograd_grad():
    problem = ToyRegression(sizes=(16, 8, 8))
    torch.manual_seed(0)
    model = problem.make_model().double()
    batch = next(problem.batches("train", 6))
    x, targets = batch.inputs.double(), {k: v.double() for k, v in batch.targets.items()}
    vmapped = per_sample_task_gradients(model, problem.losses, x, targets, [0, 1])
    looped = _loop_gradients(model, problem.losses, x, targets, list(model.shared_parameters()))
    torch.testing.assert_close(vmapped, looped, rtol=0, atol=1e-6)
    assert vmapped.abs().max() > 1e-2  # not trivially zero


def test_batch_norm_uses_running_statistics_and_keeps_them():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten())
    heads = {"A": nn.Linear(3 * 36, 1), "B": nn.Linear(3 * 36, 1)}
    model = SharedEncoderModel(encoder, heads).double()
    norm = model.encoder[1]
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)

    def losses(outputs, targets):
        return torch.stack([((outputs[t].squeeze(-1) - targets[t]) ** 2).mean() for t in "AB"])

    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    targets = {"A": torch.randn(5, dtype=torch.float64), "B": torch.randn(5, dtype=torch.float64)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    vmapped = per_sample_task_gradients(model, losses, x, targets, [0, 1])
    assert norm.training  # the mode is restored
    batch_task_gradients(model, losses, x, targets)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()  # the loop's reference: BatchNorm on its running statistics
    looped = _loop_gradients(model, losses, x, targets, list(model.shared_parameters()))
    torch.testing.assert_close(vmapped, looped, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("probes", "match"),
    [
        ({"every": 3}, "unknown probes key"),
        ({"pairs_every": 0}, "pairs_every must be"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1 or None"),
        ({"tasks": None}, r"tasks must be an integer >= 1, got None"),
        ({"cosine_every": 2.5}, "cosine_every must be"),
        ({"samples": True}, "samples must be"),
        ({"cosine_every": None, "pairs_every": None}, "nothing would be probed"),
        ([5], "must be None or a dict"),
    ],
)
def test_bad_probe_settings_are_clear_errors(probes, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig(**TOY, probes=probes)


def test_probes_join_the_run_id_only_when_set():
    plain = RunConfig(**TOY, epochs=1)
    assert plain.run_id() == RunConfig(**TOY, epochs=1, probes=None).run_id()
    assert RunConfig(**TOY, epochs=1, probes={}).run_id() != plain.run_id()
    # A run id published before the probes existed.
    assert RunConfig(**TOY, epochs=3).run_id() == "toy_regression-T1_T2-unit_scal-seed0-cde51468e6"


class _NormToy(ToyRegression):
    """The toy problem with BatchNorm and Dropout in its encoder (running statistics and
    random masks that a probe must leave alone)."""

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        model = super().make_model(dropout)
        model.encoder.insert(1, nn.BatchNorm1d(32))
        return model


def _training_numbers(record):
    keys = ("train_loss", "weights", "val", "val_loss", "score", "test", "info")
    return [{k: entry[k] for k in keys} for entry in record.history]


def test_a_probed_run_trains_bitwise_as_an_unprobed_one(tmp_path):
    problem = _NormToy(sizes=(192, 64, 64))
    base = {**TOY, "method": "rlw_normal", "dropout": 0.3, "epochs": 2}
    plain = train(RunConfig(**base), tmp_path, problem=problem)
    spec = {"cosine_every": 2, "pairs_every": 1, "samples": 4}
    probed = train(RunConfig(**base, probes=spec), tmp_path, problem=problem)
    assert _training_numbers(probed) == _training_numbers(plain)
    assert all("probes" not in entry for entry in plain.history)
    for entry in probed.history:
        assert entry["probes"]["steps"] == {"cosine": 2, "pairs": 3}  # 3 batches of 64
        assert -1 <= entry["probes"]["inter_sample"]["cosine"]["mean"] <= 1
        assert entry["probes"]["seconds"] > 0
    _, epochs = load_runs(tmp_path)
    probed_rows = epochs[epochs["run_id"] == probed.run_id]
    assert list(probed_rows["probes.inter_task.magnitude.p97_5"]) == [
        e["probes"]["inter_task"]["magnitude"]["p97_5"] for e in probed.history
    ]
    assert list(probed_rows["probes.cosine_to_mean"]) == [
        e["probes"]["cosine_to_mean"] for e in probed.history
    ]


def test_with_the_probe_off_no_probe_runs(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the probe ran")

    monkeypatch.setattr(probes_module.GradientProbe, "observe", fail)
    monkeypatch.setattr(probes_module.GradientProbe, "__init__", fail)
    record = train(RunConfig(**TOY, epochs=1), tmp_path)
    assert record.status == "completed" and "probes" not in record.history[0]


def test_the_command_line_probes(tmp_path, capsys):
    from smto.cli import main

    common = ["train", "--problem", "toy_regression", "--tasks", "T1_T2", "--epochs", "1"]
    common += ["--problem-option", "sizes=(128,64,64)", "--batch-size", "64", "--quiet"]
    args = [*common, "--out", str(tmp_path), "--probe", "pairs_every=2", "cosine_every=None"]
    assert main(args) == 0
    (record,) = [load_run(d) for d in find_runs(tmp_path)]
    assert record.config["probes"] == {"pairs_every": 2, "cosine_every": None}
    assert record.history[0]["probes"]["steps"] == {"cosine": 0, "pairs": 1}
    assert main([*common, "--out", str(tmp_path / "defaults"), "--probe"]) == 0
    (record,) = [load_run(d) for d in find_runs(tmp_path / "defaults")]
    assert record.config["probes"] == {}
    assert record.history[0]["probes"]["steps"] == {"cosine": 1, "pairs": 1}
    assert main([*common, "--out", str(tmp_path / "bad"), "--probe", "every=3"]) == 2
    assert "unknown probes key(s) ['every']" in capsys.readouterr().err


def _probe_values(record) -> str:
    """The probe summaries but their times, as JSON text (where NaN equals NaN: a summary of
    no pair is NaN)."""
    values = [{k: v for k, v in e["probes"].items() if k != "seconds"} for e in record.history]
    return json.dumps(values, sort_keys=True)


def test_a_resumed_probed_run_probes_the_same_samples(tmp_path):
    config = RunConfig(
        **TOY,
        epochs=2,
        dropout=0.3,
        problem_options={"sizes": [192, 64, 64]},
        probes={"samples": 4},
    )
    whole = train(config, tmp_path / "whole")

    def stop(record):
        if len(record.history) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", on_epoch_end=stop)
    resumed = train(config, tmp_path / "cut")
    assert _probe_values(resumed) == _probe_values(whole)
    assert _training_numbers(resumed) == _training_numbers(whole)
