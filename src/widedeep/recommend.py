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
from dataclasses import replace
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
from .hashing import cross_hash, hash_strings
from .heads import outputs_numpy
from .ids import Ids, cartesian, offsets_of, row_of, segment_sum
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
        rated_length: int = 0,
        similarity: np.ndarray | None = None,
    ) -> None:
        """``similarity``: :func:`movielens.item_similarity` of ``interactions``, when
        already computed (built here when the model reads the item-kNN inputs)."""
        self.predictor = predictor
        self.data = data
        self.history_length = history_length
        self.like_threshold = like_threshold
        self.rated_length = rated_length
        self.item_ids = data.movies.column("movie_id").to_numpy()
        self._users, self._items = ml.serving_tables(
            data,
            interactions,
            rated_length=rated_length,
            max_length=history_length,
            threshold=like_threshold,
        )
        users = interactions.column("user_id").to_numpy()
        order = np.lexsort((interactions.column("movie_id").to_numpy(), users))
        self._seen_user = users[order]
        self._seen_rows = ml.positions(
            interactions.column("movie_id").to_numpy()[order], data.movies, "movie_id"
        )
        self.interactions = interactions
        # the item-kNN's similarity, transposed: [rated movie, candidate movie]; a request
        # reads the user's rated movies' rows only, with their centred ratings (found once)
        self._similarity = self._rated = None
        if set(ml.NEIGHBOUR_KEYS) & set(predictor.spec.input_keys):
            if similarity is None:
                similarity = ml.item_similarity(interactions, ml.id_bound(data))
            self._similarity = np.ascontiguousarray(similarity.T)
            weights = _user_weights(self._users, "rated_weight")
            rated = np.asarray(self._users.column("rated").combine_chunks().flatten())
            centred = ml.centred_ratings(weights.values, weights.lengths())
            self._rated = Ids(rated.astype(np.int64), weights.offsets, centred)
        pair_keys = ml.NEIGHBOUR_KEYS if self._similarity is not None else ()
        self._fast = _BroadcastScorer.build(predictor, self._users, self._items, pair_keys)

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

    def user_row(self, user_id: int) -> int:
        """Row of ``user_id`` in the user table; an unknown user is an error naming it."""
        try:
            return int(ml.positions(np.array([user_id]), self._users, "user_id")[0])
        except ml.MovieLensError:
            raise ml.MovieLensError(
                f"user {user_id} is not in the model's user table; choose an existing user id"
            ) from None

    def features(self, user_id: int, rows: np.ndarray) -> pa.Table:
        """The model's input for (user, each item row): user context broadcast onto items,
        and what depends on both (the item-kNN inputs)."""
        user = self.user_row(user_id)
        table = _broadcast(self._users, user, self._items, rows)
        if self._similarity is not None:
            for key, values in self.neighbour_inputs(user, rows).items():
                table = table.append_column(key, pa.array(values))
        return table

    def neighbour_inputs(self, user: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`movielens.neighbour_inputs` of the user (a user-table row) and each item
        row, from the user's rated history as of the end of training: one matrix product."""
        lo, hi = self._rated.offsets[user : user + 2]
        centred, rated = self._rated.weights[lo:hi], self._rated.values[lo:hi]
        sums = np.stack([centred, np.ones_like(centred)]) @ self._similarity[rated]
        return ml.neighbour_columns(*sums[:, self.item_ids[rows]])

    def score_rows(self, user_id: int, rows: np.ndarray, fast: bool = True) -> np.ndarray:
        """Model scores (logits: monotone in P(like) or in the predicted rating) for item rows.

        ``fast`` uses the precomputed user and item sides (the same numbers, far quicker);
        ``fast=False`` encodes the broadcast rows with the spec like any other input.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        if fast and self._fast is not None:
            user = self.user_row(user_id)
            pairs = {} if self._similarity is None else self.neighbour_inputs(user, rows)
            return self._fast.score(user, rows, pairs)
        batch = self.predictor.spec.transform(self.features(user_id, rows), label=False)
        with torch.no_grad():
            return self.predictor.model(batch)[:, 0].numpy()

    def score_items(self, user_id: int, item_ids: np.ndarray) -> np.ndarray:
        """Scores of the given item ids for the user (the scorer of :func:`ranking_metrics`)."""
        return self.score_rows(user_id, ml.positions(item_ids, self.data.movies, "movie_id"))

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
        # P(the user likes it), or the predicted rating
        values = outputs_numpy(scores[top, None], self.predictor.head, self.predictor.output_range)
        return pa.table(
            {
                "rank": pa.array(np.arange(1, len(top) + 1)),
                "movie_id": picked.column("movie_id"),
                "title": picked.column("title"),
                "genres": picked.column("genres"),
                "score": pa.array(values.astype(np.float64)),
            }
        )


def _broadcast(users: pa.Table, user_row: int, items: pa.Table, rows: np.ndarray) -> pa.Table:
    """One user's columns repeated onto the given item rows (list columns included)."""
    n = len(rows)
    columns = {}
    for name in users.column_names:
        value = users.column(name).slice(user_row, 1).combine_chunks()
        if pa.types.is_list(value.type):
            k = len(value.values)
            offsets = np.arange(0, n * k + 1, k) if k else np.zeros(n + 1, np.int64)
            columns[name] = pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), value.values.take(pa.array(np.tile(np.arange(k), n)))
            )
        else:
            columns[name] = pa.repeat(value[0], n)
    taken = items.take(rows)
    columns.update({name: taken.column(name) for name in taken.column_names})
    return pa.table(columns)


