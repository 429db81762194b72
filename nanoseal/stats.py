"""
Intervals for the results tables: 95 % bootstrap confidence intervals over tasks (scipy.stats.bootstrap,
percentile method), for one method's mean success and for the paired difference of two methods on the same
tasks (resampling tasks, so both methods keep their per-task pairing).

    from nanoseal.stats import mean_ci, paired_diff_ci
    mean_ci([1, 0, 0.5, 1])                     # {"mean": 0.625, "lo": ..., "hi": ..., "n": 4}
    paired_diff_ci(seal_per_task, round0_per_task)
    detectable_difference(seal_per_task, round0_per_task)   # how large a difference these tasks can show

Tasks are the resampling unit because a task's K self-edits share its difficulty: treating (task, self-edit)
pairs as independent would make the intervals too narrow. The resampling is seeded, so a report is
reproducible. With fewer than 2 tasks there is no interval (lo = hi = None). The detectable difference (normal
approximation) says how large a true paired difference must be for an interval over this many tasks, with this
spread, to exclude 0 with 80 % probability: a small set of tasks can miss a real but small effect.
"""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

N_RESAMPLES = 10_000
CONFIDENCE = 0.95


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
            seed: int = 0) -> dict:
    """Mean of per-task values and its percentile-bootstrap interval over tasks."""
    x = np.asarray(values, dtype=np.float64)
    assert x.ndim == 1, f"expected one value per task, got shape {x.shape}"
    assert np.all(np.isfinite(x)), "per-task values must be finite"
    out = {"mean": float(x.mean()) if len(x) else None, "lo": None, "hi": None, "n": int(len(x))}
    if len(x) < 2:
        return out
    if np.all(x == x[0]):  # every resample has the same mean
        out["lo"] = out["hi"] = float(x[0])
        return out
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    assert math.isfinite(lo) and math.isfinite(hi), f"bootstrap gave a non-finite interval ({lo}, {hi})"
    out["lo"], out["hi"] = lo, hi
    return out


def paired_diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of a - b over the same tasks and its bootstrap interval (tasks resampled, pairs kept)."""
    assert len(a) == len(b), f"paired values need the same tasks: {len(a)} vs {len(b)}"
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return mean_ci(d, confidence, n_resamples, seed)


def detectable_difference(a: Sequence[float], b: Sequence[float], power: float = 0.8,
                          confidence: float = CONFIDENCE) -> float | None:
    """The smallest true mean of a - b that these tasks show with the given power: (z_(1-alpha/2) + z_power) x
    sd(a - b) / sqrt(n), normal approximation; None with fewer than 2 tasks."""
    assert len(a) == len(b), f"paired values need the same tasks: {len(a)} vs {len(b)}"
    assert 0 < power < 1 and 0 < confidence < 1, f"power and confidence are probabilities, got {power}, {confidence}"
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return None
    z = stats.norm.ppf(1 - (1 - confidence) / 2) + stats.norm.ppf(power)
    return float(z * d.std(ddof=1) / math.sqrt(len(d)))


def fmt_ci(ci: dict, digits: int = 3) -> str:
    """'0.438 [0.312, 0.562]' (or just the mean without an interval)."""
    if ci.get("mean") is None:
        return "–"
    if ci.get("lo") is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
