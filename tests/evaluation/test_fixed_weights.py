"""Fixed-weights extraction (EMA of normalized per-epoch weights) and fixed-weights runs."""

from __future__ import annotations

import math

import pytest
from eval_records import multi_record

from smto.cli import main
from smto.evaluation.fixed_weights import (
    FixedWeights,
    ema_weights,
    extract_fixed_weights,
    fixed_weights_config,
    run_weights,
)
from smto.train import RunConfig, load_run, train
from smto.train.records import find_runs

# normalized: (0.25, 0.75), (0.5, 0.5), (1, 0)
EPOCHS = [{"A": 1.0, "B": 3.0}, {"A": 0.5, "B": 0.5}, {"A": 2.0, "B": 0.0}]
PUBLISHED_MNIST_CL_RR = [0.10068, 0.89932]  # the study's CAGrad FwLe0.9 weights


def history(weights: list[dict[str, float]]) -> list[dict]:
    return [{"epoch": i, "weights": w} for i, w in enumerate(weights)]


def test_ema_by_hand():
    # beta 0.9: m1 = 0.9 (0.25, 0.75) + 0.1 (0.5, 0.5) = (0.275, 0.725)
    #           m2 = 0.9 (0.275, 0.725) + 0.1 (1, 0) = (0.3475, 0.6525)
    assert ema_weights(EPOCHS) == pytest.approx({"A": 0.3475, "B": 0.6525})
    # beta 0.5: m1 = (0.375, 0.625), m2 = (0.6875, 0.3125)
    assert ema_weights(EPOCHS, beta=0.5) == pytest.approx({"A": 0.6875, "B": 0.3125})
    assert ema_weights(EPOCHS, beta=0.0) == pytest.approx({"A": 1.0, "B": 0.0})
    with pytest.raises(ValueError, match="beta"):
        ema_weights(EPOCHS, beta=1.0)
    with pytest.raises(ValueError, match="epoch 1"):
        ema_weights([EPOCHS[0], {"A": 0.0, "B": 0.0}])


def test_epoch_rules_and_a_diverged_epoch():
    run = multi_record("r", {"A": {"acc": 1.0}}, None, tasks="A_B", history=history(EPOCHS))
    run.best_epoch = 1
    assert run_weights(run) == pytest.approx({"A": 0.3475, "B": 0.6525})
    assert run_weights(run, epochs="best") == pytest.approx({"A": 0.275, "B": 0.725})
    run.history.append({"epoch": 3, "weights": {"A": math.nan, "B": 1.0}})
    assert run_weights(run) == pytest.approx({"A": 0.3475, "B": 0.6525})
    with pytest.raises(ValueError, match="epochs must be"):
        run_weights(run, epochs="last")


def test_extraction_averages_the_runs():
    flat = history([{"A": 1.0, "B": 1.0}] * 3)
    runs = [
        multi_record("r0", None, None, tasks="A_B", method="cagrad", history=history(EPOCHS)),
        multi_record("r1", None, None, tasks="A_B", method="CAGrad", seed=1, history=flat),
    ]
    weights = extract_fixed_weights(runs)
    assert weights.weights == pytest.approx({"A": (0.3475 + 0.5) / 2, "B": (0.6525 + 0.5) / 2})
    assert (weights.method, weights.tasks, weights.beta, weights.epochs) == (
        "cagrad",
        "A_B",
        0.9,
        "all",
    )
    assert weights.sources == ["r0", "r1"]


def test_published_mnist_weights_round_trip_into_a_fixed_weights_run(tmp_path):
    mnist = FixedWeights(
        "multi_mnist", "CL_RR", "cagrad", dict(zip(("CL", "RR"), PUBLISHED_MNIST_CL_RR))
    )
    mnist.save(tmp_path / "mnist.json")
    loaded = FixedWeights.load(tmp_path / "mnist.json")
    assert loaded == mnist
    source = RunConfig(tasks="CL_RR", method="cagrad", method_params={"alpha": 0.4}, lr=0.0025)
    config = fixed_weights_config(source, loaded)
    assert config.method_params == {"weights": PUBLISHED_MNIST_CL_RR}
    assert (config.method, config.lr) == ("fixed", 0.0025)

    toy = FixedWeights(
        "toy_regression", "T1_T2", "cagrad", dict(zip(("T1", "T2"), PUBLISHED_MNIST_CL_RR))
    )
    toy.save(tmp_path / "toy.json")
    base = RunConfig(
        problem="toy_regression", tasks="T1_T2", method="cagrad", epochs=1, batch_size=64
    )
    config = fixed_weights_config(base.to_dict(), FixedWeights.load(tmp_path / "toy.json"))
    direct = RunConfig(
        problem="toy_regression",
        tasks="T1_T2",
        method="fixed",
        method_params={"weights": PUBLISHED_MNIST_CL_RR},
        epochs=1,
        batch_size=64,
    )
    assert config.run_id() == direct.run_id()
    record = train(config, tmp_path / "runs")
    assert record.status == "completed"
    saved = load_run(find_runs(tmp_path / "runs")[0])
    assert saved.config["method_params"]["weights"] == PUBLISHED_MNIST_CL_RR
    used = saved.history[0]["weights"]
    assert [used["T1"], used["T2"]] == pytest.approx(PUBLISHED_MNIST_CL_RR, rel=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        fixed_weights_config(RunConfig(tasks="CL_CR"), mnist)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fixed weights"):
        FixedWeights.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="corrupt"):
        FixedWeights.load(tmp_path / "bad.json")
    FixedWeights("toy_regression", "T1_T2", "cagrad", {"T1": 1.0}).save(tmp_path / "short.json")
    with pytest.raises(ValueError, match="no weight for task"):
        FixedWeights.load(tmp_path / "short.json")


def test_fixed_weights_command_extracts_saves_and_trains(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        config = RunConfig(
            problem="toy_regression",
            tasks="T1_T2",
            method="cagrad",
            epochs=3,
            batch_size=64,
            seed=seed,
        )
        train(config, runs)
    records = [load_run(d) for d in find_runs(runs)]
    by_hand = [ema_weights([e["weights"] for e in r.history]) for r in records]
    expected = {t: (by_hand[0][t] + by_hand[1][t]) / 2 for t in ("T1", "T2")}
    args = ["fixed-weights", str(runs), "--problem", "toy_regression", "--tasks", "T1_T2"]
    args += ["--method", "CAGrad", "--save", str(tmp_path / "w.json"), "--train", "--quiet"]
    assert main(args) == 0
    saved = FixedWeights.load(tmp_path / "w.json")
    assert saved.weights == pytest.approx(expected, rel=1e-12)
    assert "train with: smto train --method fixed" in capsys.readouterr().out
    fixed = [load_run(d) for d in find_runs(runs) if "-fixed-" in d.name]
    assert sorted(r.config["seed"] for r in fixed) == [0, 1]
    assert all(r.config["method_params"]["weights"] == saved.as_list() for r in fixed)
    assert main([*args[:6], "--method", "famo"]) == 2
    other_lr = RunConfig(
        problem="toy_regression", tasks="T1_T2", method="cagrad", epochs=1, batch_size=64, lr=0.01
    )
    train(other_lr, runs)
    assert main([*args[:6], "--method", "cagrad"]) == 2
    error = capsys.readouterr().err
    assert "2 configurations" in error and "no finished single-task runs" in error
