"""Recommending with a trained model: score every candidate item for a user, take the top K.

The paper's serving path is retrieval -> ranking: candidates (all items, or a
list from a retrieval system) are scored in one vectorised batch, the user's
context features (demographics, liked history) broadcast onto every
candidate.  The same scorer gives the offline ranking metrics (HR@K, NDCG@K,
AUC over the full catalogue, and the 100-sampled-negatives variant), so what is
measured is what is served.

A model directory trained on MovieLens carries what recommending needs in
``recommend/``: the item and user tables and the training interactions (seen
items, liked history) as Parquet, and ``recommend.json`` (settings and the
SHA-256 of each file).  No pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from . import metrics
from .artifact import ModelFileError, atomic_write, resolve, write_json
from .batch import Batch
from .datasets import movielens as ml
from .predict import Predictor, load
from .train import InMemory
from .transform import FeatureSpec

RECOMMEND_DIR = "recommend"
_FILES = ("movies.parquet", "users.parquet", "interactions.parquet")


class Recommender:
    """Ranks a catalogue of items for a user with a trained model.

    ``interactions`` are the training ratings (user_id, movie_id, rating, timestamp): they
    say which items a user has seen and which they liked (the ``liked`` history feature).
    """

    def __init__(
        self,
        predictor: Predictor,
        data: ml.MovieLens,
        interactions: pa.Table,
        history_length: int = ml.HISTORY_LENGTH,
        like_threshold: int = ml.LIKE_THRESHOLD,
    ) -> None:
        self.predictor = predictor
        self.data = data
        self.history_length = history_length
        self.like_threshold = like_threshold
        self.item_ids = data.movies.column("movie_id").to_numpy()
        self._items = data.movies.drop_columns(["title"])
        users = interactions.column("user_id").to_numpy()
        order = np.lexsort((interactions.column("movie_id").to_numpy(), users))
        self._seen_user = users[order]
        self._seen_rows = ml.positions(
            interactions.column("movie_id").to_numpy()[order], data.movies, "movie_id"
        )
        self._user_rows = ml.positions(data.users.column("user_id").to_numpy(), data.users,
                                       "user_id")  # fmt: skip
        known = data.users.column("user_id").to_numpy()
        histories = ml.latest_history(
            interactions, known, max_length=history_length, threshold=like_threshold
        )
        self._history = dict(zip(known.tolist(), histories.to_pylist()))
        self.interactions = interactions

    # ----------------------------------------------------------------- scoring

    def seen(self, user_id: int) -> np.ndarray:
        """Rows (in the item table) of the items the user rated in training."""
        lo, hi = np.searchsorted(self._seen_user, [user_id, user_id + 1])
        return self._seen_rows[lo:hi]

    def candidate_rows(
        self, user_id: int, candidates: np.ndarray | None = None, exclude_seen: bool = True
    ) -> np.ndarray:
        """Item-table rows to score: all items (or ``candidates``), minus the seen ones."""
        if candidates is None:
            rows = np.arange(len(self.item_ids))
        else:
            rows = ml.positions(np.asarray(candidates), self.data.movies, "movie_id")
        if exclude_seen:
            rows = rows[~np.isin(rows, self.seen(user_id))]
        return rows

    def features(self, user_id: int, rows: np.ndarray) -> pa.Table:
        """The model's input for (user, each item row): user context broadcast onto items."""
        try:
            user = self.data.users.slice(
                int(ml.positions(np.array([user_id]), self.data.users, "user_id")[0]), 1
            )
        except ml.MovieLensError:
            raise ml.MovieLensError(
                f"user {user_id} is not in the model's user table; choose an existing user id"
            ) from None
        n = len(rows)
        items = self._items.take(rows)
        columns = {name: pa.repeat(user.column(name)[0], n) for name in user.column_names}
        columns.update({name: items.column(name) for name in items.column_names})
        history = np.asarray(self._history.get(user_id, []), dtype=np.int64)
        k = len(history)
        columns["liked"] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * k + 1, k) if k else np.zeros(n + 1, np.int64), pa.int32()),
            pa.array(np.tile(history, n), pa.int64()),
        )
        return pa.table(columns)

    def score_rows(self, user_id: int, rows: np.ndarray) -> np.ndarray:
        """Model scores (logits: monotone in P(like) or in the predicted rating) for item rows."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        batch = self.predictor.spec.transform(self.features(user_id, rows), label=False)
        with torch.no_grad():
            return self.predictor.model(batch)[:, 0].numpy()

    def recommend(
        self,
        user_id: int,
        k: int = 10,
        candidates: np.ndarray | None = None,
        exclude_seen: bool = True,
    ) -> pa.Table:
        """The top ``k`` items for ``user_id``: rank, movie_id, title, genres, score."""
        rows = self.candidate_rows(user_id, candidates, exclude_seen)
        scores = self.score_rows(user_id, rows)
        top = _top_k(scores, k)
        picked = self.data.movies.take(rows[top])
        head = self.predictor.head
        values = scores[top]
        if head == "binary":
            values = 1.0 / (1.0 + np.exp(-values))  # P(the user likes it)
        return pa.table(
            {
                "rank": pa.array(np.arange(1, len(top) + 1)),
                "movie_id": picked.column("movie_id"),
                "title": picked.column("title"),
                "genres": picked.column("genres"),
                "score": pa.array(values.astype(np.float64)),
            }
        )


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties: lower index first)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


# --------------------------------------------------------------------------- saving


def save_recommend_data(
    model_dir: str | Path,
    data: ml.MovieLens,
    interactions: pa.Table,
    history_length: int = ml.HISTORY_LENGTH,
    like_threshold: int = ml.LIKE_THRESHOLD,
) -> Path:
    """Write ``model_dir/recommend/`` (item, user, interaction tables + settings)."""
    target = Path(model_dir) / RECOMMEND_DIR
    target.mkdir(parents=True, exist_ok=True)
    tables = dict(zip(_FILES, (data.movies, data.users, interactions)))
    digests = {}
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        payload = sink.getvalue().to_pybytes()
        atomic_write(target / name, payload)
        digests[name] = hashlib.sha256(payload).hexdigest()
    write_json(
        target / "recommend.json",
        {
            "dataset": data.name,
            "history_length": history_length,
            "like_threshold": like_threshold,
            "files": digests,
        },
    )
    return target


def _find_recommend_dir(model_path: Path) -> Path | None:
    for folder in (model_path, *model_path.parents[:2]):
        if (folder / RECOMMEND_DIR / "recommend.json").is_file():
            return folder / RECOMMEND_DIR
    return None


def load_recommender(model: str | Path, data_dir: str | Path | None = None) -> Recommender:
    """A Recommender from a model directory (its ``recommend/`` data, or ``data_dir``)."""
    predictor = load(model)
    folder = _find_recommend_dir(Path(model).resolve()) or _find_recommend_dir(
        resolve(model).resolve()
    )
    if folder is None and data_dir is None:
        raise ModelFileError(
            f"{model} has no {RECOMMEND_DIR}/ data (item and user tables); train it with "
            "`widedeep train --dataset movielens`, or pass --data_dir with the MovieLens files"
        )
    if data_dir is not None:
        data = ml.load_movielens(data_dir)
        train, _ = ml.temporal_split(data.ratings)
        settings = {}
        if folder is not None:
            settings = json.loads((folder / "recommend.json").read_text())
    else:
        settings = json.loads((folder / "recommend.json").read_text())
        tables = []
        for name in _FILES:
            payload = (folder / name).read_bytes()
            if hashlib.sha256(payload).hexdigest() != settings["files"].get(name):
                raise ModelFileError(
                    f"{folder / name}: checksum mismatch (changed or damaged); retrain or "
                    "restore the model directory"
                )
            tables.append(pq.read_table(pa.BufferReader(payload)))
        data = ml.MovieLens(tables[0], tables[1], tables[2], settings["dataset"])
        train = tables[2]
    return Recommender(
        predictor,
        data,
        train,
        history_length=settings.get("history_length", ml.HISTORY_LENGTH),
        like_threshold=settings.get("like_threshold", ml.LIKE_THRESHOLD),
    )


# --------------------------------------------------------------------------- training source


class SampledNegatives:
    """Ranking training data, as a run-loop source: liked ratings (>= threshold) are positives;
    low ratings and ``num_negatives`` items per positive that the user did not rate in training,
    **resampled every epoch**, are negatives.  A sampled negative shares its positive's context
    (user, time, liked history).  Epoch ``e`` is a pure function of (seed, e), so a resumed run
    sees the same data."""

    def __init__(
        self,
        spec: FeatureSpec,
        data: ml.MovieLens,
        train: pa.Table,
        batch_size: int,
        num_negatives: int = 4,
        seed: int = 0,
        history_length: int = ml.HISTORY_LENGTH,
        like_threshold: int = ml.LIKE_THRESHOLD,
    ) -> None:
        self.spec = spec
        self.data = data
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        rated = ranking_examples(data, train, train, history_length, like_threshold)
        self.rated = rated
        positive = rated.column("label").to_numpy() == 1
        self.positives = rated.filter(pa.array(positive))
        self.item_ids = data.movies.column("movie_id").to_numpy()
        user = train.column("user_id").to_numpy()
        self._seen = np.unique(user * (1 << 32) + train.column("movie_id").to_numpy())
        self._rows = len(rated) + num_negatives * len(self.positives)

    def batches_per_epoch(self) -> int:
        return math.ceil(self._rows / self.batch_size)

    def sample(self, epoch: int) -> pa.Table:
        """This epoch's examples: the rated ones plus freshly sampled unrated items."""
        rng = np.random.default_rng([self.seed, epoch])
        pos = self.positives
        user = np.repeat(pos.column("user_id").to_numpy(), self.num_negatives)
        items = self.item_ids[rng.integers(0, len(self.item_ids), len(user))]
        for _ in range(20):  # rejection: redraw items the user rated
            bad = np.isin(user * (1 << 32) + items, self._seen, assume_unique=False)
            if not bad.any():
                break
            items[bad] = self.item_ids[rng.integers(0, len(self.item_ids), int(bad.sum()))]
        index = np.repeat(np.arange(len(pos)), self.num_negatives)
        negatives = ml.examples(
            self.data,
            user,
            items,
            pos.column("liked").take(pa.array(index)),
            {"label": np.zeros(len(user), dtype=np.float32)},
        )
        return pa.concat_tables([self.rated, negatives.select(self.rated.column_names)])

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        batch = self.spec.transform(self.sample(epoch), label=True)
        yield from InMemory(batch, self.batch_size, self.seed).epoch(epoch, skip)


