"""Dual-Swap Disentangling: the pairs, the swap and dual-swap losses on codes whose parts are
known, swap accuracy, training from the CLI and bitwise resume."""

import json

import pytest
import torch
from torch import nn

from bvae_lib import checkpoint, cli
from bvae_lib.data import DSprites, GroundTruthDataset, TensorImages
from bvae_lib.metrics import swap_accuracy
from bvae_lib.models import ModelConfig
from bvae_lib.objectives import DualSwapConfig, build_objective, swap_parts
from bvae_lib.train import TrainConfig, train


class Blocks(GroundTruthDataset):
    """Three factors, each drawn as one 8 x 8 block: row band k, column band = the value. Every
    factor combination has its own image, so an encoder can read the factors back exactly."""
    factor_names = ("a", "b", "c")
    factor_sizes = (4, 3, 5)

    def images_from_factors(self, factors):
        f = self._check_factors(factors)
        x = torch.zeros(len(f), 1, 64, 64)
        for k in range(3):
            for i, v in enumerate(f[:, k].tolist()):
                x[i, 0, 8 * k:8 * k + 8, 8 * v:8 * v + 8] = 1.0
        return x


class Oracle(nn.Module):
    """An autoencoder that is factorised by construction: part ``slot[k]`` (2 latents) holds
    factor k's value in its first latent; the decoder draws the factors read from the parts
    with logits of +-30 (reconstructions exact to ~1e-13 a pixel)."""

    def __init__(self, slot=(0, 1, 2)):
        super().__init__()
        self.slot = slot
        self.w = nn.Parameter(torch.zeros(()))      # something for an optimiser to hold

    def encode(self, x):
        z = torch.zeros(len(x), 6)
        for k in range(3):
            band = x[:, 0, 8 * k:8 * k + 8].reshape(len(x), 8, 8, 8).mean((1, 3))
            z[:, 2 * self.slot[k]] = band.argmax(1).float()
        return z, torch.zeros_like(z)

    def decode(self, z):
        f = torch.stack([z[:, 2 * self.slot[k]].round().clamp(0, Blocks.factor_sizes[k] - 1)
                         for k in range(3)], 1).long()
        return (Blocks().images_from_factors(f) * 2 - 1) * 30


def _batch(supervision, pairs=24, seed=0):
    obj = build_objective(DualSwapConfig(supervision=supervision))
    sampler = obj.pair_sampler(Blocks(), pairs, torch.Generator().manual_seed(seed))
    return obj, *sampler()


def test_swap_parts_exchanges_only_the_masked_entries():
    za, zb = torch.zeros(2, 4), torch.ones(2, 4)
    mask = torch.tensor([[True, False, False, False], [False, False, True, True]])
    a, b = swap_parts(za, zb, mask)
    assert torch.equal(a, mask.float()) and torch.equal(b, 1 - mask.float())


def test_labelled_pairs_share_the_factor_of_their_part():
    obj, x, part = _batch(supervision=0.25)
    assert x.shape == (48, 1, 64, 64) and part.shape == (24,)
    z = Oracle().encode(x)[0][:, ::2]               # the three factor values of every image
    za, zb = z[:24], z[24:]
    shared = za.gather(1, part[:, None]) == zb.gather(1, part[:, None])
    assert obj.labelled_count(24) == 6 and bool(shared[:6].all())
    assert not bool(shared[6:].all())               # unlabelled pairs: drawn independently


@pytest.mark.parametrize("supervision", [0.0, 0.5, 1.0])
def test_swap_losses_vanish_for_a_perfectly_factorised_code(supervision):
    obj, x, part = _batch(supervision)
    terms = obj.pair_terms(Oracle(), x, part, step=0)
    for key in ("loss", "swap", "dual_swap", "recon"):
        assert float(terms[key]) < 1e-6, (key, float(terms[key]))


def test_a_code_with_its_parts_mislabelled_fails_the_labelled_swap_only():
    # Factors a and b live in each other's parts: swapping a part twice still returns the
    # images (the dual swap is blind to it), but a labelled pair sharing factor a swaps b.
    obj, x, part = _batch(supervision=0.5, pairs=60)
    terms = obj.pair_terms(Oracle(slot=(1, 0, 2)), x, part, step=0)
    assert float(terms["dual_swap"]) < 1e-6
    assert float(terms["swap"]) > 100


