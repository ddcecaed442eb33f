"""Command line: ``python -m bvae_lib train|evaluate|traverse|zoo|book`` (also installed as
``bvae``).

Examples::

    python -m bvae_lib train --objective beta_vae --beta 4 --steps 2000 --out runs/beta4
    python -m bvae_lib train --out runs/beta4 --resume --steps 4000      # continue the run
    python -m bvae_lib evaluate runs/beta4 --metrics mig,beta_vae
    python -m bvae_lib traverse runs/beta4 --out runs/beta4/traversal.png

The model and objective flags are generated from the config dataclasses
(``bvae_lib.models.ModelConfig`` and the objectives' configs), so every hyperparameter of the
library is a flag and no default is written twice. Errors print one line, ``error: ...``, and
exit with status 2 (set ``BVAE_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from ._memory import keep_freed_buffers

__all__ = ["main", "build_parser"]

RUN_FILE = "run.json"          # the CLI's own record of a run: how to rebuild its dataset
DATASETS = ("dsprites", "dsprites-file", "mnist", "celeba")


# ---------------------------------------------------------------------------------------------
# Config dataclasses <-> flags
# ---------------------------------------------------------------------------------------------

def _objective_classes() -> dict:
    """name -> config class, for every objective config in bvae_lib.objectives."""
    from bvae_lib import objectives

    found = {}
    for obj in vars(objectives).values():
        if (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                and isinstance(getattr(obj, "name", None), str)):
            found[obj.name] = obj
    return found


def _metric_registry() -> dict:
    """bvae_lib.metrics.registry.REGISTRY (imported when needed: it pulls in torch and sklearn)."""
    from bvae_lib.metrics.registry import REGISTRY

    return REGISTRY


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(text: str, choices, flag: str) -> str:
    """``text`` as one of ``choices``, whichever of '-' and '_' it is spelt with: names are
    snake_case in Python (``beta_vae``) and people type flags with hyphens (``beta-vae``)."""
    key = str(text).strip().lower().replace("-", "_")
    for choice in choices:
        if choice.replace("-", "_") == key:
            return choice
    raise ValueError(f"{flag} must be one of {', '.join(choices)}, got {text!r}")


def _choice_type(choices, flag: str):
    """An argparse ``type`` accepting ``_choice`` spellings (argparse prints its error)."""
    def convert(text):
        try:
            return _choice(text, choices, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = flag.lstrip("-")
    return convert


def _field_choices() -> dict:
    """Config fields whose value is a name from a fixed list."""
    from bvae_lib import models, objectives

    return {"architecture": models.ARCHITECTURES, "decoder": models.DECODERS,
            "init": models.INITS, "estimator": objectives._ESTIMATORS}


def _metavar(default) -> str:
    return {bool: "BOOL", int: "N", float: "X", tuple: "K,K"}.get(type(default), "NAME")


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()                     # type: ignore[misc]
    return None


def _convert(text: str, default, flag: str):
    """Parse a flag's text with the type of the field's default value."""
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return low in ("1", "true", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(int(t) for t in text.replace(",", " ").split())
        choices = _field_choices().get(flag[2:].replace("-", "_"))
        if choices is not None:
            return _choice(text, choices, flag)
    except ValueError:
        if isinstance(default, str):
            raise
        kind = {bool: "true/false", int: "an integer", float: "a number",
                tuple: "comma-separated integers"}[type(default)]
        raise ValueError(f"{flag} expects {kind}, got {text!r}") from None
    return text


def _config_from_args(cls, args, fields_given: dict, base: dict | None = None, skip=()):
    """``cls(**base)`` with the given flags applied; flags of other configs are refused."""
    values = dict(base or {})
    own = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    for name, text in fields_given.items():
        if name not in own:
            continue
        current = values.get(name, _field_default(own[name]))
        values[name] = _convert(text, current if current is not None
                                else _field_default(own[name]), _flag(name))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
              if k in {f.name for f in dataclasses.fields(cls) if f.init}}
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bvae_lib",
        description="Train, evaluate and inspect beta-VAEs (bvae_lib).")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,evaluate,traverse,zoo,book}")
    _add_train(sub)
    _add_evaluate(sub)
    _add_traverse(sub)
    # zoo and book have their own subcommands (bvae_lib.zoo, bvae_lib.book); main() hands
    # them the rest of the command line. Listed here for --help.
    for name, text in (("zoo", "the shipped models: list | verify | export | train "
                               "(bvae zoo --help)"),
                       ("book", "the book's notebooks: execute | check (bvae book --help)")):
        sub.add_parser(name, help=text, add_help=False).add_argument(
            "rest", nargs=argparse.REMAINDER)
    return parser


#: What each numeric TrainConfig field means on the command line; the flags and their defaults
#: are generated from the dataclass (``steps`` has its own flag: its default depends on the run).
_TRAIN_HELP = {"batch_size": "batch size M (pairs for dual_swap)", "lr": "Adam learning rate",
               "seed": "random seed", "checkpoint_every": "steps between checkpoints",
               "log_every": "steps per history entry"}


def _train_flags() -> list[dataclasses.Field]:
    """TrainConfig's fields with a number as default: each is one --flag."""
    from bvae_lib.train import TrainConfig

    return [f for f in dataclasses.fields(TrainConfig)
            if type(_field_default(f)) in (int, float)]


