"""MovieLens: both file formats (generated here: GroupLens files are never shipped), the
temporal split and its leak-free liked history, ranking metrics by hand, negative
sampling, download verification and `widedeep recommend` end to end."""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from widedeep.cli import main
from widedeep.datasets import movielens as ml
from widedeep.recommend import SampledNegatives, load_recommender, ranking_metrics

GENRES = ml.ML100K_GENRES


def write_ml100k(folder: Path, ratings, movies, users) -> Path:
    """ratings: (user, movie, rating, time); movies: (id, title, date, genre names);
    users: (id, age, gender, occupation, zip) -> the three ml-100k files (Latin-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in ratings))
    lines = []
    for movie_id, title, date, genres in movies:
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        lines.append(f"{movie_id}|{title}|{date}||http://us.imdb.com/M/x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in users))
    return folder


def synthetic(n_users: int = 30, n_movies: int = 40, seed: int = 0):
    """A small data set with structure: users like the movies of their favourite genre."""
    rng = np.random.default_rng(seed)
    genre_of = [GENRES[1 + i % 5] for i in range(n_movies)]
    movies = [(i + 1, f"Movie {i + 1} (199{i % 10})", f"01-Jan-199{i % 10}", [genre_of[i]])
              for i in range(n_movies)]  # fmt: skip
    occupations = ["student", "writer", "engineer"]
    users = [(u + 1, 18 + 3 * u % 50, "MF"[u % 2], occupations[u % 3], f"{10000 + 137 * u}")
             for u in range(n_users)]  # fmt: skip
    ratings = []
    for u in range(n_users):
        favourite = GENRES[1 + u % 5]
        seen = rng.choice(n_movies, size=20, replace=False)
        for j, m in enumerate(seen):
            rating = 5 if genre_of[m] == favourite else int(rng.integers(1, 4))
            ratings.append((u + 1, int(m) + 1, rating, 880000000 + 1000 * j + u))
    return ratings, movies, users


# --------------------------------------------------------------------------- readers


def test_read_ml100k_format(tmp_path):
    folder = write_ml100k(
        tmp_path,
        ratings=[(1, 2, 5, 881250949), (2, 1, 3, 891717742)],
        movies=[
            (1, "Café Society (1995)", "01-Jan-1995", ["Comedy", "Drama"]),
            (2, "unknown", "", ["unknown"]),
        ],
        users=[(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "T8H1N")],
    )
    data = ml.load_movielens(folder)
    assert data.name == "ml-100k"
    assert data.ratings.to_pylist() == [
        {"user_id": 1, "movie_id": 2, "rating": 5, "timestamp": 881250949},
        {"user_id": 2, "movie_id": 1, "rating": 3, "timestamp": 891717742},
    ]
    assert data.movies.to_pylist() == [
        {"movie_id": 1, "title": "Café Society (1995)", "release_year": 1995,
         "genres": ["Comedy", "Drama"]},
        {"movie_id": 2, "title": "unknown", "release_year": None, "genres": ["unknown"]},
    ]  # fmt: skip
    assert data.users.column("zip_prefix").to_pylist() == ["85", "T8"]
    assert data.users.column("occupation").to_pylist() == ["technician", "other"]


def test_read_ml1m_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (tmp_path / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Amélie: Le Fabuleux Destin (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = ml.load_movielens(tmp_path)
    assert data.name == "ml-1m"
    assert data.ratings.column("movie_id").to_pylist() == [1193, 661]
    assert data.movies.to_pylist() == [
        {"movie_id": 1193, "title": "One Flew Over the Cuckoo's Nest (1975)",
         "release_year": 1975, "genres": ["Drama"]},
        {"movie_id": 661, "title": "Amélie: Le Fabuleux Destin (2001)", "release_year": 2001,
         "genres": ["Comedy", "Romance"]},
    ]  # fmt: skip
    users = data.users.to_pylist()
    assert users[0] == {"user_id": 1, "age": 1, "gender": "F", "occupation": "K-12 student",
                        "zip_prefix": "48"}  # fmt: skip
    assert users[1]["occupation"] == "self-employed"


def test_missing_or_malformed_files_name_the_fix(tmp_path):
    with pytest.raises(ml.MovieLensError, match="--download"):
        ml.load_movielens(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\tfive\t3\n")
    with pytest.raises(ml.MovieLensError, match="rating"):
        ml.read_ml100k(tmp_path)


# --------------------------------------------------------------------------- split


def test_temporal_split_holds_out_last_tenth_per_user():
    rows = [(1, m, 4, 100 + m) for m in range(1, 26)]  # 25 ratings: 2 held out
    rows += [(2, 9, 3, 50), (2, 7, 3, 50), (2, 8, 5, 40), (2, 1, 2, 10), (2, 2, 2, 20)]
    rows += [(3, 4, 5, 7)]  # one rating: max(1, 1 // 10) = 1 held out
    ratings = pa.table({k: [r[i] for r in rows] for i, k in
                        enumerate(["user_id", "movie_id", "rating", "timestamp"])})  # fmt: skip
    train, test = ml.temporal_split(ratings)
    held = sorted(zip(test.column("user_id").to_pylist(), test.column("movie_id").to_pylist()))
    # user 2: the last by (timestamp, movie id) is (50, 9), ahead of (50, 7)
    assert held == [(1, 24), (1, 25), (2, 9), (3, 4)]
    assert train.num_rows == 23 + 4 and test.num_rows == 4


def test_no_held_out_interaction_leaks_into_training_or_history(tmp_path):
    ratings, movies, users = synthetic()
    data = ml.load_movielens(write_ml100k(tmp_path, ratings, movies, users))
    train, test = ml.temporal_split(data.ratings)
    pair = lambda t: set(zip(t.column("user_id").to_pylist(), t.column("movie_id").to_pylist()))  # noqa: E731
    assert not pair(train) & pair(test)
    assert train.num_rows + test.num_rows == data.ratings.num_rows
    columns = [train.column(k).to_pylist() for k in ("user_id", "movie_id", "timestamp", "rating")]
    when = {(u, m): (t, r) for u, m, t, r in zip(*columns)}
    for table in (train, test):
        examples = ml.rating_examples(data, table, train, max_length=5)
        for row, t in zip(examples.to_pylist(), table.column("timestamp").to_pylist()):
            liked = [(row["user_id"], m) for m in row["liked"]]
            assert len(liked) <= 5
            for key in liked:  # only training interactions, liked, strictly earlier
                assert key in when and when[key][0] < t and when[key][1] >= 4
            assert not set(liked) & pair(test)


def test_liked_history_by_hand():
    train = pa.table({"user_id": [1, 1, 1, 1, 2], "movie_id": [10, 11, 12, 13, 10],
                      "rating": [5, 2, 4, 4, 5], "timestamp": [1, 2, 3, 3, 1]})  # fmt: skip
    history = ml.liked_history(train, np.array([1, 1, 1, 2, 3]), np.array([1, 3, 9, 5, 5]),
                               max_length=2)  # fmt: skip
    # strictly before t; at t=9 the last two liked by (time, id) are 12, 13
    assert history.to_pylist() == [[], [10], [12, 13], [10], []]
    stats = ml.rating_stats(train, "user_id", np.array([1, 1, 3]), np.array([3, 9, 5]))
    prior = (5 + 2 + 4 + 4 + 5) / 5  # the global mean, weighted as PRIOR_WEIGHT ratings
    w = ml.PRIOR_WEIGHT
    np.testing.assert_allclose(
        stats["user_mean"], [(5 + 2 + w * prior) / (2 + w), (15 + w * prior) / (4 + w), prior],
        rtol=1e-6,
    )  # at t=3 only the two ratings before 3 count; user 3 has none
    np.testing.assert_allclose(stats["user_count"], np.log1p([2, 4, 0]), rtol=1e-6)


def test_item_similarity_and_neighbour_inputs_by_hand():
    """Raters: movie 1 {1, 2}, movie 2 {1, 2, 3}, movie 3 {2, 3} (ratings play no part)."""
    train = pa.table({"user_id": [1, 1, 2, 2, 2, 3, 3], "movie_id": [1, 2, 1, 2, 3, 2, 3],
                      "rating": [5, 1, 2, 3, 4, 5, 1], "timestamp": [0] * 7})  # fmt: skip
    a = 2 / np.sqrt(6) * 2 / 3  # movies 1-2 and 2-3: cosine 2/sqrt(2*3), shrunk by 2/(2+1)
    b = 1 / 2 * 1 / 2  # movies 1-3: cosine 1/sqrt(2*2), shrunk by 1/(1+1)
    full = ml.item_similarity(train, 4, neighbours=4, shrink=1.0)
    expected = np.array([[0, 0, 0, 0], [0, 0, a, b], [0, a, 0, a], [0, b, a, 0]])
    np.testing.assert_allclose(full, expected, rtol=1e-6)
    nearest = ml.item_similarity(train, 4, neighbours=1, shrink=1.0)
    expected = np.array([[0, 0, 0, 0], [0, 0, a, 0], [0, a, 0, a], [0, 0, a, 0]])  # ties stay
    np.testing.assert_allclose(nearest, expected, rtol=1e-6)
    # a user who rated movies 1 and 3 at +1 and -0.5 from their mean; candidates 2 and 3
    rated = pa.array([[1, 3], [1, 3]])
    weight = pa.array([[1 / np.sqrt(2), -0.5 / np.sqrt(2)]] * 2, pa.list_(pa.float32()))
    got = ml.neighbour_inputs(full, np.array([2, 3]), rated, weight)
    np.testing.assert_allclose(got["neighbour_dev"], [(a - 0.5 * a) / (2 * a + 1), b / (b + 1)],
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(got["neighbour_support"], np.log1p([2 * a, b]), rtol=1e-5)


def test_rated_history_by_hand():
    train = pa.table({"user_id": [1, 1, 1, 1, 2], "movie_id": [10, 11, 12, 13, 10],
                      "rating": [5, 2, 4, 4, 5], "timestamp": [1, 2, 3, 3, 1]})  # fmt: skip
    movies, weights = ml.rated_history(train, np.array([1, 1, 1, 2, 3]),
                                       np.array([1, 3, 9, 5, 5]), max_length=3)  # fmt: skip
    # strictly before t, the last 3 by (time, id); centred on the mean of ALL the user's
    # ratings before t (not only the window), over sqrt(window length)
    assert movies.to_pylist() == [[], [10, 11], [11, 12, 13], [10], []]
    expected = [[], [1.5 / 2**0.5, -1.5 / 2**0.5],
                [(2 - 3.75) / 3**0.5, 0.25 / 3**0.5, 0.25 / 3**0.5], [0.0], []]  # fmt: skip
    for got, want in zip(weights.to_pylist(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- metrics


def test_ranking_metrics_by_hand():
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.1, 6: 0.5}
    train = pa.table({"user_id": [1, 2], "movie_id": [1, 1], "rating": [5, 5],
                      "timestamp": [1, 1]})  # fmt: skip
    test = pa.table({"user_id": [1, 1, 1, 2], "movie_id": [3, 5, 2, 4], "rating": [5, 4, 2, 1],
                     "timestamp": [2, 3, 4, 2]})  # fmt: skip
    items = np.arange(1, 7)
    m = ranking_metrics(lambda u, ids: np.array([scores[i] for i in ids]), items, train, test,
                        k=2)  # fmt: skip
    # user 1 ranks 2, 3, 4, 6, 5; positives 3 (position 1) and 5 (position 4); user 2 has none
    assert m["users"] == 1
    assert m["hr@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["auc"] == pytest.approx(2 / 6)  # 3 beats 4 and 6; 5 beats nothing
    # sampled: negatives are the never-rated items 4 and 6; ranks 0 (item 3) and 2 (item 5)
    assert m["sampled100_hr@2"] == 0.5
    assert m["sampled100_ndcg@2"] == pytest.approx(0.5)


@pytest.mark.parametrize("low_negatives", [1.0, 0.25, 0.0])
def test_negatives_are_unrated_and_resampled_each_epoch(tmp_path, low_negatives):
    ratings, movies, users = synthetic()
    data = ml.load_movielens(write_ml100k(tmp_path, ratings, movies, users))
    train, _ = ml.temporal_split(data.ratings)
    spec = ml.movielens_spec("ranking")
    source = SampledNegatives(spec, data, train, batch_size=64, num_negatives=3, seed=1,
                              low_negatives=low_negatives)  # fmt: skip
    spec.fit(source.rated)
    rated = set(zip(train.column("user_id").to_pylist(), train.column("movie_id").to_pylist()))
    n_pos = int(sum(r >= 4 for r in train.column("rating").to_pylist()))
    n_low = train.num_rows - n_pos
    # the rated rows come first: all of them (low ratings labelled 0), or the positives only
    n_rated = train.num_rows if low_negatives else n_pos
    samples = [source.sample(e) for e in (0, 1)]
    for table in samples:
        assert table.num_rows == n_rated + 3 * n_pos
        labels = table.column("label").to_pylist()
        assert labels[:n_rated].count(0.0) == n_rated - n_pos
        sampled = table.slice(n_rated)
        assert set(sampled.column("label").to_pylist()) == {0.0}
        pairs = zip(sampled.column("user_id").to_pylist(), sampled.column("movie_id").to_pylist())
        assert not set(pairs) & rated
    assert samples[0].slice(n_rated) != samples[1].slice(n_rated)
    assert source.sample(1).equals(samples[1])  # a pure function of (seed, epoch): resumable
    batches = list(source.epoch(0))
    assert len(batches) == source.batches_per_epoch()
    assert sum(len(b) for b in batches) == samples[0].num_rows
    if low_negatives in (0.0, 1.0):  # every example counts once: no weights at all
        assert all(b.weight is None for b in batches)
    else:  # each low rating weighs 0.25, every positive and sampled negative 1
        weight = torch.cat([b.weight for b in batches])
        label = torch.cat([b.label for b in batches])
        assert float(weight.sum()) == pytest.approx(4 * n_pos + 0.25 * n_low)
        assert float(weight[label == 1].sum()) == n_pos  # the weights follow their rows
        assert sorted(set(weight.tolist())) == [0.25, 1.0]
    with pytest.raises(ValueError, match="weight in"):
        SampledNegatives(spec, data, train, 64, low_negatives=1.5)


def test_recency_weights_by_hand():
    # user 1 has two ratings, user 2 four; position p of n weighs exp(s (p/n - 1)), s = ln 4
    rows = pa.table({"user_id": [1, 1, 2, 2, 2, 2], "rating": [5, 4, 3, 2, 1, 5]})
    raw = np.array([1 / 4, 1 / 2, 1 / 4, 4 ** (-3 / 4), 1 / 2, 4 ** (-1 / 4)])
    weights = ml.recency_weights(rows, math.log(4))
    np.testing.assert_allclose(weights, raw / raw.mean(), rtol=1e-6)
    assert weights.mean() == pytest.approx(1.0)  # the loss keeps its scale
    np.testing.assert_array_equal(ml.recency_weights(rows, 0.0), np.ones(6))
    with pytest.raises(ml.MovieLensError, match="ordered by user"):
        ml.recency_weights(rows.take([2, 0, 1, 3, 4, 5]), 1.0)


def test_movielens_task_recipe_is_the_flag_default(capsys):
    from widedeep.cli import _preset_defaults, build_parser

    def parsed(*flags: str):
        argv = ["train", "--dataset", "movielens", *flags]
        return build_parser(_preset_defaults(argv)).parse_args(argv)

    # the README's rating recipe, without spelling it out
    rating = parsed("--task", "rating")
    assert (rating.train_epochs, rating.batch_size, rating.hidden_units) == (6, 256, [64, 32])
    assert (rating.linear_l2, rating.weight_decay, rating.recency) == (10.0, 0.1, 2.0)
    ranking = parsed()  # ranking is the default task
    assert (ranking.train_epochs, ranking.dnn_learning_rate, ranking.linear_l2) == (4, 0.2, 0.0)
    assert ranking.low_negatives == 0.1
    # a flag given explicitly wins; the bare --low-negatives is full weight
    explicit = parsed("--task", "rating", "--train_epochs", "2", "--weight_decay", "0")
    assert (explicit.train_epochs, explicit.weight_decay) == (2, 0.0)
    assert parsed("--low-negatives").low_negatives == 1.0
    assert parsed("--low-negatives", "0").low_negatives == 0.0
    # the census run keeps its own defaults
    census = build_parser(_preset_defaults(["train"])).parse_args(["train"])
    assert (census.train_epochs, census.batch_size) == (40, 40)
    with pytest.raises(SystemExit):
        parsed("--low-negatives", "2")
    assert "expected a weight in [0, 1]" in capsys.readouterr().err


# --------------------------------------------------------------------------- download


def test_download_verifies_checksum_before_extracting(tmp_path):
    ratings, movies, users = synthetic(n_users=3, n_movies=25)
    files = write_ml100k(tmp_path / "src", ratings, movies, users)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name in ("u.data", "u.item", "u.user"):
            z.write(files / name, f"ml-100k/{name}")
        z.writestr("ml-100k/../evil.txt", "outside")  # never extracted
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ml-100k.zip").write_bytes(buffer.getvalue())
    import hashlib

    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www")
    )
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
        with pytest.raises(ml.MovieLensError, match="checksum mismatch"):
            ml.download_movielens(tmp_path / "bad", url=url, sha256="0" * 64)
        assert not (tmp_path / "bad" / "ml-100k").exists()
        folder = ml.download_movielens(tmp_path / "good", url=url, sha256=digest)
    finally:
        server.shutdown()
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.item", "u.user"]
    assert not (tmp_path / "good" / "evil.txt").exists()
    assert ml.load_movielens(tmp_path / "good").ratings.num_rows == len(ratings)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("movielens")
    data_dir = write_ml100k(root / "ml-100k", *synthetic())
    model_dir = root / "model"
    code = main(["train", "--dataset", "movielens", "--data_dir", str(data_dir),
                 "--task", "ranking", "--train_epochs", "2", "--batch_size", "256",
                 "--model_dir", str(model_dir), "--threads", "1", "--quiet",
                 "--linear_learning_rate", "0.1", "--dnn_learning_rate", "0.05"])  # fmt: skip
    assert code == 0
    return data_dir, model_dir


def test_train_writes_ranking_metrics_and_recommend_data(trained):
    _, model_dir = trained
    metrics = json.loads((model_dir / "ranking_metrics.json").read_text())
    assert metrics["users"] > 0 and 0 <= metrics["hr@10"] <= 1 and 0 <= metrics["auc"] <= 1
    assert sorted(p.name for p in (model_dir / "recommend").iterdir()) == [
        "interactions.parquet", "movies.parquet", "recommend.json", "users.parquet"]  # fmt: skip


def test_recommend_end_to_end(trained, tmp_path):
    data_dir, model_dir = trained
    data = ml.load_movielens(data_dir)
    train, _ = ml.temporal_split(data.ratings)
    seen = set(train.filter(pa.compute.equal(train.column("user_id"), 3))
               .column("movie_id").to_pylist())  # fmt: skip
    cmd = [sys.executable, "-m", "widedeep", "recommend", "--model", str(model_dir),
           "--user", "3", "-k", "5", "--json", "--threads", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert not {r["movie_id"] for r in rows} & seen
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    titles = dict(zip(data.movies.column("movie_id").to_pylist(),
                      data.movies.column("title").to_pylist()))  # fmt: skip
    assert all(r["title"] == titles[r["movie_id"]] for r in rows)

    # the Python API: same ranking; it is the best of all unseen movies under the model
    recommender = load_recommender(model_dir)
    table = recommender.recommend(3, k=5)
    assert table.column("movie_id").to_pylist() == [r["movie_id"] for r in rows]
    rows_all = recommender.candidate_rows(3)
    assert len(rows_all) == data.movies.num_rows - len(seen)
    slow = recommender.score_rows(3, rows_all, fast=False)  # the spec's own encoding
    fast = recommender.score_rows(3, rows_all)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    best = data.movies.column("movie_id").to_numpy()[rows_all[np.argsort(-slow)[:5]]]
    assert set(best.tolist()) == {r["movie_id"] for r in rows}

    # a candidate list (retrieval -> ranking); seen candidates go unless asked for
    candidates = tmp_path / "ids.txt"
    some_seen = sorted(seen)[0]
    candidates.write_text(f"7\n{some_seen}\n12\n")
    picked = recommender.recommend(3, k=10, candidates=np.array([7, some_seen, 12]))
    assert set(picked.column("movie_id").to_pylist()) == {7, 12} - seen
    assert main(["recommend", "--model", str(model_dir), "--user", "3", "--candidates",
                 str(candidates), "--no-exclude-seen"]) == 0  # fmt: skip
    everything = recommender.recommend(3, k=10, candidates=np.array([7, some_seen, 12]),
                                       exclude_seen=False)  # fmt: skip
    assert set(everything.column("movie_id").to_pylist()) == {7, some_seen, 12}


def test_export_carries_recommend_data(trained, tmp_path):
    _, model_dir = trained
    assert main(["export", "--model_dir", str(model_dir), "--export_dir", str(tmp_path)]) == 0
    (export,) = tmp_path.iterdir()
    exported = load_recommender(export).recommend(3, k=5).column("movie_id").to_pylist()
    assert exported == load_recommender(model_dir).recommend(3, k=5).column("movie_id").to_pylist()


def test_recommend_refuses_unknown_user_and_bad_model(trained, tmp_path, capsys):
    _, model_dir = trained
    assert main(["recommend", "--model", str(model_dir), "--user", "99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert "user 99999" in err and len(err.splitlines()) == 1
    assert main(["recommend", "--model", str(tmp_path), "--user", "1"]) == 2
    assert "no widedeep model" in capsys.readouterr().err
    for text, problem in (("", "holds no movie ids"), ("7\n99999\n", "movie_id 99999"),
                          ("7\nseven\n", "need movie ids")):  # fmt: skip
        candidates = tmp_path / "ids.txt"
        candidates.write_text(text)
        args = ["recommend", "--model", str(model_dir), "--user", "3", "--candidates"]
        assert main([*args, str(candidates)]) == 2
        err = capsys.readouterr().err.strip()
        assert problem in err and len(err.splitlines()) == 1, err


def test_rating_task_reports_rmse(tmp_path):
    from widedeep.movielens_train import MovieLensSettings, train_movielens
    from widedeep.train import TrainConfig

    data = ml.load_movielens(write_ml100k(tmp_path, *synthetic()))
    out = train_movielens(
        data,
        MovieLensSettings(task="rating", history_length=5),
        TrainConfig(train_epochs=3, batch_size=64, dnn_learning_rate=0.05),
        quiet=True,
        log=lambda _: None,
    )
    _, test = ml.temporal_split(data.ratings)
    zero = float(np.sqrt(np.mean(test.column("rating").to_numpy() ** 2.0)))  # predicting 0
    assert out.metrics["rmse"] < zero / 2  # learned the scale of ratings from zero weights
    assert 1 <= out.metrics["prediction/mean"] <= 5


def test_rating_model_recommends_with_its_rated_history(tmp_path):
    """The rating recipe's rated x movie cross: the recommender rebuilds the rated history as
    of the end of training, so its scores equal the model's on examples built at that time."""
    from widedeep.movielens_train import MovieLensSettings, train_movielens
    from widedeep.predict import Predictor
    from widedeep.train import TrainConfig

    data = ml.load_movielens(write_ml100k(tmp_path / "data", *synthetic(n_users=12)))
    model_dir = tmp_path / "model"
    out = train_movielens(
        data,
        MovieLensSettings(task="rating", history_length=5, rated_length=7),
        TrainConfig(train_epochs=1, batch_size=64),
        model_dir,
        quiet=True,
        log=lambda _: None,
    )
    spec = out.recommender.predictor.spec
    assert {"rated", "rated_weight", "day", *ml.SLOPE_KEYS} <= set(spec.input_keys)
    recommender = load_recommender(model_dir)
    assert recommender.rated_length == 7
    # the weighted cross and the per-user slopes have the precomputed path too
    assert recommender._fast is not None and len(recommender._fast.slopes) == 3
    train, _ = ml.temporal_split(data.ratings)
    rows = recommender.candidate_rows(4)
    movie_ids = data.movies.column("movie_id").to_numpy()[rows]
    similarity = ml.item_similarity(train, ml.id_bound(data))
    now = np.full(len(rows), ml.NOW)
    examples = ml.examples(data, train, np.full(len(rows), 4), movie_ids, now, max_length=5,
                           rated_length=7, similarity=similarity)  # fmt: skip
    predictor = Predictor(spec, out.result.model)
    expected = predictor.predict_logits(examples)[:, 0]
    np.testing.assert_allclose(recommender.score_rows(4, rows), expected, rtol=1e-5, atol=1e-5)
    general = recommender.score_rows(4, rows, fast=False)
    np.testing.assert_allclose(general, expected, rtol=1e-5, atol=1e-5)
    # what recommend shows is the predicted rating, inside the rating range
    top = recommender.recommend(4, k=5)
    rating = dict(zip(movie_ids.tolist(), predictor.predict(examples).tolist()))
    shown = top.column("score").to_pylist()
    assert shown == sorted(shown, reverse=True)
    np.testing.assert_allclose(shown, [rating[m] for m in top.column("movie_id").to_pylist()],
                               rtol=1e-5)  # fmt: skip
    assert all(ml.RATING_RANGE[0] < s < ml.RATING_RANGE[1] for s in shown)


