"""Write the shipped census presets (src/widedeep/presets/*.yaml) from their Python declarations.

The YAML files are the source users read and copy; this script only keeps them reproducible:

    python benchmarks/make_presets.py          # rewrites reference.yaml and best.yaml
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from widedeep import feature_column as fc
from widedeep.datasets.census import census_spec
from widedeep.presets import PRESETS_DIR, preset_from_dict
from widedeep.transform import FeatureSpec

CATEGORICAL = [
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "gender",
    "native_country",
]


def best_spec() -> FeatureSpec:
    """Every census feature but the sampling weight fnlwgt; numerics both as numbers and as
    categories (their few hundred distinct values), crosses for memorisation."""
    voc = fc.categorical_column_with_vocabulary_from_data
    cats = {k: voc(k) for k in CATEGORICAL}
    gain, loss = voc("capital_gain", min_count=3), voc("capital_loss", min_count=3)
    age_years, hours = voc("age"), voc("hours_per_week", min_count=3)
    age_buckets = fc.bucketized_column(
        fc.numeric_column("age"), [18, 25, 30, 35, 40, 45, 50, 55, 60, 65]
    )
    hour_buckets = fc.bucketized_column(
        fc.numeric_column("hours_per_week"), [20, 30, 35, 40, 41, 45, 50, 60]
    )
    wide = [*cats.values(), gain, loss, age_years, hours, age_buckets, hour_buckets]
    wide += [
        fc.crossed_column(["education", "occupation"], 10000),
        fc.crossed_column([age_buckets, "education", "occupation"], 10000),
        fc.crossed_column(["marital_status", "relationship"], 1000),
        fc.crossed_column(["gender", "occupation"], 1000),
    ]
    deep = [fc.numeric_column(k, normalizer="standard") for k in ("age", "education_num")]
    deep += [fc.numeric_column("hours_per_week", normalizer="standard")]
    deep += [fc.numeric_column(k, normalizer="log") for k in ("capital_gain", "capital_loss")]
    deep += [fc.embedding_column(c, 8) for c in [*cats.values(), gain, loss]]
    return FeatureSpec(wide, deep, label=census_spec().label)


PRESETS = {
    "reference": {
        "description": "TensorFlow's census example (wide_deep, 40 epochs at batch 40, FTRL + "
        "AdaGrad, summed loss), with the deep numerics standardised",
        "spec": census_spec,
        "model": {"model_type": "wide_deep", "hidden_units": [100, 75, 50, 25]},
        "train": {
            "train_epochs": 40,
            "epochs_between_evals": 2,
            "batch_size": 40,
            "linear_optimizer": "ftrl",
            "dnn_optimizer": "adagrad",
            "loss_reduction": "sum",
        },
    },
    "best": {
        "description": "the best census recipe found on a validation split of adult.data "
        "(see the README's quality section)",
        "spec": best_spec,
        "model": {"model_type": "wide_deep", "hidden_units": [256, 128], "dropout": 0.2},
        "train": {
            "train_epochs": 12,
            "epochs_between_evals": 2,
            "batch_size": 256,
            "linear_optimizer": "ftrl",
            "linear_learning_rate": 0.05,
            "dnn_optimizer": "adam",
            "dnn_learning_rate": 0.001,
            "loss_reduction": "mean",
        },
    },
}


class _Dumper(yaml.SafeDumper):
    """Lists of plain values on one line ([18.0, 25.0, ...]); mappings in block style."""


_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        "tag:yaml.org,2002:seq",
        data,
        flow_style=all(not isinstance(v, (list, dict)) for v in data),
    ),
)


def compact(column: dict) -> dict:
    """A column dict without the fields left at their defaults: shorter files, same columns."""
    defaults = {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default
        for f in fields(fc._TYPES[column["type"]])
        if f.default is not MISSING
    }
    out = {}
    for key, value in column.items():
        if isinstance(value, dict):
            value = compact(value)
        elif key == "keys":
            value = [k if isinstance(k, str) else compact(k) for k in value]
        if key not in defaults or defaults[key] != value:
            out[key] = value
    return out


def preset_data(name: str) -> dict:
    p = PRESETS[name]
    spec = p["spec"]().to_dict()
    spec.pop("format_version")
    for part in ("wide_columns", "deep_columns"):
        spec[part] = [compact(c) for c in spec[part]]
    return {
        "name": name,
        "description": p["description"],
        "dataset": "census",
        "model": p["model"],
        "train": p["train"],
        "spec": spec,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", default=list(PRESETS))
    ap.add_argument("--dir", default=str(PRESETS_DIR))
    args = ap.parse_args()
    for name in args.names:
        data = preset_data(name)
        preset_from_dict(data, source=name)  # validate before writing
        header = (
            f"# widedeep preset {name!r}: {data['description']}.\n"
            "# Plain data: copy it, edit it, use it with `widedeep train --preset FILE.yaml`.\n"
            "# spec: FeatureSpec.to_dict() form; model: ModelConfig; train: TrainConfig.\n"
        )
        text = header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)
        path = Path(args.dir) / f"{name}.yaml"
        path.write_text(text)
        print(f"wrote {path} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
