"""`linewatch dataset export --reviewed`: reviewed crops as an ImageFolder + manifest that
the training code reads."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from sqlalchemy import Engine

from linewatch.cli import main
from linewatch.pipeline.storage import database
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.training.data import scan_image_folder
from tests.api_helpers import insert_part, jpeg, tile


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