def _add_train(sub) -> None:
    # Longer than ~60 lines but flat: one argument group per config (model, objective, data,
    # training), each flag one declaration, most generated from the dataclasses' fields.
    from bvae_lib.models import ModelConfig

    tr = sub.add_parser("train", help="train a model (or continue a run with --resume)",
                        description="Train a VAE on a dataset and write DIR/checkpoint.pt and "
                                    "DIR/history.json. With --resume and a larger --steps, "
                                    "continue the run in DIR exactly where it stopped.")
    tr.add_argument("--out", required=True, metavar="DIR", help="run directory")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in DIR (its configs are reused; flags given must agree)")
    g = tr.add_argument_group("model (bvae_lib.models.ModelConfig)")
    g.add_argument("--model", dest="architecture", metavar="ARCH",
                   help="architecture: burgess | higgins_mlp | locatello (default: "
                        f"{ModelConfig.architecture})")
    model_fields = []
    for f in dataclasses.fields(ModelConfig):
        if f.name == "architecture":
            continue
        model_fields.append(f.name)
        g.add_argument(_flag(f.name), dest="m_" + f.name, metavar=_metavar(_field_default(f)),
                       help=f"default: {_field_default(f)!r}")

    objectives = _objective_classes()
    g = tr.add_argument_group("objective (bvae_lib.objectives)")
    g.add_argument("--objective", type=_choice_type(sorted(objectives), "--objective"),
                   metavar="NAME",
                   help=f"one of {', '.join(sorted(objectives))}, or spelt with '-' (default: "
                        f"{_default_objective(objectives)})")
    owners: dict[str, list[str]] = {}
    metavars: dict[str, str] = {}
    for name, cls in sorted(objectives.items()):
        for f in dataclasses.fields(cls):
            if f.init:
                owners.setdefault(f.name, []).append(f"{name}={_field_default(f)!r}")
                metavars.setdefault(f.name, _metavar(_field_default(f)))
    for field_name, used_by in owners.items():
        g.add_argument(_flag(field_name), dest="o_" + field_name, metavar=metavars[field_name],
                       help="default: " + ", ".join(used_by))

    g = tr.add_argument_group("data")
    g.add_argument("--dataset", type=_choice_type(DATASETS, "--dataset"), metavar="NAME",
                   help="dsprites (procedural, the default), dsprites-file (official .npz, give "
                        "--data), mnist or celeba (torchvision; --data is their root)")
    g.add_argument("--data", metavar="PATH", help="file or root directory of the dataset")
    g.add_argument("--download", action="store_true", help="let torchvision download MNIST/CelebA")

    g = tr.add_argument_group("training (bvae_lib.train.TrainConfig)")
    g.add_argument("--steps", type=int, metavar="N",
                   help="total steps of the run (default: with --resume the run's own target; "
                        "otherwise budget(cpu=2000), i.e. 300,000 on a GPU; env BVAE_STEPS "
                        "overrides)")
    for f in _train_flags():
        default = _field_default(f)
        g.add_argument(_flag(f.name), dest=f.name, type=type(default),
                       metavar=_metavar(default),
                       help=f"{_TRAIN_HELP.get(f.name, f.name)} (default: {default:g})")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                   help="mixed precision (bf16; fp16 on CUDA without bf16). auto (default): on "
                        "CUDA and on CPUs with bf16 instructions, fp32 elsewhere")
    g.add_argument("--no-amp", action="store_true", help="the same as --amp off")
    g.add_argument("--no-channels-last", action="store_true",
                   help="keep the NCHW memory layout (default: channels-last for conv models)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (CUDA; the CPU needs a C++ compiler). Compiling "
                        "takes ~30-60 s, worth it for long runs")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train, model_fields=model_fields, objective_fields=list(owners))


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="score a trained model with disentanglement metrics",
                        description="Score the model of a run on dSprites with bvae_lib.metrics "
                                    "and print the scores as JSON.")
    ev.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    metric_names = tuple(_metric_registry())
    ev.add_argument("--metrics", default=",".join(metric_names),
                    help=f"comma-separated, from {', '.join(metric_names)} (default: all)")
    ev.add_argument("--data", metavar="NPZ", help="official dSprites .npz (default: the "
                                                  "procedural replica)")
    ev.add_argument("--seed", type=int, default=0, help="random seed of the metrics")
    ev.add_argument("--fast", action="store_true",
                    help="about 50x fewer images than the papers' sample sizes (a CPU check, "
                         "not a number to report)")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    ev.add_argument("--out", metavar="JSON", help="also write the scores to this file")
    ev.set_defaults(func=_cmd_evaluate)


