"""The training loop: loss falls, history, exact resume, NaN handling, budgets, devices."""

import json
import math

import pytest
import torch

from bvae_lib import checkpoint, objectives
from bvae_lib import train as train_lib
from bvae_lib.data import DSprites, TensorImages
from bvae_lib.models import ModelConfig, build_model
from bvae_lib.objectives import BetaVAEConfig
from bvae_lib.train import (NonFiniteLossError, TrainConfig, budget, pick_device,
                            progress_enabled, train)

# Small enough for a shared 2-core CPU: the Burgess net with 4 latents, batches of 8.
MODEL = ModelConfig(latent_dim=4)
OBJECTIVE = BetaVAEConfig(beta=4.0)


def tiny(steps, **kw):
    kw.setdefault("device", "cpu")      # bitwise claims are CPU claims, even on a GPU machine
    kw.setdefault("batch_size", 8)
    kw.setdefault("log_every", 2)
    kw.setdefault("progress", False)
    return TrainConfig(steps=steps, **kw)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def dsprites():
    return DSprites()


def test_loss_falls_on_procedural_dsprites(dsprites):
    result = train(MODEL, OBJECTIVE, dsprites, tiny(16, lr=2e-3, log_every=4))
    loss = result.history["loss"]
    assert len(loss) == 4
    # Untrained Bernoulli decoder: ~4096 * ln 2 = 2839 nats; a few steps learn the (mostly
    # black) background.
    assert loss[-1] < 0.6 * loss[0], loss
    assert not result.model.training, "train() returns the model in eval mode"


def test_history_has_every_term_every_log_every_steps(dsprites):
    result = train(MODEL, OBJECTIVE, dsprites, tiny(4, log_every=2))
    h = result.history
    assert h["step"] == [2, 4]
    for key in ("loss", "recon", "kl"):
        assert len(h[key]) == 2 and all(isinstance(v, float) for v in h[key]), key
    assert len(h["kl_per_latent"]) == 2 and all(len(v) == MODEL.latent_dim
                                                 for v in h["kl_per_latent"])
    # every term of the objective is recorded, whatever the objective returns
    objective = objectives.build_objective(OBJECTIVE)
    x = dsprites.sample(4, torch.Generator().manual_seed(0))[0]
    assert set(objective(build_model(MODEL)(x), x, 0)) | {"step"} == set(h)


def test_history_entry_is_the_average_of_its_window_and_logging_does_not_change_training(dsprites):
    every = train(MODEL, OBJECTIVE, dsprites, tiny(4, log_every=1))
    windows = train(MODEL, OBJECTIVE, dsprites, tiny(4, log_every=2))
    assert_bitwise_equal(weights(every.model), weights(windows.model))
    for key in ("loss", "recon", "kl"):
        per_step = every.history[key]
        expected = [sum(per_step[:2]) / 2, sum(per_step[2:]) / 2]
        assert windows.history[key] == pytest.approx(expected, rel=1e-6), key
    assert windows.history["kl_per_latent"][1] == pytest.approx(
        [sum(v[j] for v in every.history["kl_per_latent"][2:]) / 2 for j in range(4)], rel=1e-6)


# fp32 in NCHW (the loop before it had switches), and bf16 autocast in channels-last (the
# default on a CPU with bf16 instructions and on a GPU). On a CPU without bf16 instructions
# amp=True is emulated: slower, with a warning, but the same code path.
SWITCHES = [dict(amp=False, channels_last=False), dict(amp=True, channels_last=True)]


