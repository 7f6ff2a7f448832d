"""What a parity report's accuracies say about the model: the ``--max-drop`` gate (integer accuracy
against float) and the near-chance hint (the float model itself has not learnt the task)."""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.96                  # two-sided 95 % normal quantile
NEAR_CHANCE_POINTS = 5.0    # float accuracy within 5 points of 1 / classes: the model is near chance


def accuracy_gate(report: dict, max_drop_points: float) -> dict:
    """Whether integer accuracy falls more than ``max_drop_points`` below float.

    Deterministic spikes: the drop is the difference of the two accuracies on the same samples.
    Monte-Carlo (P-SpikeSSM): the drop is the difference of the per-pass means, with the 95 % interval
    of that difference (normal approximation, the passes of each side independent); the gate fails
    only when the interval's low end exceeds the limit (the drop is larger with 95 % confidence), so
    sampling noise alone does not fail it."""
    acc = report["accuracy"]
    drop = 100.0 * (acc["float"] - acc["integer"])
    gate = {"max_drop_points": float(max_drop_points), "drop_points": drop, "drop_interval_points": None}
    judged = drop
    if "float_per_pass" in acc:
        f, i = acc["float_per_pass"], acc["integer_per_pass"]
        half = 100.0 * Z95 * math.hypot(standard_error(f), standard_error(i))
        gate["drop_interval_points"] = [drop - half, drop + half]
        judged = drop - half
        gate["rule"] = "fails when the low end of the drop's 95 % interval exceeds the limit"
    else:
        gate["rule"] = "fails when float minus integer accuracy exceeds the limit"
    gate["passed"] = bool(judged <= max_drop_points)
    return gate


def standard_error(values) -> float:
    """Standard error of the mean of per-pass accuracies (sample standard deviation / sqrt(n); 0 for
    one pass): the gate's difference and ``validate``'s per-side intervals both use it."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def gate_line(report: dict) -> str:
    """The gate's one line (printed after the report; the failure line of exit 1)."""
    g, acc = report["accuracy_gate"], report["accuracy"]
    interval = g["drop_interval_points"]
    within = f" (95 % interval [{interval[0]:.2f}, {interval[1]:.2f}])" if interval is not None else ""
    verdict = "passed" if g["passed"] else "failed"
    side = "below" if g["drop_points"] >= 0 else "above"
    return (f"--max-drop {g['max_drop_points']:g}: {verdict}: integer {100 * acc['integer']:.2f} % is "
            f"{abs(g['drop_points']):.2f} points {side} float {100 * acc['float']:.2f} %{within}")


def near_chance(accuracy: float, n_classes: int) -> bool:
    """Float accuracy within ``NEAR_CHANCE_POINTS`` of guessing (1 / classes)."""
    return 100.0 * accuracy <= 100.0 / n_classes + NEAR_CHANCE_POINTS


def chance_hint(accuracy: float, n_classes: int) -> str:
    return (f"the float model itself is near chance ({100 * accuracy:.1f} %; chance {100 / n_classes:.1f} % "
            f"with {n_classes} classes): train it longer")
