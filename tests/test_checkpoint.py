"""Checkpoints: atomic writes, safe loading, clear errors, exact RNG round trips."""

import io
import json
import os
import random

import numpy as np
import pytest
import torch

from bvae_lib import __version__, checkpoint
from bvae_lib.checkpoint import (atomic_write, load_checkpoint, load_model, load_weights,
                                 rng_state, set_rng_state)
from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig, build_model
from bvae_lib.objectives import BetaVAEConfig, objective_config_to_dict
from bvae_lib.train import TrainConfig, train

MODEL = ModelConfig(latent_dim=4)
OBJECTIVE = BetaVAEConfig(beta=4.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with a 4-step checkpoint, and the trained model."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=4, batch_size=8, log_every=2, progress=False, device="cpu")
    result = train(MODEL, OBJECTIVE, DSprites(), config, out_dir=out)
    return out, result


def x_batch(n=4):
    return DSprites().sample(n, torch.Generator().manual_seed(1))[0]


def test_checkpoint_holds_everything_needed_to_rebuild_and_resume(run):
    out, result = run
    raw = torch.load(out / "checkpoint.pt", weights_only=True)    # plain data only
    for key in ("model_config", "objective_config", "train_config", "model", "optimizer",
                "rng", "step", "history", "library_version"):
        assert key in raw, key
    assert raw["library_version"] == __version__
    assert raw["model_config"]["latent_dim"] == 4
    assert raw["objective_config"] == objective_config_to_dict(OBJECTIVE)
    assert raw["train_config"]["batch_size"] == 8 and raw["step"] == 4
    assert set(raw["rng"]) >= {"torch", "cuda", "numpy", "python", "data"}
    assert raw["history"] == result.history
    with open(out / "history.json") as f:
        assert json.load(f) == result.history


def test_load_model_rebuilds_the_same_function(run):
    out, result = run
    model = load_model(out)
    assert not model.training
    assert model.config == result.model.config
    x = x_batch()
    torch.testing.assert_close(model.representation(x), result.model.representation(x),
                               rtol=0, atol=0)


def test_missing_file_is_a_clear_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        load_model(tmp_path)                      # a directory without a checkpoint


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_a_value_error_not_a_half_loaded_model(run, tmp_path, damage):
    data = (run[0] / "checkpoint.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a zip" * 100,
                     "empty": b""}[damage])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_model(bad)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_model(MODEL).state_dict(), path)        # a bare state_dict
    with pytest.raises(ValueError, match="not a bvae_lib checkpoint"):
        load_checkpoint(path)


def test_weights_only_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "bvae_lib.checkpoint", "payload": random.Random(0)}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_other_architecture_is_refused_and_leaves_the_model_untouched(run):
    out, _ = run
    other = build_model(ModelConfig(latent_dim=6))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="latent_dim: checkpoint 4 vs 6"):
        load_weights(other, out)
    mlp = build_model(ModelConfig(architecture="higgins_mlp", latent_dim=4))
    with pytest.raises(ValueError, match="architecture"):
        load_weights(mlp, out)
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])


def test_mismatched_weights_are_detected_before_any_copy(run, tmp_path):
    out, _ = run
    ckpt = load_checkpoint(out)
    ckpt["model"]["decoder.0.weight"] = torch.zeros(3, 3)       # tampered shape
    model = build_model(MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatch.*decoder.0.weight"):
        load_weights(model, ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was half-loaded"


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt                # as if the process were killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "the usual file mode, not mkstemp's 0600"


def test_interrupted_checkpoint_save_keeps_the_last_good_checkpoint(run, tmp_path, monkeypatch):
    out, result = run
    target = tmp_path / "checkpoint.pt"
    target.write_bytes((out / "checkpoint.pt").read_bytes())
    model = load_model(out)
    optimizer = torch.optim.Adam(model.parameters())

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(target, model=model, objective_config=OBJECTIVE,
                                   train_config=TrainConfig(steps=5), optimizer=optimizer,
                                   step=5, history={})
    monkeypatch.undo()
    assert load_checkpoint(target)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_rng_state_round_trip_restores_every_stream():
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    np.random.randn()                                          # a cached Gaussian in numpy
    state = rng_state(gen)
    # survive a save/load through weights_only
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    draws = lambda: (torch.rand(3), np.random.randn(3), random.random(),  # noqa: E731
                     torch.rand(3, generator=gen))
    first = draws()
    torch.manual_seed(9), np.random.seed(9), random.seed(9), gen.manual_seed(9)
    assert set_rng_state(state, gen)
    second = draws()
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2] and torch.equal(first[3], second[3])


def test_checkpoint_without_init_field_loads_as_pytorch_init_and_resumes(tmp_path):
    """Runs written before ModelConfig.init existed keep loading and resuming."""
    out = tmp_path / "old"
    config = TrainConfig(steps=2, batch_size=8, log_every=1, progress=False, device="cpu")
    train(ModelConfig(latent_dim=4, init="pytorch"), OBJECTIVE, DSprites(), config, out_dir=out)
    path = out / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model_config"]["init"]
    torch.save(ckpt, path)
    assert load_checkpoint(path)["model_config"]["init"] == "pytorch"
    assert load_model(out).config.init == "pytorch"
    # weights load into a model built with either initialisation
    load_weights(build_model(ModelConfig(latent_dim=4)), path)
    more = TrainConfig(steps=3, batch_size=8, log_every=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="init"):
        train(ModelConfig(latent_dim=4), OBJECTIVE, DSprites(), more, out_dir=out, resume=True)
    result = train(ModelConfig(latent_dim=4, init="pytorch"), OBJECTIVE, DSprites(), more,
                   out_dir=out, resume=True)
    assert result.step == 3 and result.steps_run == 1


def test_a_run_resumed_under_an_objective_that_logs_a_new_term_keeps_its_history_aligned(tmp_path):
    """JointVAE's info_disc was added to its logged terms after runs had started: such a run
    resumes, the new term's earlier values are None, and every list stays as long as "step"."""
    from bvae_lib.objectives import JointVAEConfig

    out = tmp_path / "joint"
    model_config = ModelConfig(latent_dim=4, categorical_dims=(3,))
    objective = JointVAEConfig(capacity_steps=10)
    train(model_config, objective, DSprites(),
          TrainConfig(steps=2, batch_size=8, log_every=1, progress=False, device="cpu"), out_dir=out)
    path = out / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["history"]["info_disc"]                   # as written by the older version
    torch.save(ckpt, path)
    result = train(model_config, objective, DSprites(),
                   TrainConfig(steps=4, batch_size=8, log_every=1, progress=False, device="cpu"),
                   out_dir=out, resume=True)
    history = load_checkpoint(path)["history"]
    assert {len(v) for v in history.values()} == {4} and result.step == 4
    assert history["info_disc"][:2] == [None, None] and None not in history["info_disc"][2:]
