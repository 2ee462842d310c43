"""``smto progression``: the gain of IMTL over Unit. Scal. along two steps of hand-written
Multi-MNIST run records (no training, no dataset), checked against gains worked out by hand
from the metric values written here."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from smto.cli import main
from smto.errors import ConfigError
from smto.train.records import RunRecord

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smto.evaluation.progression import progression_frame  # noqa: E402

LIMITS = {"limits": [512, 256, 256]}
SMALL = {"problem_options": LIMITS}
pytestmark = pytest.mark.filterwarnings("ignore:.*chose their best epoch")  # no --reference


def metrics(cl: float, **mse: float) -> dict[str, dict[str, float]]:
    """CL's accuracy and the mean squared error of each reconstruction task given."""
    return {"CL": {"accuracy": cl}, **{task: {"mse": v} for task, v in mse.items()}}


def write_multi(root: Path, run_id: str, method: str, seed: int, test, val=None, **config):
    config = {"problem": "multi_mnist", "method": method, "seed": seed, **config}
    config["tasks"] = config.get("tasks", "_".join(test))
    RunRecord(
        run_id, config, "test", "completed", best_epoch=0, best_val=val or test, best_test=test
    ).save(root / run_id)


def write_single(root: Path, run_id: str, task: str, metric: str, value: float, **config):
    """A single-task run with ``value`` on validation and test at its best epoch."""
    config = {"problem": "multi_mnist", "tasks": task, "method": "unit_scal", **config}
    best = {f"{task}/{metric}": {"epoch": 0, "val": value, "test": value}}
    RunRecord(run_id, config, "test", "completed", best_by_metric=best).save(root / run_id)