def _add_traverse(sub) -> None:
    tv = sub.add_parser("traverse", help="write a latent-traversal figure",
                        description="Decode a dSprites image while moving one latent at a time "
                                    "and save the grid (one row a latent).")
    tv.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    tv.add_argument("--out", required=True, metavar="FILE", help="image file (.png, .pdf, ...)")
    tv.add_argument("--seed", type=int, default=0, help="picks the image to traverse")
    tv.add_argument("--limit", type=float,
                    help="traverse each latent over [-limit, limit] (default: "
                         "bvae_lib.viz.TRAVERSAL_LIMIT)")
    tv.add_argument("--num", type=int, default=9, help="images per row (default 9)")
    tv.set_defaults(func=_cmd_traverse)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _given(args, prefix: str, names) -> dict:
    return {n: getattr(args, prefix + n) for n in names if getattr(args, prefix + n) is not None}


def _make_dataset(name: str, data: str | None, download: bool = False):
    from bvae_lib import data as data_lib

    if name == "dsprites":
        return data_lib.DSprites()
    if name == "dsprites-file":
        if not data:
            raise ValueError("--dataset dsprites-file needs --data PATH to the official .npz")
        return data_lib.DSpritesFile(data)
    if name == "mnist":
        return data_lib.load_mnist(data or "data", download=download)
    if name == "celeba":
        return data_lib.load_celeba(data or "data", download=download)
    raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {name!r}")


def _train_config(args, train_base: dict, resuming: bool):
    """The run's TrainConfig: a flag given, else the resumed run's own value, else the default."""
    from bvae_lib import train as train_lib

    if args.steps is not None:
        steps = args.steps
    elif resuming:
        steps = train_base.get("steps")   # "continues exactly where it stopped": its own target
    else:
        steps = train_lib.budget(cpu=2_000)
    numbers = {}
    for f in _train_flags():
        given = getattr(args, f.name)
        numbers[f.name] = given if given is not None else train_base.get(f.name,
                                                                         _field_default(f))
    return train_lib.TrainConfig(
        steps=steps, **numbers, device=args.device,
        amp=False if args.no_amp else {"auto": None, "on": True, "off": False}[args.amp],
        channels_last=False if args.no_channels_last else None,
        compile=args.compile, progress=False if args.no_progress else None)


