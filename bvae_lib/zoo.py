"""Pretrained models shipped with the book, each with a manifest that says how it was made.

A shipped model is a folder ``bvae_lib/pretrained/NAME/`` with two files:

``weights.pt``
    plain data for ``torch.load(weights_only=True)``: the model config and the weights in half
    precision (a Burgess model is ~0.5 M parameters, so ~1 MB);
``manifest.json``
    the exact command that trained it, its model / objective / training configs, the seed,
    steps, device, wall time, library and torch versions, and the metrics *computed from the
    shipped half-precision weights* with the settings recorded next to them; and the run's
    training history (``history``: the loss terms averaged over each log window, with
    ``kl_per_latent``), so the course of training can be read without the run directory.

``python -m bvae_lib.zoo export RUN --name NAME --command "..."`` writes both from a training run
(a directory written by ``python -m bvae_lib train``); ``python -m bvae_lib.zoo verify``
recomputes every recorded metric from the shipped weights. In Python::

    from bvae_lib import zoo
    zoo.available()                 # ['beta1', 'beta4', ...]
    model = zoo.load("beta4")       # eval mode, float32, on the CPU
    zoo.manifest("beta4")["metrics"]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._memory import keep_freed_buffers
from ._validate import is_int
from .metrics.registry import REGISTRY

__all__ = ["PRETRAINED_DIR", "METRIC_SETTINGS", "RECIPES", "available", "manifest", "load",
           "export", "continue_run", "evaluate", "verify", "train_command", "train_zoo",
           "STOP_EARLY", "run_length",
           "showcase", "showcase_record", "PROMISES", "Promise", "promise"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WEIGHTS_NAME, MANIFEST_NAME = "weights.pt", "manifest.json"
FORMAT = "bvae_lib.pretrained"

#: The metrics recorded in every manifest, with their sample sizes: the ``zoo`` sizes of
#: ``bvae_lib.metrics.registry`` (smaller than the papers', so that `verify` and the test that
#: recomputes them run in about a minute; the sizes are written into each manifest next to the
#: scores). MIG uses disentanglement_lib's own defaults.
METRIC_SETTINGS = {name: dict(m.zoo) for name, m in REGISTRY.items() if m.zoo is not None}
METRIC_SEED = 0

#: How each shipped model is trained: (description, the ``python -m bvae_lib train`` arguments
#: that make it that model). ``{steps}`` is the run's length: JointVAE's capacities rise over the
#: whole run, as in Dupont 2018's dSprites setting (300,000 steps, gamma 150, C_z 0 -> 40 nats,
#: C_c 0 -> 1.1 nats, lr 5e-4); the annealed model's over 100,000 steps whatever the run's
#: length (Burgess et al. 2018: gamma 1000, C 0 -> 25 nats over 100,000 iterations). The beta-VAE
#: family uses PyTorch's initialisation and lr 1e-3: short pilots of beta = 4 on this CPU aligned
#: its latents with position and scale with it, and rotated them with He initialisation at lr
#: 1e-3 and 1e-4 (chapter 8 shows the pilots). FactorVAE takes the same recipe, so that it is
#: compared with beta_tcvae at equal training; gamma = 10 is the smallest of Kim & Mnih's dSprites
#: sweep {10, ..., 100} (its discriminator keeps the paper's Adam, lr 1e-4, betas (0.5, 0.9)).
RECIPES = {
    "beta1": ("beta-VAE, beta = 1 (the VAE)",
              "--init pytorch --objective beta_vae --beta 1 --lr 1e-3"),
    "beta4": ("beta-VAE, beta = 4",
              "--init pytorch --objective beta_vae --beta 4 --lr 1e-3"),
    "beta16": ("beta-VAE, beta = 16 (chapter 4's other end)",
               "--init pytorch --objective beta_vae --beta 16 --lr 1e-3"),
    "beta_tcvae": ("beta-TCVAE (MSS), beta = 4: beta4's recipe with the TC-only penalty",
                   "--init pytorch --objective beta_tcvae --beta 4 --estimator mss --lr 1e-3"),
    "annealed": ("capacity-annealed beta-VAE, gamma = 1000, C 0 -> 25 nats over 100,000 steps",
                 "--init he --objective annealed_vae --gamma 1000 --capacity-max 25 "
                 "--capacity-steps 100000 --lr 5e-4"),
    "joint_vae": ("JointVAE, 6 Gaussian latents + one 3-way categorical, gamma = 150, C_z 0 -> 40 "
                  "and C_c 0 -> 1.1 nats over the run",
                  "--init he --objective joint_vae --latent-dim 6 --categorical-dims 3 "
                  "--gamma 150 --cont-capacity-max 40 --disc-capacity-max 1.1 "
                  "--capacity-steps {steps} --lr 5e-4"),
    "factor_vae": ("FactorVAE, gamma = 10: beta4's recipe (init, lr) with the discriminator's TC "
                   "penalty in place of beta",
                   "--init pytorch --objective factor_vae --gamma 10 --lr 1e-3"),
    "dual_swap": ("Dual-Swap Disentangling, one part of 2 latents per dSprites factor, 10% of the "
                  "pairs labelled; 32 pairs (64 images) a step",
                  "--init he --objective dual_swap --latent-dim 10 --part-size 2 "
                  "--supervision 0.1 --lr 5e-4 --batch-size 32"),
}
#: The arguments every zoo run shares: the papers' batch, one seed, a checkpoint every 2,500 steps
#: (a recipe that names its own --batch-size keeps it: Dual-Swap counts pairs, 2 images each).
RECIPE_COMMON = "--batch-size 64 --seed 0 --checkpoint-every 2500 --log-every 500 --no-progress"
#: The length of the CPU runs, and the papers' (Burgess et al. 2018; Dupont 2018). Dupont's
#: released dSprites model (github.com/Schlumberger/joint-vae, trained_models/dsprites/
#: specs.json) ramps both capacities over 300,000 iterations at batch 64 and lr 5e-4.
CPU_STEPS, PAPER_STEPS = 100_000, 300_000
#: Recipes that stop before the run's length, at the step where their code had stopped changing:
#: ``{name: (steps, why)}``. A large beta converges early; its steps are better spent on the
#: models still learning. Nothing in these recipes depends on the run's length (constant lr, no
#: ramp), so a run stopped at that step is the same run as one launched for that many steps.
STOP_EARLY = {
    "beta16": (40_000, "its code was set by step 5,000: the same three latents active from then "
                       "on, the KL of each moving by under 0.05 nats between steps 5,000 and "
                       "40,000, while the reconstruction improved by under 1% per 5,000 steps (the "
                       "manifest's history holds the numbers)"),
}


def run_length(name: str, steps: int = CPU_STEPS) -> int:
    """The steps zoo model ``name`` trains for in a run of ``steps`` (see :data:`STOP_EARLY`)."""
    if name not in RECIPES:
        raise ValueError(f"no zoo recipe named {name!r}; the recipes are {sorted(RECIPES)}")
    return min(steps, STOP_EARLY[name][0]) if name in STOP_EARLY else steps


def _folder(name: str, root: Path | None = None) -> Path:
    root = Path(root) if root is not None else PRETRAINED_DIR
    folder = root / name
    if not (folder / MANIFEST_NAME).is_file():
        have = ", ".join(available(root)) or "none"
        raise ValueError(f"no pretrained model named {name!r} (available: {have})")
    return folder


def available(root: str | Path | None = None) -> list[str]:
    """Names of the shipped models."""
    root = Path(root) if root is not None else PRETRAINED_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def manifest(name: str, root: str | Path | None = None) -> dict:
    """The manifest of a shipped model (see the module docstring)."""
    path = _folder(name, root) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not valid JSON ({e}); the shipped file is damaged: "
                         f"restore it from the repository") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object (the manifest of {name!r}), got "
                         f"{type(data).__name__}; restore it from the repository")
    return data


def load(name: str, device: str | torch.device | None = None, root: str | Path | None = None):
    """The shipped model ``name``, rebuilt from its config, in eval mode, float32."""
    from bvae_lib.checkpoint import model_from_state

    path = _folder(name, root) / WEIGHTS_NAME
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable weights file ({type(e).__name__}); the "
                         f"shipped file is damaged: restore it from the repository") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bvae_lib pretrained weights file")
    state = blob.get("state_dict")
    if not (isinstance(blob.get("model_config"), dict) and isinstance(state, dict)
            and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{path} is damaged: expected 'model_config' (a dict) and 'state_dict' "
                         f"(names -> tensors); restore it from the repository")
    return model_from_state(blob["model_config"], state, str(path), device=device)


#: Swap accuracy (``bvae_lib.metrics.swap_accuracy``) joins the manifest of a model whose code
#: has one part per factor (Dual-Swap), with this many pairs per factor.
SWAP_SETTINGS = {"num_pairs": 500}


def _parts(objective_config: dict | None, dataset) -> dict | None:
    """{factor: latents} of a Dual-Swap model's code, None for any other objective."""
    from bvae_lib.objectives import build_objective

    if not objective_config or objective_config.get("name") != "dual_swap":
        return None
    return build_objective(objective_config).parts(dataset.factor_names)


