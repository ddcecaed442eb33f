"""Bad input and faults, round two: each test names the fault it closes.

Divergence never reaches a checkpoint; a resume continues the run it finds (its target, its
dataset); metrics refuse questions without an answer; NaN and infinity fail range checks; output
paths, loaders, interrupted writes, a full disk and damaged files give errors a person can act
on, on one line from the CLI.
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from bvae_lib import checkpoint, cli, objectives, zoo
from bvae_lib import train as train_lib
from bvae_lib.baselines import IdentityObservations, identity
from bvae_lib.data import DSprites, TensorImages, load_celeba, load_mnist
from bvae_lib.distributions import gumbel_softmax_sample
from bvae_lib.metrics import beta_vae_score, factor_vae_score, mig, sap_from_codes
from bvae_lib.models import ModelConfig, build_model
from bvae_lib.objectives import BetaVAEConfig, reconstruction_loss
from bvae_lib.train import NonFiniteLossError, TrainConfig, train
from bvae_lib.viz import plot_traversal
from test_data import write_official_layout

MODEL = ModelConfig(latent_dim=4)
OBJECTIVE = BetaVAEConfig(beta=4.0)
TINY = ["--latent-dim", "4", "--batch-size", "8", "--no-progress", "--device", "cpu"]


def tiny(steps, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("batch_size", 8)
    kw.setdefault("log_every", 2)
    kw.setdefault("progress", False)
    return TrainConfig(steps=steps, **kw)


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")
    for word in words:
        assert word in err, err


@pytest.fixture(scope="module")
def dsprites():
    return DSprites()


@pytest.fixture
def poison(monkeypatch):
    """poison(edit): the objective's terms pass through edit(terms, step) during training."""
    def install(edit):
        real = objectives.build_objective

        def poisoned(config, **kw):
            objective = real(config, **kw)

            def call(out, x, step):
                return edit(objective(out, x, step), step)
            return call
        monkeypatch.setattr(train_lib, "build_objective", poisoned)   # what train() calls
    return install


def finite_state(ckpt) -> bool:
    tensors = list(ckpt["model"].values())
    for state in ckpt["optimizer"]["state"].values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# -- 1. the last good checkpoint is good -----------------------------------------------------

def test_checkpoint_after_divergence_resumes_past_its_own_step(dsprites, tmp_path, poison):
    # From step 3 on the loss is NaN, as after a divergence: the weights after step 3 give it.
    def diverge(terms, step):
        if step >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms
    poison(diverge)
    config = tiny(8, log_every=1, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match=r"step 3.*last checkpoint.*step 2") as err:
        train(MODEL, OBJECTIVE, dsprites, config, out_dir=tmp_path)
    assert "checkpoint.pt" in str(err.value)
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt["step"] == 2 and finite_state(ckpt)
    # The checkpoint's own step is finite: a resume runs it, and stops where the divergence
    # is, at the update after it (before the fix, the checkpoint was at step 3 and the resume
    # failed at once, on its first step).
    with pytest.raises(NonFiniteLossError, match=r"after step 3 .*last checkpoint.*step 2"):
        train(MODEL, OBJECTIVE, dsprites, tiny(3, log_every=1, checkpoint_every=1),
              out_dir=tmp_path, resume=True)


def test_checkpoint_never_holds_weights_from_a_non_finite_gradient(dsprites, tmp_path, poison):
    # A finite loss whose gradient is NaN: d/dk sqrt(0 * k) = inf, times 0.
    def nan_gradient(terms, step):
        if step == 2:
            terms["loss"] = terms["loss"] + 0.0 * torch.sqrt(terms["kl"] * 0.0)
        return terms
    poison(nan_gradient)
    with pytest.raises(NonFiniteLossError, match="gradients"):
        train(MODEL, OBJECTIVE, dsprites, tiny(6, log_every=1, checkpoint_every=1),
              out_dir=tmp_path)
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt["step"] <= 2 and finite_state(ckpt)


def test_verifying_checkpoints_does_not_change_training(dsprites, tmp_path):
    # the check runs the next step on forked RNGs: training is bitwise the same with or
    # without checkpoints
    saved = train(MODEL, OBJECTIVE, dsprites, tiny(6, checkpoint_every=2), out_dir=tmp_path)
    plain = train(MODEL, OBJECTIVE, dsprites, tiny(6))
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, saved.model.state_dict()[k]), k
    assert saved.history == plain.history


