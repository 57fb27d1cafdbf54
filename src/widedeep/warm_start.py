"""Warm start: initialise a new model from the previous one (paper §4.2, TF's ``warm_start_from``).

Retraining from scratch each time new data arrives is slow and loses what the
old model learned; the paper instead copies the previous model's weights into
the new one.  Vocabularies move between runs (a value's id changes when its
frequency rank does), so rows are matched by *meaning*, not by position:

- a vocabulary column's id is its value: a value in both vocabularies keeps its
  weights wherever its id moved; a new value starts fresh; out-of-vocabulary
  buckets are copied one by one when their number is unchanged;
- a hashed, crossed, bucketized or identity column's id is a bucket: copied
  bucket by bucket when the column is declared the same way (same size,
  boundaries, hash key, and same vocabularies for the columns it crosses);
- wide columns are matched by name, embedding and indicator columns by name;
- the first deep layer is copied block by block (one block of input columns per
  embedding or numeric column, matched by name), the later dense layers where
  their shapes match.

The FTRL optimizer starts its state from the current weights, so warm-started
wide weights survive the first step (see :class:`widedeep.optim.Ftrl`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import artifact
from . import feature_column as fc
from .columnar import _state_key
from .model import WideDeep
from .transform import FeatureSpec

# how the ids of one column map between two specs: identity over the first n ids,
# (new ids, old ids) pairs, or nothing in common
IdMap = int | tuple[np.ndarray, np.ndarray] | None


@dataclass
class WarmStartReport:
    """What was copied: ``copied[part] = (rows or tensors copied, total)``; ``fresh`` parts."""

    source: str
    copied: dict[str, tuple[int, int]] = field(default_factory=dict)
    fresh: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"warm start from {self.source}:"]
        out += [f"  {part}: copied {n:,} of {total:,}" for part, (n, total) in self.copied.items()]
        out += [f"  {part}: not copied ({why})" for part, why in self.fresh.items()]
        return out


def warm_start_from(
    path: str | Path, spec: FeatureSpec, log: Callable[[str], None] = print
) -> Callable[[WideDeep], None]:
    """An ``init_model`` hook for :func:`widedeep.train.train` copying from a saved model.

    The previous model (a model directory, training ``model_dir`` or export) is
    loaded and checked now, so that a bad path fails before training starts.
    """
    old_spec, old_model, _, resolved = artifact.read_model_dir(path)

    def init(model: WideDeep) -> None:
        report = warm_start(model, spec, old_model, old_spec, source=str(resolved))
        for line in report.lines():
            log(line)

    return init


@torch.no_grad()
def warm_start(
    model: WideDeep,
    spec: FeatureSpec,
    old_model: WideDeep,
    old_spec: FeatureSpec,
    source: str = "the previous model",
) -> WarmStartReport:
    """Copy into ``model`` (built for ``spec``) each weight of ``old_model`` that keeps its
    meaning under ``spec``; the report says what was copied and what starts fresh."""
    if (spec.label and spec.label.head, spec.classes_) != (
        old_spec.label and old_spec.label.head,
        old_spec.classes_,
    ):
        raise ValueError(
            f"cannot warm-start from {source}: it predicts {old_spec.label} with classes "
            f"{old_spec.classes_}, the new model {spec.label} with classes {spec.classes_}; "
            "warm start needs the same label head and classes"
        )
    report = WarmStartReport(source)
    if model.has_wide and old_model.has_wide:
        _copy_id_blocks(
            "wide",
            model.wide.weight,
            old_model.wide.weight,
            _blocks(spec, spec.wide_columns),
            _blocks(old_spec, old_spec.wide_columns),
            report,
        )
        model.wide_bias.copy_(old_model.wide_bias)
        report.copied["wide bias"] = (1, 1)
    if model.has_deep and old_model.has_deep:
        _copy_embeddings(model, spec, old_model, old_spec, report)
        if model.indicator is not None and old_model.indicator is not None:
            if model.indicator.weight.shape[1] == old_model.indicator.weight.shape[1]:
                _copy_id_blocks(
                    "deep",
                    model.indicator.weight,
                    old_model.indicator.weight,
                    _blocks(spec, _indicators(spec)),
                    _blocks(old_spec, _indicators(old_spec)),
                    report,
                )
            else:
                report.fresh["deep indicator columns"] = "first layer width changed"
        _copy_first_layer(model, spec, old_model, old_spec, report)
        _copy_later_layers(model, old_model, report)
    return report


# --------------------------------------------------------------------------- id meanings


def _blocks(spec: FeatureSpec, columns) -> dict[str, tuple[int, int, object]]:
    """Per column name: (first row in the id table, number of ids, what the ids mean)."""
    out, base = {}, 1  # row 0 pads
    for column in columns:
        inner = column.categorical_column if isinstance(column, fc.IndicatorColumn) else column
        size = inner.dimension if isinstance(inner, fc.NumericColumn) else spec.num_buckets(inner)
        out[column.name] = (base, size, _meaning(spec, inner))
        base += size
    return out


def _indicators(spec: FeatureSpec) -> list[fc.IndicatorColumn]:
    return [c for c in spec.deep_columns if isinstance(c, fc.IndicatorColumn)]


def _meaning(spec: FeatureSpec, column) -> list[str] | str:
    """A vocabulary column's ids mean values (a list, OOV buckets last); any other column's
    ids are buckets whose meaning is fixed by the declaration (a signature string)."""
    if isinstance(column, fc.WeightedCategoricalColumn):
        return _meaning(spec, column.categorical_column)
    if isinstance(column, fc.VocabularyListColumn):
        vocabulary = list(column.vocabulary_list)
    elif isinstance(column, fc.VocabularyFromDataColumn):
        vocabulary = spec.state_[_state_key(column)]["vocabulary"]
    else:
        # the buckets of a cross also depend on the ids of the vocabularies it crosses
        learned = [
            spec.state_.get(_state_key(c))
            for c in fc.walk([column])
            if isinstance(c, fc.VocabularyFromDataColumn)
        ]
        return json.dumps([fc.to_dict(column), learned], sort_keys=True)
    oov = getattr(column, "num_oov_buckets", 0)
    return [f"value:{v}" for v in vocabulary] + [f"oov:{j}/{oov}" for j in range(oov)]


def _id_map(new: list[str] | str, old: list[str] | str) -> IdMap:
    if isinstance(new, str) or isinstance(old, str):
        return None if new != old else -1  # -1: every bucket (the size comes with the block)
    where = {value: i for i, value in enumerate(old)}
    pairs = [(i, where[v]) for i, v in enumerate(new) if v in where]
    if not pairs:
        return None
    ids = np.asarray(pairs, dtype=np.int64)
    return ids[:, 0], ids[:, 1]


def _copy_rows(dst: torch.Tensor, dst_base: int, src: torch.Tensor, src_base: int, m, n) -> int:
    """Copy the mapped rows (``m`` from :func:`_id_map`, ``n`` ids in the block); their count."""
    if isinstance(m, int):
        dst[dst_base : dst_base + n] = src[src_base : src_base + n]
        return n
    new_ids, old_ids = (torch.from_numpy(a) for a in m)
    dst[dst_base + new_ids] = src[src_base + old_ids]
    return len(new_ids)


def _copy_id_blocks(part, dst, src, new_blocks, old_blocks, report: WarmStartReport) -> None:
    """Rows of an id table (wide weights, indicator rows), column by column."""
    if dst.shape[1:] != src.shape[1:]:
        for name in new_blocks:
            report.fresh[f"{part} {name}"] = "output width changed"
        return
    for name, (base, size, meaning) in new_blocks.items():
        key = f"{part} {name}"
        if name not in old_blocks:
            report.fresh[key] = "new column"
            continue
        old_base, old_size, old_meaning = old_blocks[name]
        m = _id_map(meaning, old_meaning)
        if m is None:
            report.fresh[key] = (
                "no value in common"
                if isinstance(meaning, list)
                else ("declared differently (size, boundaries, hash key or crossed vocabularies)")
            )
            continue
        if isinstance(m, int) and size != old_size:  # same declaration, other size: impossible
            report.fresh[key] = f"{old_size} ids before, {size} now"
            continue
        report.copied[key] = (_copy_rows(dst, base, src, old_base, m, size), size)


# --------------------------------------------------------------------------- the deep part


def _embedding_columns(spec: FeatureSpec) -> list[fc.EmbeddingColumn]:
    return [c for c in spec.deep_columns if isinstance(c, fc.EmbeddingColumn)]


def _copy_embeddings(model, spec, old_model, old_spec, report: WarmStartReport) -> None:
    old = {c.name: (c, bag) for c, bag in zip(_embedding_columns(old_spec), old_model.embeddings)}
    for column, bag in zip(_embedding_columns(spec), model.embeddings):
        key = f"deep {column.name}"
        if column.name not in old:
            report.fresh[key] = "new column"
            continue
        old_column, old_bag = old[column.name]
        if old_column.dimension != column.dimension:
            report.fresh[key] = f"dimension {old_column.dimension} -> {column.dimension}"
            continue
        size = spec.num_buckets(column.categorical_column)
        m = _id_map(
            _meaning(spec, column.categorical_column),
            _meaning(old_spec, old_column.categorical_column),
        )
        if m is None:
            report.fresh[key] = "no id in common"
            continue
        report.copied[key] = (_copy_rows(bag.weight, 1, old_bag.weight, 1, m, size), size)


def _first_layer_inputs(spec: FeatureSpec) -> dict[str, tuple[int, int]]:
    """Input columns of the first dense layer: name -> (first input column, width).

    The model concatenates the embeddings (in declaration order), then the numeric columns.
    """
    out, at = {}, 0
    dense = [c for c in spec.deep_columns if isinstance(c, fc.NumericColumn)]
    for column in _embedding_columns(spec) + dense:
        out[column.name] = (at, column.dimension)
        at += column.dimension
    return out


def _copy_first_layer(model, spec, old_model, old_spec, report: WarmStartReport) -> None:
    new, old = model.first, old_model.first
    if new.out_features != old.out_features:
        report.fresh["deep first layer"] = f"width {old.out_features} -> {new.out_features}"
        return
    new.bias.copy_(old.bias)
    old_inputs = _first_layer_inputs(old_spec)
    inputs = _first_layer_inputs(spec)
    copied = 0
    for name, (at, width) in inputs.items():
        if name in old_inputs and old_inputs[name][1] == width:
            old_at = old_inputs[name][0]
            new.weight[:, at : at + width] = old.weight[:, old_at : old_at + width]
            copied += 1
    report.copied["deep first layer (input columns)"] = (copied, len(inputs))


def _later_layers(model: WideDeep) -> list[list[nn.Module]]:
    """Dense layers after the first, and batch-norm layers, each kind in order."""
    modules = [model.first, *model.rest]
    linear = [m for m in modules if isinstance(m, nn.Linear)][1:]
    norms = [m for m in modules if isinstance(m, nn.BatchNorm1d)]
    return [linear, norms]


def _copy_later_layers(model, old_model, report: WarmStartReport) -> None:
    total = copied = 0
    for new_layers, old_layers in zip(_later_layers(model), _later_layers(old_model)):
        for i, layer in enumerate(new_layers):
            total += 1
            if i >= len(old_layers):
                continue
            new_state, old_state = layer.state_dict(), old_layers[i].state_dict()
            if all(old_state[k].shape == v.shape for k, v in new_state.items()):
                layer.load_state_dict(old_state)
                copied += 1
    if total:
        report.copied["deep later layers"] = (copied, total)
