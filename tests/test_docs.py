"""README in agreement with the code: its Layout's pipeline part is generated from the
folders' docstrings and module files (every module under pipeline/ listed), and every
CLI command (and action: `db prune`, `worker rq`, ...) is in it.

`python -m tests.test_docs` prints the Layout's pipeline part to paste into README.md."""

from __future__ import annotations

import argparse
import ast
import re
import textwrap
from pathlib import Path

from linewatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
INDENT = " " * 15  # the Layout's description column


def summary(package: Path) -> str:
    """The first line of a package's docstring."""
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    return docstring.splitlines()[0] if docstring else ""


def modules(folder: Path) -> list[str]:
    """The modules of a package folder (and its migrations folder, with a slash)."""
    names = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
    names += [f"{p.name}/" for p in folder.iterdir() if p.name == "migrations"]
    return sorted(names)


def listing(names: list[str]) -> list[str]:
    return textwrap.wrap(", ".join(names), 100, initial_indent=INDENT, subsequent_indent=INDENT)


def pipeline_layout() -> str:
    """The Layout's pipeline lines: the top's modules, then each folder's docstring and
    its modules."""
    lines = ["pipeline/      " + summary(PIPELINE)]
    lines += ["  (top)" + listing(modules(PIPELINE))[0][7:], *listing(modules(PIPELINE))[1:]]
    for folder in sorted(p for p in PIPELINE.iterdir() if (p / "__init__.py").exists()):
        lines.append(f"  {folder.name + '/':<13}{summary(folder)}")
        lines += listing(modules(folder))
    return "\n".join(lines)


def readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Layout\n\n```\n(.*?)```", text, re.S)
    assert match, "README.md has a Layout section with one code block"
    return match.group(1)


def shown(command: str, text: str) -> bool:
    """`linewatch db prune`, also as `linewatch db current|upgrade|prune`."""
    name, _, choice = command.partition(" ")
    alternatives = rf"(?:[\w-]+\|)*{choice}\b" if choice else ""
    return re.search(rf"linewatch {name}\b ?{alternatives}", text) is not None


def cli_commands() -> list[str]:
    """Every listed `linewatch` command (not the deprecated aliases), with each choice of
    its action or role argument."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    listed = {action.dest for action in sub._choices_actions}  # noqa: SLF001
    commands = []
    for name, command in sub.choices.items():
        if name not in listed:
            continue
        actions = [
            a
            for a in command._actions  # noqa: SLF001
            if not a.option_strings and a.choices and a.dest in ("action", "role")
        ]
        if not actions:
            commands.append(name)
        for action in actions:
            commands += [f"{name} {choice}" for choice in action.choices]
    return commands


def test_readme_layout_is_generated_from_the_pipeline_docstrings() -> None:
    expected = pipeline_layout()
    assert expected in readme_layout(), f"paste into README's Layout:\n{expected}"


def test_every_pipeline_module_is_in_the_readme_layout() -> None:
    layout = readme_layout()
    missing = [
        str(path.relative_to(ROOT))
        for path in PIPELINE.rglob("*.py")
        if path.stem != "__init__"
        and "migrations" not in path.parts
        and not re.search(rf"\b{path.stem}\b", layout)
    ]
    assert missing == []


def test_every_cli_command_is_in_the_readme() -> None:
    text = (ROOT / "README.md").read_text()
    missing = [command for command in cli_commands() if not shown(command, text)]
    assert missing == [], "README.md shows no use of these commands"


def test_every_readme_yaml_block_is_a_valid_line_config() -> None:
    """Each `yaml` block of the README loads as a line config (a camera added when the
    block shows another section alone): no block names a key the settings refuse."""
    import yaml

    from linewatch.pipeline.config import load_settings

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "README.md has yaml blocks"
    for block in blocks:
        data = yaml.safe_load(block)
        data.setdefault("cameras", [{"id": "cam1", "url": "line.mp4"}])
        load_settings(environ={}, overrides=data)


def test_the_readme_configuration_is_linewatch_config_example(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The README's complete line.yaml is what `linewatch config example` prints, and it
    loads as a line config."""
    from linewatch.cli import main
    from linewatch.pipeline.config import load_settings

    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- linewatch config example -->\n```yaml\n(.*?)```", text, re.S)
    assert match, "README.md has the marked `linewatch config example` block"
    assert main(["config", "example"]) == 0
    printed = capsys.readouterr().out
    assert match.group(1) == printed, "paste `linewatch config example` into README.md"
    path = tmp_path / "line.yaml"
    path.write_text(printed)
    settings = load_settings(path, environ={})
    assert [camera.parts.method for camera in settings.cameras] == [
        "contrast",
        "background",
        "fixed",
        "none",
    ]


if __name__ == "__main__":
    print(pipeline_layout())
