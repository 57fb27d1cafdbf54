"""Stable hashing for hash buckets and crosses.

Ids must be identical across processes, machines, Python versions and
``PYTHONHASHSEED``, so Python's ``hash()`` is never used.  A string is hashed
with 64-bit BLAKE2b of its UTF-8 bytes (``hashlib``), once per *distinct*
value (callers dictionary-encode first); crosses combine the 64-bit
component values with the SplitMix64 finaliser, vectorised in NumPy.

The documented formulas (everything modulo 2**64):

- a string ``s``: ``int.from_bytes(blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")``;
  a hash bucket id is that value modulo ``hash_bucket_size``;
- a cross of components ``c1 .. cn``: ``h = 0x5EEDC0DE0FC0551`` (or ``hash_key``), then for
  each component ``h = mix64(h * 0x9E3779B97F4A7C15 ^ c)``; the id is ``h % hash_bucket_size``.
  A component named by a raw feature key is the string hash of its value; a component
  that is a categorical column is that column's (0-based) id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CROSS_SEED = 0x5EED_C0DE_0F_C0551
_GOLDEN_INT, _M1_INT, _M2_INT = int(_GOLDEN), int(_M1), int(_M2)


def hash_string(value: str) -> int:
    """BLAKE2b-64 of the UTF-8 bytes, as an unsigned 64-bit integer."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def hash_strings(values: Iterable[str], cache: dict[str, int] | None = None) -> np.ndarray:
    """Hash each (distinct) string; ``cache`` remembers values seen before (serving)."""
    if cache is None:
        return np.fromiter((hash_string(v) for v in values), dtype=np.uint64)
    out = []
    for v in values:
        h = cache.get(v)
        if h is None:
            h = cache[v] = hash_string(v)
        out.append(h)
    if len(cache) > 1_000_000:  # bounded: a stream of unseen values must not grow memory forever
        cache.clear()
    return np.array(out, dtype=np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective avalanche over uint64 arrays."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def cross_hash_one(components: Iterable[int], hash_key: int | None = None) -> int:
    """:func:`cross_hash` of one combination, in plain Python (the serving path).

    Bit for bit the same as the vectorised version: uint64 arithmetic is
    Python integer arithmetic masked to 64 bits.
    """
    h = _CROSS_SEED if hash_key is None else int(hash_key) & _MASK
    for c in components:
        x = ((h * _GOLDEN_INT) & _MASK) ^ c
        x ^= x >> 30
        x = (x * _M1_INT) & _MASK
        x ^= x >> 27
        x = (x * _M2_INT) & _MASK
        h = x ^ (x >> 31)
    return h


def cross_hash(components: list[np.ndarray], hash_key: int | None = None) -> np.ndarray:
    """Combine aligned uint64 component arrays into one uint64 per position, order-sensitive."""
    seed = _CROSS_SEED if hash_key is None else int(hash_key) & _MASK
    h = np.full(len(components[0]), seed, dtype=np.uint64)
    for c in components:
        h = mix64((h * _GOLDEN) ^ c.astype(np.uint64, copy=False))
    return h
