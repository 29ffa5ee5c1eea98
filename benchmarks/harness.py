"""Regression baselines for `adsim bench` (issue #16): record a suite's measurements with tolerances, check a run.

A measurement is a named value with a kind (quality or speed) and a direction: `higher` or `lower` is better,
or `both` for a figure that should stay where it is (an A/B's RoAS change on a fixed scenario). `record`
turns several runs of a suite (different market seeds; their timings for speed) into baselines whose
tolerance is a prediction interval from the spread it measured, never a guess; `check` compares one run with them
and calls a metric a regression when it moved beyond its tolerance in its worse direction.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy import stats

DIRECTIONS = ("higher", "lower", "both")
KINDS = ("quality", "speed")
# A metric's tolerance is the half-width of a prediction interval for one more run, from the recorded runs'
# mean and standard deviation (Student t, n - 1 degrees of freedom), at a level that keeps the chance of any
# false alarm over all the suite's metrics at FALSE_ALARM (Bonferroni); speed works on the relative spread.
# Never below the floors: a metric that did not move between seeds still has rounding, and a shared
# machine's timings move by tens of percent.
FALSE_ALARM = 0.05
MIN_RUNS = 4  # fewer runs leave the t quantile, hence the tolerance, too wide to catch anything
# relative; a clean clone's CI run after the test suite measured world and market speed 21-24% below
# baselines recorded back-to-back on the same machine: 0.45 leaves room for that and still fails a 2x slowdown
MIN_SPEED_TOLERANCE = 0.45
# a one-thread timing beside the one-thread reference moves far less: the DCN's scoring speed moved 3% between
# six recorded seeds and 2.5% in a clean clone's CI; 0.25 still fails a 2x slowdown (-50%) with room
ONE_THREAD_SPEED_TOLERANCE = 0.25
MIN_QUALITY_TOLERANCE = 0.01  # absolute, in the metric's own unit


@dataclass(frozen=True)
class Measurement:
    """One figure of a suite's run: `value` in `unit`; speed figures are ratios to the run's reference
    workload (so another or a busy machine compares like with like)."""

    name: str
    value: float
    kind: str  # quality | speed
    direction: str  # higher | lower | both
    unit: str = ""
    min_tolerance: float | None = None  # the floor of its recorded tolerance; None: its kind's floor

    def __post_init__(self):
        if self.kind not in KINDS or self.direction not in DIRECTIONS:
            raise ValueError(f"measurement {self.name}: kind must be one of {KINDS} and direction one of "
                             f"{DIRECTIONS}, got {self.kind!r}, {self.direction!r}")


@dataclass(frozen=True)
class Baseline:
    """A metric's recorded value (the runs' mean), its tolerance and where that tolerance came from."""

    name: str
    value: float
    tolerance: float  # absolute for quality, relative (share of `value`) for speed
    kind: str
    direction: str
    unit: str
    runs: int
    spread: float  # the runs' standard deviation (quality) or coefficient of variation (speed)


@dataclass(frozen=True)
class Verdict:
    """One row of `check`: the baseline, the run's value, the allowed band and whether it regressed."""

    name: str
    baseline: float
    now: float
    tolerance: float
    kind: str
    direction: str
    unit: str
    is_regression: bool
    reason: str


def record(runs: list[list[Measurement]]) -> dict[str, Baseline]:
    """Baselines from `runs` (each a suite run's measurements, the same names in each). Raises ValueError
    with fewer than two runs (no spread to derive a tolerance from) or runs that measured different names."""
    if len(runs) < MIN_RUNS:
        raise ValueError(f"record needs >= {MIN_RUNS} runs of the suite to measure its spread, got {len(runs)}")
    names = [sorted(m.name for m in run) for run in runs]
    if any(run_names != names[0] for run_names in names):
        raise ValueError("the runs measured different metrics; record them from one version of the suite")
    n = len(runs)
    multiple = float(stats.t.ppf(1 - FALSE_ALARM / (2 * len(names[0])), n - 1)) * (1 + 1 / n) ** 0.5
    baselines = {}
    for name in names[0]:
        values = [next(m for m in run if m.name == name) for run in runs]
        first = values[0]
        numbers = [m.value for m in values]
        mean, deviation = statistics.fmean(numbers), statistics.stdev(numbers)
        if first.kind == "speed":
            spread = deviation / abs(mean) if mean else float("inf")
            tolerance = max(first.min_tolerance or MIN_SPEED_TOLERANCE, multiple * spread)
        else:
            spread = deviation
            tolerance = max(first.min_tolerance or MIN_QUALITY_TOLERANCE, multiple * spread)
        baselines[name] = Baseline(name, mean, tolerance, first.kind, first.direction, first.unit, len(runs), spread)
    return baselines


