"""Tests for nanoseal.stats: bootstrap intervals over tasks on data whose answer is known.

Run: pytest tests/test_stats.py
"""

import math

import numpy as np

from nanoseal.stats import detectable_difference, fmt_ci, mean_ci, paired_diff_ci


def test_mean_ci_brackets_the_mean_and_narrows_with_more_tasks():
    rng = np.random.default_rng(1)
    small = rng.binomial(1, 0.3, size=20).astype(float)
    big = rng.binomial(1, 0.3, size=2000).astype(float)
    s, b = mean_ci(small), mean_ci(big)
    assert s["lo"] <= s["mean"] <= s["hi"] and b["lo"] <= b["mean"] <= b["hi"]
    assert (b["hi"] - b["lo"]) < (s["hi"] - s["lo"]) / 5, "100x the tasks: a much narrower interval"
    # the normal approximation of a proportion's interval: 1.96 * sqrt(p (1 - p) / n)
    half = 1.96 * np.sqrt(b["mean"] * (1 - b["mean"]) / len(big))
    assert abs((b["hi"] - b["lo"]) / 2 - half) < 0.2 * half
    assert 0.27 < b["lo"] < 0.3 < b["hi"] < 0.33


def test_mean_ci_is_seeded_and_handles_degenerate_inputs():
    x = [0.0, 1.0, 0.5, 0.25, 1.0]
    assert mean_ci(x, seed=3) == mean_ci(x, seed=3)
    assert mean_ci([]) == {"mean": None, "lo": None, "hi": None, "n": 0}
    assert mean_ci([0.5]) == {"mean": 0.5, "lo": None, "hi": None, "n": 1}
    assert mean_ci([1.0, 1.0, 1.0]) == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 3}


def test_paired_interval_removes_the_shared_task_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 1, size=60)  # tasks differ a lot...
    a = np.clip(difficulty + 0.05, 0, 1)  # ...but method a is always a bit better
    b = difficulty
    paired = paired_diff_ci(a, b)
    assert paired["lo"] > 0, "a constant per-task gain is significant when tasks are paired"
    unpaired_a, unpaired_b = mean_ci(a), mean_ci(b)
    assert unpaired_a["lo"] < unpaired_b["hi"], "the two unpaired intervals overlap"
    shuffled = paired_diff_ci(rng.permutation(a), b)  # pairing destroyed: the interval spans 0
    assert shuffled["lo"] < 0 < shuffled["hi"]


def test_detectable_difference_on_known_data():
    """(1.960 + 0.842) x sd / sqrt(n): d = +1, -1, +1, -1 has sd sqrt(4/3), n = 4; sixteen such tasks sd sqrt(16/15)."""
    a, b = [1, 0, 1, 0], [0, 1, 0, 1]
    assert abs(detectable_difference(a, b) - 2.8016 * math.sqrt(4 / 3) / 2) < 1e-3
    assert abs(detectable_difference(a * 4, b * 4) - 2.8016 * math.sqrt(16 / 15) / 4) < 1e-3
    assert detectable_difference(a, b, power=0.5) < detectable_difference(a, b)  # less power, smaller
    assert detectable_difference([1, 1], [0, 0]) == 0.0  # no spread: any difference shows
    assert detectable_difference([1], [0]) is None


def test_fmt_ci():
    assert fmt_ci({"mean": 0.4375, "lo": 0.25, "hi": 0.6, "n": 16}) == "0.438 [0.250, 0.600]"
    assert fmt_ci({"mean": 0.5, "lo": None, "hi": None, "n": 1}) == "0.500"
    assert fmt_ci({"mean": None, "lo": None, "hi": None, "n": 0}) == "–"
