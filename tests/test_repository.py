"""The README's commands and CI agree, and the package installs as documented."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_test_command() -> None:
    demo, tests = readme_commands()
    assert "linewatch demo" in demo
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_only_the_allowed_modules_import_heavy_dependencies() -> None:
    allowed = {
        "paddle": {"model.py"},
        "av": {"source.py", "video_writer.py"},
        "redis": {"broker.py"},
    }
    for module, owners in allowed.items():
        pattern = re.compile(rf"^\s*(import {module}\b|from {module}\b)", re.M)
        for path in (ROOT / "pipeline").glob("*.py"):
            if pattern.search(path.read_text()):
                assert path.name in owners, f"{path.name} imports {module}"


def test_wheel_carries_every_subpackage_and_the_model(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    subprocess.run(command, check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    for expected in (
        "linewatch/cli.py",
        "linewatch/pipeline/broker.py",
        "linewatch/pipeline/training/train.py",
        "linewatch/schemas/messages.py",
        "linewatch/workers/sink.py",
        "linewatch/models/linewatch-tile/inference.yml",
        "linewatch/models/linewatch-tile/inference.pdiparams",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("pipeline/", "schemas/", "workers/")) for name in names)
