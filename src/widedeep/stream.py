"""Streaming input: train on Parquet / CSV shards far larger than memory.

Files (given as files, directories or globs) are cut into *units* -- one per
Parquet row group, one per CSV file -- which every epoch are shuffled from
``seed`` and ``epoch`` and dealt round-robin to the ranks of a distributed run
(and to the loader processes of each rank).  A unit is read in Arrow record
batches of ``chunk_rows`` rows holding only the columns the spec reads, each
chunk is encoded with :meth:`FeatureSpec.transform`, and rows pass through a
bounded shuffle buffer before they are cut into mini-batches.  Memory is the
buffer plus a chunk plus the model, whatever the size of the data.

Everything random comes from ``(seed, epoch, rank, worker)``, so an epoch is
the same sequence of batches every time it is read: a resumed run skips the
batches it already trained on and continues exactly.

Encoding overlaps training: a background thread (``workers=0``) or
``workers`` loader processes (``torch.utils.data.DataLoader``, no GIL shared
with the training loop) produce batches while the model trains.
"""

from __future__ import annotations

import glob
import itertools
import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from .badrows import BadRows
from .batch import Batch
from .io import file_format
from .transform import DataError, FeatureSpec

DEFAULT_SHUFFLE_BUFFER = 100_000
DEFAULT_CHUNK_ROWS = 65_536
STREAM_FORMATS = ("parquet", "csv")
AUTO_STREAM_BYTES = 1 << 30  # larger training files are streamed unless --stream off


# --------------------------------------------------------------------------- files and units


def expand_paths(
    paths: str | Path | Sequence[str | Path], formats: Sequence[str] = STREAM_FORMATS
) -> list[Path]:
    """The data files named by files, directories (their data files) and glob patterns, sorted.

    Every file must be in one of ``formats`` (Parquet or CSV for streaming).
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {text!r}; check the pattern")
        elif Path(text).is_dir():
            found = sorted(
                p
                for p in Path(text).rglob("*")
                if p.is_file() and not p.name.startswith((".", "_")) and _is_data(p, formats)
            )
            if not found:
                raise FileNotFoundError(
                    f"directory {text!r} holds no {' or '.join(formats)} files; check the path"
                )
        elif Path(text).is_file():
            found = [Path(text)]
        else:
            raise FileNotFoundError(f"data path {text!r} does not exist; check the path")
        out.extend(found)
    for p in out:
        if file_format(p) not in formats:
            raise DataError(
                f"{p}: streaming reads Parquet or CSV files, not {file_format(p)}; convert it "
                "or train in memory (--stream off)"
            )
    return out


def _is_data(path: Path, formats: Sequence[str]) -> bool:
    try:
        return file_format(path) in formats
    except DataError:
        return False


@dataclass(frozen=True)
class Unit:
    """The smallest piece of data dealt to a rank: a Parquet row group or a CSV file.

    ``part`` of ``parts``: when there are fewer units than readers, every reader
    reads the unit and keeps its own contiguous share of each record batch.
    """

    path: str
    row_group: int | None
    rows: int | None
    part: int = 0
    parts: int = 1


def list_units(files: Sequence[Path]) -> list[Unit]:
    units = []
    for path in files:
        if file_format(path) == "parquet":
            try:
                meta = pq.ParquetFile(path).metadata
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{path}: cannot read it as Parquet: {e}") from None
            for i in range(meta.num_row_groups):
                units.append(Unit(str(path), i, meta.row_group(i).num_rows))
        else:
            units.append(Unit(str(path), None, None))
    return units


def deal(units: list[Unit], epoch: int, seed: int, shuffle: bool, rank: int, world: int):
    """This rank's units for an epoch: a shuffled (seed, epoch) order dealt round-robin."""
    if shuffle:
        order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(units))
        units = [units[i] for i in order]
    if len(units) < world:  # too few pieces to deal out: every rank reads its share of each
        return [Unit(u.path, u.row_group, u.rows, rank, world) for u in units]
    return units[rank::world]


# --------------------------------------------------------------------------- reading


