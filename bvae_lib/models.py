"""Models: encoders and decoders for 64 x 64 images, the VAE and the joint VAE.

A model is built from a :class:`ModelConfig`, a small dataclass saved with every checkpoint:
``build_model(ModelConfig(**dataclasses.asdict(config)))`` rebuilds the same network.

Three architectures, each written down in its paper (see the functions below for the layers):

=================  =========================================================================
``"burgess"``      Burgess et al. 2018, App. A.1: 4 conv (32 ch) + 2 FC (256). The default.
``"higgins_mlp"``  Higgins et al. 2017, App. A, Table 1 (dSprites): MLP 1200-1200 / 1200x3 tanh
``"locatello"``    disentanglement_lib (Locatello et al. 2019, Table 1): conv 32,32,64,64 + FC 256
=================  =========================================================================

Two decoders: ``"bernoulli"`` (the decoder outputs logits, for binary images such as dSprites)
and ``"gaussian"`` (it outputs the means of a Gaussian with fixed unit variance, for greyscale
or colour images). The objective (``bvae_lib.objectives``) turns either output into -log p(x|z).

A :class:`JointVAE` adds categorical latents relaxed with Gumbel-softmax (Dupont 2018).

Initialisation (``ModelConfig.init``). ``"he"``, the default: every weight drawn from N(0, 2 /
fan_in) (He et al. 2015, ``kaiming_normal_``, the usual choice for ReLU networks), every bias
zero (as in TensorFlow's default layers). ``"pytorch"``: PyTorch's own defaults, which draw the
biases from U(+-1/sqrt(fan_in)) and the weights with variance 1/(3 fan_in). With those, each
ReLU layer shrinks the part of the signal that depends on the image while the biases keep adding
constants: at initialisation the Burgess encoder's posterior means vary across dSprites images
by ~3e-4 against a constant part of ~0.035 -- the encoder is nearly blind. A beta-VAE recovers
within 1,000-2,500 steps; a capacity-annealed one (gamma = 1000) does not: it meets its KL
target C(t) with the same constant offsets for every image and stays on the average-image
plateau (chapter 8 shows both). Configs stored before this field existed were trained with
``"pytorch"`` and are read back that way (:func:`stored_model_config`).

Everything is plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear``, so the training loop
may call ``model.to(memory_format=torch.channels_last)``: flattening uses ``torch.flatten``,
which follows the logical (N, C, H, W) order whatever the memory layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .distributions import gumbel_softmax_sample, reparameterize
from ._validate import is_int

__all__ = ["ModelConfig", "VAE", "JointVAE", "build_model", "stored_model_config",
           "ARCHITECTURES", "DECODERS", "INITS"]

ARCHITECTURES = ("burgess", "higgins_mlp", "locatello")
DECODERS = ("bernoulli", "gaussian")
INITS = ("he", "pytorch")
#: The initialisation of every model whose stored config predates ``ModelConfig.init``.
LEGACY_INIT = "pytorch"
IMAGE_SIZE = 64


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; ``dataclasses.asdict(config)`` is what a checkpoint
    stores.

    Defaults: the Burgess et al. 2018 network with 10 latents and a Bernoulli decoder (dSprites);
    temperature 0.67 is Dupont 2018's Gumbel-softmax temperature (his code's default).
    """

    architecture: str = "burgess"           # "burgess" | "higgins_mlp" | "locatello"
    latent_dim: int = 10                    # d, continuous latents
    categorical_dims: tuple[int, ...] = ()  # JointVAE discrete latents, e.g. (3,); () = plain VAE
    temperature: float = 0.67               # tau of the Gumbel-softmax relaxation (Dupont 2018)
    decoder: str = "bernoulli"              # "bernoulli" | "gaussian"
    channels: int = 1                       # image channels (3 for CelebA)
    image_size: int = 64
    init: str = "he"                        # "he" | "pytorch" (see the module docstring)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got "
                             f"{self.architecture!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}; use "
                             f"'bernoulli' for binary images and 'gaussian' for grey/colour ones")
        if not is_int(self.latent_dim) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        # A checkpoint read back from JSON gives a list: store a tuple so configs compare equal.
        if isinstance(self.categorical_dims, (int, np.integer)):
            raise ValueError(f"categorical_dims must be a tuple of category counts, e.g. (3,), "
                             f"got the integer {self.categorical_dims}")
        self.categorical_dims = tuple(self.categorical_dims)
        for k in self.categorical_dims:
            if not is_int(k) or k < 2:
                raise ValueError(f"categorical_dims must hold integers >= 2 (categories of each "
                                 f"discrete latent), got {self.categorical_dims!r}")
        self.categorical_dims = tuple(int(k) for k in self.categorical_dims)
        if not (isinstance(self.temperature, (int, float, np.integer, np.floating))
                and not isinstance(self.temperature, bool)
                and math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got "
                             f"{self.temperature!r}; Dupont 2018 uses 0.67")
        if not is_int(self.channels) or self.channels < 1:
            raise ValueError(f"channels must be a positive integer (1 for dSprites, 3 for "
                             f"CelebA), got {self.channels!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}; 'he' (the "
                             f"default) trains reliably, 'pytorch' reproduces models stored "
                             f"before the option existed")
        if self.image_size != IMAGE_SIZE:
            raise ValueError(f"image_size must be {IMAGE_SIZE} (every architecture here is "
                             f"written for 64 x 64 images), got {self.image_size!r}; resize the "
                             f"images to 64 x 64")

    @property
    def code_dim(self) -> int:
        """Size of the decoder's input: d continuous latents plus one one-hot per categorical."""
        return self.latent_dim + sum(self.categorical_dims)


