"""bench/gpu_check.sh on its CPU fallback path (no GPU here): a tiny run through the shell
script with the test interpreter writes its table into its own section of RESULTS.md."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_cpu_fallback_writes_its_table_to_its_own_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nearlier figures stay\n")
    command = ["bash", str(SCRIPT), "--cpu", "--python", sys.executable, "--"]
    command += ["--quick", "--results", str(results)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nearlier figures stay")
    section = text.split("<!-- gpu-check -->", 1)[1].split("<!-- /gpu-check -->", 1)[0]
    assert "bench/gpu_check.sh --cpu" in section, "the command that made the figures"
    for model in ("linewatch-tile", "linewatch-tile-teacher"):
        engine = r"Paddle Inference CPU \(oneDNN, 2 threads\)"
        row = re.search(rf"\| {model} \| {engine} \| (.*)", section)
        assert row, f"no CPU row for {model}"
        b1, b8 = row.group(1).split(" | ")[:2]
        assert float(b1) > 0 and float(b8) > 0
    inferred = re.search(r"2 cameras x 5 views/s: views/s inferred \| (\d+)", section)
    assert inferred and int(inferred.group(1)) > 0
    assert "stale / not inferred | 0 / 0" in section


def test_a_second_run_replaces_the_section(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))  # as `python bench/gpu_check.py` has it
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec and spec.loader
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nbefore\n")
    for figure in ("first", "second"):
        gpu_check.write_section(results, name=gpu_check.SECTION, body=figure)
        results.write_text(results.read_text() + "after\n" * (figure == "first"))
    text = results.read_text()
    assert text.count("<!-- gpu-check -->") == 1 and text.count("<!-- /gpu-check -->") == 1
    assert "second" in text and "first" not in text
    assert text.startswith("# Benchmark results\n\nbefore") and text.rstrip().endswith("after")
