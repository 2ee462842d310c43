"""The two Delta_m conventions on Elich et al.'s published rows (their App. A4 tables)."""

from __future__ import annotations

import pytest

from smto.errors import ConfigError
from smto.problems import problem_class
from smto.problems.delta_m import (
    CONVENTIONS,
    delta_m,
    delta_m_higher_is_better,
    delta_m_label,
    delta_m_score,
)

NYU_NAMES = {
    "S": ("miou", "pixel_accuracy"),
    "D": ("abs_err", "rel_err"),
    "N": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
}
# Elich et al., the NYUv2 + SegNet table of App. A4: the STL row and the EW + Adam row
# (lr 1e-4), whose published Delta_M is 10.08 +- 2.84 (mean over three seeds).
NYU_STL = (0.392, 0.646, 0.607, 0.258, 24.74, 18.49, 0.308, 0.582, 0.700)
NYU_EW_ADAM = (0.398, 0.650, 0.530, 0.212, 29.53, 25.02, 0.216, 0.454, 0.584)
# The same paper, Cityscapes + SegNet: STL and EW + Adam (lr 5e-3), Delta_M 79.43.
CITY_NAMES = {"S": ("miou", "pixel_accuracy"), "D": ("abs_err", "rel_err")}
CITY_STL = (0.7122, 0.9221, 0.0134, 29.88)
CITY_EW_ADAM = (0.6898, 0.9165, 0.0196, 109.84)


def nested(names, row):
    flat = iter(row)
    return {
        task: {name: next(flat) for name in metric_names} for task, metric_names in names.items()
    }


def rounding_bound(values, reference, decimals):
    """The largest change in a flat Delta_M (%) that rounding every published value to its
    printed digits can make (first order): the tolerance of a comparison with the paper."""
    terms = [
        (0.5 * 10**-d / r + 0.5 * 10**-d * abs(v) / r**2)
        for v, r, d in zip(values, reference, decimals)
    ]
    return 100 * sum(terms) / len(terms)


def nyu_metrics():
    cls = problem_class("nyuv2")
    return {t: cls.task_metrics(t) for t in ("S", "D", "N")}


def test_elich_delta_m_reproduces_their_nyuv2_segnet_ew_adam_row():
    values, ref = nested(NYU_NAMES, NYU_EW_ADAM), nested(NYU_NAMES, NYU_STL)
    result = delta_m(values, ref, nyu_metrics(), convention="elich")
    bound = rounding_bound(NYU_EW_ADAM, NYU_STL, (3, 3, 3, 3, 2, 2, 3, 3, 3))
    assert bound < 0.2
    assert result == pytest.approx(10.08, abs=bound)
    # smto's per-task rule on the same numbers: a loss of about 2.8 % (issue 12); the five
    # normal metrics weigh one task there, not five ninths of the mean
    study = delta_m(values, ref, nyu_metrics(), convention="study")
    assert study == pytest.approx(-2.76, abs=0.01)


def test_elich_delta_m_reproduces_their_cityscapes_segnet_ew_adam_row():
    cls = problem_class("cityscapes")
    metrics = {t: cls.task_metrics(t) for t in ("S", "D")}
    values, ref = nested(CITY_NAMES, CITY_EW_ADAM), nested(CITY_NAMES, CITY_STL)
    bound = rounding_bound(CITY_EW_ADAM, CITY_STL, (4, 4, 4, 2))
    assert delta_m(values, ref, metrics, convention="elich") == pytest.approx(79.43, abs=bound)


def test_the_conventions_differ_by_sign_and_weighting_only():
    metrics = nyu_metrics()
    values, ref = nested(NYU_NAMES, NYU_EW_ADAM), nested(NYU_NAMES, NYU_STL)
    # with one metric per task the two are each other's negatives
    one = {"S": metrics["S"][:1], "D": metrics["D"][:1]}
    assert delta_m(values, ref, one, "elich") == pytest.approx(-delta_m(values, ref, one, "study"))
    # the default is the study's
    assert delta_m(values, ref, metrics) == delta_m(values, ref, metrics, "study")


def test_direction_label_and_score():
    assert CONVENTIONS == ("study", "elich")
    assert delta_m_higher_is_better("study") and not delta_m_higher_is_better("elich")
    assert delta_m_higher_is_better(None)
    assert delta_m_label("study") == "Δm" and "Elich" in delta_m_label("elich")
    assert delta_m_score(3.0, "elich") == -3.0 and delta_m_score(3.0, "study") == 3.0


def test_unknown_convention_names_the_valid_ones():
    metrics = nyu_metrics()
    values = nested(NYU_NAMES, NYU_STL)
    with pytest.raises(ConfigError, match="study, elich"):
        delta_m(values, values, metrics, convention="maninis")
    with pytest.raises(ConfigError, match="study, elich"):
        delta_m_higher_is_better("flat")