def check(baselines: dict[str, Baseline], run: list[Measurement]) -> list[Verdict]:
    """Each baseline against the run's value: a regression when it moved past its tolerance in its worse
    direction (either way for `both`), or when the run lacks the metric."""
    measured = {m.name: m for m in run}
    verdicts = []
    for name, baseline in baselines.items():
        if name not in measured:
            verdicts.append(Verdict(name, baseline.value, float("nan"), baseline.tolerance, baseline.kind,
                                    baseline.direction, baseline.unit, True, "not measured by this run"))
            continue
        now = measured[name].value
        band = baseline.tolerance * abs(baseline.value) if baseline.kind == "speed" else baseline.tolerance
        worse = {"higher": baseline.value - now, "lower": now - baseline.value,
                 "both": abs(now - baseline.value)}[baseline.direction]
        is_regression = not worse <= band  # a NaN is a regression
        reason = (f"{'fell' if now < baseline.value else 'rose'} by {abs(now - baseline.value):.4g}, beyond "
                  f"{band:.4g}" if is_regression else "within tolerance")
        verdicts.append(Verdict(name, baseline.value, now, baseline.tolerance, baseline.kind, baseline.direction,
                                baseline.unit, is_regression, reason))
    return verdicts


def write_baselines(path: Path, suite: str, baselines: dict[str, Baseline], experiment: dict) -> Path:
    """The baselines and the resolved experiment config (`to_dict`) the suite measured them with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"suite": suite, "experiment": experiment,
                                "metrics": [asdict(b) for b in baselines.values()]}, indent=1) + "\n")
    return path


def read_baselines(path: Path) -> dict[str, Baseline]:
    """Baselines written by `write_baselines`. Raises FileNotFoundError naming the command that writes them."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `adsim bench record` first")
    return {row["name"]: Baseline(**row) for row in json.loads(path.read_text())["metrics"]}


def recorded_experiment(path: Path) -> dict:
    """The experiment config the baselines at `path` were recorded with ({} for a file from before it was kept)."""
    return json.loads(path.read_text()).get("experiment", {})


def append_history(path: Path, seed: int, verdicts: list[Verdict]) -> list[dict]:
    """Add a check's values to the JSON-lines history at `path`; returns every run recorded there."""
    with path.open("a") as history:
        history.write(json.dumps({"seed": seed, "values": {v.name: v.now for v in verdicts}}) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_trend(runs: list[dict], baselines: dict[str, Baseline], path: Path) -> Path:
    """One PNG: each metric's value over the recorded check runs as a share of its baseline, with its
    tolerance band (quality bands in the metric's unit, scaled the same way)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted(baselines)
    columns = 4
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.2 * rows), squeeze=False)
    for axis, name in zip(axes.ravel(), names):
        baseline = baselines[name]
        scale = abs(baseline.value) or 1.0
        band = baseline.tolerance if baseline.kind == "speed" else baseline.tolerance / scale
        values = [run["values"].get(name, float("nan")) / scale for run in runs]
        finite = [value for value in values if value == value] + [1 - band, 1 + band]
        margin = 0.1 * (max(finite) - min(finite)) + 1e-9
        # the allowed band: open on the better side (drawn to the panel's data)
        axis.axhspan(1 - band if baseline.direction != "lower" else min(finite) - margin,
                     1 + band if baseline.direction != "higher" else max(finite) + margin,
                     color="tab:green", alpha=0.15)
        axis.plot(range(1, len(values) + 1), values, "-o", markersize=3)
        axis.axhline(1, color="grey", lw=0.8)
        axis.set_title(name, fontsize=7)
        axis.tick_params(labelsize=6)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes.ravel()[len(names):]:
        axis.set_visible(False)
    figure.suptitle("adsim bench check: value / baseline per run (green: within tolerance)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title above the first row of panels
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
