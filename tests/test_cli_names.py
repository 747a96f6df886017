"""The CLI's names and shared options: `model eval` and `line score` (the old `eval` and
`evaluate` still work for one release, with a deprecation line), one --config for all."""

from __future__ import annotations

import argparse
from pathlib import Path

from linewatch.cli import CONFIG_HELP, build_parser
from linewatch.pipeline.simulation.synthetic import write_image_folder
from tests.support.services import linewatch

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "linewatch-tile"
LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_old_names_are_hidden_from_the_help_and_the_new_ones_listed() -> None:
    result = linewatch("--help")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert {"model", "line", "status", "run", "train"} <= listed
    assert not {"eval", "evaluate"} & listed
    assert "eval " in linewatch("model", "--help").stdout
    assert "score " in linewatch("line", "--help").stdout


def test_model_eval_and_its_deprecated_alias_give_the_same_figures(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", per_class=1, size=96, labels=LABELS)
    options = ["--model", str(MODEL_DIR), "--data", str(images), "--include-synthetic"]
    new = linewatch("model", "eval", *options, "--json", str(tmp_path / "new.json"))
    assert new.returncode == 0, new.stderr
    assert "deprecated" not in new.stderr
    assert "macro-F1" in new.stdout
    old = linewatch("eval", *options, "--json", str(tmp_path / "old.json"))
    assert old.returncode == 0, old.stderr
    assert old.stderr.splitlines()[0] == (
        "linewatch: `linewatch eval` is deprecated and goes in the next release; "
        "use `linewatch model eval`"
    )
    figures = [line for line in new.stdout.splitlines() if line.startswith("macro-F1")]
    assert figures and figures[0].split("|")[0] in old.stdout  # same model, same images


def test_every_config_option_is_the_one_shared_declaration() -> None:
    parser = build_parser()
    configs = []
    for command in _subcommands(parser).values():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in [command, *(c for a in nested for c in a.choices.values())]:
            configs += [a for a in sub._actions if "--config" in a.option_strings]
    assert len(configs) >= 15  # run, check, status, model use/show, line score, ...
    assert len({id(action) for action in configs}) == 1  # argparse parents share the action
    assert configs[0].help == CONFIG_HELP


def test_debug_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "line.yaml"
    config.write_text(f"data_dir: {tmp_path}\n")
    quiet = linewatch("status", "--config", str(config))
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    for args in (["--debug", "status"], ["status", "--debug"]):  # the subcommand keeps it
        loud = linewatch(*args, "--config", str(config))
        assert "Traceback" in loud.stderr and "no line is running" in loud.stderr, args


def test_report_refuses_config_and_database_url_together(tmp_path: Path) -> None:
    config = tmp_path / "line.yaml"
    config.write_text(f"data_dir: {tmp_path}\n")
    both = ["--since", "1h", "--out", str(tmp_path / "r.html"), "--config", str(config)]
    result = linewatch("report", *both, "--database-url", "sqlite://")
    assert result.returncode == 2 and "not both" in result.stderr