# -- 2, 3. a resume continues the run it finds -----------------------------------------------

def interrupted_run(dsprites, out, poison, steps=4, dataset=None):
    """A run of ``steps`` steps interrupted after its checkpoint at step 2."""
    def interrupt(terms, step):
        if step == 3:
            raise KeyboardInterrupt
        return terms
    poison(interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(MODEL, OBJECTIVE, dataset or dsprites, tiny(steps, checkpoint_every=2),
              out_dir=out)
    assert checkpoint.load_checkpoint(out)["step"] == 2


def test_cli_resume_without_steps_continues_to_the_runs_own_target(dsprites, tmp_path, poison,
                                                                  capsys, monkeypatch):
    interrupted_run(dsprites, tmp_path, poison)
    monkeypatch.undo()                              # the objective is itself again
    monkeypatch.setenv("BVAE_STEPS", "6")          # the default budget, which must not win
    code, out, err = run_cli(["train", "--out", tmp_path, "--resume", *TINY], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 4
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 4



def test_resume_on_another_dataset_is_refused_naming_both(tmp_path, capsys):
    images = (torch.rand(16, 1, 64, 64) > 0.5).float()
    train(MODEL, OBJECTIVE, TensorImages(images, name="blobs"), tiny(2), out_dir=tmp_path)
    code, _, err = run_cli(["train", "--out", tmp_path, "--resume", "--steps", "4", *TINY],
                           capsys)
    assert_one_line_error(code, err, "TensorImages(blobs", "DSprites(")
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 2
    # the same data continues, on whatever device
    resumed = train(MODEL, OBJECTIVE, TensorImages(images, name="blobs"), tiny(4),
                    out_dir=tmp_path, resume=True)
    assert resumed.step == 4


# -- 4. metrics refuse questions without an answer -------------------------------------------

def noise(v):
    return torch.randn(v.shape[0], 3, generator=torch.Generator().manual_seed(v.shape[0]))


def test_factor_vae_score_refuses_a_single_factor():
    with pytest.raises(ValueError, match="at least 2 factors"):
        factor_vae_score(noise, IdentityObservations(), factors=["scale"], num_train=50,
                         num_eval=50, num_variance_estimate=200)


@pytest.mark.parametrize("metric", [factor_vae_score, beta_vae_score])
def test_classifying_metrics_refuse_a_constant_factor(metric):
    grid = IdentityObservations((3, 1, 4), factor_names=("a", "b", "c"))
    with pytest.raises(ValueError, match=r"'b' has a single value.*factors=\('a', 'c'\)"):
        metric(identity, grid, factors=None, num_train=50, num_eval=50)


def test_sap_refuses_one_point_and_constant_continuous_factors():
    z, v = np.arange(10.0)[:, None], np.arange(10)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="at least 2 training points"):
            sap_from_codes(z[:1], v[:1], continuous_factors=True)
    with pytest.raises(ValueError, match="constant"):
        sap_from_codes(z, np.zeros((10, 1), np.int64), continuous_factors=True)


def test_metrics_refuse_codes_without_dimensions_and_data_without_factors():
    with pytest.raises(ValueError, match="no dimensions"):
        mig(lambda v: torch.zeros(v.shape[0], 0), IdentityObservations(), num_points=100,
            num_bins=5)
    with pytest.raises(TypeError, match="ground-truth dataset.*TensorImages"):
        mig(identity, TensorImages(torch.zeros(4, 1, 64, 64)))


# -- 5. NaN and infinity fail range checks ---------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_infinity_fail_range_checks(bad):
    images = torch.zeros(3, 1, 64, 64)
    images[1, 0, 5, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite.*image 1"):
        TensorImages(images)
    with pytest.raises(ValueError, match="temperature"):
        ModelConfig(temperature=bad, categorical_dims=(3,))
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax_sample(torch.zeros(2, 3), bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruction_loss(torch.zeros(3, 1, 64, 64), images)
    model = build_model(MODEL)
    with pytest.raises(ValueError, match="limit must be a finite number"):
        plot_traversal(model, torch.zeros(2, 1, 64, 64), limit=bad)


@pytest.mark.parametrize("limit", ["nan", "inf"])
def test_cli_traverse_refuses_a_limit_that_is_not_finite(limit, tmp_path, capsys):
    code, _, err = run_cli(["traverse", tmp_path, "--out", tmp_path / "t.png",
                            "--limit", limit], capsys)
    assert_one_line_error(code, err, "--limit", "finite")


# -- 6. output paths -------------------------------------------------------------------------

def test_empty_out_is_refused_not_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--out", "", "--steps", "1", *TINY], capsys)
    assert_one_line_error(code, err, "--out is empty")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="out_dir is empty"):
        train(MODEL, OBJECTIVE, DSprites(), tiny(1), out_dir="")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(MODEL, OBJECTIVE, DSprites(), tiny(1), out_dir=out)
    return out


def test_traverse_out_names_the_file_it_writes(run_dir, tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    code, _, err = run_cli(["traverse", run_dir, "--out", folder], capsys)
    assert_one_line_error(code, err, "is a directory", "traversal.png")
    assert list(tmp_path.iterdir()) == [folder]
    code, out, err = run_cli(["traverse", run_dir, "--out", tmp_path / "plain"], capsys)
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'plain.png'}" and (tmp_path / "plain.png").is_file()


# -- 7. loaders ------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_loaders_refuse_a_limit_that_is_not_a_positive_count(limit, tmp_path):
    with pytest.raises(ValueError, match="limit must be None"):
        load_mnist(tmp_path, limit=limit)
    with pytest.raises(ValueError, match="limit must be None"):
        load_celeba(tmp_path, limit=limit)


@pytest.mark.parametrize("dtype, value", [(np.float32, 0.5), (np.float64, np.nan),
                                          (np.uint8, 255), (np.int16, -1)])
def test_official_layout_with_non_binary_pixels_is_refused(tmp_path, dtype, value):
    imgs, grid = write_official_layout(tmp_path / "ok.npz")
    grey = imgs.astype(dtype)
    grey[7, 3, 4] = value
    classes = np.concatenate([np.zeros((len(grid), 1), np.int64), grid], axis=1)
    np.savez(tmp_path / "grey.npz", imgs=grey, latents_classes=classes)
    with pytest.raises(ValueError, match=r"binary \(0/1\).*image 7, pixel \(3, 4\)"):
        DSprites.from_npz(tmp_path / "grey.npz")


# -- 8. after kill -9 ------------------------------------------------------------------------

def test_resume_repairs_a_history_json_left_short_by_a_kill(dsprites, tmp_path):
    train(MODEL, OBJECTIVE, dsprites, tiny(4, checkpoint_every=2), out_dir=tmp_path)
    history = checkpoint.load_checkpoint(tmp_path)["history"]
    short = {k: v[:-1] for k, v in history.items()}     # killed between rename and history
    (tmp_path / checkpoint.HISTORY_NAME).write_text(json.dumps(short))
    train(MODEL, OBJECTIVE, dsprites, tiny(4, checkpoint_every=2), out_dir=tmp_path,
          resume=True)
    assert json.loads((tmp_path / checkpoint.HISTORY_NAME).read_text()) == history


def test_temporary_files_of_killed_writes_are_removed_on_the_next_start(dsprites, tmp_path):
    stale = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".history.json.x9.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    other = tmp_path / "notes.tmp"
    other.write_text("mine")
    train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)
    assert not any(p.exists() for p in stale) and other.exists()


# -- 9. a full disk --------------------------------------------------------------------------

def test_full_disk_while_saving_says_so_and_keeps_the_old_checkpoint(dsprites, tmp_path,
                                                                     monkeypatch, capsys):
    train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        f.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="disk is full.*intact"):
        train(MODEL, OBJECTIVE, dsprites, tiny(4), out_dir=tmp_path, resume=True)
    code, _, err = run_cli(["train", "--out", tmp_path, "--resume", "--steps", "4", *TINY],
                           capsys)
    assert_one_line_error(code, err, "disk is full", "intact")
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "history.json"]