def _with_zeros(table: pa.Table, keys: tuple) -> pa.Table:
    for key in keys:
        table = table.append_column(key, pa.array(np.zeros(table.num_rows, np.float32)))
    return table


def _set(table: pa.Table, key: str, value: float) -> pa.Table:
    """``table`` with column ``key`` set to ``value`` on every row."""
    column = pa.array(np.full(table.num_rows, value, np.float32))
    return table.set_column(table.column_names.index(key), key, column)


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
    rated_length: int = 0,
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
            "rated_length": rated_length,
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
        movies, users, train = tables
        data = ml.MovieLens(train, movies, users, settings["dataset"])
    return Recommender(
        predictor,
        data,
        train,
        history_length=settings.get("history_length", ml.HISTORY_LENGTH),
        like_threshold=settings.get("like_threshold", ml.LIKE_THRESHOLD),
        # a model reading the rated history, without its length recorded: the default's
        rated_length=settings.get(
            "rated_length", ml.RATED_LENGTH if "rated" in predictor.spec.input_keys else 0
        ),
    )


# --------------------------------------------------------------------------- training source


class SampledNegatives:
    """Ranking training data, as a run-loop source: liked ratings (>= threshold) are positives;
    ``num_negatives`` items per positive that the user did not rate in training, **resampled
    every epoch**, are negatives, and the low ratings too, each with example weight
    ``low_negatives`` (0: left out; 1: as much as the rest).  A sampled negative shares its
    positive's context (user, time, liked history).  Epoch ``e`` is a pure function of
    (seed, e), so a resumed run sees the same data."""

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
        low_negatives: float = 0.0,
    ) -> None:
        if not 0 <= low_negatives <= 1:
            raise ValueError(f"low_negatives is a weight in [0, 1], got {low_negatives}")
        self.spec = spec
        self.data = data
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        rated = ranking_examples(data, train, train, history_length, like_threshold)
        self.rated = rated  # every rated pair: what the spec's vocabularies are fitted on
        positive = rated.column("label").to_numpy() == 1
        self.positives = rated.filter(pa.array(positive))
        # without low ratings, only unrated items are negatives: "will the user pick it"; a
        # low rating says "picked, but disliked": a weaker negative, so a lighter weight
        self.labelled = rated if low_negatives else self.positives
        liked = self.labelled.column("label").to_numpy() == 1
        self.labelled_weights = np.where(liked, 1.0, low_negatives).astype(np.float32)
        self.timestamps = train.column("timestamp").to_numpy()[positive]
        self.item_ids = data.movies.column("movie_id").to_numpy()
        self.train = train
        user = train.column("user_id").to_numpy()
        self._seen = np.unique(user * (1 << 32) + train.column("movie_id").to_numpy())
        self._rows = len(self.labelled) + num_negatives * len(self.positives)

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
            self.train,
            user,
            items,
            np.repeat(self.timestamps, self.num_negatives),
            history=pos.column("liked").take(pa.array(index)),
            extra={"label": np.zeros(len(user), dtype=np.float32)},
        )
        return pa.concat_tables([self.labelled, negatives.select(self.rated.column_names)])

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        batch = self.spec.transform(self.sample(epoch), label=True)
        if not (self.labelled_weights == 1).all():  # the unweighted loss is the faster path
            sampled = np.ones(len(batch) - len(self.labelled_weights), dtype=np.float32)
            weight = np.concatenate([self.labelled_weights, sampled])
            batch = replace(batch, weight=torch.from_numpy(weight))
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
        order = np.lexsort((candidates, -scores))  # ties: lower id first
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


