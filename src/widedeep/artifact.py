"""Model directories on disk: JSON + safetensors, written atomically, loaded without pickle.

A *model directory* holds everything needed to predict from raw rows::

    spec.json            fitted feature spec (columns, vocabularies, normalisers)
    config.json          model shapes, head, classes, training settings
    model.safetensors    weights
    metrics.json         evaluation metrics when it was written (optional)
    manifest.json        format version, library version, SHA-256 of every file

A training ``model_dir`` holds checkpoints, each a model directory plus
``optimizer.safetensors`` and ``trainer.json`` (epoch, step, RNG), and a
``checkpoint.json`` naming the newest complete one.  Every file is written to
a temporary name, fsynced and renamed; a checkpoint becomes visible only when
``checkpoint.json`` is replaced, so a process killed at any moment leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .model import ModelConfig, WideDeep
from .transform import FeatureSpec

FORMAT_VERSION = 1
POINTER = "checkpoint.json"
KEEP_CHECKPOINTS = 2
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".npy")


class ModelFileError(ValueError):
    """A model directory is missing, damaged, unsafe or from an unknown format version."""


# --------------------------------------------------------------------------- atomic files


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- model directories


def write_model_dir(
    path: Path,
    spec: FeatureSpec,
    model: WideDeep,
    settings: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> None:
    """Write a complete model directory at ``path`` (which must not exist yet) atomically."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        _write_files(tmp, spec, model, settings, metrics, extra_tensors or {}, extra_json or {})
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def _write_files(tmp, spec, model, settings, metrics, extra_tensors, extra_json) -> None:
    def dump(name: str, data: Any) -> None:
        (tmp / name).write_text(json.dumps(data, indent=1) + "\n")

    dump("spec.json", spec.to_dict())
    dump("config.json", {"model": model.config.to_dict(), "settings": settings or {}})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    if metrics is not None:
        dump("metrics.json", metrics)
    for name, tensors in extra_tensors.items():
        save_file(tensors, str(tmp / name))
    for name, data in extra_json.items():
        dump(name, data)
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {
        "format_version": FORMAT_VERSION,
        "widedeep_version": __version__,
        "files": {name: _sha256(tmp / name) for name in files},
    }
    dump("manifest.json", manifest)
    for p in tmp.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)


def resolve(path: str | Path) -> Path:
    """The model directory at ``path``: itself, or the newest checkpoint of a training model_dir."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model path {str(path)!r} does not exist; check the path")
    if not path.is_dir():
        raise ModelFileError(f"model path {str(path)!r} is not a directory")
    if (path / "manifest.json").exists():
        return path
    pointer = path / POINTER
    if pointer.exists():
        try:
            name = json.loads(pointer.read_text())["latest"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            name = None
        if not isinstance(name, str) or not name.startswith("ckpt-") or "/" in name:
            raise ModelFileError(f"{pointer} is damaged; delete it to fall back") from None
        if (path / name / "manifest.json").exists():
            return path / name
        # killed between moving an old copy aside and renaming the new one in: the newest
        # complete checkpoint is as good (training resumes from it to the same result)
        complete = _complete_checkpoints(path)
        if complete:
            return complete[-1]
        raise ModelFileError(
            f"{pointer} names {name}, which is missing, and no other complete checkpoint "
            f"is left in {path}; pass --clean to start over"
        )
    exports = sorted(p for p in path.iterdir() if p.is_dir() and (p / "manifest.json").exists())
    if exports:  # an export base directory: the newest export
        return exports[-1]
    raise ModelFileError(
        f"{str(path)!r} holds no widedeep model (no manifest.json, {POINTER} or export); "
        "point to a model_dir written by `widedeep train` or an export"
    )


def verify(path: Path) -> dict[str, Any]:
    """Check a model directory: no pickles, known format, every file present with its checksum."""
    pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise ModelFileError(
            f"{path} contains {pickles}: widedeep never loads pickle files; remove them "
            "(a widedeep model is JSON + safetensors only)"
        )
    manifest = _read_json(path / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelFileError(
            f"{path / 'manifest.json'} is not a widedeep manifest (no 'files' table); the model "
            "directory is damaged: restore it from a good copy or retrain"
        )
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version!r} is newer than this widedeep "
            f"({__version__}, format {FORMAT_VERSION}) can read; upgrade widedeep"
        )
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path / 'manifest.json'}: unknown model format version {version!r} (this widedeep "
            f"reads format {FORMAT_VERSION}); the directory was not written by widedeep or is "
            "damaged"
        )
    for name, digest in manifest["files"].items():
        if not isinstance(name, str) or Path(name).name != name or name == "manifest.json":
            raise ModelFileError(f"{path / 'manifest.json'} lists a bad file name {name!r}")
        file = path / name
        if not file.exists():
            raise ModelFileError(f"{path}: {name} is missing; the model directory is incomplete")
        if _sha256(file) != digest:
            raise ModelFileError(
                f"{file}: checksum mismatch (the file was changed or damaged); restore it "
                "from a good copy or retrain"
            )
    return manifest


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; the model directory is incomplete") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; the model directory is incomplete") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not a valid safetensors file ({e})") from None


def read_model_dir(path: str | Path) -> tuple[FeatureSpec, WideDeep, dict[str, Any], Path]:
    """Load (spec, model, config.json contents, resolved path); refuses anything unsafe."""
    path = resolve(path)
    verify(path)
    try:
        spec = FeatureSpec.from_dict(_read_json(path / "spec.json"))
        config = _read_json(path / "config.json")
        model = WideDeep(ModelConfig(**config["model"]))
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, OverflowError) as e:
        raise ModelFileError(
            f"{path}: spec.json or config.json does not describe a model ({e})"
        ) from None
    state = read_tensors(path / "model.safetensors")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}/model.safetensors does not match config.json: {e}") from None
    model.eval()
    return spec, model, config, path


# --------------------------------------------------------------------------- checkpoints


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """An optimizer's state as safetensors-ready tensors plus JSON for the rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            name = f"{prefix}.{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().contiguous().cpu()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict, meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        if name.startswith(prefix + "."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint(model_dir: Path, name: str, **kwargs: Any) -> Path:
    """Write checkpoint ``name`` as a model directory, then point ``checkpoint.json`` at it."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / name
    if target.exists():  # the same step again (e.g. interrupted right after resuming)
        # moved aside, not deleted, until its replacement is complete: it may be the one
        # checkpoint.json names (resolve falls back to the newest complete one meanwhile)
        aside = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{name}.old.", suffix=".tmp"))
        os.replace(target, aside / name)
    write_model_dir(target, **kwargs)
    write_json(model_dir / POINTER, {"latest": name})
    checkpoints = [p for p in _complete_checkpoints(model_dir) if p.name != name]
    for old in checkpoints[: max(0, len(checkpoints) - KEEP_CHECKPOINTS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    # temporary files and directories left by a process killed mid-write
    for stale in [*model_dir.glob(".ckpt-*.tmp"), *model_dir.glob(f".{POINTER}.*.tmp")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return target


def _complete_checkpoints(model_dir: Path) -> list[Path]:
    """Checkpoint directories with a manifest, oldest first (a manifest is written last)."""
    return sorted(p for p in Path(model_dir).glob("ckpt-*") if (p / "manifest.json").is_file())


def latest_checkpoint(model_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``model_dir``, or None if training has not saved one."""
    if not (Path(model_dir) / POINTER).exists():
        return None
    return resolve(model_dir)
