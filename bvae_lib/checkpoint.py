"""Checkpoints: everything needed to rebuild a model and to continue its training exactly.

A checkpoint is one ``torch.save`` file holding plain data only -- tensors, dicts, lists,
tuples, numbers, strings -- so that it loads with ``torch.load(weights_only=True)``, which
cannot run code hidden in a malicious file. It carries its own configs (the pythae habit), so
``load_model(path)`` rebuilds the model without guessing:

=====================  ======================================================================
``model_config``       ``dataclasses.asdict(ModelConfig)``: ``build_model(ModelConfig(**d))``
``objective_config``   ``objective_config_to_dict(cfg)`` (a dict with key ``"name"``)
``train_config``       ``dataclasses.asdict(TrainConfig)``
``model``              the weights (``state_dict``)
``optimizer``          Adam's moments and step counts (``state_dict``)
``scaler``             the fp16 gradient scaler's state (``{}`` when unused)
``rng``                torch CPU, CUDA, numpy, Python ``random`` and the data generator
``step``               optimisation steps done
``history``            the loss terms logged so far (also written to ``history.json``)
``library_version``    ``bvae_lib.__version__`` of the code that wrote it
=====================  ======================================================================

Writes are atomic: the file is written to a temporary name in the same directory, flushed to
disk (``fsync``) and renamed over the old one (``os.replace`` is atomic on POSIX and Windows).
A process killed at any moment leaves either the old checkpoint or the new one, never half of
one.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ._validate import is_int

__all__ = [
    "CHECKPOINT_NAME",
    "HISTORY_NAME",
    "atomic_write",
    "write_json",
    "remove_stale_temporaries",
    "config_differences",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_from_state",
    "load_weights",
    "resolve_checkpoint_path",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"   # inside a run directory
HISTORY_NAME = "history.json"       # next to it, human-readable
FORMAT = "bvae_lib.checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "library_version", "model_config", "objective_config",
             "train_config", "step", "model", "optimizer", "rng", "history")


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, write: Callable[[Any], None],
                 binary: bool = True) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory because ``os.replace`` is only atomic within
    one file system. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory; pass a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.name),
                               suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())      # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_error(path, e) from e
        raise
    _fsync_dir(path.parent)           # make the rename itself durable (best effort)
    return path


def _temporary_prefix(name: str) -> str:
    return f".{name}."


def _write_error(path: Path, e: BaseException) -> OSError:
    """A failed write, said so that a person can act on it. torch.save reports a full disk as
    ``[enforce fail at inline_container.cc:...] . unexpected pos``: its zip writer saw a short
    write, which on a local file system means no space (or quota) was left."""
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    full = (getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or (isinstance(e, RuntimeError) and "unexpected pos" in reason))
    if full:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        error = OSError(f"could not write {path}: the disk is full ({free} on "
                        f"{path.parent}; {reason}). {path.name} was not changed -- the previous "
                        f"version, if any, is intact. Free some space (or write elsewhere) and "
                        f"run again; a training run continues with --resume / resume=True")
        error.errno = errno.ENOSPC
        return error
    error = OSError(f"could not write {path} ({type(e).__name__}: {reason}). {path.name} was "
                    f"not changed -- the previous version, if any, is intact")
    error.errno = getattr(e, "errno", None)
    return error


def remove_stale_temporaries(directory: str | os.PathLike,
                             names=(CHECKPOINT_NAME, HISTORY_NAME)) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left for ``names`` in
    ``directory`` when its process was killed between creating and renaming them (a
    checkpoint's can be tens of MB). Call it only where no other process writes these names at
    the same time -- the training loop calls it for its own run directory before it starts."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for name in names:
        for tmp in directory.glob(f"{_temporary_prefix(name)}*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:           # gone already, or not ours to remove: leave it
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:                   # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically write ``obj`` as JSON."""
    return atomic_write(path, lambda f: json.dump(obj, f), binary=False)


# ---------------------------------------------------------------------------------------------
# Random number generators, as plain data
# ---------------------------------------------------------------------------------------------