# --------------------------------------------------------------------------- fast scoring


class _BroadcastScorer:
    """Scores (user, many items) without re-encoding the user or the items per request.

    Every wide column but the user x item crosses and every deep column reads only user
    features or only item features, and the wide logit and the deep part's first layer are
    sums over columns.  So for a reference user u0 and item i0, with f either of them,
    ``f(u, i) = f(u0, i) + f(u, i0) - f(u0, i0)``: both sides are encoded once, here, for
    all users and all items.  Per request only the user x item crosses are hashed (the same
    formula as the encoder: :mod:`widedeep.hashing`), then the rest of the MLP runs.  A
    cross of one user component and one item component (occupation x genres, liked x
    movie_id) is precomputed further as a table [distinct user value, item] of summed weights,
    so a request only adds up the rows of the user's values (weighted by the user's weights
    for a weighted cross: rated x movie_id by rated_weight).  A user-side categorical column
    weighted by an item-side scalar (a per-user slope: user_id by movie_mean_dev) adds
    ``coef[user] * x[item]``, with ``coef`` the sum of the wide weights of the user's ids.
    A deep numeric column of the pair (the item-kNN inputs, which the recommender computes
    per request) enters the first layer affinely: ``slope * x``, measured once from two rows.
    """

    def __init__(self, model, spec, users, items, mixed, weighted, slopes, pair_keys) -> None:
        self.model = model
        self.mixed = mixed  # per cross: (base id, size, hash_key, [(side, Ids per row)])
        # per cross: None, or the weight of each of its user component's values (a weighted
        # cross of a user list with a single-valued item component: rated x movie_id)
        self.weighted = weighted
        wide_w = model.wide.weight[:, 0].detach().numpy() if model.has_wide else None
        self.wide_w = wide_w
        self.bias = float(model.wide_bias.detach()[0]) if model.has_wide else 0.0
        in_mixed = np.zeros(spec.wide_dim_ + 1, dtype=bool)
        for base, size, *_ in mixed + slopes:
            in_mixed[base : base + size] = True
        # per slope column: (coef per user row, its scalar per item row)
        self.slopes = [(segment_sum(wide_w[base + ids.values.astype(np.int64)], ids.offsets), x)
                       for base, _, ids, x in slopes] if model.has_wide else []  # fmt: skip
        self.pair_slopes = []  # per pair column: (key, its first-layer slope)
        # the pair columns at 0 on both sides; their first-layer slope is added per request
        item_table = _with_zeros(_broadcast(users, 0, items, np.arange(items.num_rows)), pair_keys)
        user_table = _with_zeros(_broadcast(items, 0, users, np.arange(users.num_rows)), pair_keys)
        item_batch, user_batch = spec.transform(item_table), spec.transform(user_table)
        self.tables = [_pair_table(m, wide_w, items.num_rows) if model.has_wide else None
                       for m in mixed]  # fmt: skip
        # a weighted cross is scored from its table only (the general path weighs the rest)
        self.complete = all(t is not None for t, w in zip(self.tables, weighted) if w is not None)
        with torch.no_grad():
            if model.has_wide:
                wide_i = _wide_sum(item_batch, wide_w, in_mixed)
                wide_u = _wide_sum(user_batch, wide_w, in_mixed)
                self.wide_item = wide_i - wide_i[0]  # relative to (u0, i0)
                self.wide_user = wide_u
            if model.has_deep:
                h_i = _first_layer(model, item_batch)
                self.h_item = h_i - h_i[0]
                self.h_user = _first_layer(model, user_batch)
                reference = item_table.slice(0, 1)
                for key in pair_keys:
                    one = _first_layer(model, spec.transform(_set(reference, key, 1.0)))
                    self.pair_slopes.append((key, one[0] - h_i[0]))

    @classmethod
    def build(cls, predictor: Predictor, users: pa.Table, items: pa.Table, pair_keys: tuple = ()):
        """The scorer, or None when a column does not split into user and item sides (or is
        one of ``pair_keys``: a plain or standardised deep numeric, supplied per request)."""
        from . import feature_column as fc

        spec, model = predictor.spec, predictor.model
        user_keys, item_keys = set(users.column_names), set(items.column_names)

        def side(keys: list[str]) -> str | None:
            if set(keys) <= user_keys:
                return "user"
            if set(keys) <= item_keys:
                return "item"
            return None

        for column in spec.deep_columns:
            if side(fc.input_keys(column)) is None and not (
                isinstance(column, fc.NumericColumn)
                and column.key in pair_keys
                and column.dimension == 1
                and column.normalizer in (None, "standard")  # affine in the value
            ):
                return None
        mixed, weighted, slopes, base = [], [], [], 1
        for column, size in zip(spec.wide_columns, spec.wide_sizes()):
            if side(fc.input_keys(column)) is None:
                if (
                    isinstance(column, fc.WeightedCategoricalColumn)
                    and side(fc.input_keys(column.categorical_column)) == "user"
                    and (x := _item_scalars(items, column.weight_feature_key)) is not None
                ):  # a per-user slope: user ids, weighted by one number per item
                    ids = _component(spec, column.categorical_column, users)
                    slopes.append((base, size, ids, x))
                    base += size
                    continue
                weights = None
                if isinstance(column, fc.WeightedCategoricalColumn):
                    weights = _user_weights(users, column.weight_feature_key)
                    column = column.categorical_column
                    if weights is None or not isinstance(column, fc.CrossedColumn):
                        return None
                if not isinstance(column, fc.CrossedColumn):
                    return None
                parts = []
                for key in column.keys:
                    keys = [key] if isinstance(key, str) else fc.input_keys(key)
                    where = side(keys)
                    table = users if where == "user" else items
                    ids = _component(spec, key, table)
                    if where is None or ids is None:
                        return None
                    parts.append((where, ids))
                if weights is not None and not _weights_fit(parts, weights):
                    return None
                mixed.append((base, size, column.hash_key, parts))
                weighted.append(weights)
            base += size
        scorer = cls(model, spec, users, items, mixed, weighted, slopes, pair_keys)
        return scorer if scorer.complete else None

    def score(self, user: int, rows: np.ndarray, pairs: dict | None = None) -> np.ndarray:
        """Logits of the user and the item rows; ``pairs``: the pair columns' values."""
        n = len(rows)
        logit = np.zeros(n, dtype=np.float32)
        model = self.model
        if model.has_wide:
            logit += self.bias + self.wide_user[user] + self.wide_item[rows]
            for coef, x in self.slopes:
                logit += coef[user] * x[rows]
            for (base, size, hash_key, parts), table, weights in zip(
                self.mixed, self.tables, self.weighted
            ):
                if table is not None:
                    values, index = table
                    lo, hi = index.offsets[user], index.offsets[user + 1]
                    mine = values[index.values[lo:hi]]
                    summed = mine.sum(axis=0) if weights is None else weights.values[lo:hi] @ mine
                    logit += summed[rows]
                    continue
                comps = [_select(ids, user, n) if where == "user" else _take(ids, rows)
                         for where, ids in parts]  # fmt: skip
                acc = Ids(np.arange(len(comps[0].values)), comps[0].offsets)
                picks = [acc.values]
                for ids in comps[1:]:
                    left, right, offsets = cartesian(acc, ids)
                    picks = [p[left] for p in picks] + [right]
                    acc = Ids(np.arange(offsets[-1]), offsets)
                hashed = cross_hash([c.values[p] for c, p in zip(comps, picks)], hash_key)
                ids = base + (hashed % np.uint64(size)).astype(np.int64)
                logit += np.bincount(row_of(acc.offsets), self.wide_w[ids], minlength=n)
        if model.has_deep:
            with torch.no_grad():
                h = self.h_user[user] + self.h_item[rows]
                for key, slope in self.pair_slopes:
                    h += np.outer(pairs[key], slope)
                logit += model.rest(torch.from_numpy(h))[:, 0].numpy()
        return logit


