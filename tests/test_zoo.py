"""The shipped models load, and their manifests' metrics are reproduced from the shipped weights."""

import json

import numpy as np
import pytest
import torch

from bvae_lib import zoo
from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig
from bvae_lib.objectives import BetaVAEConfig
from bvae_lib.train import TrainConfig, train

TINY_METRICS = {"mig": dict(num_points=500, num_bins=10),
                "beta_vae": dict(num_train=20, num_eval=10, pairs_per_point=8)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    root = tmp_path_factory.mktemp("zoo")
    train(ModelConfig(latent_dim=4), BetaVAEConfig(beta=4), DSprites(),
          TrainConfig(steps=4, batch_size=8, log_every=2, progress=False, device="cpu"),
          out_dir=run)
    zoo.export(run, "tiny", command="python -m bvae_lib train --steps 4", root=root,
               settings=TINY_METRICS)
    return run, root


def test_export_writes_half_precision_weights_and_a_complete_manifest(exported):
    _, root = exported
    assert zoo.available(root) == ["tiny"]
    info = zoo.manifest("tiny", root)
    for key in ("command", "model_config", "objective_config", "train_config", "seed", "steps",
                "device", "wall_seconds", "cpu_seconds", "library_version", "metrics", "history"):
        assert key in info, key
    assert info["history"]["step"] == [2, 4]
    assert len(info["history"]["kl_per_latent"][-1]) == 4
    assert info["steps"] == 4 and info["objective_config"]["beta"] == 4
    assert set(info["metrics"]) == set(TINY_METRICS)
    blob = torch.load(root / "tiny" / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values()
               if v.is_floating_point())


def test_loaded_model_matches_the_run_up_to_half_precision(exported):
    from bvae_lib.checkpoint import load_model

    run, root = exported
    shipped, original = zoo.load("tiny", root=root), load_model(run)
    x = torch.rand(3, 1, 64, 64).round()
    assert not shipped.training
    torch.testing.assert_close(shipped.representation(x), original.representation(x),
                               atol=2e-2, rtol=2e-2)


def test_verify_reproduces_and_catches_a_tampered_manifest(exported):
    _, root = exported
    report = zoo.verify(["tiny"], root=root)
    assert all(a == b for a, b in report["tiny"].values())
    path = root / "tiny" / "manifest.json"
    info = json.loads(path.read_text())
    info["metrics"]["mig"]["score"] += 0.5
    path.write_text(json.dumps(info))
    with pytest.raises(AssertionError, match="tiny.mig"):
        zoo.verify(["tiny"], root=root)


def test_unknown_model_names_the_available_ones(exported):
    _, root = exported
    with pytest.raises(ValueError, match="available: tiny"):
        zoo.load("nope", root=root)


@pytest.mark.parametrize("name", zoo.available() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no pretrained model is shipped yet"))])
def test_shipped_model_reproduces_its_recorded_metrics(name):
    zoo.verify([name])


@pytest.mark.parametrize("name", zoo.available() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no pretrained model is shipped yet"))])
def test_shipped_manifest_command_rebuilds_its_configs(name, tmp_path, monkeypatch):
    """The manifest's command, run with today's library, asks for the model that is shipped."""
    import dataclasses
    import shlex

    from bvae_lib import cli
    from bvae_lib import train as train_lib
    from bvae_lib.models import stored_model_config
    from bvae_lib.objectives import objective_config_to_dict

    info = zoo.manifest(name)
    argv = shlex.split(info["command"])
    argv = argv[argv.index("bvae_lib") + 1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    seen = {}

    def fake_train(model_config, objective_config, dataset, train_config, out_dir, resume):
        seen.update(model=model_config, objective=objective_config, train=train_config)
        raise SystemExit(0)

    monkeypatch.setattr(train_lib, "train", fake_train)
    with pytest.raises(SystemExit):
        cli.main(argv)
    stored = stored_model_config(info["model_config"])
    assert json.loads(json.dumps(dataclasses.asdict(seen["model"]))) == \
        json.loads(json.dumps(stored))
    assert objective_config_to_dict(seen["objective"]) == info["objective_config"]
    assert seen["train"].steps == info["steps"]
    for key in ("batch_size", "lr", "seed"):
        assert getattr(seen["train"], key) == info["train_config"][key], key


def test_zoo_train_dry_run_prints_every_recipe_at_paper_scale(capsys):
    assert zoo.main(["train", "--all", "--paper-scale", "--dry-run", "--runs", "r"]) == 0
    out = capsys.readouterr().out
    for name in zoo.RECIPES:
        assert f"--out r/{name}" in out and f"export r/{name} as {name}" in out
    assert out.count("--steps 300000 --device cuda") == len(zoo.RECIPES) - len(zoo.STOP_EARLY)
    # a recipe that stops early stops at its own step at any scale
    for name, (steps, _) in zoo.STOP_EARLY.items():
        assert f"--steps {steps} --device cuda --out r/{name}" in out
    # JointVAE's capacities rise over the whole run; the annealed model's over 100,000 steps
    assert "--capacity-steps 300000" in zoo.train_command("joint_vae", 300_000, "r")
    assert "--capacity-steps 100000" in zoo.train_command("annealed", 300_000, "r")


def test_run_length_stops_early_recipes_only():
    assert zoo.run_length("beta4") == zoo.CPU_STEPS
    assert zoo.run_length("beta16") == zoo.STOP_EARLY["beta16"][0] < zoo.CPU_STEPS
    assert zoo.run_length("beta16", 1_000) == 1_000          # a shorter run stays shorter
    with pytest.raises(ValueError, match="no zoo recipe named 'beta5'"):
        zoo.run_length("beta5")


@pytest.mark.parametrize("argv, match", [
    (["train"], "--all"),
    (["train", "beta5"], "no zoo recipe named beta5"),
    (["train", "beta4", "--paper-scale", "--steps", "10"], "one of them"),
    (["train", "beta4", "--paper-scale", "--device", "cpu"], "CUDA GPU"),
])
def test_zoo_train_refuses_bad_requests(argv, match, capsys):
    assert zoo.main(argv) == 2
    assert match in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_zoo_paper_scale_needs_a_gpu(capsys):
    assert zoo.main(["train", "beta4", "--paper-scale"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_zoo_train_trains_with_the_recipe_and_exports_with_its_command(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "METRIC_SETTINGS", TINY_METRICS)
    commands = zoo.train_zoo(["beta4"], 3, tmp_path / "runs", device="cpu",
                             export_to=tmp_path / "zoo")
    info = zoo.manifest("beta4", root=tmp_path / "zoo")
    assert info["command"] == commands[0] and info["steps"] == 3
    assert info["objective_config"]["beta"] == 4 and info["train_config"]["lr"] == 1e-3
    assert info["model_config"]["init"] == "pytorch"
    assert set(info["training"]) == {"precision", "channels_last", "compiled"}
    assert set(info["metrics"]) == set(TINY_METRICS)


@pytest.mark.parametrize("config", [ModelConfig(latent_dim=4),
                                    ModelConfig(latent_dim=3, categorical_dims=(3,))],
                         ids=["vae", "joint_vae"])
def test_showcase_measures_what_a_shipped_model_must_show(config):
    from bvae_lib.models import build_model

    torch.manual_seed(0)
    model = build_model(config).eval()
    m = zoo.showcase(model, num_images=300)
    assert m["images"] == 300 and m["recon_nats"] > 0
    assert 0 <= m["active_latents"] <= config.latent_dim
    assert len(m["kl_per_latent"]) == config.latent_dim
    assert 0 <= m["shape_in_reconstruction"] <= 1
    assert set(m["factors"]) == set(DSprites().factor_names)
    for f in m["factors"].values():
        assert 0 <= f["latent"] < config.latent_dim and 0 <= f["gap"] <= f["nmi"] <= 1
    assert m["mig"] == pytest.approx(np.mean([f["gap"] for f in m["factors"].values()]),
                                     abs=1e-3)
    assert ("category_shape_accuracy" in m) == bool(config.categorical_dims)
    if config.categorical_dims:                     # the discrete KL = I(n; c) + KL(q_bar || U)
        k = config.categorical_dims[0]
        assert len(m["category_usage"]) == k and sum(m["category_usage"]) == pytest.approx(1, abs=1e-3)
        assert 0 <= m["category_information"] <= np.log(k) + 1e-4
        assert 0 <= m["category_marginal_kl"] <= np.log(k) + 1e-4
        assert m["category_information"] + m["category_marginal_kl"] <= np.log(k) + 2e-4
    assert len(m["latents"]) == config.latent_dim
    for f in m["factors"].values():                 # a factor's best latent carries it at that NMI
        assert m["latents"][f["latent"]]["nmi"] >= f["nmi"] - 1e-4
    assert zoo.showcase(model, num_images=300) == m    # the images are drawn with a seed


def test_a_shipped_model_with_an_unknown_config_field_is_refused_like_a_checkpoint(exported):
    _, root = exported
    path = root / "tiny" / zoo.WEIGHTS_NAME
    blob = torch.load(path, weights_only=True)
    blob["model_config"]["from_the_future"] = 1
    torch.save(blob, path)
    try:
        with pytest.raises(ValueError, match="from_the_future"):
            zoo.load("tiny", root=root)
    finally:
        del blob["model_config"]["from_the_future"]
        torch.save(blob, path)


def test_zoo_showcase_command_measures_runs_and_shipped_models(exported, tmp_path, capsys,
                                                              monkeypatch):
    run, root = exported
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", root)
    out = tmp_path / "showcase.json"
    assert zoo.main(["showcase", "tiny", str(run), "--images", "200", "--json", str(out)]) == 0
    assert "shape in reconstruction" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["command"].startswith("python -m bvae_lib.zoo showcase tiny")
    assert record["models"]["tiny"]["source"] == "zoo"
    assert record["models"][str(run)]["step"] == 4
    assert record["models"][str(run)]["measures"]["images"] == 200
    training = record["models"][str(run)]["training"]     # where and how long the run trained
    assert training["device"].startswith("cpu") and training["cpu_seconds"] > 0


def test_zoo_showcase_of_a_joint_vae_run_prints_and_records_what_its_category_carries(tmp_path,
                                                                                     capsys):
    from bvae_lib.objectives import JointVAEConfig

    run = tmp_path / "joint"
    train(ModelConfig(latent_dim=4, categorical_dims=(3,)), JointVAEConfig(capacity_steps=10),
          DSprites(), TrainConfig(steps=2, batch_size=8, log_every=1, progress=False, device="cpu"),
          out_dir=run)
    out = tmp_path / "showcase.json"
    assert zoo.main(["showcase", str(run), "--images", "120", "--json", str(out)]) == 0
    assert "category: matched accuracy on shape" in capsys.readouterr().out
    measures = json.loads(out.read_text())["models"][str(run)]["measures"]
    assert len(measures["category_usage"]) == 3
    assert {"category_information", "category_marginal_kl"} <= set(measures)


def test_a_lost_run_continues_from_its_exported_weights_and_says_what_was_lost(exported, tmp_path,
                                                                                capsys):
    from bvae_lib.checkpoint import load_checkpoint

    _, root = exported
    run = tmp_path / "tiny"
    assert zoo.main(["continue", "tiny", "--from", str(root), "--runs", str(tmp_path)]) == 0
    assert "step 4" in capsys.readouterr().out
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and ckpt["history"]["step"] == [2, 4]
    assert ckpt["optimizer"]["state"] == {}                  # Adam restarts: recorded, not hidden
    [record] = ckpt["extra"]["continued_from"]
    assert record["step"] == 4 and "Adam" in record["lost"] and "fp16" in record["lost"]
    shipped = zoo.load("tiny", root=root)
    for k, v in shipped.state_dict().items():                # the weights are the exported ones
        torch.testing.assert_close(ckpt["model"][k], v, atol=0, rtol=0)

    train(ModelConfig(latent_dim=4), BetaVAEConfig(beta=4), DSprites(),
          TrainConfig(steps=6, batch_size=8, log_every=2, progress=False, device="cpu"),
          out_dir=run, resume=True)
    zoo.export(run, "tiny", command="python -m bvae_lib train --steps 6", root=tmp_path / "zoo",
               settings=TINY_METRICS)
    info = zoo.manifest("tiny", tmp_path / "zoo")
    assert info["steps"] == 6 and info["history"]["step"] == [2, 4, 6]
    assert [r["step"] for r in info["continued_from"]] == [4]
    assert info["wall_seconds"] > zoo.manifest("tiny", root)["wall_seconds"]

    with pytest.raises(ValueError, match="already holds a checkpoint"):   # never overwrites
        zoo.continue_run("tiny", run, root)


def test_a_factor_vae_continues_with_a_refitted_discriminator(tmp_path):
    from bvae_lib.checkpoint import load_checkpoint
    from bvae_lib.objectives import FactorVAEConfig

    objective = FactorVAEConfig(gamma=5.0, disc_hidden=16, disc_layers=2)
    config = dict(batch_size=8, log_every=2, progress=False, device="cpu")
    train(ModelConfig(latent_dim=4), objective, DSprites(), TrainConfig(steps=4, **config),
          out_dir=tmp_path / "run")
    zoo.export(tmp_path / "run", "tiny_fvae", command="python -m bvae_lib train --steps 4",
               root=tmp_path / "zoo", settings=TINY_METRICS)
    run = tmp_path / "runs" / "tiny_fvae"
    zoo.continue_run("tiny_fvae", run, tmp_path / "zoo", disc_steps=3)
    ckpt = load_checkpoint(run)
    assert set(ckpt["objective_state"]) == {"discriminator", "optimizer"}
    assert ckpt["objective_state"]["optimizer"]["state"]          # it has taken Adam steps
    [record] = ckpt["extra"]["continued_from"]
    assert "discriminator" in record["lost"] and "3 steps" in record["lost"]
    result = train(ModelConfig(latent_dim=4), objective, DSprites(), TrainConfig(steps=6, **config),
                   out_dir=run, resume=True)
    assert result.step == 6 and result.history["step"][-1] == 6
    with pytest.raises(ValueError, match="disc_steps"):
        zoo.continue_run("tiny_fvae", tmp_path / "other", tmp_path / "zoo", disc_steps=0)


def _shown(**factors):
    # a showcase record with the given {factor: (latent, nmi, gap)}; the rest at zero
    names = ("shape", "scale", "orientation", "position_x", "position_y")
    full = {f: factors.get(f, (9, 0.0, 0.0)) for f in names}
    carried = {j: (f, n) for f, (j, n, _) in full.items() if j != 9}
    return {"shape_in_reconstruction": 0.95, "mig": 0.3, "kl_per_latent": [1.0] * 5 + [0.0] * 5,
            "factors": {f: {"latent": j, "nmi": n, "gap": g} for f, (j, n, g) in full.items()},
            "latents": [{"factor": carried.get(j, ("shape", 0.0))[0],
                         "nmi": carried.get(j, ("shape", 0.0))[1]} for j in range(10)]}


def test_promises_measure_their_claims_on_known_cases():
    good = _shown(position_x=(0, 0.6, 0.4), position_y=(1, 0.6, 0.4), scale=(2, 0.6, 0.4),
                  orientation=(3, 0.2, 0.1), shape=(4, 0.3, 0.1))
    assert zoo.promise("beta4:axes", {"beta4": good}).holds
    assert zoo.promise("beta4:orientation", {"beta4": good}).holds
    shared = _shown(position_x=(0, 0.6, 0.4), position_y=(0, 0.6, 0.4), scale=(2, 0.6, 0.4))
    assert not zoo.promise("beta4:axes", {"beta4": shared}).holds      # x and y on one latent
    weak = _shown(position_x=(0, 0.6, 0.2), position_y=(1, 0.6, 0.4), scale=(2, 0.6, 0.4))
    assert not zoo.promise("beta4:axes", {"beta4": weak}).holds        # gap below 0.3
    blurred = dict(good, shape_in_reconstruction=0.89)
    assert not zoo.promise("shape:beta4", {"beta4": blurred}).holds
    assert zoo.promise("shape:beta4", {"beta4": good}).measured == "0.95"
    low = dict(good, mig=0.2)
    assert zoo.promise("mig:beta", {"beta1": low, "beta4": good}).holds
    assert not zoo.promise("mig:beta", {"beta1": good, "beta4": good}).holds   # strictly above
    assert zoo.promise("mig:tc", {"beta4": good, "beta_tcvae": good}).holds    # ties count
    assert zoo.promise("annealed:four", {"annealed": good}).holds
    two = dict(good, kl_per_latent=[1.0, 1.0] + [0.0] * 8)
    assert not zoo.promise("annealed:four", {"annealed": two}).holds
    twice = dict(good, latents=[dict(x, factor="position_x") if j == 1 else x
                                for j, x in enumerate(good["latents"])])
    assert not zoo.promise("annealed:four", {"annealed": twice}).holds   # x carried twice


def test_annealed_order_promise_reads_the_switch_on_order():
    good = _shown(position_x=(0, 0.6, 0.4), position_y=(1, 0.6, 0.4), scale=(2, 0.6, 0.4),
                  orientation=(3, 0.2, 0.1), shape=(4, 0.3, 0.1))
    steps = [100, 200, 300, 400, 500]
    # latent j switches on (KL > 0.5) at window j: x, y, scale, orientation, shape
    kl = [[1.0 if j <= w else 0.0 for j in range(10)] for w in range(5)]
    m = zoo.promise("annealed:order", {"annealed": good},
                    {"annealed": {"step": steps, "kl_per_latent": kl}})
    assert m.holds and m.measured.endswith("position_x -> position_y -> scale -> orientation -> shape")
    late = [[1.0 if (j == 2 and w >= 0) or (j < 2 and w >= 1) or (j > 2 and j <= w) else 0.0
             for j in range(10)] for w in range(5)]           # scale's latent first
    assert not zoo.promise("annealed:order", {"annealed": good},
                           {"annealed": {"step": steps, "kl_per_latent": late}}).holds
    with pytest.raises(KeyError, match="histories"):
        zoo.promise("annealed:order", {"annealed": good})
    with pytest.raises(KeyError, match="needs the showcase"):
        zoo.promise("mig:tc", {"beta4": good})
    with pytest.raises(KeyError, match="unknown promise"):
        zoo.promise("beta5:axes", {"beta4": good})