def ranking_examples(
    data: ml.MovieLens,
    rows: pa.Table,
    train: pa.Table,
    history_length: int = ml.HISTORY_LENGTH,
    like_threshold: int = ml.LIKE_THRESHOLD,
) -> pa.Table:
    """Rated pairs labelled 1 if rating >= ``like_threshold`` else 0 (column ``label``)."""
    table = ml.rating_examples(
        data, rows, train, max_length=history_length, threshold=like_threshold
    )
    label = (table.column("rating").to_numpy() >= like_threshold).astype(np.float32)
    return table.drop_columns(["rating"]).append_column("label", pa.array(label))


# --------------------------------------------------------------------------- offline metrics

Scorer = Callable[[int, np.ndarray], np.ndarray]


def ranking_metrics(
    score: Scorer,
    item_ids: np.ndarray,
    train: pa.Table,
    test: pa.Table,
    k: int = 10,
    like_threshold: int = ml.LIKE_THRESHOLD,
    num_sampled: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """HR@k, NDCG@k and AUC ranking all items a user did not rate in ``train``; and the
    sampled variant (each test positive against ``num_sampled`` items the user never rated).

    ``score(user_id, item_ids) -> scores`` (higher is better).  Users without a test
    positive are skipped.  Full catalogue, per user: HR@k = 1 if any test positive is in
    the top k; NDCG@k with binary relevance (ideal DCG from the user's number of
    positives); AUC = P(a positive outranks a non-positive candidate).  Sampled, per test
    positive: its 0-based rank among itself and the sampled negatives, then HR@k / NDCG@k.
    """
    rng = np.random.default_rng(seed)
    tu = test.column("user_id").to_numpy()
    liked = test.column("rating").to_numpy() >= like_threshold
    rated_train = _by_user(train)
    rated_test = _by_user(test)
    hits, ndcg_rel, npos, aucs, sampled_ranks = [], [], [], [], []
    for user in np.unique(tu[liked]).tolist():
        positives = test.column("movie_id").to_numpy()[(tu == user) & liked]
        candidates = item_ids[~np.isin(item_ids, rated_train.get(user, []))]
        scores = np.asarray(score(user, candidates), dtype=np.float64)
        relevant = np.isin(candidates, positives)
        order = np.lexsort((candidates, -scores))  # ties: lower id first, never in the model's favour
        top = relevant[order[:k]]
        hits.append(top.any())
        ndcg_rel.append(top.astype(np.float64))
        npos.append(int(relevant.sum()))
        aucs.append(metrics.roc_auc(relevant, scores))
        never = ~np.isin(candidates, rated_test.get(user, []))
        pool_scores = scores[never]
        for p in np.flatnonzero(relevant):
            negatives = rng.choice(len(pool_scores), size=min(num_sampled, len(pool_scores)),
                                   replace=False)  # fmt: skip
            neg = pool_scores[negatives]
            sampled_ranks.append((neg > scores[p]).sum() + 0.5 * (neg == scores[p]).sum())
    sampled = np.asarray(sampled_ranks)
    return {
        f"hr@{k}": float(np.mean(hits)),
        f"ndcg@{k}": metrics.ndcg_at_k_multi(ndcg_rel, k, num_positives=npos),
        "auc": float(np.nanmean(aucs)),
        f"sampled{num_sampled}_hr@{k}": metrics.hit_rate_at_k(sampled, k),
        f"sampled{num_sampled}_ndcg@{k}": metrics.ndcg_at_k(sampled, k),
        "users": len(hits),
    }


def _by_user(table: pa.Table) -> dict[int, np.ndarray]:
    user = table.column("user_id").to_numpy()
    movie = table.column("movie_id").to_numpy()
    order = np.argsort(user, kind="stable")
    user, movie = user[order], movie[order]
    cuts = np.flatnonzero(np.diff(user)) + 1
    return dict(zip(user[np.r_[0, cuts]].tolist(), np.split(movie, cuts)))


def popularity_scorer(train: pa.Table) -> Scorer:
    """The most-popular baseline: an item's number of training ratings."""
    counts = pc.value_counts(train.column("movie_id"))
    ids = counts.field("values").to_numpy()
    lookup = np.zeros(int(ids.max()) + 1)
    lookup[ids] = counts.field("counts").to_numpy()

    def score(user: int, items: np.ndarray) -> np.ndarray:
        return lookup[np.minimum(items, len(lookup) - 1)] * (items < len(lookup))

    return score