def evaluate(model, settings: dict | None = None, seed: int = METRIC_SEED,
             objective_config: dict | None = None) -> dict:
    """The manifest's metrics of ``model`` on the procedural dSprites, with their settings
    (and swap accuracy for a Dual-Swap model, whose ``objective_config`` names its parts)."""
    from bvae_lib.data import DSprites
    from bvae_lib.metrics import swap_accuracy
    from bvae_lib.viz import decode_images

    device = next(model.parameters()).device
    dataset = DSprites(device)
    parts = _parts(objective_config, dataset)
    if settings is None:
        settings = {**METRIC_SETTINGS, **({"swap": SWAP_SETTINGS} if parts else {})}
    out = {}
    for name, kwargs in settings.items():
        if name == "swap":
            result = swap_accuracy(model.representation, lambda z: decode_images(model, z),
                                   dataset, parts, seed=seed, **kwargs)
            out[name] = {"score": result.mean, "settings": {**kwargs, "seed": seed},
                         "per_factor": dict(zip(result.factors, result.accuracy.tolist()))}
            continue
        result = REGISTRY[name].function(model.representation, dataset, seed=seed, **kwargs)
        entry = {"score": float(result.score), "settings": {**kwargs, "seed": seed}}
        if name == "mig":
            entry["gaps"] = {f: float(g) for f, g in zip(result.factors, result.gaps)}
        if name in ("beta_vae", "factor_vae"):
            entry["train_accuracy"] = float(result.train_accuracy)
        out[name] = entry
    return out


