"""Training a MovieLens model end to end: split, features, run loop, ranking metrics, and the
data ``widedeep recommend`` needs, saved in the model directory.

Used by ``widedeep train --dataset movielens`` and by ``benchmarks/bench_movielens.py``,
so the command and the report measure the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifact import write_json
from .datasets import movielens as ml
from .model import ModelConfig
from .predict import Predictor
from .recommend import (
    Recommender,
    SampledNegatives,
    ranking_examples,
    ranking_metrics,
    save_recommend_data,
)
from .train import TrainConfig, TrainResult, train

TASKS = ("rating", "ranking")


@dataclass
class MovieLensSettings:
    """What to train: task, feature groups, model shape, ranking data and evaluation split."""

    task: str = "ranking"
    model_type: str = "wide_deep"
    hidden_units: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float | None = None
    negatives: int = 4
    history_length: int = ml.HISTORY_LENGTH
    split: str = "test"  # "valid": evaluate on a slice cut from train the same way
    columns: dict[str, bool] = field(default_factory=dict)  # movielens_columns(...) flags

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {self.split!r}")
        if self.negatives < 0 or self.history_length < 1:
            raise ValueError("negatives must be >= 0 and history_length >= 1")


@dataclass
class MovieLensResult:
    result: TrainResult
    metrics: dict[str, Any]  # rating: rmse, mae...; ranking: hr@10, ndcg@10, auc, sampled...
    recommender: Recommender


def train_movielens(
    data: ml.MovieLens,
    settings: MovieLensSettings,
    config: TrainConfig,
    model_dir: str | Path | None = None,
    *,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> MovieLensResult:
    """Train on the temporal split of ``data`` and evaluate on its held-out (or valid) part."""
    train_part, test = ml.temporal_split(data.ratings)
    if settings.split == "valid":  # test is never read
        train_part, test = ml.temporal_split(train_part)
    # the liked x movie cross memorises which movies go together: it ranks well, but it
    # overfits ratings (measured on the validation slice), so rating models leave it out
    columns = {"history": settings.task == "ranking", **settings.columns}
    spec = ml.movielens_spec(settings.task, **columns)
    history = settings.history_length
    if settings.task == "rating":
        rows = ml.rating_examples(data, train_part, train_part, max_length=history)
        spec.fit(rows)
        source = spec.transform(rows)
        evals = spec.transform(ml.rating_examples(data, test, train_part, max_length=history))
    else:
        source = SampledNegatives(
            spec, data, train_part, config.batch_size, settings.negatives, config.seed, history
        )
        spec.fit(source.rated)
        evals = spec.transform(ranking_examples(data, test, train_part, history))
    model_config = ModelConfig.from_spec(
        spec,
        model_type=settings.model_type,
        hidden_units=settings.hidden_units,
        dropout=settings.dropout,
        sparse_wide=True,  # the liked x movie cross has 2^20 buckets; a step touches few
    )
    run = {"source": f"movielens ({data.name})", "movielens": settings.__dict__}
    result = train(
        spec, source, evals, model_config, config, model_dir, quiet=quiet, log=log, settings=run
    )
    recommender = Recommender(Predictor(spec, result.model), data, train_part, history)
    metrics = dict(result.metrics)
    if settings.task == "ranking":
        items = data.movies.column("movie_id").to_numpy()
        score = recommender.score_items
        metrics = ranking_metrics(score, items, train_part, test, seed=config.seed)
    if model_dir is not None:
        save_recommend_data(model_dir, data, train_part, history)
        write_json(Path(model_dir) / f"{settings.task}_metrics.json", metrics)
    return MovieLensResult(result, metrics, recommender)
