"""Every architecture maps dSprites batches to the right shapes, trains end to end (gradients
reach every parameter), rebuilds from its saved config, and refuses malformed input."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bvae_lib.data import DSprites
from bvae_lib.models import ARCHITECTURES, JointVAE, ModelConfig, VAE, build_model

M = 4


@pytest.fixture(scope="module")
def images():
    x, _ = DSprites().sample(M, generator=torch.Generator().manual_seed(0))
    return x


CASES = [(arch, cats, dec) for arch in ARCHITECTURES for cats, dec in [((), "bernoulli"), ((3, 2), "gaussian")]]


@pytest.mark.parametrize("arch,cats,decoder", CASES)
def test_model_maps_dsprites_to_the_right_shapes_and_every_parameter_gets_a_gradient(
        images, arch, cats, decoder):
    torch.manual_seed(0)
    config = ModelConfig(architecture=arch, latent_dim=7, categorical_dims=cats, decoder=decoder)
    model = build_model(config)
    assert type(model) is (JointVAE if cats else VAE)
    out = model(images)
    assert out["recon"].shape == (M, 1, 64, 64)
    for key in ("mu", "logvar", "z"):
        assert out[key].shape == (M, 7), key
    loss = out["recon"].square().mean() + out["mu"].sum() + out["logvar"].sum()
    if cats:
        assert [l.shape for l in out["logits"]] == [(M, 3), (M, 2)]
        assert [c.shape for c in out["c"]] == [(M, 3), (M, 2)]
        loss = loss + sum(l.sum() for l in out["logits"])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"
    rep = model.representation(images)
    assert rep.shape == (M, 7 + sum(cats)) and not rep.requires_grad


def test_training_mode_samples_z_and_eval_mode_uses_the_mean(images):
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    out = model(images)
    assert not torch.allclose(out["z"], out["mu"])
    model.eval()
    a, b = model(images), model(images)
    assert torch.equal(a["z"], a["mu"]) and torch.equal(a["recon"], b["recon"])
    torch.testing.assert_close(model.representation(images), a["mu"])


def test_joint_vae_uses_relaxed_samples_in_training_and_argmax_one_hot_in_eval(images):
    torch.manual_seed(0)
    model = build_model(ModelConfig(categorical_dims=(3,)))
    c = model(images)["c"][0]
    assert torch.allclose(c.sum(1), torch.ones(M)) and not torch.all((c == 0) | (c == 1))
    model.eval()
    out = model(images)
    expected = nn.functional.one_hot(out["logits"][0].argmax(1), 3).float()
    assert torch.equal(out["c"][0], expected)
    rep = model.representation(images)
    torch.testing.assert_close(rep[:, 10:], torch.softmax(out["logits"][0], 1))
    # the decoder reads cat([z, c]): decode() reproduces forward's reconstruction
    torch.testing.assert_close(model.decode(torch.cat([out["z"], out["c"][0]], 1)), out["recon"])


def test_channels_last_gives_the_same_output(images):
    torch.manual_seed(0)
    for arch in ("burgess", "locatello"):
        model = build_model(ModelConfig(architecture=arch)).eval()
        ref = model(images)["recon"]
        model = model.to(memory_format=torch.channels_last)
        out = model(images.to(memory_format=torch.channels_last))["recon"]
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_config_round_trip_rebuilds_the_same_network():
    config = ModelConfig(architecture="locatello", latent_dim=6, categorical_dims=(3,),
                         decoder="gaussian", channels=3)
    d = dataclasses.asdict(config)
    d["categorical_dims"] = list(d["categorical_dims"])          # as it comes back from JSON
    rebuilt = ModelConfig(**d)
    assert rebuilt == config
    a, b = build_model(config), build_model(rebuilt)
    b.load_state_dict(a.state_dict())                             # same parameter names and shapes
    assert build_model(d).config == config                        # a dict is accepted too


def test_architectures_match_their_papers():
    def convs(model):
        return [m.out_channels for m in model.encoder if isinstance(m, nn.Conv2d)]

    def linears(seq):
        return [m.out_features for m in seq if isinstance(m, nn.Linear)]

    burgess = build_model(ModelConfig(architecture="burgess"))
    assert convs(burgess) == [32, 32, 32, 32] and linears(burgess.encoder) == [256, 256]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2)
               for m in burgess.encoder if isinstance(m, nn.Conv2d))
    assert burgess.to_gaussian.out_features == 20                 # 10 means + 10 log-variances
    locatello = build_model(ModelConfig(architecture="locatello"))
    assert convs(locatello) == [32, 32, 64, 64] and linears(locatello.encoder) == [256]
    assert linears(locatello.decoder) == [256, 1024]
    higgins = build_model(ModelConfig(architecture="higgins_mlp"))
    assert linears(higgins.encoder) == [1200, 1200]
    assert linears(higgins.decoder) == [1200, 1200, 1200, 4096]
    assert sum(isinstance(m, nn.Tanh) for m in higgins.decoder) == 3


def test_representation_accepts_numpy_and_colour_images():
    model = build_model(ModelConfig(channels=3, decoder="gaussian"))
    x = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float64)
    assert model.representation(x).shape == (2, 10)


@pytest.mark.parametrize("kwargs,name", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(architecture="resnet"), "architecture"),
    (dict(decoder="poisson"), "decoder"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(categorical_dims=(3, 1)), "categorical_dims"),
    (dict(categorical_dims=3), "categorical_dims"),
    (dict(channels=0), "channels"),
    (dict(image_size=32), "image_size"),
    (dict(init="xavier"), "init"),
])
def test_bad_config_is_refused_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**kwargs)


def test_images_of_the_wrong_shape_are_refused_naming_x(images):
    model = build_model(ModelConfig())
    for bad in (images[:, 0], images[:, :, :28, :28], images.repeat(1, 3, 1, 1)):
        with pytest.raises(ValueError, match=r"x must have shape \(M, 1, 64, 64\)"):
            model(bad)
    with pytest.raises(TypeError, match="x must be float"):
        model(images.long())


def test_codes_of_the_wrong_latent_size_are_refused_naming_z():
    model = build_model(ModelConfig(latent_dim=10, categorical_dims=(3,)))
    with pytest.raises(ValueError, match=r"z must have shape \(M, 13\)"):
        model.decode(torch.zeros(2, 10))


def test_joint_vae_without_categoricals_is_refused():
    with pytest.raises(ValueError, match="categorical_dims"):
        JointVAE(ModelConfig())


def test_he_init_zeroes_every_bias_and_scales_weights_by_fan_in():
    torch.manual_seed(0)
    model = build_model(ModelConfig(categorical_dims=(3,), latent_dim=6))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert any(m in layers for m in model.to_logits.modules())
    for m in layers:
        assert torch.count_nonzero(m.bias) == 0
        fan_in = nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
        assert abs(m.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.25


def test_default_init_sees_the_image_and_pytorch_init_barely_does():
    """The reason for the "he" default (models module docstring): with PyTorch's default
    initialisation the Burgess encoder's posterior means hardly depend on the image."""
    x, _ = DSprites().sample(256, generator=torch.Generator().manual_seed(0))
    spread = {}
    for init in ("he", "pytorch"):
        torch.manual_seed(0)
        with torch.no_grad():
            mu, _ = build_model(ModelConfig(init=init)).encode(x)
        spread[init] = (mu.std(0).mean() / mu.mean(0).abs().mean()).item()
    assert spread["he"] > 0.3
    assert spread["pytorch"] < 0.05


def test_configs_stored_before_init_existed_read_back_as_pytorch_init():
    from bvae_lib.models import stored_model_config
    old = {k: v for k, v in dataclasses.asdict(ModelConfig(categorical_dims=(3,))).items()
           if k != "init"}
    old["categorical_dims"] = [3]                      # as JSON gives it back
    cfg = ModelConfig(**stored_model_config(old))
    assert cfg.init == "pytorch" and cfg.categorical_dims == (3,)
    assert stored_model_config({**old, "init": "he"})["init"] == "he"