_PAIR_TABLE_LIMIT = 1 << 24


def _user_weights(users: pa.Table, key: str) -> Ids | None:
    """A user-side weight list column as CSR (float32 values), or None when it is not one."""
    if key not in users.column_names:
        return None
    arr = users.column(key).combine_chunks()
    if not pa.types.is_list(arr.type) or arr.null_count:
        return None
    offsets = np.asarray(arr.offsets, dtype=np.int64) - arr.offsets[0].as_py()
    values = arr.flatten()
    if values.null_count:
        return None
    return Ids(values.to_numpy(zero_copy_only=False).astype(np.float32), offsets)


def _item_scalars(items: pa.Table, key: str) -> np.ndarray | None:
    """An item-side numeric column, one value per item, as float32; None when not one."""
    if key not in items.column_names:
        return None
    arr = items.column(key)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)) or arr.null_count:
        return None
    return arr.to_numpy().astype(np.float32)


def _weights_fit(parts: list, weights: Ids) -> bool:
    """Whether the weights go one per value of a (user list, single-valued item) cross's user
    component, the only order in which weighting user values weighs the cross's values."""
    if len(parts) != 2 or [where for where, _ in parts] != ["user", "item"]:
        return False
    user_ids, item_ids = parts[0][1], parts[1][1]
    same = np.array_equal(weights.offsets, user_ids.offsets)
    return same and bool((np.diff(item_ids.offsets) == 1).all())


