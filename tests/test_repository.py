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


# Each heavy dependency lives in one folder of pipeline/; the exceptions are listed with a reason.
DEPENDENCY_FOLDERS = {
    "paddle": {"inference", "training"},
    "av": {"video"},
    "redis": {"streams"},
    "paho": {"outputs"},
}
DEPENDENCY_EXCEPTIONS: dict[str, dict[str, str]] = {}


def _imports(path: Path, module: str) -> bool:
    pattern = re.compile(rf"^\s*(import {module}\b|from {module}\b)", re.M)
    return bool(pattern.search(path.read_text()))


def test_only_the_allowed_folders_import_heavy_dependencies() -> None:
    for module, folders in DEPENDENCY_FOLDERS.items():
        exceptions = DEPENDENCY_EXCEPTIONS.get(module, {})
        for path in (ROOT / "pipeline").rglob("*.py"):
            relative = path.relative_to(ROOT / "pipeline")
            if relative.parts[0] in folders or str(relative) in exceptions:
                continue
            assert not _imports(path, module), f"pipeline/{relative} imports {module}"


def test_dependencies_point_one_way() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        assert not _imports(path, "linewatch"), f"schemas/{path.name} imports linewatch"
    for path in (ROOT / "pipeline").rglob("*.py"):
        for ours in ("linewatch.workers", "linewatch.cli", "linewatch.api"):
            assert not _imports(path, ours), f"{path.relative_to(ROOT)} imports {ours}"


def _folder_imports(path: Path, own: str) -> set[str]:
    """The pipeline folders a module imports, at any depth (function-level imports too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["linewatch", "pipeline"] and len(parts) > 2:
                found.add(parts[2])
    folders = {p.name for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").exists()}
    return (found & folders) - {own}


def pipeline_import_graph() -> dict[str, set[str]]:
    """Folder -> the other pipeline folders its modules import."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        relative = path.relative_to(ROOT / "pipeline")
        if len(relative.parts) > 1:  # the top's modules are shared by all, not a room
            folder = relative.parts[0]
            graph.setdefault(folder, set()).update(_folder_imports(path, folder))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_find_cycle_names_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_pipeline_folders() -> None:
    graph = pipeline_import_graph()
    assert "storage" in graph and graph["storage"].isdisjoint({"decide", "outputs"})
    cycle = find_cycle(graph)
    assert cycle is None, "pipeline folders import each other: " + " -> ".join(cycle or [])


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
        "linewatch/pipeline/streams/broker.py",
        "linewatch/pipeline/training/train.py",
        "linewatch/schemas/messages.py",
        "linewatch/workers/sink.py",
        "linewatch/models/linewatch-tile/inference.yml",
        "linewatch/models/linewatch-tile/inference.pdiparams",
        "linewatch/models/linewatch-tile/gallery.npz",
        "linewatch/api/static/index.html",
        "linewatch/api/static/dashboard.js",
        "linewatch/api/static/dashboard.css",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("pipeline/", "schemas/", "workers/")) for name in names)


def test_the_sink_imports_rq_only_to_send_a_webhook() -> None:
    import subprocess
    import sys

    probe = "import sys, linewatch.workers.sink; assert 'rq' not in sys.modules, 'rq imported'"
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)


def test_no_test_module_imports_another() -> None:
    pattern = re.compile(r"^\s*(from tests\.test_\w+ import|import tests\.test_)", re.M)
    for path in (ROOT / "tests").glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name}: use tests/support/"


def test_readme_layout_is_the_folders_own_docstrings() -> None:
    import ast

    block = re.search(r"## Layout\n\n```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has a Layout block"
    listed = {m[1]: m[2].strip() for m in re.finditer(r"^\s*([a-z_]+)/\s+(.*)$", block[1], re.M)}
    folders = [ROOT / name for name in ("linewatch", "workers", "pipeline", "schemas")]
    folders += [p for p in sorted((ROOT / "pipeline").iterdir()) if (p / "__init__.py").exists()]
    for folder in folders:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc, f"{folder.relative_to(ROOT)}/__init__.py says what the folder holds"
        assert listed.get(folder.name) == doc.splitlines()[0], f"README Layout: {folder.name}/"
    for name in listed:
        assert (ROOT / name).is_dir() or (ROOT / "pipeline" / name).is_dir(), name


def test_pipeline_parses_no_command_line() -> None:
    """Argument parsing is the CLI's (linewatch/); the library keeps typed functions."""
    for path in (ROOT / "pipeline").rglob("*.py"):
        assert not _imports(path, "argparse"), f"{path.relative_to(ROOT)} imports argparse"