# -- 10. damaged checkpoints -----------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("rng", {}),
    ("rng.torch", torch.zeros(0, dtype=torch.uint8)),
    ("history", []),
    ("history.loss", 3.0),
    ("optimizer", []),
    ("step", "2"),
    ("model", {"w": 1.0}),
])
def test_malformed_checkpoint_field_is_named_on_one_line(run_dir, tmp_path, field, value,
                                                         capsys):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    key, _, sub = field.partition(".")
    if sub:
        ckpt[key][sub] = value
    else:
        ckpt[key] = value
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=rf"damaged checkpoint: {key}"):
        checkpoint.load_checkpoint(tmp_path)
    code, _, err = run_cli(["train", "--out", tmp_path, "--resume", *TINY], capsys)
    assert_one_line_error(code, err, "damaged checkpoint")


def test_checkpoint_without_the_optional_fields_of_older_versions_still_loads(run_dir,
                                                                             tmp_path):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del ckpt["scaler"], ckpt["extra"]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 1


def test_unexpected_error_in_the_cli_is_one_line(monkeypatch, capsys):
    def broken(args):
        raise KeyError("boom")
    monkeypatch.setattr(cli, "_cmd_evaluate", broken)
    code, _, err = run_cli(["evaluate", "somewhere"], capsys)
    assert_one_line_error(code, err, "KeyError", "BVAE_DEBUG=1")


