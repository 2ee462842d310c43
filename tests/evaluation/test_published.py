"""The published numbers shipped with the package (smto.evaluation.published): the data file
loads through importlib.resources, covers the study's methods, every configuration is a valid
run, and the transcribed values agree with each other (Delta_m is the mean of the task gains,
equation 1)."""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

import pytest

from smto.errors import ConfigError
from smto.evaluation.published import (
    DATA_FILE,
    DELTA_M,
    published_problem,
    published_problems,
)
from smto.train import RunConfig

ROOT = Path(__file__).resolve().parents[2]
STUDY_METHODS = {
    "unit_scal", "auto_lambda", "cagrad", "cdtt", "edm", "famo", "graddrop", "imtl", "mgda_ub",
    "nash_mtl", "pcgrad", "rlw_dirichlet", "rlw_normal", "rotograd", "si", "uw",
}  # fmt: skip
PROMISING = {"unit_scal", "auto_lambda", "cagrad", "cdtt", "edm", "famo", "imtl", "nash_mtl",
             "rotograd"}  # fmt: skip
"""Section 3.1: the methods kept after CL_RR (with the baseline), those of Tables 6 and 8."""
MNIST = ("multi_mnist-CL_CR", "multi_mnist-CL_RR", "multi_mnist-RL_RR")


def candidates(searched: dict[str, list]) -> list[dict]:
    """Every combination of a method's searched hyperparameters ([{}] when none)."""
    return [dict(zip(searched, values)) for values in itertools.product(*searched.values())]


def test_the_data_file_is_a_package_resource_and_declared_as_package_data():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    text = resources.files("smto.evaluation.published").joinpath(DATA_FILE).read_text()
    assert "Table 7" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["smto.evaluation.published"]
    assert any(Path(DATA_FILE).match(p) for p in patterns)


def test_multi_mnist_covers_the_methods_each_table_lists():
    problems = published_problems()
    assert set(problems["multi_mnist-CL_RR"].methods) == STUDY_METHODS  # Table 7: all 16
    for name in ("multi_mnist-CL_CR", "multi_mnist-RL_RR"):  # Tables 6, 8: the promising 9
        assert set(problems[name].methods) == PROMISING


@pytest.mark.parametrize("name", MNIST)
def test_every_multi_mnist_configuration_is_a_valid_run(name):
    problem = published_problem(name)
    for method, entry in problem.methods.items():
        configuration = entry.configuration
        assert configuration.complete and set(configuration.settings) == {
            "lr", "dropout", "weight_decay"
        }  # fmt: skip
        for searched in candidates(configuration.searched):
            params = {**configuration.params, **searched}
            RunConfig(problem.problem, problem.tasks, method, params, **configuration.settings)
    for task, configuration in problem.single_task.items():
        RunConfig(problem.problem, task, "unit_scal", **configuration.settings)
    assert set(problem.single_task) == set(problem.task_names)


def test_the_other_problems_configurations_validate_where_the_text_gives_them():
    for name in ("cityscapes-S_D_I", "qm9"):
        problem = published_problem(name)
        for method, entry in problem.methods.items():
            if not entry.configuration.complete:
                assert method == "nash_mtl" and name == "qm9"  # the row the text lost
                continue
            RunConfig(problem.problem, problem.tasks, method, entry.configuration.params,
                      **entry.configuration.settings)  # fmt: skip


@pytest.mark.parametrize("name", ["multi_mnist-CL_RR", "cityscapes-S_D_I"])
def test_each_published_delta_m_is_the_mean_of_its_task_gains(name):
    """A check of the transcription: Tables 3 and 4 round to 4 digits, so the mean of the
    gains matches the printed average to about 1e-3 relative."""
    problem = published_problem(name)
    for entry in problem.methods.values():
        gains = [entry.values[t] for t in problem.task_names]
        assert sum(gains) / len(gains) == pytest.approx(entry.values[DELTA_M], rel=2e-3, abs=2e-3)


def test_published_values_read_back_as_in_the_tables():
    cl_rr = published_problem("multi_mnist-CL_RR").methods
    assert cl_rr["famo"].values == {"CL": -4.587, "RR": -0.745, DELTA_M: -2.666}  # Table 3
    assert cl_rr["famo"].configuration.settings["lr"] == 0.0025  # Table 7
    assert published_problem("qm9").methods["nash_mtl"].values[DELTA_M] == -53.62  # Table 1
    assert published_problem("qm9").methods["nash_mtl"].extra["mean_rank"] == 2.09
    assert not published_problem("multi_mnist-CL_CR").has_values()  # Figure 2 only


def test_an_unknown_problem_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="multi_mnist-CL_RR"):
        published_problem("multi_mnist-XX")
