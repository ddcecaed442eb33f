"""The training loop: any model + objective + dataset, on whatever hardware is there.

One function, :func:`train`, readable top to bottom. What makes it fast is what it leaves out:

* **No DataLoader.** The procedural dSprites renders each batch directly on the training device
  (``sample_factors`` + ``images_from_factors``); a tensor dataset is moved to the device once and
  indexed there. Nothing crosses the bus, no worker processes.
* **No per-step synchronisation in the loop.** Reading a GPU number on the host (``loss.item()``)
  waits for the GPU to finish; doing it every step serialises CPU and GPU. The loss terms of
  each step are copied into a small buffer *on the device* and brought to the host once per
  ``log_every`` steps, where they are averaged, checked for NaN/Inf and appended to the history.
  The data are checked once, before the loop (Bernoulli targets in [0, 1]), and the library's
  datasets draw their batches with ``sample_images``, which does not re-check the factors it
  has just drawn in range.
* **The same switches on every device** (:class:`TrainConfig`): mixed precision (``amp``: bf16
  autocast where the device computes bf16 in hardware -- every CUDA GPU, a CPU with AVX512-BF16
  or AMX -- fp16 with a ``GradScaler`` on a GPU without bf16, fp32 elsewhere; see
  :func:`precision`), channels-last memory for the convolutions (on by default), and
  ``torch.compile`` (off by default: it costs ~30-60 s of compiling, and on the CPU needs a C++
  compiler; without one the loop warns and runs eagerly). The model runs under autocast; the
  objective runs in fp32 on the float32 copies of its outputs, because sums over 4096 pixels
  and KLs lose too much in 16 bits. On this project's 2-core CPU the defaults train 1.6-1.9x
  faster than fp32 NCHW (``python benchmarks/bench_train.py --compare``), and the tests run
  every switch on the CPU against fp32.

Checkpoints (``bvae_lib.checkpoint``) carry every RNG state, including the generator that draws
the batches, so a run that is interrupted and resumed gives bitwise the same weights on the CPU
as one that was not. A checkpoint is written only from weights known to be good: the step it
would resume with is computed first and its loss and gradients checked finite (see
:func:`_diverged_at`), so the "last good" checkpoint of a diverged run resumes.

Budgets: :func:`budget` returns a paper-scale number of steps on a GPU (300,000 steps of batch 64,
Burgess et al. 2018) and a short one on the CPU; the environment variable ``BVAE_STEPS``
overrides both, e.g. ``BVAE_STEPS=50 make test`` or ``BVAE_STEPS=300000`` in Colab.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bvae_lib import checkpoint as ckpt_lib
from bvae_lib.data import DSprites, DSpritesFile, TensorImages
from bvae_lib.models import ModelConfig, build_model
from bvae_lib._validate import is_int
from bvae_lib.objectives import build_objective, objective_config_from_dict

__all__ = [
    "TrainConfig",
    "TrainResult",
    "NonFiniteLossError",
    "train",
    "pick_device",
    "budget",
    "gpu_minutes",
    "COLAB_STEPS_PER_SECOND",
    "seed_everything",
    "progress_enabled",
    "PAPER_STEPS",
    "PAPER_BATCH_SIZE",
]

#: Paper scale: 300,000 Adam steps of batch 64 (Burgess et al. 2018, dSprites; also the setting
#: of Locatello et al. 2019's large study).
PAPER_STEPS = 300_000
PAPER_BATCH_SIZE = 64

STEPS_ENV = "BVAE_STEPS"        # overrides budget(): a positive integer
PROGRESS_ENV = "BVAE_PROGRESS"  # "0" turns every progress bar off (tests, nbval, CI)


@dataclass
class TrainConfig:
    """How to train. Defaults are the paper's optimiser settings (Adam, lr 5e-4, batch 64,
    Burgess et al. 2018); ``steps`` is the total number of optimisation steps of the run, so a
    resumed run with a larger ``steps`` continues up to it."""

    steps: int
    batch_size: int = PAPER_BATCH_SIZE     # M (pairs for Dual-Swap: 2M images)
    lr: float = 5e-4                       # Adam learning rate (betas 0.9, 0.999)
    seed: int = 0                          # model init, reparameterisation noise, batches
    device: str = "auto"                   # "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
    amp: bool | None = None                # mixed precision; None: where the device has it in
                                           # hardware (CUDA; a CPU with bf16, see precision())
    channels_last: bool | None = None      # NHWC memory for conv models; None: on (CPU and CUDA)
    compile: bool = False                  # torch.compile the model (CUDA, or a CPU with a C++
                                           # compiler; else a warning and eager mode)
    checkpoint_every: int = 5_000          # steps between checkpoints (when out_dir is given)
    log_every: int = 100                   # steps averaged into one history entry
    progress: bool | None = None           # None: on unless BVAE_PROGRESS=0

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not is_int(self.seed):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        # plain Python numbers: numpy scalars would not load with torch.load(weights_only=True)
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "seed"):
            setattr(self, name, int(getattr(self, name)))
        self.lr = float(self.lr)
        for name in ("amp", "channels_last"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"TrainConfig.{name} must be True, False or None (automatic), "
                                 f"got {value!r}")
            setattr(self, name, None if value is None else bool(value))
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"TrainConfig.compile must be True or False, got {self.compile!r}")
        self.compile = bool(self.compile)


@dataclass
class TrainResult:
    """What :func:`train` returns. ``model`` is in eval mode, on the training device."""

    model: torch.nn.Module
    history: dict                 # term -> list, one entry per log window; "step" = steps done
    step: int                     # steps done in total (== config.steps)
    checkpoint: Path | None       # the last checkpoint written, if out_dir was given
    seconds: float = 0.0          # wall time of this call's loop (excludes setup)
    steps_run: int = 0            # steps run by this call (fewer than ``step`` after a resume)
    batch_size: int = PAPER_BATCH_SIZE
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"       # the forward pass's arithmetic: "bf16", "fp16" or "fp32"

    @property
    def images_per_second(self) -> float:
        return self.steps_run * self.batch_size / self.seconds if self.seconds > 0 else float("nan")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the step and the term."""


