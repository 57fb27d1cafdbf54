"""Named training recipes shipped as plain YAML files: a feature spec plus model and run settings.

A preset is data, not code: ``reference.yaml`` is TensorFlow's census example,
``best.yaml`` the best census recipe found on a validation split of
``adult.data`` (see the README's quality section).  Users read them, copy them
and pass their own file by path::

    from widedeep.presets import load_preset
    preset = load_preset("best")            # or load_preset("my_recipe.yaml")
    result = preset.fit(train_table, eval_table, seed=1)

A file holds ``name``, ``description``, ``dataset`` (the built-in data set it
was made for, or null), ``spec`` (a :class:`FeatureSpec` as ``to_dict`` writes
it, or the path of a spec file relative to the preset file), ``model``
(:class:`ModelConfig` choices) and ``train`` (:class:`TrainConfig` fields).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..model import ModelConfig
from ..train import TrainConfig, TrainResult
from ..train import train as run_training
from ..transform import FeatureSpec

PRESETS_DIR = Path(__file__).parent
MODEL_KEYS = ("model_type", "hidden_units", "dropout", "batch_norm", "sparse_wide")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))


class PresetError(ValueError):
    """A preset name or file that cannot be used; the message says how to fix it."""


def available_presets() -> list[str]:
    """Names of the presets shipped with widedeep (the folder also holds plain spec files)."""
    return sorted(
        p.stem
        for p in PRESETS_DIR.glob("*.yaml")
        if "spec" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    )


@dataclass(frozen=True)
class Preset:
    """A training recipe: feature spec, model choices and run-loop settings, as plain data."""

    name: str
    spec: dict[str, Any] | str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    dataset: str | None = None
    base_dir: Path = PRESETS_DIR  # where a spec file named by ``spec`` is looked for

    def feature_spec(self) -> FeatureSpec:
        """A fresh, unfitted :class:`FeatureSpec` from the preset's columns."""
        if isinstance(self.spec, str):
            from ..spec_file import load_spec_file

            return load_spec_file(self.base_dir / self.spec)
        return FeatureSpec.from_dict(self.spec)

    def model_config(self, spec: FeatureSpec, **overrides: Any) -> ModelConfig:
        """Shapes from the fitted ``spec``, choices from the preset (``overrides`` win)."""
        return ModelConfig.from_spec(spec, **{**self.model, **overrides})

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The preset's run-loop settings (``overrides`` win, e.g. ``seed=3``)."""
        return TrainConfig(**{**self.train, **overrides})

    def fit(
        self,
        train_data: Any,
        eval_data: Any = None,
        model_dir: str | Path | None = None,
        *,
        quiet: bool = True,
        log: Callable[[str], None] | None = None,
        **overrides: Any,
    ) -> TrainResult:
        """Fit the spec on ``train_data``, train, evaluate on ``eval_data``; ``overrides``
        replace model or train settings (``seed=1``, ``train_epochs=5``, ``dropout=0.2``).
        ``quiet`` (the default) prints nothing unless a ``log`` function is given."""
        unknown = sorted(set(overrides) - set(MODEL_KEYS) - set(TRAIN_KEYS))
        if unknown:
            raise PresetError(
                f"preset {self.name!r}: unknown setting(s) {unknown}; model settings are "
                f"{list(MODEL_KEYS)}, train settings {list(TRAIN_KEYS)}"
            )
        spec = self.feature_spec().fit(train_data)
        train_batch = spec.transform(train_data, label=True)
        eval_batch = None if eval_data is None else spec.transform(eval_data, label=True)
        model_config = self.model_config(
            spec, **{k: v for k, v in overrides.items() if k in MODEL_KEYS}
        )
        config = self.train_config(**{k: v for k, v in overrides.items() if k in TRAIN_KEYS})
        return run_training(
            spec,
            train_batch,
            eval_batch,
            model_config,
            config,
            model_dir,
            quiet=quiet,
            log=log or ((lambda _: None) if quiet else print),
            settings={"preset": self.name},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "spec": self.spec,  # a path stays relative to the preset file
            "model": self.model,
            "train": self.train,
        }


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name (``"best"``, ``"reference"``) or a preset file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise PresetError(
                f"unknown preset {str(name_or_path)!r}; choose one of {available_presets()} "
                "or give the path of a preset file (.yaml)"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PresetError(f"cannot read preset file {str(path)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise PresetError(f"preset file {str(path)!r} is not valid YAML: {e}") from None
    return preset_from_dict(data, source=str(path), base_dir=path.parent)


def preset_from_dict(data: Any, source: str = "<dict>", base_dir: Path = PRESETS_DIR) -> Preset:
    """Validate a preset's plain data (what a preset file holds)."""
    if not isinstance(data, dict) or not isinstance(data.get("spec"), (dict, str)):
        raise PresetError(
            f"{source}: a preset is a mapping with at least 'spec' (a feature spec mapping or "
            "the path of a spec file)"
        )
    allowed = {"name", "description", "dataset", "spec", "model", "train"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PresetError(f"{source}: unknown key(s) {unknown}; allowed {sorted(allowed)}")
    for part, keys in (("model", MODEL_KEYS), ("train", TRAIN_KEYS)):
        values = data.get(part) or {}
        if not isinstance(values, dict):
            raise PresetError(f"{source}: '{part}' must be a mapping, got {values!r}")
        bad = sorted(set(values) - set(keys))
        if bad:
            raise PresetError(f"{source}: unknown {part} setting(s) {bad}; allowed {list(keys)}")
    preset = Preset(
        name=str(data.get("name") or Path(source).stem),
        spec=data["spec"],
        model=dict(data.get("model") or {}),
        train=dict(data.get("train") or {}),
        description=str(data.get("description") or ""),
        dataset=data.get("dataset"),
        base_dir=Path(base_dir),
    )
    try:  # fail now, naming the file, rather than at training time
        preset.feature_spec()
        preset.train_config()
        ModelConfig(**preset.model)
    except (ValueError, TypeError) as e:
        raise PresetError(f"{source}: {e}") from None
    return preset


__all__ = ["Preset", "PresetError", "available_presets", "load_preset", "preset_from_dict"]
