"""`linewatch dataset export --reviewed`: reviewed crops as an ImageFolder + manifest that
the training code reads, and `linewatch train --init-from` fine-tunes on."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from sqlalchemy import Engine

from linewatch.cli import main
from linewatch.pipeline.storage import database
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.training.data import scan_image_folder
from tests.support.api import insert_part, jpeg, tile


def reviewed_line(engine: Engine) -> dict[str, int]:
    crack = insert_part(engine, part_id=1, verdict="defect", label="crack", evidence=jpeg(tile(1)))
    overkill = insert_part(
        engine, part_id=2, verdict="defect", label="fray", evidence=jpeg(tile(2))
    )
    no_crop = insert_part(engine, part_id=3, verdict="defect", label="crack")
    insert_part(engine, part_id=4, evidence=jpeg(tile(4)))  # never reviewed: not exported
    queries.add_review(engine, crack, "alice", "defect", "crack")
    queries.add_review(engine, overkill, "alice", "defect", "fray")
    queries.add_review(engine, overkill, "bob", "ok", "free")  # the latest review counts
    queries.add_review(engine, no_crop, "alice", "defect", "crack")
    return {"crack": crack, "overkill": overkill}


def test_export_writes_the_latest_reviews_as_an_imagefolder(
    sqlite_url: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    engine = database.open_database(sqlite_url)
    ids = reviewed_line(engine)
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"database_url": sqlite_url}))
    out = tmp_path / "reviewed"
    code = main(["dataset", "export", "--reviewed", "--out", str(out), "--config", str(config)])
    assert code == 0
    assert "wrote 2 reviewed crops" in capsys.readouterr().out
    classes, items = scan_image_folder(out)
    assert classes == ("crack", "free") and len(items) == 2
    with (out / "manifest.csv").open() as handle:
        rows = {int(row["part"]): row for row in csv.DictReader(handle)}
    assert rows[ids["overkill"]]["label"] == "free"
    assert rows[ids["overkill"]]["machine_label"] == "fray"
    assert rows[ids["overkill"]]["reviewer"] == "bob"
    assert (out / rows[ids["crack"]]["file"]).read_bytes().startswith(b"\xff\xd8")
    engine.dispose()


def test_export_needs_the_reviewed_flag(sqlite_url: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"database_url": sqlite_url}))
    assert main(["dataset", "export", "--out", str(tmp_path / "x"), "--config", str(config)]) == 2
    assert "pass --reviewed" in capsys.readouterr().err


def test_export_names_a_bad_since(sqlite_url: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"database_url": sqlite_url}))
    export = ["dataset", "export", "--reviewed", "--out", str(tmp_path / "x")]
    assert main([*export, "--since", "last week", "--config", str(config)]) == 2
    assert "--since: 'last week' is not an age" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_init_from_fine_tunes_on_the_exported_reviews(
    sqlite_url: str, tmp_path: Path
) -> None:
    import paddle

    engine = database.open_database(sqlite_url)
    for part_id in range(6):  # three reviewed crops per class: enough for a split
        verdict, label = ("defect", "crack") if part_id % 2 else ("ok", "free")
        row = insert_part(engine, part_id=part_id, evidence=jpeg(tile(part_id)))
        queries.add_review(engine, row, "alice", verdict, label)
    engine.dispose()
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"database_url": sqlite_url}))
    out, first, tuned = tmp_path / "reviewed", tmp_path / "first", tmp_path / "tuned"
    export = ["dataset", "export", "--reviewed", "--out", str(out), "--config", str(config)]
    assert main(export) == 0
    small = ["--arch", "PPLCNet_x0_25", "--image-size", "48", "--epochs", "1"]
    small += ["--steps-per-epoch", "1", "--batch-size", "4"]
    assert main(["train", "--data", str(out), "--run-dir", str(first), *small]) == 0
    weights = str(first / "best.pdparams")
    tune = ["--init-from", weights, "--lr", "1e-9", "--seed", "5"]  # another seed's own start
    assert main(["train", "--data", str(out), "--run-dir", str(tuned), *small, *tune]) == 0
    before, after = paddle.load(weights), paddle.load(str(tuned / "best.pdparams"))
    learned = [k for k in before if not k.endswith(("_mean", "_variance"))]  # not BN statistics
    assert learned and all(np.allclose(before[k], after[k], atol=1e-5) for k in learned)
