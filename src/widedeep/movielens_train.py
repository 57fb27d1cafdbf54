"""Training a MovieLens model end to end: split, features, run loop, ranking metrics, and the
data ``widedeep recommend`` needs, saved in the model directory.

Used by ``widedeep train --dataset movielens`` and by ``benchmarks/bench_movielens.py``,
so the command and the report measure the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

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
# The run-loop settings of each task's ready recipe (`widedeep train --dataset movielens
# --task T` starts from them; flags override), chosen on the validation slice: see
# docs/movielens.md for the measurements behind each value.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "ranking": {
        "hidden_units": [64, 32],
        "train_epochs": 4,
        "batch_size": 256,
        "linear_learning_rate": 0.05,
        "dnn_learning_rate": 0.2,
    },
    "rating": {
        "hidden_units": [64, 32],
        "train_epochs": 6,
        "batch_size": 256,
        "linear_learning_rate": 0.05,
        "dnn_learning_rate": 0.05,
        "linear_l2": 10.0,  # FTRL's L2 on the ids and user x genre weights
        "weight_decay": 0.1,  # on the embeddings and the MLP
    },
}


@dataclass
class MovieLensSettings:
    """What to train: task, feature groups, model shape, ranking data and evaluation split."""

    task: str = "ranking"
    model_type: str = "wide_deep"
    hidden_units: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float | None = None
    negatives: int = 4
    # ranking: the example weight of low ratings as negatives (0: left out, 1: full weight)
    low_negatives: float = 0.1
    # rating: later ratings of each user weigh up to e^recency times the first (0: all equal)
    recency: float = 2.0
    history_length: int = ml.HISTORY_LENGTH
    # rating: how many of the user's latest ratings feed the rated x movie_id cross
    rated_length: int = ml.RATED_LENGTH
    split: str = "test"  # "valid": evaluate on a slice cut from train the same way
    # rating: predictions squashed into this range (None: the plain sum of the two parts)
    output_range: tuple[float, float] | None = ml.RATING_RANGE
    columns: dict[str, bool] = field(default_factory=dict)  # movielens_columns(...) flags

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {self.split!r}")
        if self.negatives < 0 or self.history_length < 1 or self.rated_length < 1:
            raise ValueError("negatives must be >= 0, history_length and rated_length >= 1")
        if not 0 <= self.low_negatives <= 1:
            raise ValueError(f"low_negatives is a weight in [0, 1], got {self.low_negatives}")
        if self.recency < 0:
            raise ValueError(f"recency must be >= 0, got {self.recency}")


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
    # overfits ratings; user x genre (each user's taste per genre) lowers the rating RMSE
    # and adds nothing to ranking; so does rated x movie (both measured on the validation
    # slice; rated x movie, user x day and the per-user slopes on ratings only)
    rating = settings.task == "rating"
    columns = {"history": not rating, "user_genre": rating, "rated_cross": rating,
               "user_day": rating, "user_slopes": rating, "neighbour": rating}  # fmt: skip
    columns.update(settings.columns)
    spec = ml.movielens_spec(settings.task, settings.output_range, **columns)
    history = settings.history_length
    uses_rated = any(columns.get(k, False) for k in ("rated_cross", "neighbour", "rated_embedding"))
    rated = settings.rated_length if uses_rated else 0
    # one item-kNN similarity for the training rows, the evaluation rows and the recommender
    similarity = None
    if rating and columns["neighbour"]:
        similarity = ml.item_similarity(train_part, ml.id_bound(data))
    kwargs = {"max_length": history, "rated_length": rated, "similarity": similarity}
    if settings.task == "rating":
        rows = ml.rating_examples(data, train_part, train_part, **kwargs)
        spec.fit(rows)
        source = spec.transform(rows)
        if settings.recency:
            weight = ml.recency_weights(train_part, settings.recency)
            source = replace(source, weight=torch.from_numpy(weight))
        evals = spec.transform(ml.rating_examples(data, test, train_part, **kwargs))
    else:
        source = SampledNegatives(
            spec,
            data,
            train_part,
            config.batch_size,
            settings.negatives,
            config.seed,
            history,
            low_negatives=settings.low_negatives,
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
    predictor = Predictor(spec, result.model)
    recommender = Recommender(
        predictor, data, train_part, history, rated_length=rated, similarity=similarity
    )
    metrics = dict(result.metrics)
    if settings.task == "ranking":
        items = data.movies.column("movie_id").to_numpy()
        score = recommender.score_items
        metrics = ranking_metrics(score, items, train_part, test, seed=config.seed)
    if model_dir is not None:
        save_recommend_data(model_dir, data, train_part, history, rated_length=rated)
        write_json(Path(model_dir) / f"{settings.task}_metrics.json", metrics)
    return MovieLensResult(result, metrics, recommender)
