"""Tests for the ``kgedge`` command line (kgedge.cli): help everywhere, data, train, evaluate, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import kgedge
from kgedge.cli import app
from kgedge.data.kg import load_kg
from kgedge.models import MODELS

runner = CliRunner()


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every registered command and sub-command, as the words that call it (groups have ``commands``)."""
    yield prefix
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _command_paths(sub, (*prefix, name))


COMMANDS = list(_command_paths(typer.main.get_command(app)))


def _invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _error_line(result: Any) -> str:
    """The user-facing error: exit code 2 and one ``error:`` line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"kgedge {kgedge.__version__}"


def test_the_expected_commands_are_registered() -> None:
    assert {("train",), ("evaluate",), ("export",), ("profiles",), ("data", "generate"), ("data", "stats")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "kgedge")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_data_generate_writes_files_and_refuses_a_non_empty_out(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    result = _invoke("data", "generate", "--out", out, "--entities", 300, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"train.txt", "valid.txt", "test.txt", "entity_types.tsv"}
    kg = load_kg(out)
    assert kg.num_entities <= 300 and f"wrote {len(kg.train)} train" in result.stdout
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    again = _invoke("data", "generate", "--out", out, "--entities", 300, "--seed", 5)
    assert str(out) in _error_line(again) and "not empty" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _invoke("data", "generate", "--out", out, "--entities", 300, "--seed", 5, "--overwrite").exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} != before


def test_data_generate_rejects_a_bad_config(tmp_path: Path) -> None:
    assert "num_entities=10" in _error_line(_invoke("data", "generate", "--out", tmp_path / "x", "--entities", 10))


def test_data_stats_json(permutation_kg_dir: Path) -> None:
    result = _invoke("data", "stats", "--data", permutation_kg_dir, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert set(stats) == {"name", "entities", "relations", "train", "valid", "test", "types", "train_per_relation", "dropped"}
    assert stats == json.loads(json.dumps(load_kg(permutation_kg_dir).stats()))


def test_data_stats_table(permutation_kg_dir: Path) -> None:
    result = _invoke("data", "stats", "--data", permutation_kg_dir)
    assert result.exit_code == 0, result.output
    assert "perm" in result.stdout and "r0" in result.stdout


def test_train_then_evaluate(permutation_kg_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "runs" / "perm.ckpt"
    trained = _invoke("train", "--data", permutation_kg_dir, "--model", "DistMult", "--epochs", 2, "--dim", 8,
                      "--out", ckpt, "--device", "cpu", "--json")
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["model"] == "distmult" and summary["dim"] == 8 and summary["epochs"] == 2
    assert ckpt.is_file()

    result = _invoke("evaluate", ckpt, "--data", permutation_kg_dir, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert {"mrr", "hits_at_1", "hits_at_3", "hits_at_10"} <= set(metrics)
    assert metrics["kind"] == "checkpoint" and metrics["split"] == "test"

    from kgedge.evaluate import evaluate_link_prediction
    from kgedge.train.checkpoint import load_checkpoint
    from kgedge.train.scorer import model_scorer

    expected = evaluate_link_prediction(model_scorer(load_checkpoint(ckpt).model), load_kg(permutation_kg_dir), "test")
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "num_queries"):
        assert metrics[key] == pytest.approx(expected[key])


@pytest.mark.parametrize("command", ["train", "evaluate", "stats"])
def test_bad_data_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-kg"
    args = {
        "train": ["train", "--data", missing, "--model", "transe", "--out", tmp_path / "m.ckpt"],
        "evaluate": ["evaluate", tmp_path / "m.ckpt", "--data", missing],
        "stats": ["data", "stats", "--data", missing],
    }[command]
    line = _error_line(_invoke(*args))
    assert str(missing) in line and "neither a directory nor a built-in dataset" in line


def test_malformed_data_error_names_file_and_line(permutation_kg_dir: Path) -> None:
    (permutation_kg_dir / "valid.txt").write_text("x000\tr0\ty000\nx001 r0 y001\n", encoding="utf-8")
    line = _error_line(_invoke("data", "stats", "--data", permutation_kg_dir))
    assert f"{permutation_kg_dir / 'valid.txt'}:2:" in line


def test_unknown_model_lists_the_valid_models(permutation_kg_dir: Path, tmp_path: Path) -> None:
    line = _error_line(_invoke("train", "--data", permutation_kg_dir, "--model", "transh", "--out", tmp_path / "m.ckpt"))
    assert "unknown model 'transh'" in line
    for name in MODELS:
        assert name in line
    assert not (tmp_path / "m.ckpt").exists()


def test_bad_train_option_is_a_one_line_error(permutation_kg_dir: Path, tmp_path: Path) -> None:
    line = _error_line(_invoke("train", "--data", permutation_kg_dir, "--model", "transe", "--loss", "hinge",
                               "--out", tmp_path / "m.ckpt"))
    assert "TrainConfig.loss='hinge'" in line and "1n_ce" in line


def test_model_options_reach_a_graph_teacher(permutation_kg_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "gcn.ckpt"
    trained = _invoke("train", "--data", permutation_kg_dir, "--model", "gcn", "--dim", 8, "--epochs", 1,
                      "--loss", "nssa", "--option", "fanouts=[3,2]", "--option", "decoder=complex",
                      "--out", ckpt, "--device", "cpu", "--json")
    assert trained.exit_code == 0, trained.output
    from kgedge.train.checkpoint import load_checkpoint

    options = load_checkpoint(ckpt).model.config.options
    assert options["fanouts"] in ([3, 2], (3, 2)) and options["decoder"] == "complex"


@pytest.mark.parametrize(("options", "distance"), [([], "l1"), (["--option", "distance=l2"], "l2")])
def test_transe_trains_with_the_l1_distance_unless_told_otherwise(permutation_kg_dir: Path, tmp_path: Path,
                                                                   options: list[str], distance: str) -> None:
    ckpt = tmp_path / "transe.ckpt"
    trained = _invoke("train", "--data", permutation_kg_dir, "--model", "transe", "--dim", 8, "--epochs", 1,
                      *options, "--out", ckpt, "--json")
    assert trained.exit_code == 0, trained.output
    from kgedge.train.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt).model
    assert model.config.options["distance"] == distance and model.interaction == distance


@pytest.mark.parametrize(("flags", "loss"), [([], "nssa"), (["--loss", "1n_ce"], "1n_ce")])
def test_a_big_l1_transe_trains_with_sampled_negatives_unless_the_loss_is_given(
        permutation_kg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], loss: str) -> None:
    from kgedge.train import config

    monkeypatch.setattr(config, "L1_ONE_N_MAX_CELLS", 80 * 8)  # the 80-entity KG at dim 8 counts as big
    ckpt = tmp_path / "transe.ckpt"
    trained = _invoke("train", "--data", permutation_kg_dir, "--model", "transe", "--dim", 8, "--epochs", 1,
                      *flags, "--out", ckpt, "--json")
    assert trained.exit_code == 0, trained.output
    from kgedge.train.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt).metadata["train_config"]["loss"] == loss
    assert ("training with sampled negatives (--loss nssa)" in trained.stderr) == (loss == "nssa")


def test_train_options_reach_the_training_and_the_model(permutation_kg_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "rotate.ckpt"
    trained = _invoke("train", "--data", permutation_kg_dir, "--model", "rotate", "--dim", 8, "--epochs", 2,
                      "--label-smoothing", 0.3, "--dropout", 0.25, "--init-scale", 0.05, "--eval-every", 2,
                      "--patience", 4, "--out", ckpt, "--json")
    assert trained.exit_code == 0, trained.output
    from kgedge.train.checkpoint import load_checkpoint

    saved = load_checkpoint(ckpt)
    train_config = saved.metadata["train_config"]
    assert (train_config["label_smoothing"], train_config["eval_every"], train_config["patience"]) == (0.3, 2, 4)
    assert train_config["loss"] == "1n_ce" and train_config["regularizer"] == "none"  # the rest stays rotate's
    assert train_config["relation_temperature"] is True
    assert (saved.model.config.dropout, saved.model.config.init_scale) == (0.25, 0.05)
    plain = _invoke("train", "--data", permutation_kg_dir, "--model", "rotate", "--dim", 8, "--epochs", 1,
                    "--no-relation-temperature", "--out", ckpt, "--json")
    assert plain.exit_code == 0, plain.output
    assert load_checkpoint(ckpt).metadata["train_config"]["relation_temperature"] is False


def test_type_constrained_sampling_reaches_the_training(write_kg, tmp_path: Path) -> None:  # noqa: ANN001
    from conftest import permutation_triples

    s = permutation_triples()
    entities = {e for split in s.values() for h, _, t in split for e in (h, t)}
    kg_dir = write_kg(s["train"], s["valid"], s["test"], types={e: f"t{i % 2}" for i, e in enumerate(sorted(entities))})
    ckpt = tmp_path / "m.ckpt"
    trained = _invoke("train", "--data", kg_dir, "--model", "distmult", "--dim", 8, "--epochs", 1, "--loss", "nssa",
                      "--type-constrained", "--num-negatives", 4, "--out", ckpt, "--json")
    assert trained.exit_code == 0, trained.output
    from kgedge.train.checkpoint import load_checkpoint

    train_config = load_checkpoint(ckpt).metadata["train_config"]
    assert (train_config["type_constrained"], train_config["num_negatives"], train_config["loss"]) == (True, 4, "nssa")


@pytest.mark.parametrize(("flags", "message"), [
    (["--num-negatives", "8"], "--num-negatives set the negative sampling of --loss nssa; this run's loss is 1n_ce"),
    (["--loss", "nssa", "--type-constrained"], "--type-constrained needs entity types, and perm has one"),
    (["--label-smoothing", "1.5"], "label_smoothing=1.5 is out of range"),
    (["--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
])
def test_bad_training_flags_are_one_line_errors(permutation_kg_dir: Path, tmp_path: Path, flags: list[str],
                                                message: str) -> None:
    line = _error_line(_invoke("train", "--data", permutation_kg_dir, "--model", "distmult", "--dim", 8, *flags,
                               "--out", tmp_path / "m.ckpt"))
    assert message in line
    assert not (tmp_path / "m.ckpt").exists()


@pytest.mark.parametrize(("model", "option", "message"), [
    ("gcn", "fanouts=[3]", "options.fanouts"),
    ("gcn", "colour=red", "unknown option(s) colour"),
    ("complex", "fanouts=[3,3]", "complex takes only entity_rank"),
    ("transe", "distance=l3", "distance='l3'; allowed: l1, l2"),
    ("transe", "decoder=complex", "transe takes only distance and entity_rank"),
    ("gcn", "fanouts", "expected KEY=VALUE"),
])
def test_bad_model_option_is_a_one_line_error(permutation_kg_dir: Path, tmp_path: Path, model: str, option: str,
                                              message: str) -> None:
    line = _error_line(_invoke("train", "--data", permutation_kg_dir, "--model", model, "--option", option,
                               "--out", tmp_path / "m.ckpt"))
    assert message in line
    assert not (tmp_path / "m.ckpt").exists()


def test_demo_runs_the_whole_product_and_its_report_holds_together(permutation_kg_dir: Path, tmp_path: Path) -> None:
    """The README's main command, on a tiny KG: train -> compress -> export -> query -> bench."""
    out = tmp_path / "demo"
    result = _invoke("demo", "--data", permutation_kg_dir, "--dim", 8, "--budget", 3, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert {"teacher", "compress", "export", "queries", "bench"} <= set(report)
    steps = report["compress"]["steps"]
    assert [s["step"].split(":")[1] for s in steps] == ["distill", "qat"]
    assert report["export"]["sizes"]["table_bytes"] == steps[-1]["bytes"]  # what compress reports is what ships
    assert report["export"]["validation"]["mrr_export"] > 0.5  # the learnable permutation survives quantization
    chosen = [c for c in report["compress"]["candidates"] if c["chosen"]]
    assert [c["recipe"] for c in chosen] == [report["compress"]["recipe"]]  # auto: the kept candidate
    assert (report["export"]["profile"] == "int4") == (chosen[0]["bits"] == 4)
    from kgedge.runtime import EdgeModel

    bundle = EdgeModel.load(out / "bundle")
    for query, answers in report["queries"].items():
        head, relation = query.strip("()").split(", ")[:2]
        assert [name for name, _ in answers] == [name for name, _ in bundle.answer(head, relation, k=len(answers))]
    assert report["bench"]["num_entities"] == 80 and report["bench"]["p50_us"] > 0


def test_evaluate_a_missing_checkpoint(permutation_kg_dir: Path, tmp_path: Path) -> None:
    line = _error_line(_invoke("evaluate", tmp_path / "absent.ckpt", "--data", permutation_kg_dir))
    assert "checkpoint not found" in line


# --- without torch: what an edge install sees --------------------------------------------------

_BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    sys.argv = ["kgedge", *sys.argv[1:]]
    from kgedge.cli import main
    try:
        main()
    finally:
        assert "torch" not in sys.modules, "torch was imported"
    """
)


def _run_without_torch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, *map(str, args)], capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("args", [("--help",), ("data", "--help"), ("train", "--help")])
def test_help_works_without_torch(args: tuple[str, ...]) -> None:
    result = _run_without_torch(*args)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_data_stats_works_without_torch(permutation_kg_dir: Path) -> None:
    result = _run_without_torch("data", "stats", "--data", permutation_kg_dir, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entities"] == load_kg(permutation_kg_dir).num_entities


def test_train_without_torch_says_what_to_install(permutation_kg_dir: Path, tmp_path: Path) -> None:
    result = _run_without_torch("train", "--data", permutation_kg_dir, "--model", "transe", "--out", tmp_path / "m")
    assert result.returncode == 2
    assert result.stderr.startswith("error: `kgedge train` needs the training extra")


def _teacher_and_recipe(data: Path, teacher: Path, recipe: Path, bits: int) -> Path:
    """Train a small ComplEx teacher at ``teacher`` and write a distil + QAT recipe at ``bits`` to
    ``recipe`` (named after its file); returns the recipe's path."""
    assert _invoke("train", "--data", data, "--model", "complex", "--dim", 8, "--epochs", 5,
                   "--out", teacher).exit_code == 0
    recipe.write_text(f'name = "{recipe.stem}"\nexport_bits = {bits}\n[[steps]]\nkind = "distill"\ndim = 4\n'
                      f'epochs = 3\n[[steps]]\nkind = "qat"\nbits = {bits}\nepochs = 2\n')
    return recipe


def test_compress_json_keeps_stdout_one_object_and_reports_steps_on_stderr(permutation_kg_dir: Path,
                                                                           tmp_path: Path) -> None:
    """A scripted `compress --json` still shows each step as it lands (stderr), without breaking the JSON."""
    teacher, student = tmp_path / "t.ckpt", tmp_path / "s.ckpt"
    recipe = _teacher_and_recipe(permutation_kg_dir, teacher, tmp_path / "r.toml", bits=8)
    run = subprocess.run([sys.executable, "-m", "kgedge", "compress", "--teacher", str(teacher), "--data",
                          str(permutation_kg_dir), "--recipe", str(recipe), "--out", str(student), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert [s["step"] for s in summary["steps"]] == ["1:distill", "2:qat"]
    lines = [line for line in run.stderr.splitlines() if line.startswith(("1:distill", "2:qat"))]
    assert [line.split(":")[1].split()[0] for line in lines] == ["distill", "qat"]
    assert f"{summary['steps'][0]['bytes']:,} bytes" in lines[0]


def test_export_follows_a_4_bit_students_bits_unless_a_profile_is_named(permutation_kg_dir: Path,
                                                                         tmp_path: Path) -> None:
    """A student fine-tuned for 4-bit tables exports to the int4 profile by default, so the bytes that
    `compress` reported are the bytes that ship; a named profile still wins, with a note."""
    teacher, student = tmp_path / "t.ckpt", tmp_path / "s.ckpt"
    recipe = _teacher_and_recipe(permutation_kg_dir, teacher, tmp_path / "r4.toml", bits=4)
    compressed = _invoke("compress", "--teacher", teacher, "--data", permutation_kg_dir, "--recipe", recipe,
                         "--out", student, "--json")
    assert compressed.exit_code == 0, compressed.output
    reported = json.loads(compressed.stdout)
    assert (reported["recipe"], reported["qat_bits"], reported["export_bits"]) == ("r4", 4, 4)
    exported = _invoke("export", student, "--data", permutation_kg_dir, "--out", tmp_path / "b4", "--json")
    assert exported.exit_code == 0, exported.output
    summary = json.loads(exported.stdout)
    assert summary["profile"] == "int4" and summary["table_bytes"] == reported["steps"][-1]["bytes"]
    named = _invoke("export", student, "--profile", "x86-avx2", "--data", permutation_kg_dir, "--out", tmp_path / "b8",
                    "--json")
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["profile"] == "x86-avx2"
    assert "fine-tuned for 4-bit tables; profile x86-avx2 stores 8-bit ones" in named.stderr