# ---------------------------------------------------------------------------------------------
# Hardware, seeds, budgets
# ---------------------------------------------------------------------------------------------

def pick_device(preference: str | torch.device | None = "auto") -> torch.device:
    """The training device: CUDA if present, then Apple MPS, then the CPU.

    ``preference`` other than ``"auto"`` (e.g. ``"cpu"``, ``"cuda:1"``) is used as is, after
    checking that it exists.
    """
    if preference is None or str(preference) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', "
                         f"got {preference!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(preference)!r} was requested but CUDA is not available "
                         f"here; use device='auto' or 'cpu'")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise ValueError(f"device={str(preference)!r} was requested but Apple MPS is not "
                         f"available here; use device='auto' or 'cpu'")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 on Linux), as
    torch's kernels are allowed to use it: ``ATEN_CPU_CAPABILITY=default`` (torch's portable
    kernels only) answers False. Elsewhere bf16 is emulated and slower than fp32."""
    if torch.backends.cpu.get_cpu_capability().upper() == "DEFAULT":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def precision(config: "TrainConfig", device: torch.device) -> str:
    """The arithmetic of the model's forward pass under ``config`` on ``device``: ``"bf16"``,
    ``"fp16"`` (CUDA without bf16; gradients are scaled) or ``"fp32"``.

    ``config.amp=None`` (the default) turns mixed precision on where the device computes it in
    hardware: every CUDA GPU, and a CPU with bf16 instructions (:func:`cpu_has_native_bf16`),
    where it trains about twice as fast as fp32 (``benchmarks/bench_train.py``). ``True`` forces
    it (bf16 on a CPU without them is emulated: slower), ``False`` keeps fp32. MPS runs fp32.
    The objective is always computed in fp32.
    """
    device = torch.device(device)
    if config.amp is False or device.type == "mps":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and (config.amp or cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


#: The training speed the chapters' GPU budgets are planned with: steps per second of the
#: Burgess or Higgins network, batch 32-64, mixed precision, eager mode, on a Colab T4. It is an
#: estimate, not a measurement -- no GPU was available where the book was built; the loop prints
#: the measured rate and the expected duration of every run of 5,000 steps or more. How it was
#: estimated: one step is ~4.8 GFLOP (75 MFLOP per image forward + backward, batch 64), under a
#: millisecond even at a tenth of a T4's 65 TFLOP/s fp16; what bounds it is the ~150 kernels a
#: step launches from Python, 10-20 us each on Colab's two vCPUs: 2-4 ms a step, 250-500 steps/s.
#: We plan with the slow end, so that a chapter takes ~10 minutes or less.
COLAB_STEPS_PER_SECOND = 250


def gpu_minutes(minutes: float) -> int:
    """The GPU budget of a run meant to take ``minutes`` on a Colab T4: steps at
    :data:`COLAB_STEPS_PER_SECOND`, rounded to thousands -- e.g. ``budget(cpu=150,
    gpu=gpu_minutes(1.2))`` gives 18,000 steps on a GPU, each chapter's runs adding up to about
    ten minutes."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    return max(1_000, int(round(minutes * 60 * COLAB_STEPS_PER_SECOND, -3)))


