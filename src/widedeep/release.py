"""Exports and the release gate (paper §4.2): check a new model against the serving one first.

An export is a copy of a trained model without its optimizer state, written to
``export_dir/<timestamp>/`` as TensorFlow's exporter did, so that a server
watching ``export_dir`` picks the newest.  Before writing it, the gate scores
the evaluation data with the new model (a dry run: the model loads and gives
finite scores) and, given the previous export, with that one too, and refuses
the export when the new model is worse by more than the allowed margin.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import artifact
from .predict import Predictor, load

# the metric each head is judged by, and whether higher is better
GATE_METRIC = {
    "binary": ("auc", True),
    "multiclass": ("accuracy", True),
    "regression": ("rmse", False),
}


class ReleaseRefused(Exception):
    """The new model failed the release gate; nothing was exported."""


@dataclass
class GateResult:
    metric: str
    new: float
    previous: float | None
    max_drop: float
    eval_rows: int
    previous_path: str | None


def default_eval_data(predictor: Predictor) -> pa.Table:
    """The evaluation data the model was trained with, as its settings record it."""
    settings = predictor.config.get("settings", {})
    if settings.get("eval"):  # a file, a directory or a glob of shards
        from .stream import read_all

        return read_all(settings["eval"])
    if settings.get("dataset") == "census" or str(settings.get("source", "")).startswith("census"):
        from .datasets.census import load_census

        return load_census(settings.get("data_dir"))[1]
    raise ValueError(f"{predictor.path}: its settings record no evaluation data; pass --eval FILE")


def check_release(
    new: Predictor,
    eval_data: Any,
    previous: Predictor | None = None,
    max_drop: float = 0.005,
) -> GateResult:
    """Score ``eval_data`` with both models; raise :class:`ReleaseRefused` if the new one is
    worse than ``previous`` by more than ``max_drop`` or gives non-finite scores."""
    metric, higher_is_better = GATE_METRIC[new.head]
    scores = new.predict_proba(eval_data)
    bad = int(np.size(scores) - np.isfinite(scores).sum())
    if bad:
        raise ReleaseRefused(
            f"the new model ({new.path}) gives {bad} non-finite score(s) on the evaluation data; "
            "not exported"
        )
    value = float(new.evaluate(eval_data)[metric])
    result = GateResult(metric, value, None, max_drop, len(scores), None)
    if previous is None:
        return result
    result.previous = float(previous.evaluate(eval_data)[metric])
    result.previous_path = str(previous.path)
    drop = result.previous - value if higher_is_better else value - result.previous
    if not math.isfinite(value) or drop > max_drop:
        raise ReleaseRefused(
            f"the new model's {metric} is {value:.4f} against {result.previous:.4f} for the "
            f"previous model ({previous.path}) on {len(scores):,} evaluation rows: worse by "
            f"{drop:.4f}, more than the allowed {max_drop}; not exported (retrain, or raise "
            "--max_auc_drop if this is expected)"
        )
    return result


def export(
    model_path: str | Path,
    export_dir: str | Path,
    compare_to: str | Path | None = None,
    eval_data: Any = None,
    max_drop: float = 0.005,
    gate: bool = False,
) -> tuple[Path, GateResult | None]:
    """Copy a trained model (without optimizer state) to ``export_dir/<timestamp>/``.

    With ``compare_to`` (a previous export, or an export base: its newest) or
    ``gate=True``, the release gate runs first on ``eval_data`` (default: the
    evaluation data recorded in the model's settings) and its result is saved
    as ``release.json`` in the export.
    """
    new = load(model_path)
    result = None
    if compare_to is not None or gate:
        previous = load(compare_to) if compare_to is not None else None
        if eval_data is None:
            eval_data = default_eval_data(new)
        result = check_release(new, eval_data, previous, max_drop)
    metrics_file = new.path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    base = Path(export_dir)
    base.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    while (base / str(stamp)).exists():
        stamp += 1
    target = base / str(stamp)
    artifact.write_model_dir(
        target,
        new.spec,
        new.model,
        new.config.get("settings"),
        metrics,
        extra_json={"release.json": asdict(result)} if result else None,
    )
    _copy_recommend_data(Path(model_path), new.path, target)
    return target, result


def _copy_recommend_data(model_path: Path, resolved: Path, target: Path) -> None:
    """A recommender's item and user tables travel with its export."""
    from .recommend import RECOMMEND_DIR, _find_recommend_dir

    folder = _find_recommend_dir(model_path.resolve()) or _find_recommend_dir(resolved.resolve())
    if folder is not None:
        shutil.copytree(folder, target / RECOMMEND_DIR)