# -- 11. errors nobody could act on ----------------------------------------------------------

def test_float64_images_are_encoded_like_float32_ones():
    model = build_model(MODEL).eval()
    x = (torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for a, b in zip(model.encode(x.double()), model.encode(x)):
        assert torch.equal(a, b)
    assert torch.equal(model(x.double())["recon"], model(x)["recon"])


def test_empty_batch_into_the_objective_is_refused():
    model = build_model(MODEL)
    x = torch.zeros(0, 1, 64, 64)
    with pytest.raises(ValueError, match="empty batch"):
        objectives.build_objective(OBJECTIVE)(model(x), x, 0)


def test_corrupt_manifest_names_its_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / zoo.MANIFEST_NAME).write_text('{"metrics": ')
    with pytest.raises(ValueError, match=r"m/manifest.json is not valid JSON"):
        zoo.manifest("m", root=tmp_path)


def test_absurd_sizes_are_refused_before_the_allocator():
    with pytest.raises(ValueError, match="GiB.*at most"):
        DSprites().sample_factors(10**12)
    with pytest.raises(ValueError, match="GiB.*at most"):
        IdentityObservations().sample_factors(10**12)


# -- 12. hyphenated spellings ----------------------------------------------------------------

def test_cli_accepts_hyphenated_spellings_of_every_choice(tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "x", "--objective", "beta-vae",
                              "--dataset", "dsprites_file"])
    assert (args.objective, args.dataset) == ("beta_vae", "dsprites-file")
    code, _, err = run_cli(["train", "--out", tmp_path, "--steps", "1", "--objective",
                            "beta-tcvae", "--estimator", "MWS", "--model", "higgins-mlp",
                            *TINY], capsys)
    assert code == 0, err
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt["objective_config"]["name"] == "beta_tcvae"
    assert ckpt["objective_config"]["estimator"] == "mws"
    assert ckpt["model_config"]["architecture"] == "higgins_mlp"
    code, _, err = run_cli(["evaluate", tmp_path / "missing", "--metrics", "beta-vae,mig"],
                           capsys)
    assert_one_line_error(code, err, "no checkpoint")     # the metrics were understood


# One step further than the listed items: the same classes of bad input (non-finite values,
# wrong types, wrong sizes) at more public entry points, each refused with an error that says
# what was wrong -- not torch's shape error or an AttributeError from deep inside.
def _entry_point_cases():
    from bvae_lib import baselines, viz
    from bvae_lib import distributions as D
    from bvae_lib import metrics
    from bvae_lib.models import ModelConfig, build_model

    ds = DSprites()
    model = build_model(ModelConfig(latent_dim=3)).eval()
    v = ds.sample_factors(5, torch.Generator().manual_seed(0))
    nan_images = torch.full((2, 1, 64, 64), float("nan"))
    return {
        "reparameterize, mu and logvar of other shapes":
            (lambda: D.reparameterize(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
        "representation of NaN images":
            (lambda: model.representation(nan_images), "NaN"),
        "reconstruction figure of NaN images":
            (lambda: viz.plot_reconstructions(model, nan_images), "NaN"),
        "KL bar chart with a NaN":
            (lambda: viz.plot_kl_per_latent([1.0, float("nan")]), "finite"),
        "PCA of a bare tensor":
            (lambda: baselines.fit_pca(torch.zeros(20, 1, 64, 64), 3), "TensorImages"),
        "shape in reconstruction, counts that differ":
            (lambda: metrics.shape_in_reconstruction(torch.zeros(10, 1, 64, 64), v, ds),
             "factor classes"),
    }


@pytest.mark.parametrize("case", list(_entry_point_cases()))
def test_public_entry_points_refuse_bad_input_clearly(case):
    call, words = _entry_point_cases()[case]
    with pytest.raises((ValueError, TypeError), match=words):
        call()