def rng_state(data_generator: torch.Generator | None = None) -> dict:
    """Every RNG state that influences training, as tensors, lists and numbers.

    numpy's and Python's states are tuples of arrays/ints; they are converted to tensors and
    lists so that ``torch.load(weights_only=True)`` accepts them.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "data": None,
        "data_device": None,
    }
    if data_generator is not None:
        state["data"] = data_generator.get_state()
        state["data_device"] = data_generator.device.type
    return state


def set_rng_state(state: dict, data_generator: torch.Generator | None = None) -> bool:
    """Restore the states saved by :func:`rng_state`.

    Returns ``True`` when the data generator was restored exactly, ``False`` when it could not
    be (a checkpoint written on another kind of device: a CUDA generator's state cannot seed a
    CPU generator) -- the caller then reseeds it and the continuation is no longer bitwise.
    """
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if data_generator is None or state.get("data") is None:
        return data_generator is None
    if state.get("data_device") != data_generator.device.type:
        return False
    data_generator.set_state(state["data"])
    return True


# ---------------------------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------------------------

def _plain(obj):
    """Dataclass or dict -> dict of plain values (tuples stay tuples; numpy scalars, which
    ``torch.load(weights_only=True)`` refuses, become Python numbers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if not isinstance(obj, dict):
        raise TypeError(f"expected a config dataclass or dict, got {type(obj).__name__}")

    def plain(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (list, tuple)):
            return type(v)(plain(u) for u in v)
        if isinstance(v, dict):
            return {k: plain(u) for k, u in v.items()}
        return v
    return plain(obj)


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, objective_config,
                    train_config, optimizer: torch.optim.Optimizer, step: int, history: dict,
                    data_generator: torch.Generator | None = None,
                    scaler: "torch.amp.GradScaler | None" = None,
                    extra: dict | None = None, objective_state: dict | None = None) -> Path:
    """Atomically write a checkpoint (see the module docstring for its contents).

    ``path`` may be a run directory (the file is then ``DIR/checkpoint.pt``). The history is
    also written, atomically, as ``history.json`` next to the checkpoint. ``objective_state``:
    the parameters an objective owns (FactorVAE's discriminator and its optimiser), if any.
    """
    from bvae_lib import __version__
    from bvae_lib.objectives import objective_config_to_dict

    path = resolve_checkpoint_path(path, must_exist=False)
    if not hasattr(model, "config"):
        raise TypeError("model must have a .config ModelConfig (build it with "
                        "bvae_lib.models.build_model) so the checkpoint can rebuild it")
    obj_cfg = _plain(objective_config if isinstance(objective_config, dict)
                     else objective_config_to_dict(objective_config))
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "model_config": _plain(model.config),
        "objective_config": obj_cfg,
        "train_config": _plain(train_config),
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "rng": rng_state(data_generator),
        "history": history,
        "extra": dict(extra or {}),
    }
    if objective_state:
        ckpt["objective_state"] = objective_state
    atomic_write(path, lambda f: torch.save(ckpt, f))
    write_json(path.with_name(HISTORY_NAME), history)
    return path


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------