def stored_model_config(config: dict) -> dict:
    """A model config as read from a checkpoint or a shipped model, completed for this version:
    lists become tuples, and a config written before ``init`` existed gets
    ``init="pytorch"``, the initialisation its model was trained from."""
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(config).items()}
    out.setdefault("init", LEGACY_INIT)
    return out



# ---------------------------------------------------------------------------------------------
# Architectures. Each builder returns (encoder body, its feature size) or a decoder; the heads
# that map features to (mu, logvar) and to categorical logits live in the VAE.
# ---------------------------------------------------------------------------------------------

def _conv_stack(channels: Sequence[int]) -> list[nn.Module]:
    # 4x4 kernels, stride 2, padding 1 halve the size exactly: 64 -> 32 -> 16 -> 8 -> 4.
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
    return layers


def _deconv_stack(channels: Sequence[int]) -> list[nn.Module]:
    # The transpose of _conv_stack: 4 -> 8 -> 16 -> 32 -> 64; no ReLU after the last layer,
    # whose output is a logit or a mean.
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        if i < len(channels) - 2:
            layers.append(nn.ReLU())
    return layers


class _Unflatten(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, h):
        return h.reshape(h.shape[0], *self.shape)


def burgess_encoder(channels: int) -> tuple[nn.Sequential, int]:
    """Burgess et al. 2018, "Understanding disentangling in beta-VAE", Appendix A.1:
    4 convolutional layers, each 32 channels, 4x4 kernels, stride 2; then 2 fully connected
    layers of 256 units; ReLU. (A final linear layer to 2d units, the means and log-variances,
    is the VAE's head.)"""
    body = nn.Sequential(*_conv_stack([channels, 32, 32, 32, 32]), nn.Flatten(),
                         nn.Linear(32 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    return body, 256


def burgess_decoder(code_dim: int, channels: int) -> nn.Sequential:
    """Burgess et al. 2018, Appendix A.1: "the decoder architecture is the transpose of the
    encoder": FC 256, FC 256, FC 512 (= 32 x 4 x 4), then 4 transposed convolutions (32, 32, 32,
    C channels, 4x4, stride 2); ReLU."""
    return nn.Sequential(nn.Linear(code_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 32 * 4 * 4), nn.ReLU(), _Unflatten((32, 4, 4)),
                         *_deconv_stack([32, 32, 32, 32, channels]))


def higgins_mlp_encoder(channels: int) -> tuple[nn.Sequential, int]:
    """Higgins et al. 2017, "beta-VAE", Appendix A, Table 1 (dSprites): the image flattened to
    4096 inputs, fully connected 1200-1200, ReLU."""
    d_in = channels * IMAGE_SIZE * IMAGE_SIZE
    body = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 1200), nn.ReLU(),
                         nn.Linear(1200, 1200), nn.ReLU())
    return body, 1200


