"""What the shipped models must show (the zoo's promise to the book, ``zoo.PROMISES``), measured
on their shipped weights with zoo.showcase: 4,000 held-out images; normalised MI = histogram MI
(20 bins) / H(factor); "shape in reconstruction" = the reconstruction is nearer (L2) to the
image's own pose drawn in its true shape than in either other shape (chance 1/3).

The promise is made for the long-run zoo (zoo.CPU_STEPS = 100,000 steps or more, the recipes of
zoo.RECIPES; zoo.STOP_EARLY's recipes from their own step). A model that is not shipped yet, or is still an older, shorter run, is skipped with
that reason; a long-run model that misses a threshold fails -- unless the miss is recorded in
SHORTFALLS below with what was measured, as a strict expected failure: the suite reports it, the
book says so with the same numbers (chapter 8 prints every promise), and the day a retrained
model meets the threshold the strict mark fails the suite so that the entry is removed. An entry
never changes a threshold."""

import pytest

from bvae_lib import zoo

# One worker runs them all (make test: --dist loadgroup), so that each model's showcase, the
# expensive part, is measured once and shared through the module fixture.
pytestmark = pytest.mark.xdist_group("shipped_models")

#: Thresholds the shipped long-run models miss: {promise key: what was measured, and where}.
#: Measured with `python -m bvae_lib.zoo showcase NAME` (4,000 images, seed 2026).
SHORTFALLS = {
    "shape:beta1": "beta1, 100,000 steps: 0.78; six active latents, three of them under 0.3 nats",
    "shape:beta16": "beta16, 40,000 steps (zoo.STOP_EARLY): 0.68; three active latents, for x, y and "
                    "scale (NMI 0.67, 0.65, 0.66); at beta = 16 the shape has none of its own",
    "shape:beta_tcvae": "beta_tcvae, 100,000 steps: 0.67; three active latents, none for shape",
    "mig:tc": "beta_tcvae, 100,000 steps: MIG 0.11 against beta4's 0.37 (one seed each): position x "
              "is split over two latents (NMI 0.35 and 0.33) and scale has none (best NMI 0.15)",
    "shape:beta4": "beta4, 100,000 steps: 0.69 (0.68 at 17,000 steps, so not a matter of length): "
                   "three active latents, for x, y and scale; the shape has none of its own",
    "beta4:orientation": "beta4, 100,000 steps: best NMI with orientation 0.03",
    "shape:annealed": "annealed, 100,000 steps: 0.59; its two active latents share x and y",
    "annealed:order": "annealed, 100,000 steps: position_x -> position_y, and no third latent "
                      "ever switches on (the two take all 25 nats, 12.5 each)",
    "annealed:four": "annealed, 100,000 steps: 2 active latents, carrying position_x and "
                     "position_y",
    "shape:joint_vae": "joint_vae, 100,000 steps: 0.68; three active Gaussian latents, for x, y "
                       "and scale (NMI 0.55, 0.55, 0.46); the shape has none of its own",
    "joint_vae:category": "joint_vae, 100,000 steps: 0.45; the category splits the images by "
                          "scale (small sprites to one value, large to another, the third unused), "
                          "not by shape. Trained on to 200,000 steps (capacities at their maxima): "
                          "0.34, one category for every image, I(n; c) = 0.00 nats "
                          "(bvae_lib/pretrained/pilots/joint_vae_train_on.json)",
}


def _param(key):
    if key in SHORTFALLS:
        return pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=SHORTFALLS[key]))
    return key


@pytest.fixture(scope="module")
def shown():
    cache = {}

    def get(names):
        for name in names:
            if name not in zoo.available():
                pytest.skip(f"{name} is not shipped")
            steps, full = zoo.manifest(name)["steps"], zoo.run_length(name)
            if steps < full:
                pytest.skip(f"the shipped {name} is an older run of {steps:,} steps, not yet "
                            f"replaced by its {full:,}-step recipe")
            if name not in cache:
                cache[name] = zoo.showcase_record(name, num_images=4_000)["measures"]
        return cache
    return get


@pytest.mark.parametrize("key", [_param(k) for k in zoo.PROMISES])
def test_shipped_model_keeps_its_promise(shown, key):
    names, _ = zoo.PROMISES[key]
    measured = shown(names)                         # skips a model not shipped at full length
    kept = zoo.promise(key, measured, {n: zoo.manifest(n)["history"] for n in names})
    assert kept.holds, f"{kept.claim}: measured {kept.measured}"


def test_shortfalls_name_real_promises():
    assert set(SHORTFALLS) <= set(zoo.PROMISES)