def resolve_checkpoint_path(path: str | os.PathLike, must_exist: bool = True) -> Path:
    """A run directory means its ``checkpoint.pt``; a file path is used as is."""
    path = Path(path)
    if path.is_dir() or (not must_exist and path.suffix == ""):
        path = path / CHECKPOINT_NAME
    if must_exist and not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; expected a file written by bvae_lib.train (or a run "
            f"directory containing '{CHECKPOINT_NAME}'). Train one with "
            f"`python -m bvae_lib train --out DIR` or check the path.")
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and validate a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` when there is no file and ``ValueError`` when the file is
    corrupt, truncated, or not a bvae_lib checkpoint.
    """
    path = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip errors, truncated files, pickled code refused by weights_only
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {reason}); "
                         f"the file is corrupt, truncated or holds more than plain data -- "
                         f"delete it and retrain, or use an older copy") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a bvae_lib checkpoint (found {keys}); expected a file "
                         f"written by bvae_lib.train / save_checkpoint")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete checkpoint: it lacks {missing}")
    _check_structure(ckpt, path)
    if ckpt["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {ckpt['format_version']}, newer than "
                         f"this bvae_lib understands ({FORMAT_VERSION}); upgrade bvae_lib")
    from bvae_lib import __version__
    if ckpt["library_version"] != __version__:
        warnings.warn(f"{path} was written by bvae_lib {ckpt['library_version']}, this is "
                      f"{__version__}; loading it anyway", UserWarning, stacklevel=2)
    from bvae_lib.models import stored_model_config
    ckpt["model_config"] = stored_model_config(ckpt["model_config"])
    ckpt["path"] = str(path)
    return ckpt



def _structure_problems(ckpt: dict) -> list[str]:
    """What is malformed in a checkpoint's fields, as ``"field: expected ..., got ..."``.

    The keys alone do not make a checkpoint: a field of the wrong type would otherwise surface
    as a KeyError or AttributeError deep inside resuming. This checks the shape of every field
    that loading and resuming read, not the values (the configs are checked by their own
    dataclasses when they are rebuilt, the weights by ``_check_state_dict``).
    """
    bad = []

    def expect(ok: bool, field: str, what: str, value) -> bool:
        if not ok:
            got = type(value).__name__
            if isinstance(value, torch.Tensor):
                got = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
            elif isinstance(value, (list, dict, tuple, str)) and len(value) == 0:
                got = f"an empty {got}"
            bad.append(f"{field}: expected {what}, got {got}")
        return ok

    expect(is_int(ckpt["format_version"]), "format_version", "an integer",
           ckpt["format_version"])
    expect(isinstance(ckpt["library_version"], str), "library_version", "a string",
           ckpt["library_version"])
    for name in ("model_config", "train_config"):
        expect(isinstance(ckpt[name], dict), name, "a dict of config fields", ckpt[name])
    obj = ckpt["objective_config"]
    if expect(isinstance(obj, dict), "objective_config", "a dict of config fields", obj):
        expect(isinstance(obj.get("name"), str), "objective_config['name']",
               "the objective's name", obj.get("name"))
    expect(is_int(ckpt["step"]) and ckpt["step"] >= 0, "step",
           "a non-negative integer", ckpt["step"])
    model = ckpt["model"]
    if expect(isinstance(model, dict) and len(model) > 0, "model", "a state_dict (names -> "
              "tensors)", model):
        odd = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
        expect(not odd, f"model[{odd[0]!r}]" if odd else "model", "a tensor",
               model[odd[0]] if odd else None)
    opt = ckpt["optimizer"]
    if expect(isinstance(opt, dict), "optimizer", "an optimizer state_dict", opt):
        expect(isinstance(opt.get("state"), dict), "optimizer['state']", "a dict",
               opt.get("state"))
        expect(isinstance(opt.get("param_groups"), list) and len(opt["param_groups"]) > 0,
               "optimizer['param_groups']", "a non-empty list", opt.get("param_groups"))
    for name in ("scaler", "extra"):            # optional: absent in some older checkpoints
        if name in ckpt:
            expect(isinstance(ckpt[name], dict), name, "a dict", ckpt[name])
    bad += _rng_problems(ckpt["rng"])
    history = ckpt["history"]
    if expect(isinstance(history, dict), "history", "a dict of term -> list of values",
              history):
        odd = [k for k, v in history.items() if not isinstance(v, list)]
        if expect(not odd, f"history[{odd[0]!r}]" if odd else "history", "a list",
                  history[odd[0]] if odd else None):
            lengths = {k: len(v) for k, v in history.items()}
            expect(len(set(lengths.values())) <= 1, "history",
                   "lists of one length (one entry per log window)", lengths)
    return bad


def _rng_problems(rng) -> list[str]:
    """Like :func:`_structure_problems`, for the RNG states of :func:`rng_state`."""
    if not isinstance(rng, dict):
        return [f"rng: expected a dict of RNG states, got {type(rng).__name__}"]
    bad = []
    t = rng.get("torch")
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.numel() > 0):
        bad.append("rng['torch']: expected torch.get_rng_state() (a non-empty uint8 tensor)")
    if not isinstance(rng.get("cuda", []), (list, tuple)):
        bad.append("rng['cuda']: expected a list of CUDA RNG states")
    np_state = rng.get("numpy")
    if not (isinstance(np_state, dict) and isinstance(np_state.get("name"), str)
            and isinstance(np_state.get("keys"), torch.Tensor)
            and np_state["keys"].numel() == 624 and is_int(np_state.get("pos"))
            and is_int(np_state.get("has_gauss"))
            and isinstance(np_state.get("cached_gaussian"), (int, float))):
        bad.append("rng['numpy']: expected numpy's MT19937 state (name, 624 keys, pos, "
                   "has_gauss, cached_gaussian)")
    py = rng.get("python")
    if not (isinstance(py, dict) and is_int(py.get("version"))
            and isinstance(py.get("state"), (list, tuple)) and len(py["state"]) == 625
            and all(is_int(v) for v in py["state"])
            and (py.get("gauss_next") is None or isinstance(py["gauss_next"], (int, float)))):
        bad.append("rng['python']: expected random.getstate() (version, 625 integers, "
                   "gauss_next)")
    data, data_device = rng.get("data"), rng.get("data_device")
    if not (data is None or (isinstance(data, torch.Tensor) and data.dtype == torch.uint8
                             and data.numel() > 0)):
        bad.append("rng['data']: expected the data generator's state (a non-empty uint8 tensor)")
    if not (data_device is None or isinstance(data_device, str)):
        bad.append("rng['data_device']: expected a device type such as 'cpu'")
    return bad


def _check_structure(ckpt: dict, path) -> None:
    bad = _structure_problems(ckpt)
    if bad:
        raise ValueError(f"{path} is a damaged checkpoint: {'; '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''}. It was not written this way by "
                         f"bvae_lib (edited, or damaged on disk) -- delete it and retrain, or "
                         f"use an older copy")


def config_differences(a: dict, b: dict) -> list[str]:
    """``"field: checkpoint A vs B"`` for each field whose values differ (tuples and lists
    compare equal, as they do after a JSON round trip)."""
    norm = lambda d: json.loads(json.dumps(d, default=str))  # noqa: E731
    a, b = norm(a), norm(b)
    return [f"{k}: checkpoint {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _check_state_dict(model: torch.nn.Module, state: dict, where: str) -> None:
    """Compare names and shapes *before* copying, so a mismatch never half-loads a model
    (``load_state_dict`` copies the matching tensors before it reports the others)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError(f"{where}: the weights do not fit this architecture ({'; '.join(parts)}); "
                         f"the checkpoint was written for another model")


def load_weights(model: torch.nn.Module, checkpoint) -> torch.nn.Module:
    """Load a checkpoint's weights into an existing ``model`` built with the same config.

    ``checkpoint`` is a path or an already loaded checkpoint dict. A different ``ModelConfig``
    (architecture, latent size, ...) raises ``ValueError`` and leaves ``model`` untouched.
    """
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = ckpt.get("path", "checkpoint")
    if hasattr(model, "config"):
        # The initialisation does not matter once the weights are replaced.
        diff = [d for d in config_differences(ckpt["model_config"], _plain(model.config))
                if not d.startswith("init:")]
        if diff:
            raise ValueError(f"{where} was trained with another model config ({'; '.join(diff)}); "
                             f"rebuild the model with bvae_lib.checkpoint.load_model(path) instead")
    _check_state_dict(model, ckpt["model"], where)
    model.load_state_dict(ckpt["model"])
    return model


def load_model(path: str | os.PathLike, device: str | torch.device | None = None):
    """Rebuild the model stored in a checkpoint (or run directory), in eval mode.

    ``device``: where to put it (default: the CPU).
    """
    ckpt = load_checkpoint(path)
    return model_from_state(ckpt["model_config"], ckpt["model"], ckpt["path"],
                            ckpt["library_version"], device)


def model_from_state(model_config: dict, state: dict, where: str, written_by: str | None = None,
                     device: str | torch.device | None = None):
    """The one way a stored model is rebuilt (a checkpoint, a shipped model of the zoo): the
    config checked for fields this version does not know (a config written by a newer library),
    read back with the initialisation of configs stored before it was recorded, the model built,
    the state's names and shapes checked before any tensor is copied, weights loaded in float32,
    the model moved to ``device`` (default the CPU) in eval mode."""
    from bvae_lib.models import ModelConfig, build_model, stored_model_config

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(model_config) - known)
    if unknown:
        raise ValueError(f"{where}: model config has fields {unknown} that this version's "
                         f"ModelConfig does not know; it was written by bvae_lib "
                         f"{written_by or 'another version'}")
    model = build_model(ModelConfig(**stored_model_config(model_config)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    _check_state_dict(model, state, str(where))
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()