def _pair_table(mixed, wide_w: np.ndarray, n_items: int) -> tuple[np.ndarray, Ids] | None:
    """For a (user component, item component) cross: T[a, i] = sum of the weights of the
    cross ids of user value a with item i's values, and each user's value indices into T."""
    base, size, hash_key, parts = mixed
    if len(parts) != 2 or {where for where, _ in parts} != {"user", "item"}:
        return None
    user_ids = parts[0][1] if parts[0][0] == "user" else parts[1][1]
    item_ids = parts[1][1] if parts[0][0] == "user" else parts[0][1]
    distinct, inverse = np.unique(user_ids.values, return_inverse=True)
    a, v = len(distinct), len(item_ids.values)
    if a * max(v, n_items) > _PAIR_TABLE_LIMIT:
        return None
    left, right = np.repeat(distinct, v), np.tile(item_ids.values, a)
    pairs = [left, right] if parts[0][0] == "user" else [right, left]
    weights = wide_w[base + (cross_hash(pairs, hash_key) % np.uint64(size)).astype(np.int64)]
    csum = np.zeros((a, v + 1), dtype=np.float64)
    np.cumsum(weights.reshape(a, v), axis=1, out=csum[:, 1:])
    table = (csum[:, item_ids.offsets[1:]] - csum[:, item_ids.offsets[:-1]]).astype(np.float32)
    return table, Ids(inverse.reshape(-1), user_ids.offsets)


def _wide_sum(batch: Batch, weights: np.ndarray, in_mixed: np.ndarray) -> np.ndarray:
    ids = batch.wide_ids.numpy()
    w = weights[ids] * ~in_mixed[ids]
    if batch.wide_weights is not None:
        w = w * batch.wide_weights.numpy()
    return w.sum(axis=1)


def _first_layer(model, batch: Batch) -> np.ndarray:
    """The deep part's first pre-activation (as in WideDeep.forward)."""
    parts = [
        bag(ids, per_sample_weights=w)
        for bag, ids, w in zip(model.embeddings, batch.embed_ids, batch.embed_weights)
    ]
    x = torch.cat([*parts, batch.dense], dim=1) if parts else batch.dense
    h = model.first(x)
    if model.indicator is not None:
        h = h + model.indicator(batch.indicator_ids, per_sample_weights=batch.indicator_weights)
    return h.numpy()


def _component(spec: FeatureSpec, key, table: pa.Table) -> Ids | None:
    """A cross component per row of ``table`` as CSR uint64 values (what the encoder crosses):
    the string hash of a raw feature's values, or a categorical column's 0-based ids."""
    if not isinstance(key, str):
        sub = FeatureSpec(wide_columns=[key])
        sub.state_ = spec.state_
        ids = sub.transform(table, label=False).wide_ids.numpy().astype(np.int64)
        keep = ids > 0
        return Ids((ids[keep] - 1).astype(np.uint64), offsets_of(keep.sum(axis=1)))
    arr = table.column(key).combine_chunks()
    if pa.types.is_list(arr.type):
        offsets = np.asarray(arr.offsets, dtype=np.int64) - arr.offsets[0].as_py()
        arr = arr.flatten()
    else:
        offsets = np.arange(len(arr) + 1)
    if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)) or arr.null_count:
        return None  # other types: the general path encodes them
    strings = pc.cast(arr, pa.string())
    if pc.any(pc.equal(strings, "")).as_py():
        return None
    return Ids(hash_strings(strings.to_pylist(), spec._hash_cache), offsets)


def _select(ids: Ids, row: int, n: int) -> Ids:
    """One row's values repeated for ``n`` rows."""
    values = ids.values[ids.offsets[row] : ids.offsets[row + 1]]
    k = len(values)
    return Ids(np.tile(values, n), np.arange(0, n * k + 1, k) if k else np.zeros(n + 1, np.int64))


def _take(ids: Ids, rows: np.ndarray) -> Ids:
    lengths = ids.offsets[rows + 1] - ids.offsets[rows]
    offsets = offsets_of(lengths)
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - ids.offsets[rows], lengths)
    return Ids(ids.values[index], offsets)
