"""MovieLens (GroupLens ml-100k and ml-1m): readers, download, the temporal split, features.

The GroupLens licence forbids redistributing the data, so widedeep ships no
MovieLens file: :func:`load_movielens` reads a user's local copy and
:func:`download_movielens` fetches the official zip (checksum verified).

Everything becomes three Arrow tables with the same columns for both formats:

- ``ratings``: user_id, movie_id, rating, timestamp (int64);
- ``movies``: movie_id, title, release_year (null if unknown), genres (list<string>);
- ``users``: user_id, age, gender, occupation, zip_prefix (first two characters).

The examples a model reads are ratings joined with both tables plus ``liked``:
the movies the user rated >= 4 in *training* interactions strictly before the
example's timestamp (the paper's "installed apps"), the input of the
memorisation cross ``liked x movie_id``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
# GroupLens publishes MD5 sums (ml-100k.zip.md5, ml-1m.zip.md5) next to its zips; those are the
# pinned digests. A SHA-256 can be pinned too with download_movielens(..., sha256=...).
CHECKSUMS: dict[str, tuple[str, str]] = {
    "ml-100k": ("md5", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": ("md5", "c4d9eecfca2ab87c1945afe126590906"),
}
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
LIKE_THRESHOLD = 4
# rating predictions are squashed into the 1-5 scale widened by a quarter star: a sure 1 or
# 5 is then reached without an infinite logit (chosen on the validation slice, docs/movielens.md)
RATING_RANGE = (0.75, 5.25)
HISTORY_LENGTH = 50
RATED_LENGTH = 500  # rating: the rated history's length (longer: slightly better, bigger batches)
DAY = 86400  # seconds: the period of the user x day cross (Koren's day-specific user bias)
AGE_BOUNDARIES = (18, 25, 35, 45, 50, 56)  # the ml-1m age codes; ml-100k ages fall into them
YEAR_BOUNDARIES = (1940, 1960, 1970, 1980, 1985, 1990, 1993, 1995, 1996, 1997, 1998)


class MovieLensError(ValueError):
    """A MovieLens file is missing or malformed; the message names it and the fix."""


@dataclass
class MovieLens:
    """The three tables of one MovieLens release (``name``: "ml-100k" or "ml-1m")."""

    ratings: pa.Table
    movies: pa.Table
    users: pa.Table
    name: str


# --------------------------------------------------------------------------- reading


def _read(path: Path, names: list[str], separator: str) -> pa.Table:
    """A GroupLens file (Latin-1, no header, no quoting) as a table of strings."""
    if not path.is_file():
        raise MovieLensError(
            f"MovieLens file {str(path)!r} not found; point --data_dir at the unzipped "
            "ml-100k or ml-1m folder, or add --download to fetch it from GroupLens"
        )
    text = path.read_bytes().decode("latin-1")
    if len(separator) > 1:  # ml-1m's "::": no field holds a tab, so it becomes one
        text, separator = text.replace(separator, "\t"), "\t"
    try:
        return pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=separator, quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as e:
        raise MovieLensError(
            f"{path}: not a MovieLens file of {len(names)} {separator!r}-separated fields "
            f"({e}); re-download it (--download)"
        ) from None


def _ints(table: pa.Table, name: str, path: Path) -> pa.Array:
    try:
        return pc.cast(table.column(name), pa.int64())
    except pa.ArrowInvalid as e:
        raise MovieLensError(f"{path}: column {name!r} is not an integer ({e})") from None


def _ratings(path: Path, separator: str) -> pa.Table:
    raw = _read(path, ["user_id", "movie_id", "rating", "timestamp"], separator)
    return pa.table({n: _ints(raw, n, path) for n in raw.column_names})


def _year(strings: pa.Array, pattern: str) -> pa.Array:
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    # a value that does not match (no year) is null
    years = pc.struct_field(pc.extract_regex(strings, pattern), [0])
    return pc.cast(years, pa.int64())


def read_ml100k(data_dir: str | os.PathLike[str]) -> MovieLens:
    """``u.data`` (tab), ``u.item`` and ``u.user`` (``|``, Latin-1) of an ml-100k folder."""
    data_dir = Path(data_dir)
    ratings = _ratings(data_dir / "u.data", "\t")
    item_path = data_dir / "u.item"
    names = ["movie_id", "title", "release_date", "video_date", "url", *ML100K_GENRES]
    items = _read(item_path, names, "|")
    flags = np.stack(
        [items.column(g).to_numpy(zero_copy_only=False) == "1" for g in ML100K_GENRES], axis=1
    )
    rows, which = np.nonzero(flags)  # row-major: each row's genres in the file's order
    offsets = np.r_[0, np.cumsum(np.bincount(rows, minlength=len(flags)))]
    genres = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(np.asarray(ML100K_GENRES, dtype=object)[which])
    )
    movies = pa.table(
        {
            "movie_id": _ints(items, "movie_id", item_path),
            "title": items.column("title"),
            "release_year": _year(items.column("release_date"), r"(?P<year>\d{4})$"),
            "genres": genres,
        }
    )
    user_path = data_dir / "u.user"
    raw = _read(user_path, ["user_id", "age", "gender", "occupation", "zip"], "|")
    users = pa.table(
        {
            "user_id": _ints(raw, "user_id", user_path),
            "age": _ints(raw, "age", user_path),
            "gender": raw.column("gender"),
            "occupation": raw.column("occupation"),
            "zip_prefix": pc.utf8_slice_codeunits(raw.column("zip"), 0, 2),
        }
    )
    return MovieLens(ratings, movies, users, "ml-100k")


def read_ml1m(data_dir: str | os.PathLike[str]) -> MovieLens:
    """``ratings.dat``, ``movies.dat`` ("Title (1995)", "Genre1|Genre2"), ``users.dat``."""
    data_dir = Path(data_dir)
    ratings = _ratings(data_dir / "ratings.dat", "::")
    movie_path = data_dir / "movies.dat"
    raw = _read(movie_path, ["movie_id", "title", "genres"], "::")
    movies = pa.table(
        {
            "movie_id": _ints(raw, "movie_id", movie_path),
            "title": raw.column("title"),
            "release_year": _year(raw.column("title"), r"\((?P<year>\d{4})\)\s*$"),
            "genres": pc.split_pattern(raw.column("genres"), "|"),
        }
    )
    user_path = data_dir / "users.dat"
    raw = _read(user_path, ["user_id", "gender", "age", "occupation", "zip"], "::")
    codes = _ints(raw, "occupation", user_path).to_numpy()
    if ((codes < 0) | (codes >= len(ML1M_OCCUPATIONS))).any():
        raise MovieLensError(f"{user_path}: occupation codes must be 0..20")
    users = pa.table(
        {
            "user_id": _ints(raw, "user_id", user_path),
            "age": _ints(raw, "age", user_path),
            "gender": raw.column("gender"),
            "occupation": pa.array(np.asarray(ML1M_OCCUPATIONS, dtype=object)[codes]),
            "zip_prefix": pc.utf8_slice_codeunits(raw.column("zip"), 0, 2),
        }
    )
    return MovieLens(ratings, movies, users, "ml-1m")


def load_movielens(data_dir: str | os.PathLike[str]) -> MovieLens:
    """Read the release found in ``data_dir`` (or in its ``ml-100k`` / ``ml-1m`` subfolder)."""
    data_dir = Path(data_dir)
    for folder in (data_dir, data_dir / "ml-100k", data_dir / "ml-1m"):
        if (folder / "u.data").is_file():
            return read_ml100k(folder)
        if (folder / "ratings.dat").is_file():
            return read_ml1m(folder)
    raise MovieLensError(
        f"no MovieLens data in {str(data_dir)!r} (expected u.data/u.item/u.user of ml-100k or "
        "ratings.dat/movies.dat/users.dat of ml-1m); add --download to fetch ml-100k"
    )


# --------------------------------------------------------------------------- download


def download_movielens(
    data_dir: str | os.PathLike[str],
    name: str = "ml-100k",
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 120,
) -> Path:
    """Fetch ``<name>.zip`` from GroupLens into ``data_dir``, verify it, unzip; return the folder.

    The zip is checked against the pinned digest (and ``sha256`` when given) before anything
    is extracted; a mismatch leaves nothing behind. An already unzipped copy is kept.
    """
    if name not in CHECKSUMS:
        raise MovieLensError(f"unknown MovieLens release {name!r}; choose one of {list(CHECKSUMS)}")
    data_dir = Path(data_dir)
    target = data_dir / name
    if any((target / f).is_file() for f in ("u.data", "ratings.dat")):
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url or f"{GROUPLENS_URL}{name}.zip"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    expected = {CHECKSUMS[name][0]: CHECKSUMS[name][1]} if sha256 is None else {"sha256": sha256}
    for algorithm, digest in expected.items():
        actual = hashlib.new(algorithm, payload).hexdigest()
        if actual != digest.lower():
            raise MovieLensError(
                f"checksum mismatch for {url}: expected {algorithm} {digest}, got {actual}; the "
                "download is damaged or not the official file; nothing was saved"
            )
    tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{name}.", suffix=".tmp"))
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member in archive.infolist():  # only the release's own plain files
                parts = Path(member.filename).parts
                if member.is_dir() or len(parts) != 2 or parts[0] != name:
                    continue
                (tmp / parts[1]).write_bytes(archive.read(member))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return target


# --------------------------------------------------------------------------- split


def temporal_split(ratings: pa.Table, fraction: int = 10) -> tuple[pa.Table, pa.Table]:
    """Per user, ratings sorted by (timestamp, movie_id); the last max(1, n // fraction) are test.

    Both parts keep that order (user, then time), which :func:`liked_history` relies on.
    """
    user = ratings.column("user_id").to_numpy()
    order = np.lexsort((ratings.column("movie_id").to_numpy(),
                        ratings.column("timestamp").to_numpy(), user))  # fmt: skip
    user = user[order]
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    counts = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, counts)
    held_out = position >= np.repeat(counts - np.maximum(1, counts // fraction), counts)
    ordered = ratings.take(order)
    return ordered.filter(pa.array(~held_out)), ordered.filter(pa.array(held_out))


def recency_weights(rows: pa.Table, strength: float) -> np.ndarray:
    """Per row, exp(strength * (position / count - 1)) along its user's ratings, scaled to
    mean 1: a user's later ratings weigh more (up to e^strength times the first one).

    Held-out ratings come after each user's training ratings, and a user's tastes and
    rating level drift; weighting the late ones steers the model towards where each user
    is now. ``rows`` must be ordered by user, then time, as :func:`temporal_split` returns.
    """
    user = rows.column("user_id").to_numpy()
    if len(user) == 0:
        return np.zeros(0, dtype=np.float32)
    if (np.diff(user) < 0).any():
        raise MovieLensError("recency_weights needs rows ordered by user (temporal_split's)")
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    counts = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, counts)
    weights = np.exp(strength * (position / np.repeat(counts, counts) - 1.0))
    return (weights / weights.mean()).astype(np.float32)


def _before(
    rows: pa.Table, user_ids: np.ndarray, timestamps: np.ndarray, max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (user, time), the window of ``rows`` (its last ``max_length`` ratings by that user
    strictly before that time): (order sorting ``rows`` by user, time, movie; each window's
    start and end in that order; where each user's ratings begin)."""
    ru = rows.column("user_id").to_numpy()
    rt = rows.column("timestamp").to_numpy()
    order = np.lexsort((rows.column("movie_id").to_numpy(), rt, ru))
    key = ru[order] * (1 << 32) + rt[order]
    user_ids = np.asarray(user_ids, dtype=np.int64)
    end = np.searchsorted(key, user_ids * (1 << 32) + np.asarray(timestamps), side="left")
    first = np.searchsorted(key, user_ids * (1 << 32), side="left")
    return order, np.maximum(first, end - max_length), end, first


def _windows(start: np.ndarray, end: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """List offsets of the windows [start[i], end[i]) laid end to end, and the index of
    each of their positions (``values[index]``: the windows' values, flat)."""
    lengths = end - start
    offsets = np.r_[0, np.cumsum(lengths)]
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - start, lengths)
    return pa.array(offsets, pa.int32()), index


def _ragged(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> pa.ListArray:
    """values[start[i]:end[i]] per row, as a list array."""
    offsets, index = _windows(start, end)
    return pa.ListArray.from_arrays(offsets, pa.array(values[index]))


def liked_history(
    train: pa.Table,
    user_ids: np.ndarray,
    timestamps: np.ndarray,
    max_length: int = HISTORY_LENGTH,
    threshold: int = LIKE_THRESHOLD,
) -> pa.Array:
    """Per (user, time): the last ``max_length`` movies the user rated >= ``threshold`` in
    ``train`` strictly before that time (list<int64>, oldest first); vectorised."""
    liked = train.filter(pc.greater_equal(train.column("rating"), threshold))
    order, start, end, _ = _before(liked, user_ids, timestamps, max_length)
    return _ragged(liked.column("movie_id").to_numpy()[order], start, end)


def rated_history(
    train: pa.Table, user_ids: np.ndarray, timestamps: np.ndarray, max_length: int = RATED_LENGTH
) -> tuple[pa.Array, pa.Array]:
    """Per (user, time): the last ``max_length`` movies the user rated in ``train`` strictly
    before that time (oldest first), and a weight per movie: its rating minus the user's mean
    rating before that time, over sqrt(the number of movies), as in Koren's neighbourhood
    model (KDD 2008) -- a dislike pulls the other way, and a long history does not swamp.
    (list<int64>, list<float32>)."""
    order, start, end, first = _before(train, user_ids, timestamps, max_length)
    rating = train.column("rating").to_numpy().astype(np.float64)[order]
    csum = np.r_[0.0, np.cumsum(rating)]
    mean = (csum[end] - csum[first]) / np.maximum(end - first, 1)
    lengths = end - start
    offsets, index = _windows(start, end)
    movies = pa.ListArray.from_arrays(
        offsets, pa.array(train.column("movie_id").to_numpy()[order][index])
    )
    centred = rating[index] - np.repeat(mean, lengths)
    weights = centred / np.repeat(np.sqrt(np.maximum(lengths, 1)), lengths)
    return movies, pa.ListArray.from_arrays(offsets, pa.array(weights.astype(np.float32)))


NEIGHBOURS = 200  # item_similarity: each movie keeps its most similar movies
SIMILARITY_SHRINK = 10.0  # item_similarity: x co / (co + this), for few co-raters


def item_similarity(
    train: pa.Table,
    n_ids: int,
    neighbours: int = NEIGHBOURS,
    shrink: float = SIMILARITY_SHRINK,
) -> np.ndarray:
    """[movie_id, movie_id] similarity of who rated the two movies in ``train`` (not how: no
    rating enters it, so a training row's own label cannot leak into its features): the
    cosine of their sets of raters times co / (co + ``shrink``) for ``co`` common raters,
    0 on the diagonal, each row keeping its ``neighbours`` largest.  Dense float32 of
    ``n_ids`` x ``n_ids`` (ids below ``n_ids``): 11 MB for ml-100k, 62 MB for ml-1m."""
    users = train.column("user_id").to_numpy()
    movies = train.column("movie_id").to_numpy()
    rated = np.zeros((int(users.max(initial=0)) + 1, n_ids), dtype=np.float32)
    rated[users, movies] = 1.0
    common = rated.T @ rated
    raters = np.diag(common).copy()
    similarity = common / np.sqrt(np.maximum(np.outer(raters, raters), 1.0))
    similarity *= common / (common + shrink)
    np.fill_diagonal(similarity, 0.0)
    if neighbours < n_ids:
        kth = -np.partition(-similarity, neighbours - 1, axis=1)[:, neighbours - 1 : neighbours]
        similarity[similarity < kth] = 0.0
    return similarity


NEIGHBOUR_KEYS = ("neighbour_dev", "neighbour_support")


def neighbour_inputs(
    similarity: np.ndarray, movie_ids: np.ndarray, rated: pa.ListArray, rated_weight: pa.ListArray
) -> dict[str, np.ndarray]:
    """Per (user, candidate movie), the classic item-kNN prediction from the rated history of
    :func:`rated_history` (``rated_weight`` x sqrt(its length) is the rating minus the user's
    mean): ``neighbour_dev``, the mean of those centred ratings over the movies most like the
    candidate, weighted by :func:`item_similarity` (with one pseudo-neighbour at 0), and
    ``neighbour_support``, log1p of the summed weights (how much that mean rests on).
    The learned ``rated x movie_id`` cross needs the pair seen in training; this
    generalises to pairs never rated together by the same user."""
    lengths = np.diff(np.asarray(rated.offsets))
    centred = centred_ratings(np.asarray(rated_weight.flatten()), lengths)
    weight = similarity[np.repeat(np.asarray(movie_ids), lengths), np.asarray(rated.flatten())]
    row = np.repeat(np.arange(len(lengths)), lengths)
    total = np.bincount(row, weight * centred, len(lengths))
    return neighbour_columns(total, np.bincount(row, weight, len(lengths)))


def centred_ratings(rated_weight: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The rated history's ratings minus the user's mean, from its flat ``rated_weight``
    values and the length of each row's list (:func:`rated_history` divided by sqrt(length))."""
    return rated_weight * np.repeat(np.sqrt(np.maximum(lengths, 1)), lengths)


def neighbour_columns(total: np.ndarray, support: np.ndarray) -> dict[str, np.ndarray]:
    """The two item-kNN inputs from the similarity-weighted sum of centred ratings and the
    summed similarity: one pseudo-neighbour at 0 shrinks a mean resting on little."""
    return {
        "neighbour_dev": (total / (support + 1.0)).astype(np.float32),
        "neighbour_support": np.log1p(support).astype(np.float32),
    }


def day_of(timestamps: np.ndarray) -> pa.Array:
    """The day (UTC, since the epoch) of each timestamp: the ``day`` column."""
    return pa.array(np.asarray(timestamps, dtype=np.int64) // DAY)


NOW = 1 << 31  # a timestamp after every rating: "as of the end of training"
PRIOR_WEIGHT = 5.0  # pseudo-ratings at the global mean that shrink a mean of few ratings
RECENT = 10  # the recent mean's window: the last RECENT ratings
# The item-side scalars of the per-user slopes (movielens_columns(user_slopes=True)), each
# centred so that a slope of 0 means "this user is average": centring changes what FTRL's
# L2 pulls towards, and these exact values were measured (docs/movielens.md).
SLOPE_KEYS = ("movie_mean_dev", "movie_count_dev", "release_dev")
COUNT_CENTRE = 3.5  # movie_count_dev = movie_count - 3.5; 3.5 ~ log1p(32) earlier ratings
RELEASE_CENTRE = 1988  # release_dev = clip((release_year - 1988) / 15, -3, 1)
RELEASE_SCALE = 15.0
RELEASE_RANGE = (-3.0, 1.0)


def prior_rating(train: pa.Table) -> float:
    """The global mean training rating (3.5 without ratings): what :func:`rating_stats`
    shrinks towards and what ``movie_mean_dev`` is measured from."""
    ratings = train.column("rating").to_numpy().astype(np.float64)
    return float(ratings.mean()) if len(ratings) else 3.5


def rating_stats(
    train: pa.Table,
    key: str,
    ids: np.ndarray,
    timestamps: np.ndarray,
    prior: float | None = None,
) -> dict[str, np.ndarray]:
    """Per (id, time): the mean of the ``key``'s training ratings strictly before that time,
    shrunk to the global mean (``prior``; :func:`prior_rating` when None), the same over the
    last ``RECENT`` of them (tastes drift), and log1p of their count (``<key>_mean``,
    ``<key>_recent``, ``<key>_count``)."""
    k = train.column(key).to_numpy()
    t = train.column("timestamp").to_numpy()
    order = np.lexsort((t, k))
    r = train.column("rating").to_numpy().astype(np.float64)[order]
    sort_key = k[order] * (1 << 32) + t[order]
    csum = np.r_[0.0, np.cumsum(r)]
    ids = np.asarray(ids, dtype=np.int64)
    end = np.searchsorted(sort_key, ids * (1 << 32) + np.asarray(timestamps), side="left")
    first = np.searchsorted(sort_key, ids * (1 << 32), side="left")
    count = end - first
    prior = prior_rating(train) if prior is None else prior
    mean = (csum[end] - csum[first] + PRIOR_WEIGHT * prior) / (count + PRIOR_WEIGHT)
    start = np.maximum(first, end - RECENT)
    recent = (csum[end] - csum[start] + PRIOR_WEIGHT * prior) / (end - start + PRIOR_WEIGHT)
    name = key.removesuffix("_id")
    return {
        f"{name}_mean": mean.astype(np.float32),
        f"{name}_recent": recent.astype(np.float32),
        f"{name}_count": np.log1p(count).astype(np.float32),
    }


def slope_inputs(
    movie_stats: dict[str, np.ndarray], release_year: pa.Array, prior: float
) -> dict[str, np.ndarray]:
    """The item-side scalars the per-user slopes multiply (float32, one per row): how far the
    movie's shrunk mean rating is from the global mean ``prior`` (``movie_mean_dev``), its
    log count from ``COUNT_CENTRE`` (``movie_count_dev``) and its release year from
    ``RELEASE_CENTRE`` in ``RELEASE_SCALE`` years, clipped (``release_dev``; 0 when unknown).
    ``movie_stats`` is :func:`rating_stats` of ``movie_id`` with the same ``prior``: training
    rows get them as of each row's time, serving as of now (:func:`_movie_context`)."""
    year = pc.cast(release_year, pa.float64()).to_numpy(zero_copy_only=False)  # null -> nan
    release = np.clip((year - RELEASE_CENTRE) / RELEASE_SCALE, *RELEASE_RANGE)
    return {
        "movie_mean_dev": (movie_stats["movie_mean"] - prior).astype(np.float32),
        "movie_count_dev": (movie_stats["movie_count"] - COUNT_CENTRE).astype(np.float32),
        "release_dev": np.nan_to_num(release, nan=0.0).astype(np.float32),
    }


def id_bound(data: MovieLens) -> int:
    """One past the largest movie id: the size of :func:`item_similarity`'s index."""
    return int(data.movies.column("movie_id").to_numpy().max(initial=0)) + 1


def positions(ids: pa.Array | np.ndarray, table: pa.Table, key: str) -> np.ndarray:
    """Row of each id in ``table[key]``; an unknown id is an error naming it."""
    ids = np.asarray(ids, dtype=np.int64)
    keys = table.column(key).to_numpy()
    lookup = np.full(max(int(keys.max()), int(ids.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[keys] = np.arange(len(keys))
    rows = lookup[np.maximum(ids, 0)]
    rows[ids < 0] = -1
    if (rows < 0).any():
        bad = int(ids[np.argmax(rows < 0)])
        raise MovieLensError(f"{key} {bad} is not in the {key} table; use one of its ids")
    return rows


def examples(
    data: MovieLens,
    train: pa.Table,
    user_ids: np.ndarray,
    movie_ids: np.ndarray,
    timestamps: np.ndarray,
    history: pa.Array | None = None,
    extra: dict[str, np.ndarray] | None = None,
    rated_length: int = 0,
    similarity: np.ndarray | None = None,
    **kwargs,
) -> pa.Table:
    """Model input rows for (user, movie, time): user and movie features joined by id, and
    what ``train`` said before that time: the liked history (``kwargs``: its max_length and
    threshold; pass ``history`` when known), the user's and movie's rating statistics, the
    movie's slope inputs (:func:`slope_inputs`) and, when ``rated_length`` > 0, the rated
    history (``rated``, ``rated_weight``) and, given :func:`item_similarity`'s
    ``similarity``, the pair's :func:`neighbour_inputs`."""
    users = data.users.take(positions(user_ids, data.users, "user_id"))
    movies = data.movies.take(positions(movie_ids, data.movies, "movie_id"))
    columns = {name: users.column(name) for name in users.column_names}
    columns.update({n: movies.column(n) for n in movies.column_names if n != "title"})
    prior = prior_rating(train)
    columns.update(
        _user_context(train, user_ids, timestamps, prior, rated_length, history, **kwargs)
    )
    columns.update(_movie_context(train, movie_ids, timestamps, movies, prior))
    if rated_length and similarity is not None:
        columns.update(
            neighbour_inputs(similarity, movie_ids, columns["rated"], columns["rated_weight"])
        )
    columns.update(extra or {})
    return pa.table(columns)


def _user_context(
    train: pa.Table,
    user_ids: np.ndarray,
    timestamps: np.ndarray,
    prior: float,
    rated_length: int,
    history: pa.Array | None = None,
    **kwargs,
) -> dict[str, Any]:
    """What ``train`` says of each (user, time) strictly before that time (see
    :func:`examples`), for training rows and, as of now, for serving: built in one place
    so that the two cannot drift."""
    if history is None:
        history = liked_history(train, user_ids, timestamps, **kwargs)
    columns = {"liked": history, "day": day_of(timestamps)}
    columns.update(rating_stats(train, "user_id", user_ids, timestamps, prior))
    if rated_length:
        rated = rated_history(train, user_ids, timestamps, rated_length)
        columns.update(zip(("rated", "rated_weight"), rated))
    return columns


def _movie_context(
    train: pa.Table, movie_ids: np.ndarray, timestamps: np.ndarray, movies: pa.Table, prior: float
) -> dict[str, np.ndarray]:
    """The same for each (movie, time): its rating statistics and slope inputs (``movies``:
    the movie table's rows of ``movie_ids``)."""
    stats = rating_stats(train, "movie_id", movie_ids, timestamps, prior)
    stats.update(slope_inputs(stats, movies.column("release_year"), prior))
    return stats


def rating_examples(data: MovieLens, rows: pa.Table, train: pa.Table, **kwargs) -> pa.Table:
    """Examples of rated (user, movie) pairs with the rating as label (``rating`` column)."""
    rating = rows.column("rating").to_numpy().astype(np.float32)
    return examples(
        data,
        train,
        rows.column("user_id").to_numpy(),
        rows.column("movie_id").to_numpy(),
        rows.column("timestamp").to_numpy(),
        extra={"rating": rating},
        **kwargs,
    )


def serving_tables(
    data: MovieLens, train: pa.Table, rated_length: int = 0, **kwargs
) -> tuple[pa.Table, pa.Table]:
    """(users, movies) with the context as of the end of training appended: the users' liked
    history (and rated history, when ``rated_length`` > 0) and rating statistics, the movies'
    rating statistics and slope inputs (``title`` dropped); ``day`` is today's, after every
    training day."""
    prior = prior_rating(train)
    user_ids = data.users.column("user_id").to_numpy()
    now = np.full(len(user_ids), NOW)
    users = _appended(
        data.users, _user_context(train, user_ids, now, prior, rated_length, **kwargs)
    )
    movies = data.movies.drop_columns(["title"])
    movie_ids = movies.column("movie_id").to_numpy()
    now = np.full(len(movie_ids), NOW)
    return users, _appended(movies, _movie_context(train, movie_ids, now, movies, prior))


def _appended(table: pa.Table, columns: dict[str, Any]) -> pa.Table:
    """``table`` with ``columns`` (NumPy or Arrow arrays) added at the end."""
    for name, values in columns.items():
        table = table.append_column(
            name, pa.array(values) if isinstance(values, np.ndarray) else values
        )
    return table


# --------------------------------------------------------------------------- features


def movielens_columns(
    history: bool = True,
    demographic_crosses: bool = True,
    id_wide: bool = True,
    history_embedding: bool = False,
    rating_stats: bool = True,
    user_genre: bool = False,
    movie_demographic: bool = False,
    embedding_dim: int = 16,
    rated_cross: bool = False,
    rated_embedding: bool = False,
    user_day: bool = False,
    user_slopes: bool = False,
    neighbour: bool = False,
) -> tuple[list, list]:
    """(wide, deep) columns; the flags switch the wide part's feature groups for ablations.

    Wide: user and movie ids (per-user and per-movie biases: memorised), demographic x genre
    crosses, and ``liked x movie_id`` (the paper's installed-apps x impression cross); for
    ratings, ``rated x movie_id`` weighted by ``rated_weight`` (:func:`rated_history`) and
    ``user_id x day``, a bias per user and day, and the per-user slopes: ``user_id`` weighted
    by each of :data:`SLOPE_KEYS` (:func:`slope_inputs`).
    Deep: user, movie, occupation and zip embeddings, genres, age, gender and year buckets,
    the rating statistics and, with ``neighbour``, :func:`neighbour_inputs`.
    """
    from .. import feature_column as fc

    user = fc.categorical_column_with_vocabulary_from_data("user_id")
    movie = fc.categorical_column_with_vocabulary_from_data("movie_id")
    genres = fc.categorical_column_with_vocabulary_list("genres", ML100K_GENRES)
    age = fc.bucketized_column(fc.numeric_column("age"), AGE_BOUNDARIES)
    gender = fc.categorical_column_with_vocabulary_list("gender", ["M", "F"])
    occupation = fc.categorical_column_with_vocabulary_from_data("occupation")
    zip_prefix = fc.categorical_column_with_hash_bucket("zip_prefix", 100)
    year = fc.bucketized_column(fc.numeric_column("release_year", default_value=0), YEAR_BOUNDARIES)
    wide: list = [genres, year] + ([user, movie] if id_wide else [])
    if demographic_crosses:
        wide += [
            fc.crossed_column(["occupation", "genres"], 1000),
            fc.crossed_column(["gender", "genres"], 100),
            fc.crossed_column([age, "genres"], 200),
        ]
    if user_genre:  # each user's own taste per genre, memorised
        wide.append(fc.crossed_column(["user_id", "genres"], 1 << 16))
    if movie_demographic:  # how each movie goes down with each gender and age group
        wide += [
            fc.crossed_column(["movie_id", "gender"], 1 << 14),
            fc.crossed_column(["movie_id", age], 1 << 15),
        ]
    if history:
        wide.append(fc.crossed_column(["liked", "movie_id"], 1 << 20))
    if rated_cross:  # item-item neighbourhood: how a rating of one movie moves another's
        cross = fc.crossed_column(["rated", "movie_id"], 1 << 20)
        wide.append(fc.weighted_categorical_column(cross, "rated_weight"))
    if user_day:  # a user rates higher or lower on one day than another (Koren's b_u,t)
        wide.append(fc.crossed_column(["user_id", "day"], 1 << 18))
    if user_slopes:
        # one weight per user times a scalar of the movie: how strongly the user follows the
        # consensus (the movie's mean), prefers popular or obscure (its count), old or new
        # movies (its year) -- a slope per user, memorised by the wide part, as the user_id
        # column is a bias per user; an MLP learns such products of inputs poorly
        wide += [fc.weighted_categorical_column(user, key) for key in SLOPE_KEYS]
    stats = [
        fc.numeric_column("user_mean"),
        fc.numeric_column("user_recent"),
        fc.numeric_column("movie_recent"),
        fc.numeric_column("user_count", normalizer="standard"),
        fc.numeric_column("movie_mean"),
        fc.numeric_column("movie_count", normalizer="standard"),
    ]
    if neighbour:  # the item-kNN prediction: generalises the rated x movie cross
        stats += [fc.numeric_column(key) for key in NEIGHBOUR_KEYS]
    deep = (stats if rating_stats else []) + [
        fc.embedding_column(user, embedding_dim),
        fc.embedding_column(movie, embedding_dim),
        fc.embedding_column(occupation, 4),
        fc.embedding_column(zip_prefix, 4),
        fc.indicator_column(genres),
        fc.indicator_column(age),
        fc.indicator_column(gender),
        fc.indicator_column(year),
    ]
    if history_embedding:  # the liked movies' mean embedding (generalises, YouTube-style)
        liked = fc.categorical_column_with_vocabulary_from_data("liked")
        deep.append(fc.embedding_column(liked, 16))
    if rated_embedding:  # SVD++-style: the rated movies' embeddings, signed weights
        rated = fc.categorical_column_with_vocabulary_from_data("rated")
        weighted = fc.weighted_categorical_column(rated, "rated_weight")
        deep.append(fc.embedding_column(weighted, embedding_dim, combiner="sqrtn"))
    return wide, deep


def movielens_spec(
    task: str = "ranking", output_range: tuple[float, float] | None = RATING_RANGE, **kwargs
):
    """The ready FeatureSpec: label ``rating`` (regression, predictions squashed into
    ``output_range``) or ``label`` (binary, ranking); ``kwargs``: :func:`movielens_columns`."""
    from ..transform import FeatureSpec, Label

    if task not in ("rating", "ranking"):
        raise MovieLensError(f"task must be 'rating' or 'ranking', got {task!r}")
    wide, deep = movielens_columns(**kwargs)
    if task == "rating":
        label = Label("rating", "regression", output_range=output_range)
    else:
        label = Label("label", "binary")
    return FeatureSpec(wide, deep, label=label)