def higgins_mlp_decoder(code_dim: int, channels: int) -> nn.Sequential:
    """Higgins et al. 2017, Appendix A, Table 1 (dSprites): fully connected 1200-1200-1200-4096
    with tanh activations (the paper's choice for the decoder; the encoder uses ReLU)."""
    d_out = channels * IMAGE_SIZE * IMAGE_SIZE
    return nn.Sequential(nn.Linear(code_dim, 1200), nn.Tanh(), nn.Linear(1200, 1200), nn.Tanh(),
                         nn.Linear(1200, 1200), nn.Tanh(), nn.Linear(1200, d_out),
                         _Unflatten((channels, IMAGE_SIZE, IMAGE_SIZE)))


def locatello_encoder(channels: int) -> tuple[nn.Sequential, int]:
    """Locatello et al. 2019, "Challenging common assumptions...", Appendix, Table 1 (the
    ``conv_encoder`` of disentanglement_lib): conv 32, 32, 64, 64 channels, 4x4, stride 2; FC 256;
    ReLU."""
    body = nn.Sequential(*_conv_stack([channels, 32, 32, 64, 64]), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 256), nn.ReLU())
    return body, 256


def locatello_decoder(code_dim: int, channels: int) -> nn.Sequential:
    """Locatello et al. 2019, Table 1 (disentanglement_lib's ``deconv_decoder``): FC 256,
    FC 1024 (= 64 x 4 x 4), transposed conv 64, 32, 32, C channels, 4x4, stride 2; ReLU."""
    return nn.Sequential(nn.Linear(code_dim, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4),
                         nn.ReLU(), _Unflatten((64, 4, 4)),
                         *_deconv_stack([64, 64, 32, 32, channels]))


_BUILDERS = {
    "burgess": (burgess_encoder, burgess_decoder),
    "higgins_mlp": (higgins_mlp_encoder, higgins_mlp_decoder),
    "locatello": (locatello_encoder, locatello_decoder),
}


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------

class VAE(nn.Module):
    """A VAE with a diagonal-Gaussian encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))) and a
    Bernoulli or unit-variance Gaussian decoder p(x|z); prior p(z) = N(0, I).

    ``forward(x)`` returns ``dict(recon, mu, logvar, z)``: z is reparameterised in training mode
    and equal to mu in eval mode (so evaluation is deterministic). ``recon`` is the decoder's
    output: Bernoulli logits or Gaussian means, shape (M, C, 64, 64).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        make_encoder, make_decoder = _BUILDERS[config.architecture]
        self.encoder, features = make_encoder(config.channels)
        self.to_gaussian = nn.Linear(features, 2 * config.latent_dim)   # -> (mu, logvar)
        self.decoder = make_decoder(config.code_dim, config.channels)
        self._initialise()

    def _initialise(self, modules=None) -> None:
        """Apply ``config.init`` to ``modules`` (default: all; subclasses pass the heads they add)."""
        if self.config.init == "he":
            for m in (self.modules() if modules is None else modules):
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    # -- checks -------------------------------------------------------------------------------
    def _check_images(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor of images (M, {self.config.channels}, 64, 64), "
                            f"got {type(x).__name__}")
        expected = (self.config.channels, IMAGE_SIZE, IMAGE_SIZE)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (M, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(x.shape)}; add the channel axis with x.unsqueeze(1) "
                             f"and resize images to 64 x 64")
        if not x.is_floating_point():
            raise TypeError(f"x must be float with values in [0, 1], got {x.dtype}; divide "
                            f"uint8 images by 255")
        # float64 images (numpy's default) into a float32 network: cast, as representation()
        # always did, instead of torch's dtype error. Same dtype: .to() is a no-op.
        return x.to(dtype=next(self.parameters()).dtype)

    def _check_code(self, z: torch.Tensor) -> None:
        d = self.config.code_dim
        if z.dim() != 2 or z.shape[1] != d:
            what = f"{self.config.latent_dim} continuous latents"
            if self.config.categorical_dims:
                what += f" + one-hot codes of sizes {self.config.categorical_dims}"
            raise ValueError(f"z must have shape (M, {d}) ({what}), got {tuple(z.shape)}")

    # -- the model ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (M, d)."""
        h = self.encoder(self._check_images(x))
        mu, logvar = self.to_gaussian(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for codes z (M, code_dim): logits or means, (M, C, 64, 64)."""
        self._check_code(z)
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if self.training else mu
        return dict(recon=self.decoder(z), mu=mu, logvar=logvar, z=z)

    @torch.no_grad()
    def representation(self, x) -> torch.Tensor:
        """The codes the metrics score: the posterior means mu(x), (M, d), without gradients.

        Accepts a tensor or a numpy array; it is moved to the model's device.
        """
        return self.encode(self._to_model(x))[0]

    def _to_model(self, x) -> torch.Tensor:
        """Images for the read-out paths (representation): checked finite too -- one read of
        the batch, which training's encode() skips."""
        x = self._check_images(x)
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or infinite pixels; images must have finite values "
                             "in [0, 1]")
        return x.to(device=next(self.parameters()).device)