#: Images per forward pass in :func:`showcase` (the metrics' encoding batch).
SHOWCASE_BATCH = 256


def showcase(model, num_images: int = 4_000, seed: int = 2026,
             parts: dict | None = None) -> dict:
    """What a shipped model must show, measured on ``num_images`` held-out dSprites images
    (drawn with ``seed``; training never sees a fixed set, so any draw is held out):
    reconstruction (nats per image, from the posterior means), active latents (mean KL > 0.1
    nats), the fraction of reconstructions that draw the true shape
    (:func:`bvae_lib.metrics.shape_in_reconstruction`), each factor's best latent with its NMI
    and gap (:func:`bvae_lib.metrics.factor_alignment`), MIG (their mean gap), for a JointVAE
    the matched accuracy of its first categorical latent on shape, the fraction of images each
    category takes, and its KL to the uniform prior split into the information I(n; c) and the
    marginal confidence KL(q_bar || U), and for a code with ``parts``
    (Dual-Swap: an autoencoder, whose log-variances and KL mean nothing) the swap accuracy of
    each part instead of the KL and the active latents."""
    from bvae_lib import metrics
    from bvae_lib.data import DSprites
    from bvae_lib.distributions import categorical_kl_split, gaussian_kl
    from bvae_lib.objectives import reconstruction_loss

    device = next(model.parameters()).device
    dataset = DSprites(device)
    x, v = dataset.sample(num_images, torch.Generator(device).manual_seed(seed))
    model.eval()
    with torch.no_grad():
        # eval mode: z = mu, categories = argmax (Dupont's code); in batches of SHOWCASE_BATCH,
        # whose activations stay in the cache and the heap (4,000 at once: 0.5 GB a layer)
        chunks = [model(x[i:i + SHOWCASE_BATCH]) for i in range(0, len(x), SHOWCASE_BATCH)]
        mu, logvar, recon = (torch.cat([c[k] for c in chunks]) for k in ("mu", "logvar", "recon"))
        logits = None
        if chunks[0].get("logits") is not None:
            logits = [torch.cat([c["logits"][j] for c in chunks])
                      for j in range(len(chunks[0]["logits"]))]
        nats = float(reconstruction_loss(recon, x, model.config.decoder))
        kl = gaussian_kl(mu, logvar).mean(0).cpu().double().numpy()
        drawn = metrics.shape_in_reconstruction(torch.sigmoid(recon).cpu(), v.cpu(), dataset)
    align = metrics.factor_alignment(mu.cpu().numpy(), v.cpu().numpy(), dataset.factor_names)
    out = {"images": num_images, "seed": seed, "recon_nats": round(nats, 2),
           "active_latents": int((kl > 0.1).sum()), "kl_per_latent": kl.round(3).tolist(),
           "shape_in_reconstruction": round(drawn, 4), "mig": round(float(align.gap.mean()), 4),
           "factors": {name: {"latent": int(j), "nmi": round(float(n), 4), "gap": round(float(g), 4)}
                       for name, j, n, g in zip(align.factors, align.best, align.best_nmi,
                                                align.gap)},
           # each latent's own best factor (a factor's best latent can be an inactive one whose
           # near-constant mean the histogram estimator bins over its own tiny range)
           "latents": [{"factor": align.factors[int(np.argmax(row))],
                        "nmi": round(float(row.max()), 4)} for row in align.nmi]}
    if parts is not None:
        from bvae_lib.viz import decode_images

        for key in ("active_latents", "kl_per_latent"):
            del out[key]
        swap = metrics.swap_accuracy(model.representation, lambda z: decode_images(model, z),
                                     dataset, parts, num_pairs=500, seed=seed)
        out["swap_accuracy"] = {f: round(float(a), 4) for f, a in zip(swap.factors,
                                                                      swap.accuracy)}
    if logits is not None:
        k = logits[0].shape[1]
        category = logits[0].argmax(1).cpu().numpy()
        shape = v[:, dataset.factor_names.index("shape")].cpu().numpy()
        out["category_shape_accuracy"] = round(metrics.matched_accuracy(
            category, shape, num_categories=k, num_classes=3).accuracy, 4)
        out["category_usage"] = (np.bincount(category, minlength=k) / len(category)).round(4).tolist()
        # the discrete KL to the uniform prior splits into the information the category carries
        # about the image, I(n; c), and the marginal confidence KL(q_bar || U_k)
        info, marginal = categorical_kl_split(torch.softmax(logits[0].double(), 1).cpu())
        out["category_information"] = round(float(info), 4)
        out["category_marginal_kl"] = round(float(marginal), 4)
    return out