@pytest.mark.filterwarnings("ignore:TrainConfig.amp=True on a CPU without bf16")
@pytest.mark.parametrize("switches", SWITCHES, ids=["fp32-nchw", "bf16-channels-last"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(dsprites, tmp_path, switches):
    n = 3
    straight = train(MODEL, OBJECTIVE, dsprites, tiny(2 * n, log_every=n, **switches),
                     out_dir=tmp_path / "a")
    first = train(MODEL, OBJECTIVE, dsprites, tiny(n, log_every=n, **switches),
                  out_dir=tmp_path / "b")
    assert checkpoint.load_checkpoint(tmp_path / "b")["step"] == n
    resumed = train(MODEL, OBJECTIVE, dsprites, tiny(2 * n, log_every=n, **switches),
                    out_dir=tmp_path / "b", resume=True)
    assert resumed.steps_run == n
    assert_bitwise_equal(weights(straight.model), weights(resumed.model))
    assert straight.history == resumed.history
    # the optimiser state continues too, not only the weights
    a = checkpoint.load_checkpoint(tmp_path / "a")["optimizer"]["state"]
    b = checkpoint.load_checkpoint(tmp_path / "b")["optimizer"]["state"]
    for i in a:
        for k in a[i]:
            assert torch.equal(a[i][k], b[i][k])
    assert first.step == n


def test_resume_at_the_final_step_loads_without_training(dsprites, tmp_path):
    done = train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)
    again = train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path, resume=True)
    assert again.steps_run == 0
    assert_bitwise_equal(weights(done.model), weights(again.model))


def test_same_seed_same_weights_other_seed_other_weights(dsprites):
    a = train(MODEL, OBJECTIVE, dsprites, tiny(2, seed=1))
    b = train(MODEL, OBJECTIVE, dsprites, tiny(2, seed=1))
    c = train(MODEL, OBJECTIVE, dsprites, tiny(2, seed=2))
    assert_bitwise_equal(weights(a.model), weights(b.model))
    assert not torch.equal(a.model.to_gaussian.weight, c.model.to_gaussian.weight)


def test_checkpoint_and_history_json_are_written(dsprites, tmp_path):
    result = train(MODEL, OBJECTIVE, dsprites, tiny(4, checkpoint_every=2), out_dir=tmp_path)
    assert result.checkpoint == tmp_path / "checkpoint.pt"
    with open(tmp_path / "history.json") as f:
        assert json.load(f) == result.history
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_existing_run_is_not_overwritten_without_resume(dsprites, tmp_path):
    train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)
    with pytest.raises(ValueError, match="resume=True"):
        train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)


@pytest.mark.parametrize("change, match", [
    (dict(model=ModelConfig(latent_dim=5)), "model config"),
    (dict(objective=BetaVAEConfig(beta=1.0)), "objective"),
    (dict(config=dict(lr=1e-3)), "lr"),
    (dict(config=dict(steps=1)), "already at step 2"),
])
def test_resume_refuses_a_run_with_other_settings(dsprites, tmp_path, change, match):
    train(MODEL, OBJECTIVE, dsprites, tiny(2), out_dir=tmp_path)
    kw = {"steps": 4, **change.get("config", {})}
    with pytest.raises(ValueError, match=match):
        train(change.get("model", MODEL), change.get("objective", OBJECTIVE), dsprites,
              tiny(**kw), out_dir=tmp_path, resume=True)