def test_swap_accuracy_is_one_for_the_right_parts_and_low_for_wrong_ones():
    oracle, ds = Oracle(), Blocks()
    parts = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    right = swap_accuracy(lambda x: oracle.encode(x)[0], lambda z: torch.sigmoid(
        oracle.decode(z)), ds, parts, num_pairs=60)
    assert right.accuracy.tolist() == [1.0, 1.0, 1.0] and right.factors == ("a", "b", "c")
    assert right.chance.tolist() == pytest.approx([1 / 4, 1 / 3, 1 / 5])
    wrong = swap_accuracy(lambda x: oracle.encode(x)[0], lambda z: torch.sigmoid(
        oracle.decode(z)), ds, {"a": [2, 3], "b": [0, 1]}, num_pairs=60)
    assert wrong.accuracy.tolist() == [0.0, 0.0]     # B's value of a never reaches the image
    with pytest.raises(ValueError, match="not one of the dataset's factors"):
        swap_accuracy(lambda x: oracle.encode(x)[0], oracle.decode, ds, {"d": [0]})
    with pytest.raises(ValueError, match="latent indices"):
        swap_accuracy(lambda x: oracle.encode(x)[0], oracle.decode, ds, {"a": [6]})


def test_dual_swap_config_and_model_checks_say_what_to_do():
    with pytest.raises(ValueError, match="supervision"):
        DualSwapConfig(supervision=1.5)
    with pytest.raises(ValueError, match="latent_dim must be 10"):
        train(ModelConfig(latent_dim=4), DualSwapConfig(), DSprites(),
              TrainConfig(steps=1, batch_size=2, progress=False, device="cpu"))
    with pytest.raises(ValueError, match="ground-truth dataset"):
        train(ModelConfig(latent_dim=10), DualSwapConfig(),
              TensorImages(torch.zeros(4, 1, 64, 64)),
              TrainConfig(steps=1, batch_size=2, progress=False, device="cpu"))


MODEL = ModelConfig(latent_dim=5)                  # one latent per dSprites factor
SMALL = DualSwapConfig(part_size=1, supervision=0.5)


@pytest.mark.parametrize("amp", [False, None], ids=["fp32", "default"])
def test_dual_swap_resumes_bitwise(amp, interrupted_and_straight):
    straight, _ = interrupted_and_straight(MODEL, SMALL, amp, batch_size=4)
    assert set(straight.history) >= {"loss", "swap", "dual_swap", "recon"}


def test_cli_trains_dual_swap(tmp_path, capsys):
    args = ["train", "--objective", "dual_swap", "--latent-dim", "5", "--part-size", "1",
            "--supervision", "0.5", "--steps", "4", "--batch-size", "4", "--log-every", "2",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    ckpt = checkpoint.load_checkpoint(tmp_path / "run")
    assert ckpt["objective_config"]["name"] == "dual_swap"
    assert ckpt["objective_config"]["supervision"] == 0.5
    # evaluate scores the parts' swap accuracy besides the metrics asked for
    assert cli.main(["evaluate", str(tmp_path / "run"), "--metrics", "mig", "--fast",
                     "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"mig", "swap"}
    assert scores["swap"]["factors"] == list(DSprites.factor_names)


def test_zoo_records_and_verifies_the_swap_accuracy_of_a_dual_swap_model(tmp_path, capsys):
    from bvae_lib import zoo

    run = tmp_path / "run"
    train(MODEL, SMALL, DSprites(), TrainConfig(steps=2, batch_size=4, progress=False,
                                                device="cpu"), out_dir=run)
    zoo.export(run, "dsd", "a command", root=tmp_path / "zoo",
               settings={"mig": {"num_points": 500}, "swap": {"num_pairs": 20}})
    info = zoo.manifest("dsd", tmp_path / "zoo")
    assert set(info["metrics"]["swap"]["per_factor"]) == set(DSprites.factor_names)
    report = zoo.verify(["dsd"], root=tmp_path / "zoo")
    assert report["dsd"]["swap"][0] == report["dsd"]["swap"][1]
    measures = zoo.showcase(zoo.load("dsd", root=tmp_path / "zoo"), num_images=200,
                            parts=SMALL_PARTS)
    assert "active_latents" not in measures and set(measures["swap_accuracy"]) == set(SMALL_PARTS)


SMALL_PARTS = build_objective(SMALL).parts(DSprites.factor_names)