def budget(cpu: int, gpu: int = PAPER_STEPS, *, mps: int | None = None,
           device: str | torch.device | None = "auto") -> int:
    """Number of training steps for this hardware.

    ``gpu`` on CUDA (default: the paper's 300,000; the chapters pass :func:`gpu_minutes`, sized
    for a Colab T4), ``mps`` on Apple silicon (default: ``cpu``),
    ``cpu`` otherwise -- so a chapter can write ``TrainConfig(steps=budget(cpu=2_000))`` and get
    a paper-scale run in Colab and a short one in CI. The environment variable ``BVAE_STEPS``
    (a positive integer) overrides all of them.
    """
    env = os.environ.get(STEPS_ENV, "").strip()
    if env:
        try:
            steps = int(env)
        except ValueError:
            steps = 0
        if steps < 1:
            raise ValueError(f"environment variable {STEPS_ENV} must be a positive integer "
                             f"number of steps, got {env!r}; unset it to use the default budget")
        return steps
    for name, value in (("cpu", cpu), ("gpu", gpu), ("mps", mps)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"budget({name}=...) must be a positive integer, got {value!r}")
    kind = pick_device(device).type
    if kind == "cuda":
        return int(gpu)
    if kind == "mps":
        return int(mps if mps is not None else cpu)
    return int(cpu)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show a progress bar: ``BVAE_PROGRESS=0`` wins (CI, nbval), then ``progress``,
    then on."""
    if os.environ.get(PROGRESS_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return True if progress is None else bool(progress)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _is_ground_truth(dataset) -> bool:
    return hasattr(dataset, "sample_factors") and hasattr(dataset, "images_from_factors")


def _batch_sampler(dataset, batch_size: int, generator: torch.Generator):
    """A function drawing one batch of M images uniformly (with replacement) from ``dataset``.

    Ground-truth datasets draw factor combinations and render them (on their device); plain
    image datasets draw indices. Either way every random number comes from ``generator``,
    whose state the checkpoint saves.
    """
    if hasattr(dataset, "sample_images"):      # the library's datasets: no per-batch checks
        def next_batch():
            return dataset.sample_images(batch_size, generator)
    elif _is_ground_truth(dataset):
        def next_batch():
            return dataset.images_from_factors(dataset.sample_factors(batch_size, generator))
    else:
        n = len(dataset)

        def next_batch():
            idx = torch.randint(n, (batch_size,), generator=generator, device=generator.device)
            return dataset.images(idx)
    return next_batch


def _check_dataset(dataset, model_config) -> None:
    """Fail before training, not at step 0 inside a convolution, on a wrong dataset."""
    if not (hasattr(dataset, "images") and hasattr(dataset, "__len__")):
        raise TypeError(f"dataset must follow the bvae_lib.data protocol (images + len, and "
                        f"sample_factors + images_from_factors for ground-truth data), got "
                        f"{type(dataset).__name__}; wrap an image tensor in "
                        f"bvae_lib.data.TensorImages")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    x = dataset.images(torch.zeros(1, dtype=torch.long, device=getattr(dataset, "device", "cpu")))
    c, s = model_config.channels, model_config.image_size
    if tuple(x.shape[1:]) != (c, s, s):
        raise ValueError(f"dataset images have shape {tuple(x.shape[1:])} but the model expects "
                         f"({c}, {s}, {s}); set ModelConfig(channels={x.shape[1]}) or use "
                         f"another dataset")


# ---------------------------------------------------------------------------------------------
# Logging without synchronising
# ---------------------------------------------------------------------------------------------

class _Recorder:
    """Keeps each step's loss terms in a (log_every, width) buffer on the device.

    One row a step, filled with a single ``torch.cat(..., out=row)``; ``flush`` brings the window
    to the host in one transfer, finds the first non-finite value (so the error names the exact
    step and term), and averages the window.
    """

    def __init__(self, size: int):
        self.size = size
        self.buf = None
        self.rows = 0

    def _layout(self, terms: dict) -> None:
        # "loss" first, so that an error message names it first
        self.keys = sorted((k for k, v in terms.items() if isinstance(v, torch.Tensor)),
                           key=lambda k: k != "loss")
        self.slices, start = {}, 0
        for k in self.keys:
            n = terms[k].numel()
            self.slices[k] = (start, n, terms[k].dim() > 0)
            start += n
        ref = terms["loss"]
        self.buf = torch.empty(self.size, start, dtype=torch.float32, device=ref.device)

    @torch.no_grad()
    def record(self, terms: dict) -> None:
        if self.buf is None:
            self._layout(terms)
        torch.cat([terms[k].reshape(-1) for k in self.keys], out=self.buf[self.rows])
        self.rows += 1

    def flush(self, steps_done: int) -> dict:
        window = self.buf[:self.rows].cpu()           # the only device -> host copy
        first_step = steps_done - self.rows
        self.rows = 0
        bad = ~torch.isfinite(window)
        if bad.any():
            r = int(bad.any(dim=1).nonzero()[0])
            named = [f"{k}={window[r, s:s + n].tolist() if vec else window[r, s].item()}"
                     for k, (s, n, vec) in self.slices.items() if bad[r, s:s + n].any()]
            raise NonFiniteLossError(
                f"the loss became non-finite at step {first_step + r}: {', '.join(named)}.")
        mean = window.double().mean(dim=0)
        entry = {"step": steps_done}
        for k, (s, n, vec) in self.slices.items():
            entry[k] = mean[s:s + n].tolist() if vec else float(mean[s])
        return entry


def _append(history: dict, entry: dict) -> None:
    """Append one logged window. A run resumed under a library version whose objective logs
    a term the run's history lacks (or no longer logs one it has) keeps every list as long as
    ``history["step"]``: the missing values are None (null in history.json)."""
    n = len(history.get("step", []))
    for k, v in entry.items():
        if k not in history and n:
            history[k] = [None] * n
        history.setdefault(k, []).append(v)
    for k, values in history.items():
        if k not in entry:
            values.append(None)


def _to_float32(out: dict) -> dict:
    """Autocast outputs (bf16/fp16) -> fp32, so the objective's sums are computed in fp32."""
    def cast(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.float()
        if isinstance(v, (list, tuple)):
            return type(v)(cast(u) for u in v)
        return v
    return {k: cast(v) for k, v in out.items()}


def _has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())


