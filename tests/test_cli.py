"""The command line, run in-process through cli.main (one subprocess checks `python -m`)."""

import json
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from bvae_lib import cli
from bvae_lib.checkpoint import load_checkpoint
from bvae_lib.objectives import BetaVAEConfig

BETA = BetaVAEConfig.name
TINY = ["--latent-dim", "4", "--batch-size", "8", "--no-progress", "--device", "cpu"]


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_python_m_bvae_lib_help_runs():
    proc = subprocess.run([sys.executable, "-m", "bvae_lib", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "traverse"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "traverse"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_train_help_lists_every_objective_hyperparameter(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--beta", "--gamma", "--latent-dim", "--steps", "--resume", "--objective"):
        assert flag in out


@pytest.mark.parametrize("args", [["train", "--bogus"], ["train"], ["fly"],
                                  ["train", "--out", "x", "--steps", "ten"]])
def test_wrong_argument_is_a_usage_error_without_traceback(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_library_errors_are_one_line(tmp_path, capsys):
    code, out, err = run_cli(["evaluate", tmp_path / "missing"], capsys)
    assert code == 2
    assert err.startswith("error: no checkpoint at") and err.count("\n") == 1
    code, _, err = run_cli(["train", "--out", tmp_path / "r", "--objective", BETA, "--beta",
                            "big", *TINY], capsys)
    assert code == 2 and "--beta expects a number, got 'big'" in err


def test_flag_of_another_objective_is_refused(tmp_path, capsys):
    other = sorted(set(cli._objective_classes()) - {BETA})
    assert other, "more than one objective"
    beta_fields = {f for f in BetaVAEConfig.__dataclass_fields__}
    foreign = next(f for cls in cli._objective_classes().values()
                   for f in cls.__dataclass_fields__ if f not in beta_fields)
    code, _, err = run_cli(["train", "--out", tmp_path, "--objective", BETA,
                            "--" + foreign.replace("_", "-"), "1", *TINY], capsys)
    assert code == 2 and f"not a parameter of the objective {BETA}" in err


def test_cli_trains_a_beta_vae_whose_loss_falls_and_resumes_exactly(tmp_path, capsys):
    common = ["--objective", BETA, "--beta", "4", "--lr", "2e-3", "--log-every", "4", *TINY]
    code, out, _ = run_cli(["train", "--out", tmp_path / "a", "--steps", 12, *common], capsys)
    assert code == 0 and json.loads(out)["step"] == 12
    loss = json.loads((tmp_path / "a" / "history.json").read_text())["loss"]
    assert loss[-1] < 0.6 * loss[0], loss
    run_cli(["train", "--out", tmp_path / "b", "--steps", 8, *common], capsys)
    # --resume reuses the run's configs: no model/objective flags needed
    code, out, _ = run_cli(["train", "--out", tmp_path / "b", "--resume", "--steps", 12,
                            "--no-progress", "--device", "cpu"], capsys)
    assert code == 0 and json.loads(out)["step"] == 12
    # same seed, same machine: the same weights, interrupted or not
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["objective_config"] == b["objective_config"] and a["history"] == b["history"]
    # resuming with a conflicting flag is refused; a new run in the same directory too
    code, _, err = run_cli(["train", "--out", tmp_path / "b", "--resume", "--steps", 16,
                            "--beta", "1", *TINY], capsys)
    assert code == 2 and "another objective" in err
    code, _, err = run_cli(["train", "--out", tmp_path / "b", "--steps", 16, *TINY], capsys)
    assert code == 2 and "--resume" in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    assert cli.main(["train", "--out", str(out), "--steps", "2", *TINY]) == 0
    return out


def test_traverse_writes_a_figure(trained_run, tmp_path, capsys):
    target = tmp_path / "fig" / "traversal.png"
    code, out, _ = run_cli(["traverse", trained_run, "--out", target, "--num", 5], capsys)
    assert code == 0 and target.stat().st_size > 1000
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_calls_the_metrics_and_prints_json(trained_run, tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(name):
        def metric(representation, dataset, seed=None):
            codes = representation(dataset.sample(3, torch.Generator().manual_seed(0))[0])
            seen[name] = (tuple(codes.shape), seed)
            return {"score": 0.5}
        return metric

    import dataclasses

    from bvae_lib.metrics.registry import REGISTRY
    for name in REGISTRY:                    # the one table the CLI and the zoo score with
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name],
                                                                function=fake(name)))
    target = tmp_path / "scores.json"
    code, out, _ = run_cli(["evaluate", trained_run, "--metrics", "mig,beta_vae", "--seed", 3,
                            "--device", "cpu", "--out", target], capsys)
    assert code == 0
    assert json.loads(out) == {"mig": {"score": 0.5}, "beta_vae": {"score": 0.5}}
    assert json.loads(target.read_text()) == json.loads(out)
    assert seen == {"mig": ((3, 4), 3), "beta_vae": ((3, 4), 3)}
    code, _, err = run_cli(["evaluate", trained_run, "--metrics", "nope"], capsys)
    assert code == 2 and "--metrics" in err


def test_evaluate_runs_the_real_metrics(trained_run, capsys):
    code, out, err = run_cli(["evaluate", trained_run, "--metrics", "mig", "--fast",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    score = json.loads(out)["mig"]["score"]
    assert 0.0 <= score <= 1.0


def test_cli_records_the_initialisation_and_resumes_runs_written_before_it_existed(tmp_path, capsys):
    out = tmp_path / "old"
    code, _, err = run_cli(["train", "--out", out, "--steps", 2, "--init", "pytorch", *TINY], capsys)
    assert code == 0, err
    path = out / "checkpoint.pt"
    assert load_checkpoint(path)["model_config"]["init"] == "pytorch"
    ckpt = torch.load(path, weights_only=True)          # as written before ModelConfig.init
    del ckpt["model_config"]["init"]
    torch.save(ckpt, path)
    code, _, err = run_cli(["train", "--out", out, "--resume", "--steps", 3, *TINY], capsys)
    assert code == 0, err
    assert load_checkpoint(path)["step"] == 3
    code, _, err = run_cli(["train", "--out", tmp_path / "bad", "--steps", 1, "--init", "zeros",
                            *TINY], capsys)
    assert code != 0 and "init must be one of" in err and "Traceback" not in err


def test_zoo_and_book_are_subcommands_with_the_one_error_policy(capsys):
    code, out, err = run_cli(["zoo", "train", "beta9"], capsys)
    assert code == 2 and err.startswith("error: no zoo recipe named beta9")
    code, out, _ = run_cli(["zoo", "list"], capsys)
    assert code == 0
    chapter = Path(__file__).resolve().parents[1] / "book" / "01_disentanglement.ipynb"
    code, out, _ = run_cli(["book", "check", chapter], capsys)
    assert code == 0 and "code cells compared" in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "zoo" in out and "book" in out