def _cmd_train(args) -> int:
    from bvae_lib import checkpoint as ckpt_lib
    from bvae_lib import train as train_lib
    from bvae_lib.models import ModelConfig

    out = _output_path(args.out, "--out", directory=True)
    run_file = out / RUN_FILE
    existing = out / ckpt_lib.CHECKPOINT_NAME
    resuming = args.resume and existing.exists()

    model_given = _given(args, "m_", args.model_fields)
    if args.architecture is not None:
        from bvae_lib.models import ARCHITECTURES
        model_given["architecture"] = _choice(args.architecture, ARCHITECTURES, "--model")
    objective_given = _given(args, "o_", args.objective_fields)

    if resuming:
        # The run's own configs are the defaults; flags given on the command line override them
        # and train() refuses the resume if they then differ from the checkpoint.
        ckpt = ckpt_lib.load_checkpoint(existing)
        model_base, objective_base = ckpt["model_config"], dict(ckpt["objective_config"])
        train_base = ckpt["train_config"]
        run = _read_run_file(run_file) if run_file.exists() else {}
    else:
        model_base, objective_base, train_base, run = {}, None, {}, {}

    dataset_name = args.dataset or run.get("dataset", "dsprites")
    if dataset_name == "celeba" and not resuming:
        # colour images in [0, 1]: three channels and a Gaussian decoder unless told otherwise
        model_given.setdefault("channels", "3")
        model_given.setdefault("decoder", "gaussian")
    model_config = _config_from_args(ModelConfig, args, model_given, model_base)
    objective_config = _objective_config(args, objective_given, objective_base)

    train_config = _train_config(args, train_base, resuming)
    data_path = args.data if args.data is not None else run.get("data")
    if resuming and run and (dataset_name, data_path) != (run.get("dataset"), run.get("data")):
        raise ValueError(f"cannot resume {out}: it was trained on --dataset {run.get('dataset')} "
                         f"--data {run.get('data')}, not {dataset_name} {data_path}")
    dataset = _make_dataset(dataset_name, data_path, args.download)

    if args.resume and not resuming:
        print(f"no checkpoint in {out}: starting a new run", file=sys.stderr)
    ckpt_lib.remove_stale_temporaries(out, (RUN_FILE,))
    if not existing.exists():
        ckpt_lib.write_json(run_file, {"dataset": dataset_name, "data": data_path})
    result = train_lib.train(model_config, objective_config, dataset, train_config,
                             out_dir=out, resume=args.resume)
    last = {k: v[-1] for k, v in result.history.items() if v and isinstance(v[-1], float)}
    print(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint),
                      "images_per_second": round(result.images_per_second, 1), **last}))
    return 0


def _objective_config(args, given: dict, base: dict | None):
    """The objective config of a run: the --objective named (default beta_vae), or the resumed
    run's own, with the flags given; a flag the objective does not have is refused."""
    from bvae_lib.objectives import objective_config_from_dict

    objectives = _objective_classes()
    if base is not None and args.objective in (None, base.get("name")):
        cls = objectives[base["name"]]
        values = dataclasses.asdict(objective_config_from_dict(base))
    else:
        name = args.objective or _default_objective(objectives)
        cls, values = objectives[name], {}
    unknown = [n for n in given if n not in {f.name for f in dataclasses.fields(cls)}]
    if unknown:
        own = [_flag(f.name) for f in dataclasses.fields(cls) if f.init]
        raise ValueError(f"{', '.join(_flag(n) for n in unknown)} is not a parameter of the "
                         f"objective {cls.name} (its parameters: {', '.join(own) or 'none'})")
    return _config_from_args(cls, args, given, values)


def _output_path(text: str, flag: str, directory: bool = False, example: str = "") -> Path:
    """The path of a flag that names something to write, refused when it is empty (which would
    silently mean the current directory) or the wrong kind of thing."""
    if not str(text).strip():
        what = "a directory" if directory else "a file name"
        raise ValueError(f"{flag} is empty; pass {what} to write to")
    path = Path(text)
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; pass the run's directory")
    if not directory and path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; pass a file name"
                         + (f", e.g. {path / example}" if example else ""))
    return path


def _read_run_file(path: Path) -> dict:
    try:
        run = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it records the run's dataset as "
                         f'{{"dataset": NAME, "data": PATH or null}}: fix it, or delete it and '
                         f"pass --dataset/--data again") from e
    if not isinstance(run, dict):
        raise ValueError(f"{path} must hold a JSON object such as "
                         f'{{"dataset": "dsprites", "data": null}}, got {type(run).__name__}')
    return run


def _default_objective(objectives: dict) -> str:
    from bvae_lib.objectives import BetaVAEConfig

    return BetaVAEConfig.name if BetaVAEConfig.name in objectives else sorted(objectives)[0]