@pytest.fixture
def step_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Step 1: CL_RR with ``limits``, 3 seeds each; reference CL 0.8 (accuracy), RR 0.5 (mse).

    Step 2: CL_RL_RR without options; reference CL 0.9, RL 0.2, RR 0.4 (single-task runs with
    ``limits`` sit beside them and must be ignored); IMTL 3 seeds, Unit. Scal. 2 seeds, and a
    second IMTL configuration (lr 0.01) that is worse on validation but excellent on test:
    it must not be chosen.
    """
    one, two = tmp_path / "one", tmp_path / "two"
    write_single(one, "st-cl", "CL", "accuracy", 0.8, problem_options=LIMITS)
    write_single(one, "st-rr", "RR", "mse", 0.5, problem_options=LIMITS)
    write_single(one, "st-rr-full", "RR", "mse", 5.0)  # other options: ignored
    for seed, (cl, rr) in enumerate([(0.76, 0.55), (0.78, 0.60), (0.80, 0.50)]):
        write_multi(one, f"us-{seed}", "unit_scal", seed, metrics(cl, RR=rr), **SMALL)
    for seed, (cl, rr) in enumerate([(0.80, 0.45), (0.82, 0.50), (0.84, 0.40)]):
        write_multi(one, f"imtl-{seed}", "imtl", seed, metrics(cl, RR=rr), **SMALL)

    for task, metric, value in (("CL", "accuracy", 0.9), ("RL", "mse", 0.2), ("RR", "mse", 0.4)):
        write_single(two, f"st-{task}", task, metric, value)
        write_single(two, f"st-{task}-small", task, metric, 10 * value, problem_options=LIMITS)
    for seed, (cl, rl, rr) in enumerate([(0.9, 0.2, 0.4), (0.9, 0.22, 0.44)]):
        write_multi(two, f"us-{seed}", "unit_scal", seed, metrics(cl, RL=rl, RR=rr))
    imtl = [(0.927, 0.19, 0.38), (0.909, 0.2, 0.4), (0.918, 0.195, 0.39)]
    for seed, (cl, rl, rr) in enumerate(imtl):
        write_multi(two, f"imtl-{seed}", "imtl", seed, metrics(cl, RL=rl, RR=rr))
    worse_val = metrics(0.5, RL=0.4, RR=0.8)
    write_multi(two, "imtl-lr", "imtl", 0, metrics(0.99, RL=0.1, RR=0.2), worse_val, lr=0.01)
    return one, two


def se(a: list[float], b: list[float]) -> float:
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


# Per-run relative gains (%) by hand: accuracy (v - ref) / ref, mse -(v - ref) / ref.
STEP1 = {
    "CL": ([0.0, 2.5, 5.0], [-5.0, -2.5, 0.0]),  # IMTL 0.80, 0.82, 0.84; Unit. Scal. 0.76, ...
    "RR": ([10.0, 0.0, 20.0], [-10.0, -20.0, 0.0]),  # IMTL 0.45, 0.50, 0.40; 0.55, 0.60, 0.50
}
STEP2 = {
    "CL": ([3.0, 1.0, 2.0], [0.0, 0.0]),  # 0.927, 0.909, 0.918 against 0.9
    "RL": ([5.0, 0.0, 2.5], [0.0, -10.0]),  # 0.19, 0.2, 0.195 / 0.2, 0.22 against 0.2
    "RR": ([5.0, 0.0, 2.5], [0.0, -10.0]),  # 0.38, 0.4, 0.39 / 0.4, 0.44 against 0.4
}


def by_hand(tasks: dict[str, tuple[list[float], list[float]]]) -> dict[str, tuple]:
    """quantity -> (gain, gain_se, n_method, n_baseline); Delta_m is the per-run task mean."""
    columns = list(zip(*tasks.values()))
    delta_m = tuple([statistics.mean(run) for run in zip(*side)] for side in columns)
    rows = {"delta_m": delta_m, **tasks}
    return {
        q: (statistics.mean(a) - statistics.mean(b), se(a, b), len(a), len(b))
        for q, (a, b) in rows.items()
    }


def test_gains_and_error_bars_by_hand(step_dirs):
    one, two = step_dirs
    frame = progression_frame([("small", one), ("three tasks", two)], "multi_mnist")
    assert list(frame["step"]) == ["small"] * 3 + ["three tasks"] * 4
    assert list(frame["quantity"]) == ["delta_m", "CL", "RR", "delta_m", "CL", "RL", "RR"]
    assert list(frame["tasks"].unique()) == ["CL_RR", "CL_RL_RR"]
    assert set(frame["method"]) == {"IMTL"} and set(frame["baseline"]) == {"Unit. Scal."}
    expected = {"small": by_hand(STEP1), "three tasks": by_hand(STEP2)}
    # e.g. step 1's Delta_m: IMTL (5 + 1.25 + 12.5) / 3 = 6.25, Unit. Scal. -6.25: gain 12.5
    assert expected["small"]["delta_m"][0] == pytest.approx(12.5)
    for row in frame.itertuples():
        gain, gain_se, n_a, n_b = expected[row.step][row.quantity]
        assert row.gain == pytest.approx(gain), (row.step, row.quantity)
        assert row.gain_se == pytest.approx(gain_se), (row.step, row.quantity)
        assert (row.n_method, row.n_baseline) == (n_a, n_b)
        assert row.gain == pytest.approx(row.method_mean - row.baseline_mean)
    cl = frame[(frame["step"] == "small") & (frame["quantity"] == "CL")].iloc[0]
    assert (cl.method_mean, cl.baseline_mean) == pytest.approx((2.5, -2.5))
    assert cl.gain_se == pytest.approx(2.5 * math.sqrt(2 / 3))  # both std 2.5, n 3


def test_steps_keep_the_order_given(step_dirs):
    one, two = step_dirs
    frame = progression_frame([("b", two), ("a", one)], "multi_mnist", "IMTL", "Unit. Scal.")
    assert list(frame["step"].unique()) == ["b", "a"]


def test_a_step_without_the_method_names_step_directory_and_method(step_dirs, tmp_path):
    one, _ = step_dirs
    only_baseline = tmp_path / "only-baseline"
    write_single(only_baseline, "st-cl", "CL", "accuracy", 0.8)
    write_multi(only_baseline, "us-0", "unit_scal", 0, metrics(0.8, RR=0.5))
    with pytest.raises(ConfigError, match=r"step 'no imtl' \(.*only-baseline\): .* of imtl on"):
        progression_frame([("fine", one), ("no imtl", only_baseline)], "multi_mnist")
    with pytest.raises(ConfigError, match="of famo on multi_mnist"):
        progression_frame([("fine", one)], "multi_mnist", baseline="famo")


def test_one_task_set_and_one_option_set_per_step(step_dirs, tmp_path):
    one, _ = step_dirs
    write_multi(one, "imtl-other", "imtl", 3, metrics(0.8, RL=0.5))
    with pytest.raises(ConfigError, match=r"step 'one' .*several task sets \(CL_RL, CL_RR\)"):
        progression_frame([("one", one)], "multi_mnist")
    mixed = tmp_path / "mixed"
    write_multi(mixed, "us-0", "unit_scal", 0, metrics(0.8, RR=0.5))
    write_multi(mixed, "imtl-0", "imtl", 0, metrics(0.8, RR=0.5), problem_options=LIMITS)
    with pytest.raises(ConfigError, match="several problem option sets"):
        progression_frame([("mixed", mixed)], "multi_mnist")
    with pytest.raises(ConfigError, match="unique"):
        progression_frame([("x", one), ("x", one)], "multi_mnist")


def test_cli_writes_the_table_and_the_figure(step_dirs, tmp_path, capsys):
    one, two = step_dirs
    out = tmp_path / "out"
    steps = ["--step", f"small={one}", "--step", f"three tasks={two}"]
    args = ["progression", "--problem", "multi_mnist", *steps, "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| Step | Quantity | IMTL | Unit. Scal. | Gain (pp) | SE | n |" in printed
    assert "| small | Δm | 6.250 | -6.250 | 12.50 |" in printed
    csv = pd.read_csv(out / "progression.csv")
    assert list(csv["quantity"]) == ["delta_m", "CL", "RR", "delta_m", "CL", "RL", "RR"]
    assert (out / "progression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "progression.pdf").read_bytes()[:4] == b"%PDF"
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"][0]["gain"] == pytest.approx(12.5)
    assert printed["rows"][0]["n_method"] == 3
    assert str(out / "progression.png") in printed["files"]


@pytest.mark.parametrize("step", ["no-equals-sign", "=somewhere", "label=", "label=/no/such/dir"])
def test_a_malformed_step_is_one_line_and_exit_2(step, capsys):
    assert main(["progression", "--problem", "multi_mnist", "--step", step]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smto: error: --step") and err.count("\n") == 1