def _check_bernoulli_targets(dataset) -> None:
    """A Bernoulli decoder needs targets in [0, 1]. The library's datasets guarantee it (binary
    renderings, checked files, TensorImages checks its tensor); any other dataset has its first
    batch checked here, once, instead of every batch on the device."""
    if isinstance(dataset, (DSprites, DSpritesFile, TensorImages)):
        return
    x = dataset.images(torch.arange(min(len(dataset), 64),
                                    device=getattr(dataset, "device", "cpu")))
    lo, hi = torch.aminmax(x.detach().float())
    if not (lo >= 0 and hi <= 1):
        raise ValueError(f"the dataset's images must have values in [0, 1] for a Bernoulli "
                         f"decoder, got values in [{float(lo):.3g}, {float(hi):.3g}] in its first "
                         f"images; rescale them to [0, 1] or use ModelConfig(decoder='gaussian')")


def _cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call, if there is one."""
    import shutil

    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which(
        "clang++")


class _Compiled:
    """``torch.compile(model)``, falling back to the eager model -- with a warning, once -- if
    compiling fails (no C++ compiler for the CPU backend, an unsupported platform). Compiling
    happens at the first call, so that is where a failure shows; a failure after a successful
    first call is a real error and is raised."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.fn, self.ok = model, torch.compile(model), False

    def __call__(self, x):
        if self.ok:
            return self.fn(x)
        try:
            # fallback_random: the compiled graph draws its reparameterisation noise from
            # torch's generator, as eager mode does, not from inductor's own: compiling
            # changes the rounding, not the random numbers (and resume stays bitwise)
            import torch._inductor.config as inductor_config

            with inductor_config.patch(fallback_random=True):
                out = self.fn(x)
        except Exception as e:  # noqa: BLE001 -- inductor raises many kinds of error
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training "
                          f"continues without it", UserWarning, stacklevel=3)
            self.fn, self.ok = self.model, True
            return self.model(x)
        self.ok = True
        return out


def _compiled(model: torch.nn.Module, device: torch.device):
    """The model's forward for ``TrainConfig(compile=True)``: compiled where it can be."""
    if device.type == "cpu" and _cxx_compiler() is None:
        warnings.warn("TrainConfig.compile=True, but torch.compile's CPU backend needs a C++ "
                      "compiler (g++ or clang++) and none was found; training without it",
                      UserWarning, stacklevel=3)
        return model
    return _Compiled(model)


# ---------------------------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------------------------

# Train-config fields that must not change when a run is resumed: changing them would make the
# continued run silently differ from an uninterrupted one.
_RESUME_FIXED = ("batch_size", "lr", "seed")