def showcase_record(model: str, num_images: int = 4_000) -> dict:
    """:func:`showcase` of a run directory / checkpoint (with its configs and step) or of a
    shipped model (with its manifest's command and step)."""
    from bvae_lib.checkpoint import load_checkpoint, load_model

    from bvae_lib.data import DSprites

    if model in available():
        info = manifest(model)
        parts = _parts(info.get("objective_config"), DSprites())
        return {"source": "zoo", "command": info["command"], "step": info["steps"],
                "measures": showcase(load(model), num_images, parts=parts)}
    ckpt = load_checkpoint(model)
    parts = _parts(ckpt["objective_config"], DSprites())
    return {"source": "run", "step": ckpt["step"], "model_config": ckpt["model_config"],
            "objective_config": ckpt["objective_config"],
            "train_config": {k: ckpt["train_config"].get(k) for k in ("batch_size", "lr", "seed")},
            "training": {k: ckpt.get("extra", {}).get(k)
                         for k in ("device", "precision", "channels_last", "wall_seconds",
                                   "cpu_seconds", "continued_from")},
            "measures": showcase(load_model(model), num_images, parts=parts)}


#: What the shipped models must show -- the book's claims about its zoo, with their thresholds
#: (each measured by :func:`showcase`): ``{key: (models it needs, claim)}``. :func:`promise`
#: measures one; the test suite and chapter 8 go through all of them.
PROMISES = {
    **{f"shape:{name}": ((name,), f"{name}: the true shape is drawn in >= 90% of reconstructions")
       for name in ("beta1", "beta4", "beta16", "beta_tcvae", "annealed", "joint_vae",
                    "factor_vae", "dual_swap")},
    "beta4:axes": (("beta4",), "beta4: x, y and scale each on a latent of its own, "
                               "NMI >= 0.5 and gap >= 0.3"),
    "beta4:orientation": (("beta4",), "beta4: a latent with NMI >= 0.1 with orientation"),
    "mig:beta": (("beta1", "beta4"), "MIG of beta4 > MIG of beta1 (a larger beta, a higher MIG)"),
    "mig:tc": (("beta4", "beta_tcvae"), "MIG of beta_tcvae >= MIG of beta4 at equal beta "
                                        "(Chen et al.)"),
    "annealed:order": (("annealed",), "annealed: position switches on first, scale before "
                                      "shape and orientation (Burgess et al.)"),
    "annealed:four": (("annealed",), "annealed: >= 4 active latents at the end, each best "
                                     "aligned with a different factor"),
    "joint_vae:category": (("joint_vae",), "joint_vae: the category's matched accuracy on "
                                           "shape >= 0.7 (Dupont)"),
}


@dataclass(frozen=True)
class Promise:
    """One of :data:`PROMISES`, measured: the claim, what the models show, and whether it holds."""

    key: str
    claim: str
    measured: str
    holds: bool