def test_broadcast_scorer_adds_per_user_slopes_and_the_neighbour_input(tmp_path):
    """With random wide weights (so every slope counts), the precomputed scorer of a rating
    model with the per-user slopes and the item-kNN inputs (deep inputs of the pair, given
    per request) equals the spec's encoding of the broadcast rows."""
    from widedeep.movielens_train import MovieLensSettings, train_movielens
    from widedeep.recommend import _broadcast, _BroadcastScorer
    from widedeep.train import TrainConfig

    data = ml.load_movielens(write_ml100k(tmp_path, *synthetic(n_users=12)))
    out = train_movielens(
        data,
        MovieLensSettings(task="rating", history_length=5, rated_length=7),
        TrainConfig(train_epochs=1, batch_size=64),
        quiet=True,
        log=lambda _: None,
    )
    recommender = out.recommender
    model, spec = recommender.predictor.model, recommender.predictor.spec
    torch.manual_seed(0)
    with torch.no_grad():
        model.wide.weight.normal_(0.0, 0.5)
    users, items = recommender._users, recommender._items
    assert _BroadcastScorer.build(recommender.predictor, users, items) is None  # no pair values
    scorer = _BroadcastScorer.build(recommender.predictor, users, items, ml.NEIGHBOUR_KEYS)
    assert scorer is not None and len(scorer.slopes) == 3 and len(scorer.pair_slopes) == 2
    user_ids = users.column("user_id").to_numpy()

    def scores(table: pa.Table, row: int, rows: np.ndarray, neighbour: dict) -> np.ndarray:
        table = _broadcast(users, row, table, rows)
        for key, values in neighbour.items():
            table = table.append_column(key, [values])
        with torch.no_grad():
            return model(spec.transform(table, label=False))[:, 0].numpy()

    for user in (1, 4, 12):
        row = int(np.flatnonzero(user_ids == user)[0])
        rows = recommender.candidate_rows(user)
        neighbour = recommender.neighbour_inputs(row, rows)
        general = recommender.score_rows(user, rows, fast=False)
        np.testing.assert_allclose(scores(items, row, rows, neighbour), general, atol=1e-6)
        fast = scorer.score(row, rows, neighbour)
        np.testing.assert_allclose(fast, general, rtol=0, atol=1e-6)
        # the slopes and the neighbour input move the scores (so the checks above see
        # them): with every movie's slope inputs, or the pair's input, at 0 scores differ
        flat = items
        for key in ml.SLOPE_KEYS:
            flat = flat.set_column(flat.column_names.index(key), key,
                                   pa.array(np.zeros(len(flat), np.float32)))  # fmt: skip
        assert np.ptp(general - scores(flat, row, rows, neighbour)) > 0.1
        for key in ml.NEIGHBOUR_KEYS:
            zeroed = {**neighbour, key: 0 * neighbour[key]}
            assert np.abs(general - scores(items, row, rows, zeroed)).max() > 1e-3, key