def _check_resumable(ckpt: dict, model_config, objective_config, config: TrainConfig) -> None:
    from bvae_lib.objectives import objective_config_to_dict

    where = ckpt["path"]
    diff = ckpt_lib.config_differences(ckpt["model_config"], dataclasses.asdict(model_config))
    if diff:
        raise ValueError(f"cannot resume {where}: it was trained with another model config "
                         f"({'; '.join(diff)}); use another out_dir for a new model")
    diff = ckpt_lib.config_differences(ckpt["objective_config"],
                                    objective_config_to_dict(objective_config))
    if diff:
        raise ValueError(f"cannot resume {where}: it was trained with another objective "
                         f"({'; '.join(diff)}); use another out_dir for a new objective")
    for name in _RESUME_FIXED:
        old = ckpt["train_config"].get(name)
        if old != getattr(config, name):
            raise ValueError(f"cannot resume {where}: {name}={getattr(config, name)!r} differs "
                             f"from the checkpoint's {name}={old!r}; keep it, or start a new "
                             f"run in another out_dir")
    if config.steps < ckpt["step"]:
        raise ValueError(f"cannot resume {where} to steps={config.steps}: the checkpoint is "
                         f"already at step {ckpt['step']}; pass steps >= {ckpt['step']}")


def _dataset_description(dataset) -> str:
    """``repr(dataset)`` without what may change between the sessions of one run: the device
    it was moved to and the memory address of a class without its own repr. A checkpoint
    records ``repr(dataset)`` (``extra["dataset"]``), so this also reads older checkpoints."""
    text = repr(dataset) if not isinstance(dataset, str) else dataset
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    return re.sub(r" on [a-z]+(:\d+)?(?=\)$)", "", text)


def _check_same_dataset(ckpt: dict, dataset) -> None:
    """A run continued on other data would silently become a different experiment."""
    old = ckpt.get("extra", {}).get("dataset")
    if not isinstance(old, str):      # written before checkpoints named their dataset
        return
    if _dataset_description(old) != _dataset_description(dataset):
        raise ValueError(f"cannot resume {ckpt['path']}: it was trained on "
                         f"{_dataset_description(old)}, not on {_dataset_description(dataset)}; "
                         f"resume it with the same dataset, or start a new run in another "
                         f"out_dir")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def train(model_config, objective_config, dataset, train_config: TrainConfig,
          out_dir: str | os.PathLike | None = None, resume: bool = False) -> TrainResult:
    """Train ``build_model(model_config)`` with ``build_objective(objective_config)`` on
    ``dataset`` for ``train_config.steps`` steps.

    With ``out_dir`` a checkpoint (``out_dir/checkpoint.pt``) and the history
    (``out_dir/history.json``) are written every ``checkpoint_every`` steps and at the end.
    ``resume=True`` continues the checkpoint in ``out_dir`` if there is one (and starts afresh
    if there is none); ``resume=False`` refuses to overwrite an existing run.
    """
    # About 70 lines on purpose: the set-up is one call per helper below, and the loop -- step,
    # record, log, checkpoint -- stays whole and in plain view.
    model_config, objective_config, config = _configs(model_config, objective_config,
                                                      train_config)
    device = pick_device(config.device)
    ckpt, ckpt_path = _existing_run(out_dir, resume, model_config, objective_config, config)
    step = _Step(model_config, objective_config, dataset, config, device, ckpt)
    dataset = _data_on_device(dataset, model_config, step.objective, device, ckpt, ckpt_path)
    generator = torch.Generator(device=torch.device(getattr(dataset, "device", "cpu")))
    generator.manual_seed(config.seed)
    step.next_batch = (step.objective.pair_sampler(dataset, config.batch_size, generator)
                       if step.pairs else _batch_sampler(dataset, config.batch_size, generator))
    start, history = _restore(ckpt, ckpt_path, step, generator, config.seed)
    clock = _RunClock(ckpt, ckpt_path, dataset, device, step)

    def save(done: int) -> Path:
        return ckpt_lib.save_checkpoint(
            ckpt_path, model=step.model, objective_config=objective_config, train_config=config,
            optimizer=step.optimizer, step=done, history=history, data_generator=generator,
            scaler=step.scaler, extra=clock.extra(), objective_state=step.objective_state())

    # -- the loop: step, record, and every log_every steps bring the terms to the host; at a
    # checkpoint, save only weights whose next step is finite (_diverged_at) ---------------------
    bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=not progress_enabled(config.progress))
    recorder = _Recorder(config.log_every)
    eta = _Eta(start, config.steps, clock.device_name) \
        if config.steps - start >= ETA_MIN_STEPS else None
    saved, saved_step = None, (start if ckpt is not None else None)
    step.model.train()
    clock.start()
    try:
        for i in range(start, config.steps):
            terms = step.losses(i)
            step.update(terms["loss"])
            recorder.record(terms)
            bar.update()
            done = i + 1
            if eta is not None:
                eta.tick(done)
            save_now = ckpt_path is not None and (done % config.checkpoint_every == 0
                                                  or done == config.steps)
            if done % config.log_every == 0 or done == config.steps or save_now:
                entry = recorder.flush(done)     # raises on NaN/Inf *before* any save
                _append(history, entry)
                bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items()
                                 if isinstance(v, float)}, refresh=False)
                if save_now:
                    bad = _diverged_at(done, step.losses, step.model, step.optimizer, generator,
                                       device, check_grads=step.scaler is None)
                    if bad:
                        raise NonFiniteLossError(bad)
                    saved, saved_step = save(done), done
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e} {_stopped(ckpt_path, saved_step)}") from None
    finally:
        bar.close()
    seconds = clock.seconds()
    if ckpt_path is not None and saved is None and ckpt is not None:
        saved = ckpt_path                        # resumed at steps == checkpoint step: no-op
    if step.channels_last:                       # hand back the usual layout: user code may
        step.model.to(memory_format=torch.contiguous_format)   # .view() what it returns
    step.model.eval()
    return TrainResult(model=step.model, history=history, step=config.steps, checkpoint=saved,
                       seconds=seconds, steps_run=config.steps - start,
                       batch_size=config.batch_size, device=device, precision=step.precision)