class JointVAE(VAE):
    """Continuous latents z (d Gaussians) plus categorical latents c, one per entry of
    ``categorical_dims`` (Dupont 2018, "Learning disentangled joint continuous and discrete
    representations").

    Each categorical has logits from its own linear head on the encoder features. In training
    mode c is a relaxed one-hot sample from the Concrete distribution at temperature tau
    (``gumbel_softmax_sample``), so gradients flow through it; in eval mode it is the one-hot
    argmax of the logits, as in Dupont's code. The decoder reads ``cat([z, c_1, ..., c_m])``.

    ``forward`` adds ``logits`` (list of (M, k)) and ``c`` (list of (M, k)) to the VAE's dict;
    ``z`` is the continuous part only. ``representation`` returns ``cat([mu, softmax(logits)...])``.
    """

    def __init__(self, config: ModelConfig):
        if not config.categorical_dims:
            raise ValueError("JointVAE needs categorical_dims, e.g. ModelConfig(categorical_dims="
                             "(3,)); use VAE (or build_model) for continuous latents only")
        super().__init__(config)
        features = self.to_gaussian.in_features
        self.to_logits = nn.ModuleList(nn.Linear(features, k) for k in config.categorical_dims)
        self._initialise(self.to_logits.modules())

    def encode_joint(self, x) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(mu, logvar, logits): the continuous posterior and one logits tensor per categorical."""
        h = self.encoder(self._check_images(x))
        mu, logvar = self.to_gaussian(h).chunk(2, dim=1)
        return mu, logvar, [head(h) for head in self.to_logits]

    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = self.encode_joint(x)
        return mu, logvar

    def forward(self, x: torch.Tensor) -> dict:
        mu, logvar, logits = self.encode_joint(x)
        if self.training:
            z = reparameterize(mu, logvar)
            c = [gumbel_softmax_sample(l, self.config.temperature) for l in logits]
        else:
            z = mu
            c = [nn.functional.one_hot(l.argmax(dim=1), l.shape[1]).to(l.dtype) for l in logits]
        recon = self.decoder(torch.cat([z, *c], dim=1))
        return dict(recon=recon, mu=mu, logvar=logvar, z=z, logits=logits, c=c)

    @torch.no_grad()
    def representation(self, x) -> torch.Tensor:
        """cat([mu, softmax(logits_1), ...]): (M, d + sum(categorical_dims))."""
        mu, _, logits = self.encode_joint(self._to_model(x))
        return torch.cat([mu, *[torch.softmax(l, dim=1) for l in logits]], dim=1)


def build_model(config: ModelConfig) -> VAE:
    """The model a config describes: a :class:`JointVAE` when it has ``categorical_dims``,
    otherwise a :class:`VAE`. A plain dict (as stored in a checkpoint) is accepted too."""
    if isinstance(config, dict):
        config = ModelConfig(**config)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (or its asdict), got "
                        f"{type(config).__name__}")
    return JointVAE(config) if config.categorical_dims else VAE(config)