def test_slope_inputs_by_hand():
    """movie_mean_dev, movie_count_dev and release_dev for training rows (as of each row's
    time) and for serving (as of now), from hand-computed values."""
    train = pa.table({"user_id": [1, 2, 1], "movie_id": [10, 10, 11], "rating": [5, 3, 2],
                      "timestamp": [1, 2, 3]})  # fmt: skip
    movies = pa.table({
        "movie_id": [10, 11, 12, 13], "title": ["a", "b", "c", "d"],
        "release_year": pa.array([1995, 1930, None, 2010], pa.int64()),
        "genres": [["Drama"], ["Comedy"], [], ["Action"]],
    })  # fmt: skip
    users = pa.table({"user_id": [1, 2, 3], "age": [20, 30, 40], "gender": ["M", "F", "M"],
                      "occupation": ["a", "b", "c"], "zip_prefix": ["10", "20", "30"]})  # fmt: skip
    data = ml.MovieLens(train, movies, users, "ml-100k")
    prior, w = 10 / 3, ml.PRIOR_WEIGHT  # the global training mean, and its pseudo-count
    rows = ml.examples(data, train, np.array([3, 3, 3, 3, 3]), np.array([10, 10, 11, 12, 13]),
                       np.array([2, 3, 3, 3, 3]), max_length=5)  # fmt: skip
    np.testing.assert_allclose(
        rows.column("movie_mean_dev").to_numpy(),
        [(5 + w * prior) / (1 + w) - prior, (8 + w * prior) / (2 + w) - prior, 0, 0, 0],
        atol=1e-6,
    )  # at t=2 movie 10 has one earlier rating, at t=3 two; movie 11's is at t=3: none before
    np.testing.assert_allclose(
        rows.column("movie_count_dev").to_numpy(),
        [math.log(2) - 3.5, math.log(3) - 3.5, -3.5, -3.5, -3.5], atol=1e-6,
    )  # fmt: skip
    # 1995: 7/15; 1930: -58/15 clipped to -3; unknown: 0; 2010: 22/15 clipped to 1
    np.testing.assert_allclose(rows.column("release_dev").to_numpy(),
                               [7 / 15, 7 / 15, -3, 0, 1], atol=1e-6)  # fmt: skip
    _, served = ml.serving_tables(data, train, max_length=5)  # as of now: every rating counts
    assert set(ml.SLOPE_KEYS) <= set(served.column_names)
    np.testing.assert_allclose(
        served.column("movie_mean_dev").to_numpy(),
        [(8 + w * prior) / (2 + w) - prior, (2 + w * prior) / (1 + w) - prior, 0, 0], atol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(served.column("movie_count_dev").to_numpy(),
                               np.log([3, 2, 1, 1]) - 3.5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(served.column("release_dev").to_numpy(), [7 / 15, -3, 0, 1],
                               atol=1e-6)  # fmt: skip
    wide, _ = ml.movielens_columns(user_slopes=True)
    slopes = [(c.categorical_column.key, c.weight_feature_key) for c in wide
              if getattr(c, "weight_feature_key", "").endswith("_dev")]  # fmt: skip
    assert slopes == [("user_id", key) for key in ml.SLOPE_KEYS]
    assert not any(getattr(c, "weight_feature_key", "").endswith("_dev")
                   for c in ml.movielens_columns()[0])  # fmt: skip


def test_user_day_cross_is_a_bias_per_user_and_day(tmp_path):
    """``day`` is the UTC day of the example's time; user_id x day gives one wide id per
    (user, day): shared by a user's ratings on one day, distinct across days and users."""
    from widedeep import feature_column as fc
    from widedeep.transform import FeatureSpec

    data = ml.load_movielens(write_ml100k(tmp_path / "data", *synthetic(n_users=3)))
    train, _ = ml.temporal_split(data.ratings)
    times = np.array([5, 86399, 86400, 5, 3 * 86400 + 1])
    rows = ml.examples(data, train, np.array([1, 1, 1, 2, 2]), np.array([1, 2, 3, 1, 1]), times)
    assert rows.column("day").to_pylist() == [0, 0, 1, 0, 3]
    wide, _ = ml.movielens_columns(user_day=True)
    cross = [c for c in wide if getattr(c, "keys", None) == ("user_id", "day")]
    assert len(cross) == 1
    spec = FeatureSpec(cross, [fc.numeric_column("user_mean")]).fit(rows)
    ids = spec.transform(rows, label=False).wide_ids[:, 0].tolist()
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3], ids[4]}) == 4
    users, _ = ml.serving_tables(data, train)  # serving: today, after every training day
    assert set(users.column("day").to_pylist()) == {ml.NOW // ml.DAY}
    assert ml.NOW // ml.DAY > train.column("timestamp").to_numpy().max() // ml.DAY