def test_nan_loss_names_step_and_term_and_keeps_last_good_checkpoint(dsprites, tmp_path,
                                                                     monkeypatch):
    real = objectives.build_objective

    def poisoned(config, **kw):
        objective = real(config, **kw)

        def call(out, x, step):
            terms = objective(out, x, step)
            if step == 3:
                terms["kl"] = terms["kl"] * float("nan")
                terms["loss"] = terms["loss"] + terms["kl"]
            return terms
        return call

    monkeypatch.setattr(train_lib, "build_objective", poisoned)   # what train() calls
    config = tiny(4, log_every=2, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 3.*loss=nan.*kl=nan"):
        train(MODEL, OBJECTIVE, dsprites, config, out_dir=tmp_path)
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt["step"] == 2
    assert all(math.isfinite(v) for v in ckpt["history"]["loss"])


@pytest.mark.parametrize("model, objective, terms", [
    (MODEL, objectives.AnnealedVAEConfig(), {"capacity"}),
    (MODEL, objectives.BetaTCVAEConfig(), {"mi", "tc", "dim_kl"}),
    (ModelConfig(latent_dim=4, categorical_dims=(3,)), objectives.JointVAEConfig(),
     {"kl_cont", "kl_disc", "capacity"}),
])
def test_every_objective_trains_and_its_own_terms_are_recorded(dsprites, model, objective, terms):
    result = train(model, objective, dsprites, tiny(2))
    assert terms <= set(result.history)
    assert all(math.isfinite(v) for v in result.history["loss"])


def test_tensor_images_train_on_a_plain_tensor_dataset():
    g = torch.Generator().manual_seed(0)
    images = TensorImages((torch.rand(20, 1, 64, 64, generator=g) > 0.5).float())
    result = train(MODEL, OBJECTIVE, images, tiny(2))
    assert result.history["step"] == [2]


def test_dataset_that_does_not_fit_the_model_is_refused(dsprites):
    with pytest.raises(ValueError, match=r"channels=1"):
        train(ModelConfig(channels=3), OBJECTIVE, dsprites, tiny(1))
    with pytest.raises(TypeError, match="protocol"):
        train(MODEL, OBJECTIVE, object(), tiny(1))


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(steps=1, batch_size=2.5)


def test_progress_bar_shows_terms_and_turns_off(dsprites, capsys, monkeypatch):
    monkeypatch.delenv("BVAE_PROGRESS", raising=False)
    train(MODEL, OBJECTIVE, dsprites, tiny(1, progress=True))
    err = capsys.readouterr().err
    assert "train" in err and "loss=" in err
    train(MODEL, OBJECTIVE, dsprites, tiny(1, progress=False))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("BVAE_PROGRESS", "0")
    assert not progress_enabled(True) and not progress_enabled(None)
    train(MODEL, OBJECTIVE, dsprites, tiny(1, progress=True))
    assert capsys.readouterr().err == ""


def test_budget_is_short_on_cpu_and_overridden_by_env(monkeypatch):
    monkeypatch.delenv("BVAE_STEPS", raising=False)
    assert budget(cpu=123, device="cpu") == 123
    assert budget(cpu=123, gpu=456, device="cpu") == 123
    if torch.cuda.is_available():
        assert budget(cpu=123, device="cuda") == 300_000
    monkeypatch.setenv("BVAE_STEPS", "7")
    assert budget(cpu=123) == 7
    monkeypatch.setenv("BVAE_STEPS", "seven")
    with pytest.raises(ValueError, match="BVAE_STEPS"):
        budget(cpu=123)


def test_pick_device_prefers_accelerators_and_checks_requests():
    auto = pick_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif not torch.backends.mps.is_available():
        assert auto == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        pick_device("tpu9")


# The switches a GPU run uses, run on the CPU: each must train the same model as fp32 eager.
# Tolerances, relative to the fp32 loss. Step 0 (same weights, same batch, same noise):
# channels-last and compile only reorder fp32 sums (1e-5); bf16 rounds every activation to
# 8 significant bits (2^-9 relative), which the 4096-pixel sums average down (1e-3). Later
# steps follow diverging trajectories (chaotic in the last bits), so after 12 steps only the
# course is compared: within 5% (the loss itself falls by ~40% over these steps).
@pytest.mark.filterwarnings("ignore:TrainConfig.amp=True on a CPU without bf16")
@pytest.mark.parametrize("switches, step0_tol", [
    (dict(channels_last=True), 1e-5),
    (dict(amp=True), 1e-3),
    (dict(compile=True), 1e-5),
    (dict(amp=True, channels_last=True, compile=True), 1e-3),
], ids=["channels-last", "bf16", "compile", "all"])
def test_each_speed_switch_trains_like_fp32_on_the_cpu(dsprites, switches, step0_tol):
    fp32 = dict(amp=False, channels_last=False, compile=False)
    config = dict(steps=12, batch_size=16, log_every=1, lr=2e-3)
    ref = train(MODEL, OBJECTIVE, dsprites, tiny(**config, **fp32))
    run = train(MODEL, OBJECTIVE, dsprites, tiny(**config, **{**fp32, **switches}))
    assert ref.precision == "fp32"
    assert run.precision == ("bf16" if switches.get("amp") else "fp32")
    a, b = ref.history["loss"], run.history["loss"]
    assert abs(b[0] - a[0]) <= step0_tol * a[0], (a[0], b[0])
    assert abs(b[-1] - a[-1]) <= 0.05 * a[-1], (a[-1], b[-1])
    assert b[-1] < 0.8 * b[0]
    # the model comes back in the usual memory layout, whatever the loop used
    assert all(p.is_contiguous() for p in run.model.parameters())


def test_precision_follows_the_switch_and_the_hardware(monkeypatch):
    from bvae_lib import train as train_lib

    cpu = torch.device("cpu")
    assert train_lib.precision(TrainConfig(steps=1, amp=False), cpu) == "fp32"
    assert train_lib.precision(TrainConfig(steps=1, amp=True), cpu) == "bf16"
    monkeypatch.setattr(train_lib, "cpu_has_native_bf16", lambda: False)
    assert train_lib.precision(TrainConfig(steps=1), cpu) == "fp32"
    monkeypatch.setattr(train_lib, "cpu_has_native_bf16", lambda: True)
    assert train_lib.precision(TrainConfig(steps=1), cpu) == "bf16"
    assert train_lib.precision(TrainConfig(steps=1, amp=True), torch.device("mps")) == "fp32"
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(steps=1, amp="yes")


def test_cpu_bf16_detection_honours_portable_kernels(monkeypatch):
    from bvae_lib import train as train_lib

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert train_lib.cpu_has_native_bf16() is False


def test_compile_falls_back_to_eager_with_a_warning(dsprites, monkeypatch):
    from bvae_lib import train as train_lib

    def broken(model):
        def fn(x):
            raise RuntimeError("inductor: no compiler")
        return fn
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        result = train(MODEL, OBJECTIVE, dsprites, tiny(4, amp=False, compile=True))
    assert result.history["loss"][-1] < result.history["loss"][0]
    monkeypatch.setattr(train_lib, "_cxx_compiler", lambda: None)
    with pytest.warns(UserWarning, match="C\\+\\+ compiler"):
        train(MODEL, OBJECTIVE, dsprites, tiny(2, amp=False, compile=True))


def test_the_loop_reads_nothing_back_per_step_and_checks_foreign_data_once(dsprites):
    seen = []
    original = objectives.reconstruction_loss

    class Foreign:                      # a dataset of the protocol that is not the library's
        def __len__(self):
            return 16

        def images(self, idx):
            return torch.full((len(idx), 1, 64, 64), 2.0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*first images"):
        train(MODEL, OBJECTIVE, Foreign(), tiny(2))
    try:
        objectives.reconstruction_loss = lambda *a, **k: (seen.append(a[3] if len(a) > 3 else
                                                                      k.get("check_range")),
                                                          original(*a, **k))[1]
        train(MODEL, OBJECTIVE, dsprites, tiny(3))
    finally:
        objectives.reconstruction_loss = original
    assert seen and not any(seen), "the loop must not check the batch range on the device"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_run_trains_and_resumes_on_cpu(tmp_path):
    config = tiny(40, batch_size=32, log_every=10, device="cuda")
    result = train(MODEL, OBJECTIVE, DSprites("cuda"), config, out_dir=tmp_path)
    assert result.device.type == "cuda"
    assert result.history["loss"][-1] < result.history["loss"][0]
    model = checkpoint.load_model(tmp_path)          # a GPU checkpoint loads on the CPU
    x = DSprites().sample(4, torch.Generator().manual_seed(0))[0]
    assert torch.isfinite(model.representation(x)).all()
    with pytest.warns(UserWarning, match="another kind of device"):
        train(MODEL, OBJECTIVE, DSprites(), tiny(42, batch_size=32, log_every=10, device="cpu"),
              out_dir=tmp_path, resume=True)


def test_a_long_run_announces_its_expected_duration(dsprites, monkeypatch, capsys):
    from bvae_lib import train as train_lib

    monkeypatch.setattr(train_lib, "ETA_MIN_STEPS", 6)
    monkeypatch.setattr(train_lib._Eta, "WARM", 1)
    monkeypatch.setattr(train_lib._Eta, "MEASURE", 3)
    train(MODEL, OBJECTIVE, dsprites, tiny(6))
    line = capsys.readouterr().out.strip()
    assert line.startswith("6 steps on cpu") and "steps/s over steps 1-4" in line
    assert "for the run" in line and "from now" in line
    monkeypatch.setattr(train_lib, "ETA_MIN_STEPS", 7)
    train(MODEL, OBJECTIVE, dsprites, tiny(6))
    assert capsys.readouterr().out == ""      # short runs (the chapters' CPU budgets) stay quiet