def promise(key: str, shown: Mapping[str, dict],
            histories: Mapping[str, Mapping] | None = None) -> Promise:
    """Measure promise ``key`` of :data:`PROMISES` from ``shown`` (``{model: showcase(...)}``,
    for every model it needs) and, for the annealed model's switch-on order, ``histories``
    (``{model: manifest history}``)."""
    if key not in PROMISES:
        raise KeyError(f"unknown promise {key!r}; the promises are {sorted(PROMISES)}")
    names, claim = PROMISES[key]
    missing = [n for n in names if n not in shown]
    if missing:
        raise KeyError(f"promise {key!r} needs the showcase of {missing}; pass shown[name] = "
                       f"zoo.showcase(zoo.load(name)) for each")
    m = shown[names[0]]
    if key.startswith("shape:"):
        drawn = m["shape_in_reconstruction"]
        return Promise(key, claim, f"{drawn:.2f}", drawn >= 0.9)
    if key == "beta4:axes":
        f = {k: m["factors"][k] for k in ("position_x", "position_y", "scale")}
        ok = (all(v["nmi"] >= 0.5 and v["gap"] >= 0.3 for v in f.values())
              and len({v["latent"] for v in f.values()}) == 3)
        return Promise(key, claim, "; ".join(f"{k} z_{v['latent']} NMI {v['nmi']:.2f} gap "
                                             f"{v['gap']:.2f}" for k, v in f.items()), ok)
    if key == "beta4:orientation":
        nmi = m["factors"]["orientation"]["nmi"]
        return Promise(key, claim, f"best NMI {nmi:.2f}", nmi >= 0.1)
    if key in ("mig:beta", "mig:tc"):
        a, b = (shown[n]["mig"] for n in names)
        ok = b > a if key == "mig:beta" else b >= a
        return Promise(key, claim, f"{names[1]} {b:.2f}, {names[0]} {a:.2f}", ok)
    if key == "joint_vae:category":
        acc = m["category_shape_accuracy"]
        return Promise(key, claim, f"{acc:.2f}", acc >= 0.7)
    from bvae_lib.viz import switch_on_steps

    carries = [latent["factor"] for latent in m["latents"]]     # each latent's best factor
    if key == "annealed:four":
        active = [j for j, kl in enumerate(m["kl_per_latent"]) if kl > 0.1]
        factors = sorted({carries[j] for j in active})
        return Promise(key, claim, f"{len(active)} active, carrying {', '.join(factors) or 'nothing'}",
                       len(active) >= 4 and len(factors) == len(active))
    if not histories or "annealed" not in histories:
        raise KeyError("promise 'annealed:order' needs histories['annealed'] = "
                       "zoo.manifest('annealed')['history']")
    order = [carries[j] for j in switch_on_steps(histories["annealed"])]   # in switch-on order
    rank = {f: order.index(f) if f in order else len(order) for f in m["factors"]}
    ok = (bool(order) and order[0].startswith("position")
          and rank["scale"] < min(rank["shape"], rank["orientation"]))
    return Promise(key, claim, "switch-on order of the factors the latents carry best: "
                   + (" -> ".join(order) or "none"), ok)