# ---------------------------------------------------------------------------------------------
# The loop's parts
# ---------------------------------------------------------------------------------------------

def _configs(model_config, objective_config, train_config):
    """The three configs as dataclasses (the first two may be given as dicts)."""
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    if isinstance(model_config, dict):
        model_config = ModelConfig(**model_config)
    if isinstance(objective_config, dict):
        objective_config = objective_config_from_dict(objective_config)
    return model_config, objective_config, train_config


def _existing_run(out_dir, resume: bool, model_config, objective_config,
                  config: TrainConfig) -> tuple[dict | None, Path | None]:
    """(the checkpoint to continue or None, the checkpoint path or None without out_dir)."""
    if out_dir is None:
        return None, None
    if not str(out_dir).strip():
        raise ValueError("out_dir is empty (it would mean the current directory); pass the "
                         "directory of the run, e.g. out_dir='runs/beta4'")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a directory; pass the directory "
                         f"of the run")
    ckpt_path = Path(out_dir) / ckpt_lib.CHECKPOINT_NAME
    if not ckpt_path.exists():
        return None, ckpt_path
    if not resume:
        raise ValueError(f"{out_dir} already holds a run ({ckpt_path}); pass resume=True "
                         f"(CLI: --resume) to continue it, or choose another out_dir")
    ckpt = ckpt_lib.load_checkpoint(ckpt_path)
    _check_resumable(ckpt, model_config, objective_config, config)
    return ckpt, ckpt_path


