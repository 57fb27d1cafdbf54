"""Synthetic click-through data for scale work: CTR-like schema, planted model, Parquet shards.

Schema (as Criteo's): ``I1..I13`` numeric counts, ``C1..C26`` categorical ids
whose cardinalities grow from 10 to 10^7 (``card_j = 10^(1 + 6 j / 25)``) with
Zipf-distributed values (P(rank r) ~ 1 / r), and ``apps``, a list of 0-10
installed-app ids (the paper's multi-valued feature), plus the label
``clicked``.

Labels come from a planted logistic model with two kinds of structure:

- *memorisable* crosses: every (C1, C2), (C3, C4) and (C5, apps item) pair has
  its own pseudo-random effect -- a wide model with crossed columns learns them,
  an MLP over per-feature embeddings hardly can;
- *smooth* structure: a nonlinear function of the numeric features and a
  low-rank interaction of C7 and C8 -- a deep model generalises it, a linear
  model over raw buckets only approximates it.

So ``wide``, ``deep`` and ``wide_deep`` differ measurably.  Every value is
derived from ``(seed, split, shard)`` through NumPy's SeedSequence and the
SplitMix64 mixer, so the same arguments write the same files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import feature_column as fc
from ..hashing import mix64
from ..transform import FeatureSpec, Label

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
CARDINALITIES = {c: int(round(10 ** (1 + 6 * j / 25))) for j, c in enumerate(CATEGORICAL)}
NUM_APPS = 100_000
MAX_APPS = 10
CROSSES = [("C1", "C2"), ("C3", "C4")]
LABEL = "clicked"
ROW_GROUP = 65_536


def synth_spec(cross_buckets: int = 1_000_000, deep_categorical: int = 13) -> FeatureSpec:
    """The Wide & Deep spec for the synthetic data.

    Wide: every categorical column by its id (``categorical_column_with_identity``,
    up to 10^7 ids each, ~2.4·10^7 in all) plus three crosses of ``cross_buckets``
    each.  Deep: the 13 numerics mapped to [0, 1] by 20 training quantiles and
    8-dimensional embeddings of the ``deep_categorical`` lowest-cardinality
    columns and of ``apps``.  Ids are integers: no string is hashed per value.
    """
    ids = {c: fc.categorical_column_with_identity(c, CARDINALITIES[c]) for c in CATEGORICAL}
    ids["apps"] = fc.categorical_column_with_identity("apps", NUM_APPS)
    wide: list = list(ids.values())
    wide += [fc.crossed_column([ids[a], ids[b]], cross_buckets) for a, b in CROSSES]
    wide.append(fc.crossed_column([ids["C5"], ids["apps"]], cross_buckets))
    deep: list = [
        fc.numeric_column(k, default_value=0.0, normalizer="quantile", num_quantiles=20)
        for k in NUMERIC
    ]
    deep += [fc.embedding_column(ids[c], 8) for c in CATEGORICAL[:deep_categorical]]
    deep.append(fc.embedding_column(ids["apps"], 8))
    return FeatureSpec(wide, deep, label=Label(LABEL))


# --------------------------------------------------------------------------- the planted model


def _uniform(seed: int, *keys: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per combination of integer keys."""
    h = np.full(len(keys[0]), (seed * 0x9E3779B97F4A7C15) & ((1 << 64) - 1), dtype=np.uint64)
    for k in keys:
        h = mix64(h ^ mix64(k.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _effect(seed: int, *keys: np.ndarray, scale: float, density: float) -> np.ndarray:
    """A sparse pseudo-random effect: nonzero (±scale·u) for a ``density`` share of keys."""
    u = _uniform(seed, *keys)
    v = _uniform(seed + 1, *keys)
    return np.where(u < density, scale * (2 * v - 1), 0.0)


def _zipf(rng: np.random.Generator, card: int, n: int) -> np.ndarray:
    """Ranks 0..card-1 with P(r) ~ 1/(r+1): floor(card^u) - 1 for u uniform."""
    return np.minimum(np.floor(np.power(float(card) + 1, rng.random(n))) - 1, card - 1).astype(
        np.int64
    )


def generate(n: int, seed: int) -> pa.Table:
    """``n`` rows of the synthetic data (features and planted labels), from ``seed``."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    latent = rng.standard_normal((n, 4))
    for i, key in enumerate(NUMERIC):  # counts-like: rounded log-normal of latent mixtures
        mix = latent[:, i % 4] + 0.5 * latent[:, (i + 1) % 4] + 0.5 * rng.standard_normal(n)
        cols[key] = np.floor(np.exp(mix * (0.5 + 0.1 * i))).astype(np.float32)
    cats = {c: _zipf(rng, CARDINALITIES[c], n) for c in CATEGORICAL}
    lengths = rng.integers(0, MAX_APPS + 1, n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    apps = _zipf(rng, NUM_APPS, int(offsets[-1]))

    # smooth part: nonlinear in the numerics, low-rank in (C7, C8)
    z = latent
    smooth = 0.8 * np.sin(1.5 * z[:, 0]) + 0.6 * z[:, 1] * z[:, 2] - 0.4 * np.abs(z[:, 3])
    u7 = np.stack([_uniform(101 + k, cats["C7"]) for k in range(3)], 1) * 2 - 1
    u8 = np.stack([_uniform(201 + k, cats["C8"]) for k in range(3)], 1) * 2 - 1
    smooth += 1.2 * (u7 * u8).sum(1)
    # memorisable part: per-pair effects of the crosses
    memo = np.zeros(n)
    for i, (a, b) in enumerate(CROSSES):
        memo += _effect(300 + i, cats[a], cats[b], scale=2.5, density=0.5)
    row = np.repeat(np.arange(n), lengths)
    pair = _effect(400, np.repeat(cats["C5"], lengths), apps, scale=1.5, density=0.3)
    memo += np.bincount(row, weights=pair, minlength=n)
    logit = -1.2 + smooth + memo
    clicked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    for c in CATEGORICAL:
        cols[c] = cats[c]
    cols["apps"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(apps))
    cols[LABEL] = clicked
    return pa.table(cols)


def write(
    out: str | Path,
    rows: int,
    *,
    eval_rows: int | None = None,
    rows_per_shard: int = 1_000_000,
    seed: int = 0,
    cross_buckets: int = 1_000_000,
    log=print,
) -> dict:
    """Write ``out/train/*.parquet``, ``out/eval/*.parquet`` and ``out/spec.yaml``."""
    out = Path(out)
    eval_rows = max(rows // 10, 1) if eval_rows is None else eval_rows
    summary = {"rows": rows, "eval_rows": eval_rows, "seed": seed, "shards": {}}
    for split, total, code in (("train", rows, 0), ("eval", eval_rows, 1)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        shards = max(1, math.ceil(total / rows_per_shard))
        for i in range(shards):
            n = total * (i + 1) // shards - total * i // shards
            shard_seed = int(np.random.SeedSequence([seed, code, i]).generate_state(1)[0])
            path = folder / f"part-{i:05d}.parquet"
            pq.write_table(generate(n, shard_seed), path, row_group_size=ROW_GROUP)
            log(f"wrote {path} ({n:,} rows)")
        summary["shards"][split] = shards
    spec = synth_spec(cross_buckets)
    _write_spec(out, spec)
    (out / "synth.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_spec(out: Path, spec: FeatureSpec) -> Path:
    """The spec as ``spec.yaml`` in the spec-file format (read by ``widedeep train --spec``)."""
    from ..spec_file import dump_spec_file

    path = out / "spec.yaml"
    dump_spec_file(spec, path)
    return path