def export(run: str | Path, name: str, command: str, description: str = "",
           root: str | Path | None = None, notes: str = "",
           settings: dict | None = None) -> Path:
    """Ship the model of a training run as ``root/name`` (weights in fp16 + manifest).

    The metrics are computed from the half-precision weights as they will be loaded, so the
    manifest describes exactly what is shipped (``settings``: metric sample sizes, default
    :data:`METRIC_SETTINGS`).
    """
    from bvae_lib import __version__
    from bvae_lib.checkpoint import atomic_write, load_checkpoint, write_json

    ckpt = load_checkpoint(run)
    folder = (Path(root) if root is not None else PRETRAINED_DIR) / name
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "model_config": ckpt["model_config"],
            "state_dict": {k: v.half() if v.is_floating_point() else v
                           for k, v in ckpt["model"].items()}}
    atomic_write(folder / WEIGHTS_NAME, lambda fh: torch.save(blob, fh))
    history = ckpt["history"]
    last = {k: v[-1] for k, v in history.items() if v and isinstance(v[-1], (int, float))}
    info = {
        "name": name,
        "description": description,
        "command": command,
        "model_config": ckpt["model_config"],
        "objective_config": ckpt["objective_config"],
        "train_config": ckpt["train_config"],
        "seed": ckpt["train_config"]["seed"],
        "steps": ckpt["step"],
        "device": ckpt.get("extra", {}).get("device", "unknown"),
        # the loop's arithmetic and layout (recorded by checkpoints since the speed switches;
        # before them a CPU run was fp32 and NCHW)
        "training": {k: ckpt.get("extra", {}).get(k) for k in ("precision", "channels_last",
                                                               "compiled")},
        "wall_seconds": ckpt.get("extra", {}).get("wall_seconds"),
        "cpu_seconds": ckpt.get("extra", {}).get("cpu_seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "library_version": ckpt["library_version"],
        "exported_with": {"bvae_lib": __version__, "torch": torch.__version__},
        "final_losses": last,
        "history": history,
        "notes": notes,
        # every time the run was rebuilt from exported weights (continue_run) and what was lost
        "continued_from": ckpt.get("extra", {}).get("continued_from", []),
        "metrics": {},
    }
    write_json(folder / MANIFEST_NAME, info)        # the weights' metrics follow
    info["metrics"] = evaluate(load(name, root=root), settings,
                               objective_config=ckpt["objective_config"])
    write_json(folder / MANIFEST_NAME, info)
    return folder


def continue_run(name: str, run: str | Path, root: str | Path | None = None,
                 disc_steps: int = 2_000) -> Path:
    """Make ``run`` a checkpoint of the exported model ``root/name`` at its step, so that
    ``python -m bvae_lib train ... --resume`` (``zoo train NAME --resume``) continues it.

    For a long run whose run directory was lost with its machine. The continuation is not the
    run an uninterrupted machine would have made, and the checkpoint says why in
    ``extra["continued_from"]`` (carried into the next export's manifest): the weights come back
    from their half-precision export, Adam's moment estimates restart from zero, and the batch
    generator is reseeded with ``seed + step``. Wall and CPU time, the history and the
    arithmetic settings carry over from the manifest. A FactorVAE's discriminator is not
    exported: a fresh one is fitted alone for ``disc_steps`` steps on the encoder's codes (the
    VAE frozen) before the run continues, so that its TC penalty does not restart from chance.
    """
    from bvae_lib.checkpoint import CHECKPOINT_NAME, save_checkpoint

    if not is_int(disc_steps) or disc_steps < 1:
        raise ValueError(f"disc_steps must be a positive integer, got {disc_steps!r}")
    info = manifest(name, root)
    run = Path(run)
    if (run / CHECKPOINT_NAME).exists():
        raise ValueError(f"{run} already holds a checkpoint: continue it with --resume (this "
                         f"would overwrite it), or pass another run directory")
    model = load(name, root=root)
    train_config, steps = info["train_config"], int(info["steps"])
    generator = torch.Generator().manual_seed(int(train_config["seed"]) + steps)
    record = {"name": name, "step": steps,
              "from": str((Path(root) if root is not None else PRETRAINED_DIR) / name),
              "lost": "fp32 weights (fp16 export), Adam's moments (restart at zero), the batch "
                      "generator's state (reseeded with seed + step)"}
    objective_state = None
    if info["objective_config"].get("name") == "factor_vae":
        objective_state, accuracy = _refit_discriminator(model, info, disc_steps)
        record["lost"] += (f"; the discriminator and its Adam (not exported): a fresh one fitted "
                           f"alone for {disc_steps:,} steps on the encoder's codes, ending at "
                           f"accuracy {accuracy:.2f}")
    extra = {**{k: v for k, v in info.get("training", {}).items() if v is not None},
             "device": info.get("device"), "wall_seconds": info.get("wall_seconds") or 0.0,
             "cpu_seconds": info.get("cpu_seconds") or 0.0,
             "continued_from": list(info.get("continued_from", [])) + [record]}
    run.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(run, model=model.train(), objective_config=info["objective_config"],
                           train_config=train_config,
                           optimizer=torch.optim.Adam(model.parameters(),
                                                      lr=float(train_config["lr"])),
                           step=steps, history=info["history"], data_generator=generator,
                           extra=extra, objective_state=objective_state)


def _refit_discriminator(model, info: dict, disc_steps: int) -> tuple[dict, float]:
    """A FactorVAE discriminator fitted alone (its own Adam, the recipe's batch) on the codes
    z ~ q(z|x) of the frozen ``model``: (its objective state, its accuracy on the last batch)."""
    from bvae_lib.data import DSprites
    from bvae_lib.objectives import build_objective, objective_config_from_dict

    seed = int(info["train_config"]["seed"]) + int(info["steps"])
    torch.manual_seed(seed)                      # the discriminator's weights and permutations
    objective = build_objective(objective_config_from_dict(info["objective_config"]),
                                decoder=model.config.decoder).bind(model.config.latent_dim)
    data, generator = DSprites(), torch.Generator().manual_seed(seed)
    model.train()                                # codes sampled from q(z|x), as in training
    for _ in range(disc_steps):
        with torch.no_grad():
            z = model(data.sample(int(info["train_config"]["batch_size"]),
                                  generator=generator)[0])["z"].float()
        loss, accuracy = objective.discriminator_loss(z)
        objective.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        objective.optimizer.step()
    return objective.state_dict(), float(accuracy)


def verify(names: list[str] | None = None, root: str | Path | None = None,
           tolerance: float = 0.02) -> dict:
    """Recompute each model's recorded metrics from its shipped weights.

    Returns ``{name: {metric: (recorded, recomputed)}}`` and raises ``AssertionError`` if any
    differs by more than ``tolerance`` (absolute; the same machine reproduces them exactly,
    another CPU may round differently in the last bits of the encoder).
    """
    report, bad = {}, []
    for name in names or available(root):
        info = manifest(name, root)
        settings = {m: {k: v for k, v in e["settings"].items() if k != "seed"}
                    for m, e in info["metrics"].items()}
        seeds = {e["settings"]["seed"] for e in info["metrics"].values()}
        again = evaluate(load(name, root=root), settings, seed=seeds.pop() if seeds else 0,
                         objective_config=info.get("objective_config"))
        report[name] = {m: (info["metrics"][m]["score"], again[m]["score"]) for m in settings}
        bad += [f"{name}.{m}: recorded {a:.4f}, recomputed {b:.4f}"
                for m, (a, b) in report[name].items() if abs(a - b) > tolerance]
    if bad:
        raise AssertionError("metrics not reproduced: " + "; ".join(bad))
    return report


def train_command(name: str, steps: int, out: str | Path, device: str = "auto") -> str:
    """The ``python -m bvae_lib train`` command that trains zoo model ``name`` for ``steps``
    steps into ``out`` (see :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"no zoo recipe named {name!r}; the recipes are {sorted(RECIPES)}")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    args = RECIPES[name][1].format(steps=steps)
    common = RECIPE_COMMON
    if "--batch-size" in args:
        common = " ".join(common.split()[2:])
    return (f"python -m bvae_lib train {args} {common} --steps {steps} --device {device} "
            f"--out {out}")


def train_zoo(names: list[str], steps: int, runs: str | Path, device: str = "auto",
              export_to: str | Path | None = None, dry_run: bool = False, resume: bool = False,
              out=None) -> list[str]:
    """Train the zoo models ``names`` one after the other with their recipes, each into
    ``runs/NAME``, and export each (to ``export_to``, default the package's pretrained folder)
    with its command in the manifest; a recipe of :data:`STOP_EARLY` stops at its own step if
    that comes first. ``dry_run`` prints the plan only. A run directory that
    already holds a checkpoint is continued only with ``resume``. Returns the commands."""
    import shlex

    from bvae_lib import cli

    out = sys.stdout if out is None else out
    commands = []
    for name in names:
        command = train_command(name, run_length(name, steps), Path(runs) / name, device)
        if resume:
            command += " --resume"
        commands.append(command)
        print(f"[{name}] {RECIPES[name][0]}\n  {command}", file=out)
        print(f"  then: export {Path(runs) / name} as {name} to "
              f"{Path(export_to) if export_to else PRETRAINED_DIR}", file=out)
    if dry_run:
        return commands
    for name, command in zip(names, commands):
        status = cli.main(shlex.split(command)[3:])
        if status != 0:
            raise ValueError(f"training {name} failed (exit status {status}); fix the cause and "
                             f"rerun with --resume to continue from its last checkpoint")
        folder = export(Path(runs) / name, name, command.replace(" --resume", ""),
                        f"{RECIPES[name][0]}; Burgess conv architecture, procedural dSprites",
                        root=export_to)
        print(f"[{name}] exported to {folder}", file=out)
    return commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bvae_lib.zoo",
                                     description="List, export and verify the shipped models.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the shipped models and their metrics")
    ex = sub.add_parser("export", help="ship the model of a training run")
    ex.add_argument("run", help="run directory written by `python -m bvae_lib train`")
    ex.add_argument("--name", required=True)
    ex.add_argument("--command", required=True, help="the exact command that trained it")
    ex.add_argument("--description", default="")
    ex.add_argument("--notes", default="")
    co = sub.add_parser("continue", help="rebuild a lost run directory from exported weights, "
                                         "to continue it with `train NAME --resume`")
    co.add_argument("name")
    co.add_argument("--from", dest="root", help="folder of the exported models (default: the "
                                               "package's pretrained folder)")
    co.add_argument("--runs", default="runs/zoo", help="where the run directories go "
                                                      "(default runs/zoo)")
    co.add_argument("--disc-steps", type=int, default=2_000,
                    help="FactorVAE: steps fitting a fresh discriminator before the run continues")
    ve = sub.add_parser("verify", help="recompute the recorded metrics from the shipped weights")
    ve.add_argument("names", nargs="*")
    sc = sub.add_parser("showcase", help="what a model shows (zoo.showcase): reconstruction, "
                                         "active latents, shape in reconstruction, alignment")
    sc.add_argument("models", nargs="+", metavar="MODEL",
                    help="a run directory, a checkpoint file, or the name of a shipped model")
    sc.add_argument("--images", type=int, default=4_000, help="held-out images (default 4,000)")
    sc.add_argument("--json", metavar="PATH", help="also write the measures to PATH")
    tr = sub.add_parser("train", help="train zoo models with their recipes and export them "
                                      "(e.g. --all --paper-scale on a GPU)")
    tr.add_argument("names", nargs="*", help=f"models to train: {', '.join(RECIPES)}")
    tr.add_argument("--all", action="store_true", help="every recipe")
    tr.add_argument("--paper-scale", action="store_true",
                    help=f"{PAPER_STEPS:,} steps on a CUDA GPU (the papers' length)")
    tr.add_argument("--steps", type=int, help=f"steps per model (default {CPU_STEPS:,}, the CPU "
                                              f"runs' length; "
                                              + ", ".join(f"{n} stops at {s:,}" for n, (s, _) in
                                                          STOP_EARLY.items())
                                              + ", zoo.STOP_EARLY)")
    tr.add_argument("--runs", default="runs/zoo", help="where the run directories go "
                                                      "(default runs/zoo)")
    tr.add_argument("--device", default="auto")
    tr.add_argument("--export-to", help="folder for the exported models (default: the "
                                        "package's pretrained folder, replacing what is shipped)")
    tr.add_argument("--resume", action="store_true", help="continue runs already started")
    tr.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    return parser


def _cmd_showcase(args, argv: list[str]) -> None:
    records = {m: showcase_record(m, args.images) for m in args.models}
    for m, r in records.items():
        s = r["measures"]
        f = "  ".join(f"{k} z_{v['latent']} {v['nmi']:.2f}/{v['gap']:.2f}"
                      for k, v in s["factors"].items())
        active = (f"{s['active_latents']} active" if "active_latents" in s else "swap accuracy "
                  + " ".join(f"{k} {a:.2f}" for k, a in s["swap_accuracy"].items()))
        print(f"{m} (step {r['step']}): recon {s['recon_nats']:.1f} nats, {active}, shape in "
              f"reconstruction {s['shape_in_reconstruction']:.2f}, MIG {s['mig']:.3f}\n"
              f"    best latent NMI/gap: {f}")
        if "category_shape_accuracy" in s:
            print(f"    category: matched accuracy on shape {s['category_shape_accuracy']:.2f}, "
                  f"usage {' '.join(f'{u:.2f}' for u in s['category_usage'])}, "
                  f"I(n; c) {s['category_information']:.2f} + KL(q_bar || U) "
                  f"{s['category_marginal_kl']:.2f} nats")
    if args.json:
        from bvae_lib.checkpoint import write_json

        write_json(args.json, {"command": "python -m bvae_lib.zoo " + " ".join(argv),
                               "models": records})
        print(f"wrote {args.json}")


def _cmd_train(args) -> None:
    names = list(RECIPES) if args.all else args.names
    if not names:
        raise ValueError("name the models to train, or pass --all")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"no zoo recipe named {', '.join(unknown)}; the recipes are "
                         f"{', '.join(RECIPES)}")
    if args.paper_scale and args.steps is not None:
        raise ValueError("--paper-scale means --steps 300000; pass one of them")
    steps = PAPER_STEPS if args.paper_scale else (args.steps or CPU_STEPS)
    device = args.device
    if args.paper_scale:
        if device == "auto":
            device = "cuda"
        if not device.startswith("cuda"):
            raise ValueError(f"--paper-scale trains {len(names)} x {PAPER_STEPS:,} steps and "
                             f"needs a CUDA GPU (--device cuda): on a CPU that is hours to days "
                             f"per model. To run the papers' length on a CPU anyway, pass --steps "
                             f"{PAPER_STEPS} --device cpu (the same recipes)")
        if not args.dry_run and not torch.cuda.is_available():
            raise ValueError("--paper-scale needs a CUDA GPU and none is available here; "
                             "--dry-run prints the plan")
    train_zoo(names, steps, args.runs, device=device, export_to=args.export_to,
              dry_run=args.dry_run, resume=args.resume)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    keep_freed_buffers()                 # training and scoring reuse their buffers (_memory)
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "showcase":
            _cmd_showcase(args, argv)
        elif args.cmd == "train":
            _cmd_train(args)
        elif args.cmd == "list":
            for name in available():
                m = manifest(name)
                scores = ", ".join(f"{k} {v['score']:.3f}" for k, v in m["metrics"].items())
                print(f"{name:12s} {m['steps']:>7d} steps on {m['device']}: {scores}")
        elif args.cmd == "export":
            print(export(args.run, args.name, args.command, args.description, notes=args.notes))
        elif args.cmd == "continue":
            path = continue_run(args.name, Path(args.runs) / args.name, args.root,
                                args.disc_steps)
            print(f"{path}: step {manifest(args.name, args.root)['steps']:,}; continue it with "
                  f"`python -m bvae_lib.zoo train {args.name} --runs {args.runs} --resume`")
        else:
            for name, scores in verify(args.names or None).items():
                print(name, {m: f"{a:.4f} / {b:.4f}" for m, (a, b) in scores.items()})
    except (ValueError, FileNotFoundError, AssertionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