class _Step:
    """One optimisation step, with everything the config decides about it: the model (its
    initial or restored weights, on the device, in channels-last memory for convolutions), the
    objective, Adam, the arithmetic (:func:`precision`: autocast, and a gradient scaler for
    fp16) and ``torch.compile``. ``next_batch`` is set once the data are on the device."""

    def __init__(self, model_config, objective_config, dataset, config: TrainConfig,
                 device: torch.device, ckpt: dict | None):
        seed_everything(config.seed)             # the initial weights depend on the seed only
        self.model = model = build_model(model_config)
        self.objective = build_objective(objective_config, decoder=model_config.decoder)
        owns_parameters = hasattr(self.objective, "bind")   # e.g. FactorVAE's discriminator
        if owns_parameters:                      # built from the same seeded stream as the model
            self.objective.bind(model_config.latent_dim)
        size = getattr(objective_config, "dataset_size", None)
        if size is not None and hasattr(dataset, "__len__") and size != len(dataset):
            warnings.warn(f"objective_config.dataset_size={size} but the dataset has "
                          f"{len(dataset)} images; the total-correlation estimator assumes "
                          f"dataset_size = N", UserWarning, stacklevel=3)
        self.pairs = getattr(self.objective, "pairs", False)    # Dual-Swap: batches of pairs
        if self.pairs:
            self.objective.check_model(model_config, dataset)
        if ckpt is not None:
            ckpt_lib.load_weights(model, ckpt)
        model.to(device)
        if owns_parameters:
            if ckpt is not None:
                if "objective_state" not in ckpt:
                    raise ValueError(f"{ckpt['path']} holds no state for the objective's own "
                                     f"parameters (a FactorVAE discriminator); it cannot be "
                                     f"resumed with {type(self.objective).__name__}")
                self.objective.load_state_dict(ckpt["objective_state"])
            self.objective.to(device)
        # NHWC is what cuDNN's and oneDNN's fast convolution kernels want (1.1x on the CPU here)
        self.channels_last = config.channels_last is not False and _has_conv(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.precision = precision(config, device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        # fp16 underflows small gradients: they are scaled up before backward
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        if self.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("TrainConfig.amp=True on a CPU without bf16 instructions: bf16 is "
                          "emulated there and slower than fp32; leave amp=None (automatic)",
                          UserWarning, stacklevel=3)
        if config.compile and self.pairs:
            warnings.warn(f"TrainConfig.compile compiles the model's forward pass, which "
                          f"{type(self.objective).__name__} does not call (it encodes and "
                          f"decodes pairs); this run is not compiled", UserWarning, stacklevel=3)
        self.forward = _compiled(model, device) if config.compile and not self.pairs else model
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed shapes: pick the fastest conv once
        self.device, self.next_batch = device, None

    def losses(self, step: int) -> dict:
        """The loss terms of ``step``: draw its batch, run the model, apply the objective (in
        fp32 on fp32 copies of the outputs: sums over 4096 pixels lose too much in 16 bits)."""
        batch = self.next_batch()
        x, part = batch if self.pairs else (batch, None)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.pairs:                       # the objective runs the model (pairs, two stages)
            part = part.to(self.device, non_blocking=True)
            if self.amp_dtype is None:
                return self.objective.pair_terms(self.model, x, part, step)
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                return self.objective.pair_terms(self.model, x, part, step)
        if self.amp_dtype is None:
            return self.objective(self.forward(x), x, step)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            out = self.forward(x)
        return self.objective(_to_float32(out), x, step)

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if hasattr(self.objective, "update"):    # e.g. FactorVAE's discriminator step
            self.objective.update()

    def objective_state(self) -> dict | None:
        """The parameters the objective owns, for the checkpoint (None for most objectives)."""
        return self.objective.state_dict() if hasattr(self.objective, "state_dict") else None

    def settings(self) -> dict:
        """How the step computes, for the checkpoint (and a warning if a resume changes it)."""
        compiled = isinstance(self.forward, _Compiled) and self.forward.fn is not self.model
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compiled": compiled}


def _data_on_device(dataset, model_config, objective, device: torch.device,
                    ckpt: dict | None, ckpt_path: Path | None):
    """The dataset on the training device (moved once, not per batch), checked once; a run
    directory cleaned of what a killed process left."""
    if hasattr(dataset, "to") and not _same_device(getattr(dataset, "device", device), device):
        dataset = dataset.to(device)
    _check_dataset(dataset, model_config)
    if model_config.decoder == "bernoulli":      # Bernoulli targets in [0, 1]: checked once
        _check_bernoulli_targets(dataset)
        if hasattr(objective, "check_range"):    # here, not on the device at every step
            objective.check_range = False
    if ckpt is not None:
        _check_same_dataset(ckpt, dataset)
    if ckpt_path is not None:
        # Leftovers of a process killed mid-write (up to a checkpoint's size each), and a
        # history.json one entry short when the kill fell between the checkpoint's rename and the
        # history's: the checkpoint is the record, history.json its readable copy.
        ckpt_lib.remove_stale_temporaries(ckpt_path.parent)
        if ckpt is not None:
            ckpt_lib.write_json(ckpt_path.with_name(ckpt_lib.HISTORY_NAME), ckpt["history"])
    return dataset


def _restore(ckpt: dict | None, ckpt_path: Path | None, step: _Step,
             generator: torch.Generator, seed: int) -> tuple[int, dict]:
    """(first step, history) of the run: 0 and {} for a new one; for a resumed one the
    optimiser, the gradient scaler and the batch generator continue where they stopped."""
    if ckpt is None:
        return 0, {}
    start, history = ckpt["step"], ckpt["history"]
    step.optimizer.load_state_dict(ckpt["optimizer"])
    if step.scaler is not None and ckpt.get("scaler"):
        step.scaler.load_state_dict(ckpt["scaler"])
    if not ckpt_lib.set_rng_state(ckpt["rng"], generator):
        warnings.warn(f"{ckpt_path} was written on another kind of device; the batch "
                      f"generator is reseeded, so the continuation is not bitwise identical",
                      UserWarning, stacklevel=3)
        generator.manual_seed(seed + start)
    return start, history


class _RunClock:
    """Wall and CPU time summed over a run's sessions, the device and the step's settings: the
    ``extra`` a checkpoint carries for the zoo's manifests. A resume that computes differently
    (another precision, layout or compilation) is warned about: it rounds differently."""

    def __init__(self, ckpt: dict | None, ckpt_path: Path | None, dataset, device: torch.device,
                 step: _Step):
        prior = ckpt.get("extra", {}) if ckpt else {}
        self.prior_wall = float(prior.get("wall_seconds", 0.0))
        self.prior_cpu = float(prior.get("cpu_seconds", 0.0))
        self.continued_from = prior.get("continued_from", [])   # zoo.continue_run's records
        self.dataset, self.step = repr(dataset), step
        self.device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else f"{device.type} ({torch.get_num_threads()} threads)")
        now = step.settings()
        changed = {k: (prior[k], now[k]) for k in now if k in prior and prior[k] != now[k]}
        if changed:
            warnings.warn(f"{ckpt_path} was trained with "
                          + ", ".join(f"{k}={a!r}" for k, (a, b) in changed.items())
                          + "; this session uses "
                          + ", ".join(f"{k}={b!r}" for k, (a, b) in changed.items())
                          + ", so the continuation rounds differently from an uninterrupted run",
                          UserWarning, stacklevel=3)
        self.start()

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def extra(self) -> dict:
        return {"dataset": self.dataset, "device": self.device_name, **self.step.settings(),
                "wall_seconds": self.prior_wall + time.perf_counter() - self.t0,
                "cpu_seconds": self.prior_cpu + time.process_time() - self.c0,  # all threads
                **({"continued_from": self.continued_from} if self.continued_from else {})}


#: A run of at least this many steps announces, after its first few hundred, how long it will
#: take on this device (the chapters' CPU budgets are far below it, their GPU budgets above).
ETA_MIN_STEPS = 5_000


class _Eta:
    """Times steps ``start + 50 .. start + 250`` (after the first steps' one-off costs) and
    prints, once, the run's length and its expected duration on this device."""

    WARM, MEASURE = 50, 200

    def __init__(self, start: int, steps: int, device_name: str):
        self.start, self.steps, self.device_name = start, steps, device_name
        self.t = None

    def tick(self, done: int) -> None:
        if done == self.start + self.WARM:
            self.t = time.perf_counter()
        elif done == self.start + self.WARM + self.MEASURE and self.t is not None:
            rate = self.MEASURE / max(time.perf_counter() - self.t, 1e-9)
            left = (self.steps - done) / rate
            print(f"{self.steps - self.start:,} steps on {self.device_name}: "
                  f"{rate:,.0f} steps/s over steps {done - self.MEASURE:,}-{done:,}, so about "
                  f"{_duration(left + (done - self.start) / rate)} for the run "
                  f"({_duration(left)} from now)", flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _diverged_at(step: int, losses, model, optimizer, generator: torch.Generator,
                 device: torch.device, check_grads: bool) -> str | None:
    """Why the state after ``step`` steps must not be checkpointed, or None if it may be.

    The flush before a checkpoint checks the losses of the steps *before* it, computed from
    earlier weights; the weights about to be saved come from the last update and have not been
    run yet. If that update diverged, they hold NaN or give a non-finite loss, the checkpoint
    would be the "last good" one a user resumes from, and the resume would fail at once. So we
    compute the step the checkpoint would resume with -- its batch, its noise, its loss and
    gradients -- and save only if all of it is finite. Checking is cheaper than keeping a copy
    of the last verified state: one more forward/backward per checkpoint (every 5,000 steps by
    default), and no host synchronisation on the other steps. The probe runs on forked RNGs and
    a restored batch generator and its gradients are discarded, so training continues bitwise
    as without it. With fp16 loss scaling an overflowing gradient is routine (the scaler skips
    that step), so only the loss and the weights are checked then.
    """
    params = list(model.parameters())
    data_state = generator.get_state()
    forked = [device] if device.type in ("cuda", "mps") else []
    with torch.random.fork_rng(devices=forked, device_type=device.type if forked else None):
        terms = losses(step)
        if check_grads:
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
    generator.set_state(data_state)
    with torch.no_grad():
        names = sorted((k for k, v in terms.items() if isinstance(v, torch.Tensor)),
                       key=lambda k: k != "loss")        # "loss" first, as _Recorder names it
        checks = {k: torch.isfinite(terms[k]).all() for k in names}
        checks["weights"] = torch.stack([torch.isfinite(p).all() for p in params]).all()
        grads = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
        if check_grads and grads:
            checks["gradients"] = torch.stack(grads).all()
        flags = torch.stack(list(checks.values())).cpu().tolist()   # one device -> host copy
    optimizer.zero_grad(set_to_none=True)
    bad = [k for k, ok in zip(checks, flags) if not ok]
    if not bad:
        return None
    return (f"the weights after step {step} give non-finite {', '.join(bad)} at step {step} "
            f"(the update of step {step - 1} diverged); no checkpoint was written from them.")


def _stopped(ckpt_path: Path | None, saved_step: int | None) -> str:
    """The end of a NonFiniteLossError: what was kept, and what to do."""
    advice = ("Lower the learning rate, check the data range, or change the objective's "
              "hyperparameters, and start a new run")
    if ckpt_path is None:
        return f"Training stopped. {advice}."
    if saved_step is None:
        return f"Training stopped before its first checkpoint. {advice}."
    return (f"Training stopped; the last checkpoint, {ckpt_path} at step {saved_step}, is "
            f"intact. {advice} (resuming with the same settings repeats the same steps).")