def read_unit(unit: Unit, columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The unit's rows in record batches, only ``columns`` (those present), this part only."""
    try:
        if unit.row_group is not None:
            f = pq.ParquetFile(unit.path)
            present = [c for c in columns if c in f.schema_arrow.names]
            batches = f.iter_batches(
                batch_size=chunk_rows, row_groups=[unit.row_group], columns=present
            )
        else:
            batches = _read_csv(unit.path, columns)
        for rb in batches:
            if unit.parts > 1:
                n = rb.num_rows
                start, stop = n * unit.part // unit.parts, n * (unit.part + 1) // unit.parts
                rb = rb.slice(start, stop - start)
            if rb.num_rows:
                yield rb
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise DataError(f"{unit.path}: cannot read it: {e}") from None


def _read_csv(path: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    delimiter = "\t" if ".tsv" in Path(path).name.lower() else ","
    header = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    present = [c for c in columns if c in header.schema.names]
    reader = pacsv.open_csv(
        path,
        # large blocks: types are inferred from the first block and must hold for the rest
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(include_columns=present, strings_can_be_null=True),
    )
    yield from reader


# --------------------------------------------------------------------------- the shuffle buffer


class ShuffleBuffer:
    """A bounded pool of encoded rows; each incoming chunk swaps out as many random rows.

    Rows leave in random order once ``capacity`` rows are held; ``drain`` empties
    it at the end of the epoch.  ``peak_rows`` records the most rows ever held
    (buffer plus the chunk being swapped in), the memory bound.
    """

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.generator = generator
        self.rows: Batch | None = None
        self.peak_rows = 0

    def __len__(self) -> int:
        return 0 if self.rows is None else len(self.rows)

    def push(self, chunk: Batch) -> Batch | None:
        """Add a chunk; return the rows that leave (None while the buffer fills)."""
        self.peak_rows = max(self.peak_rows, len(self) + len(chunk))
        if self.rows is None:
            self.rows = chunk
        elif len(self.rows) + len(chunk) <= self.capacity:
            self.rows = Batch.concat([self.rows, chunk])
        elif len(chunk) <= len(self.rows) and _fits(chunk, self.rows):
            # the hot path: c random slots leave and the chunk's rows take their places
            slots = torch.randperm(len(self.rows), generator=self.generator)[: len(chunk)]
            out = self.rows.index(slots)
            _assign(self.rows, slots, _pad_like(chunk, self.rows))
            return out
        else:
            self.rows = Batch.concat([self.rows, chunk])
        if len(self.rows) <= self.capacity:
            return None
        order = torch.randperm(len(self.rows), generator=self.generator)
        leave = len(self.rows) - self.capacity
        out, self.rows = self.rows.index(order[:leave]), self.rows.index(order[leave:])
        return out

    def drain(self) -> Batch | None:
        if self.rows is None:
            return None
        out = self.rows.index(torch.randperm(len(self.rows), generator=self.generator))
        self.rows = None
        return out


def _tensor_fields(b: Batch) -> Iterator[tuple[str, int | None, torch.Tensor | None]]:
    for f in fields(b):
        value = getattr(b, f.name)
        if isinstance(value, list):
            for i, v in enumerate(value):
                yield f.name, i, v
        else:
            yield f.name, None, value


def _fits(chunk: Batch, buffer: Batch) -> bool:
    """Can the chunk's rows be written into the buffer (same tensors, no wider lists)?"""
    for (_, _, c), (_, _, b) in zip(_tensor_fields(chunk), _tensor_fields(buffer)):
        if (c is None) != (b is None):
            return False
        if c is not None and (c.dim() != b.dim() or (c.dim() == 2 and c.shape[1] > b.shape[1])):
            return False
    return True


def _pad_like(chunk: Batch, like: Batch) -> Batch:
    out = {}
    for f in fields(chunk):
        value, ref = getattr(chunk, f.name), getattr(like, f.name)
        if isinstance(value, list):
            out[f.name] = [_pad(v, r) for v, r in zip(value, ref)]
        else:
            out[f.name] = _pad(value, ref)
    return Batch(**out)


def _pad(t: torch.Tensor | None, ref: torch.Tensor | None) -> torch.Tensor | None:
    if t is None or t.dim() != 2 or t.shape[1] == ref.shape[1]:
        return t
    return F.pad(t, (0, ref.shape[1] - t.shape[1]))


def _assign(target: Batch, rows: torch.Tensor, source: Batch) -> None:
    for (_, _, t), (_, _, s) in zip(_tensor_fields(target), _tensor_fields(source)):
        if t is not None:
            t.index_copy_(0, rows, s)


def rebatch(chunks: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Cut a stream of row blocks into batches of ``batch_size`` (the last may be smaller)."""
    carry: Batch | None = None
    for block in chunks:
        rows = block if carry is None else Batch.concat([carry, block])
        full = len(rows) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield rows.index(slice(start, start + batch_size))
        carry = rows.index(slice(full, len(rows))) if full < len(rows) else None
    if carry is not None and len(carry):
        yield carry


# --------------------------------------------------------------------------- the source


class StreamSource:
    """Training (or evaluation) batches streamed from Parquet / CSV files.

    The run loop reads it like :class:`~widedeep.train.InMemory`: ``epoch(e, skip)``
    yields the batches of epoch ``e``.  ``rank`` / ``world`` give this process its
    share of the units in a distributed run.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        paths: str | Path | Sequence[str | Path],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        prefetch: int = 4,
        label: bool = True,
    ) -> None:
        if batch_size < 1 or shuffle_buffer < 0 or chunk_rows < 1 or workers < 0:
            raise ValueError("batch_size, chunk_rows must be >= 1; shuffle_buffer, workers >= 0")
        self.spec = spec
        self.files = expand_paths(paths)
        self.units = list_units(self.files)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.chunk_rows = chunk_rows
        self.rank, self.world = rank, world
        self.workers = workers
        self.prefetch = prefetch
        self.label = label
        keys = list(spec.input_keys)
        if label and spec.label is not None:
            keys.append(spec.label.key)
            if spec.weight_column:
                keys.append(spec.weight_column)
        self.columns = keys
        self.peak_rows = 0  # most encoded rows held at once by the buffer (thread mode)

    def __repr__(self) -> str:
        return f"StreamSource({len(self.files)} files, {len(self.units)} units)"

    @property
    def num_rows(self) -> int | None:
        """Rows in all files when known from Parquet metadata (None with CSV files)."""
        if any(u.rows is None for u in self.units):
            return None
        return sum(u.rows for u in self.units)

    def batches_per_epoch(self) -> int | None:
        """Known for one process on Parquet; None (unknown) otherwise."""
        rows = self.num_rows
        if rows is None or self.world > 1 or self.workers > 1:
            return None
        return math.ceil(rows / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        batches = self._processes(epoch) if self.workers else self._thread(epoch)
        return itertools.islice(batches, skip, None)

    # the producer: encoded, shuffled batches of one reader's units
    def batches(self, units: list[Unit], generator: torch.Generator) -> Iterator[Batch]:
        chunks = (
            self.spec.transform(pa.Table.from_batches([rb]), label=self.label)
            for unit in units
            for rb in read_unit(unit, self.columns, self.chunk_rows)
        )
        if self.shuffle and self.shuffle_buffer > 0:
            chunks = self._shuffled(chunks, generator)
        return rebatch(chunks, self.batch_size)

    def _shuffled(self, chunks: Iterator[Batch], generator: torch.Generator) -> Iterator[Batch]:
        buffer = ShuffleBuffer(self.shuffle_buffer, generator)
        try:
            for chunk in chunks:
                out = buffer.push(chunk)
                if out is not None:
                    yield out
            out = buffer.drain()
            if out is not None:
                yield out
        finally:
            self.peak_rows = max(self.peak_rows, buffer.peak_rows)

    def _generator(self, epoch: int, worker: int = 0) -> torch.Generator:
        entropy = [self.seed, epoch, self.rank, worker]
        return torch.Generator().manual_seed(
            int(np.random.SeedSequence(entropy).generate_state(1)[0])
        )

    def _my_units(self, epoch: int) -> list[Unit]:
        return deal(self.units, epoch, self.seed, self.shuffle, self.rank, self.world)

    def _thread(self, epoch: int) -> Iterator[Batch]:
        """Produce batches in a background thread, at most ``prefetch`` ahead."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for batch in self.batches(self._my_units(epoch), self._generator(epoch)):
                    while not stop.is_set():
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                item = done
            except BaseException as e:  # re-raised in the consumer
                item = e
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        thread = threading.Thread(target=produce, name="widedeep-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def _processes(self, epoch: int) -> Iterator[Batch]:
        """Produce batches in ``workers`` loader processes (round-robin, deterministic)."""
        loader = torch.utils.data.DataLoader(
            _Epoch(self, epoch),
            batch_size=None,
            num_workers=self.workers,
            prefetch_factor=self.prefetch,
        )
        yield from loader


class _Epoch(torch.utils.data.IterableDataset):
    """One epoch of a :class:`StreamSource`, split over the DataLoader's worker processes."""

    def __init__(self, source: StreamSource, epoch: int) -> None:
        self.source = source
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        torch.set_num_threads(1)
        units = self.source._my_units(self.epoch)
        if len(units) < workers:  # split each unit further; parts compose into a partition
            units = [
                Unit(u.path, u.row_group, u.rows, u.part * workers + worker, u.parts * workers)
                for u in units
            ]
        else:
            units = units[worker::workers]
        return self.source.batches(units, self.source._generator(self.epoch, worker))


# --------------------------------------------------------------------------- fitting and setup


def iter_tables(files: Sequence[Path], columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
    """Every row of ``files`` in file order, as tables of at most ``chunk_rows`` rows."""
    for unit in list_units(files):
        for rb in read_unit(unit, columns, chunk_rows):
            yield pa.Table.from_batches([rb])


def prepare(
    spec: FeatureSpec,
    train: str | Sequence[str],
    eval: str | Sequence[str] | None,
    *,
    batch_size: int,
    seed: int = 0,
    stream: bool | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    workers: int = 0,
    log=print,
    bad_rows: BadRows | None = None,
    encoding: str = "utf-8",
) -> tuple[Batch | StreamSource, Batch | StreamSource | None]:
    """Fit ``spec`` on the training files and return the training and evaluation data.

    In memory (encoded :class:`Batch`) when the files are small or ``stream`` is
    False; streamed (:class:`StreamSource`, fitted in one bounded pass) when they
    are larger than :data:`AUTO_STREAM_BYTES` or ``stream`` is True.  In a
    distributed run rank 0 fits and sends the fitted state to the others.  In memory,
    bad rows stop with file:line or are skipped as ``bad_rows`` says (:mod:`widedeep.badrows`).
    """
    from . import distributed
    from .sketch import fit_stream, needs_fit

    ctx = distributed.current()
    any_format = ("parquet", "csv", "jsonl")
    train_files = expand_paths(train, any_format)
    eval_files = expand_paths(eval, any_format) if eval else []
    if stream is None:
        stream = sum(p.stat().st_size for p in train_files) > AUTO_STREAM_BYTES
    if stream:  # checks the formats
        train_files, eval_files = expand_paths(train_files), expand_paths(eval_files)
    if not stream:
        read = dict(spec=spec, bad_rows=bad_rows, encoding=encoding)
        train_table = read_all(train_files, **read)
        spec.fit(train_table)
        train_data = spec.transform(train_table, label=True)
        del train_table
        eval_data = spec.transform(read_all(eval_files, **read), label=True) if eval else None
        return train_data, eval_data
    if bad_rows is not None and bad_rows.skip:
        raise DataError(
            "skipping bad rows (--skip_bad_rows / --max_bad_rows) is not supported while "
            "streaming yet; pass --stream off to read the files into memory, or fix the data"
        )
    if needs_fit(spec):
        if ctx.is_main:
            log(f"fitting the feature spec on {len(train_files)} file(s) in one streaming pass")
            columns = list(spec.input_keys) + ([spec.label.key] if spec.label else [])
            fit_stream(spec, iter_tables(train_files, columns, DEFAULT_CHUNK_ROWS))
        spec.state_ = distributed.broadcast_json(spec.state_ if ctx.is_main else None, ctx)
    else:
        spec.state_ = {}
    common = dict(rank=ctx.rank, world=ctx.world, workers=workers)
    train_data = StreamSource(
        spec, train_files, batch_size, seed=seed, shuffle_buffer=shuffle_buffer, **common
    )
    eval_data = (
        StreamSource(spec, eval_files, 1 << 14, shuffle=False, **common) if eval_files else None
    )
    return train_data, eval_data


def read_all(paths: str | Path | Sequence[str | Path], **options: Any) -> pa.Table:
    """Every row of the files named by ``paths`` (files, directories, globs) as one table;
    ``options`` go to :func:`widedeep.io.read_table` (spec, bad_rows, encoding)."""
    from .io import read_table

    files = expand_paths(paths, ("parquet", "csv", "jsonl"))
    tables = [read_table(p, **options) for p in files]
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"the data files do not share one schema: {e}") from None