def _cmd_evaluate(args) -> int:
    from bvae_lib import checkpoint as ckpt_lib
    from bvae_lib import data as data_lib
    from bvae_lib.train import pick_device

    registry = _metric_registry()
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        names = [_choice(m, tuple(registry), "--metrics") for m in names]
    except ValueError:
        names = []
    if not names:
        raise ValueError(f"--metrics must be a comma-separated list from {', '.join(registry)}, "
                         f"got {args.metrics!r}")
    if args.out is not None:
        _output_path(args.out, "--out", example="scores.json")
    device = pick_device(args.device)
    model = ckpt_lib.load_model(args.run, device=device)
    if model.config.channels != 1 or model.config.image_size != 64:
        raise ValueError(f"{args.run}: the metrics need a dSprites model (1 x 64 x 64 images), "
                         f"this one takes {model.config.channels} x {model.config.image_size}^2")
    dataset = data_lib.DSpritesFile(args.data) if args.data else data_lib.DSprites(device)
    from bvae_lib.metrics.registry import to_json

    scores = {}
    for name in names:
        metric = registry[name]
        sizes = metric.fast if args.fast else {}     # else the metric's (the papers') sizes
        # model.representation: posterior means, no gradients, images moved to the model
        result = metric.function(model.representation, dataset, seed=args.seed, **sizes)
        scores[name] = to_json(result)
    objective = ckpt_lib.load_checkpoint(args.run)["objective_config"]
    if objective.get("name") == "dual_swap":     # a code cut into one part per factor
        from bvae_lib.metrics import swap_accuracy
        from bvae_lib.objectives import build_objective
        from bvae_lib.viz import decode_images

        parts = build_objective(objective).parts(dataset.factor_names)
        result = swap_accuracy(model.representation, lambda z: decode_images(model, z),
                               dataset, parts, num_pairs=100 if args.fast else 500,
                               seed=args.seed)
        scores["swap"] = to_json(result)
    text = json.dumps(scores, indent=1)
    print(text)
    if args.out:
        ckpt_lib.write_json(args.out, scores)
    return 0


def _cmd_traverse(args) -> int:
    import torch

    from bvae_lib import checkpoint as ckpt_lib
    from bvae_lib.data import DSprites
    from bvae_lib.viz import TRAVERSAL_LIMIT, plot_traversal

    if args.limit is None:
        args.limit = TRAVERSAL_LIMIT
    if args.num < 2 or not (math.isfinite(args.limit) and args.limit > 0):
        raise ValueError(f"--num must be >= 2 and --limit a finite number > 0, got {args.num} "
                         f"and {args.limit}")
    out = _output_path(args.out, "--out", example="traversal.png")
    if out.suffix == "":
        out = out.with_name(out.name + ".png")   # what savefig would write: say so
    model = ckpt_lib.load_model(args.run)
    # x[0] is traversed; the whole batch ranks the latents by their mean KL (bvae_lib.viz)
    x, _ = DSprites().sample(64, torch.Generator().manual_seed(args.seed))
    if model.config.channels != x.shape[1]:
        raise ValueError(f"{args.run}: traversals start from dSprites images (1 channel) but "
                         f"the model takes {model.config.channels} channels")
    fig = plot_traversal(model, x, n_steps=args.num, limit=args.limit)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits 2 on a wrong flag).
    ``zoo ...`` and ``book ...`` run ``python -m bvae_lib.zoo`` / ``python -m bvae_lib.book``
    (which stay as aliases) under the same error policy."""
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_buffers()                 # training and scoring reuse their buffers (_memory)
    if argv and argv[0] in ("zoo", "book"):
        import importlib

        module = importlib.import_module(f"bvae_lib.{argv[0]}")
        return _guarded(lambda: module.main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    return _guarded(lambda: args.func(args))


def _guarded(run) -> int:
    """The command line's one error policy: a known error prints one line, ``error: ...``, and
    exits 2; an interrupt says the last checkpoint is intact; BVAE_DEBUG=1 shows tracebacks."""
    from bvae_lib.train import NonFiniteLossError

    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is intact; continue with --resume)",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, NonFiniteLossError, RuntimeError, ImportError) as e:
        if os.environ.get("BVAE_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug of ours: still one line, and how to report it
        if os.environ.get("BVAE_DEBUG"):
            raise
        message = " ".join(str(e).split())
        print(f"error: unexpected {type(e).__name__}{': ' + message if message else ''} "
              f"(a bug in bvae_lib: rerun with BVAE_DEBUG=1 for the traceback and report it)",
              file=sys.stderr)
        return 2
