"""The gallery file, its search and a model folder's gallery (pipeline/gallery/): clear
errors for broken files, atomic writes, reviewed additions kept apart and deduplicated;
an inference worker's gallery reloaded on a new revision in Redis (real Redis)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from linewatch.check import run_checks
from linewatch.pipeline import defaults
from linewatch.pipeline.errors import ModelError
from linewatch.pipeline.gallery.folder import REVIEWS_FILE, append_reviews, load_searched
from linewatch.pipeline.gallery.search import part_novelty, search
from linewatch.pipeline.gallery.settings import gallery_settings
from linewatch.pipeline.gallery.store import GALLERY_FILE, Gallery, load_gallery, save_gallery
from linewatch.pipeline.gallery.views import (
    REVIEW_VIEWS,
    dihedral_views,
    entry_source,
    part_source,
)
from linewatch.pipeline.inference.classifier import ModelInfo
from linewatch.pipeline.inference.gallery import GalleryFollower, bump_revision, read_revision
from tests.support.builders import make_settings
from tests.support.services import copy_with_version

SECTION = {
    "file": GALLERY_FILE,
    "embedding_size": 3,
    "neighbours": 1,
    "novelty_threshold": 0.3,
    "top_views": 2,
}


def gallery(*rows: tuple[list[float], str], prefix: str = "train") -> Gallery:
    return Gallery.of(
        np.array([vector for vector, _ in rows], np.float32),
        [label for _, label in rows],
        [f"{prefix}:{i}" for i in range(len(rows))],
    )


AXES = gallery(([1, 0, 0], "free"), ([0, 1, 0], "crack"))


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "inference.yml").write_text(yaml.safe_dump({"Gallery": SECTION}))
    return folder


def write_gallery_section(folder: Path, section: dict) -> None:
    config = yaml.safe_load((folder / "inference.yml").read_text())
    (folder / "inference.yml").write_text(yaml.safe_dump({**config, "Gallery": section}))


def test_search_gives_the_nearest_label_and_one_minus_its_cosine() -> None:
    matches = search(AXES, np.array([[2, 0.1, 0], [0, 0, 1], [0.1, 3, 0]], np.float32))
    assert matches.labels == ["free", "free", "crack"]  # [0, 0, 1]: a tie, the first entry
    assert matches.novelty[0] == pytest.approx(1 - 2 / np.hypot(2, 0.1), abs=1e-6)
    assert matches.novelty[1] == pytest.approx(1.0)
    assert part_novelty([0.1, 0.9, 0.5, 0.2], top_views=2) == pytest.approx(0.7)
    assert part_novelty([], top_views=2) == 0.0


def test_a_saved_gallery_loads_equal(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    save_gallery(path, AXES)
    loaded = load_gallery(path)
    assert np.array_equal(loaded.embeddings, AXES.embeddings)
    assert loaded.labels.tolist() == ["free", "crack"] and loaded.sources.tolist()[1] == "train:1"
    assert [p.name for p in tmp_path.iterdir()] == [GALLERY_FILE]  # no temporary left


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    save_gallery(path, AXES)
    bad = Gallery(AXES.embeddings, AXES.labels, AXES.sources)
    object.__setattr__(bad, "embeddings", object())  # np.savez cannot write it
    with pytest.raises(Exception):  # noqa: B017, PT011 (whatever numpy raises)
        save_gallery(path, bad)
    assert len(load_gallery(path)) == 2


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not a zip file", "cannot be read"),
        (None, "has no labels, sources array"),
    ],
)
def test_a_malformed_gallery_file_is_a_clear_model_error(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / GALLERY_FILE
    if content is None:
        with path.open("wb") as out:
            np.savez(out, embeddings=np.zeros((1, 3), np.float32))
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=words) as error:
        load_gallery(path)
    assert str(path) in str(error.value)


def test_a_missing_gallery_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_gallery(tmp_path / GALLERY_FILE)


def test_the_searched_gallery_is_the_exported_one_plus_the_reviewed(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    save_gallery(folder / GALLERY_FILE, AXES)
    section = gallery_settings({"Gallery": SECTION})
    assert section is not None and section.novelty_threshold == 0.3
    assert len(load_searched(folder, section)) == 2  # no reviews file yet
    oil = gallery(([0, 0, 1], "oil"), prefix="review:cam/7")
    assert len(append_reviews(folder, oil)) == 1
    assert len(append_reviews(folder, oil)) == 0, "a part already added is skipped"
    searched = load_searched(folder, section)
    assert searched.counts() == {"free": 1, "crack": 1, "oil": 1}
    assert search(searched, np.array([[0, 0.1, 1]], np.float32)).labels == ["oil"]
    assert load_gallery(folder / GALLERY_FILE).counts() == {"free": 1, "crack": 1}, "unchanged"
    names = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert names == {GALLERY_FILE, REVIEWS_FILE, "inference.yml"}, "no temporary left"


def test_a_gallery_of_another_size_than_the_section_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    save_gallery(folder / GALLERY_FILE, AXES)
    section = gallery_settings({"Gallery": {**SECTION, "embedding_size": 4}})
    assert section is not None
    with pytest.raises(ModelError, match="3-d embeddings but inference.yml says"):
        load_searched(folder, section)


def test_appending_keeps_the_file_atomic(tmp_path: Path) -> None:
    """The reviews file is replaced by a rename: a reader holding the old inode still
    reads the old, whole file while the new one is written."""
    folder = model_folder(tmp_path)
    append_reviews(folder, gallery(([0, 0, 1], "oil"), prefix="review:cam/1"))
    before = os.stat(folder / REVIEWS_FILE).st_ino
    with (folder / REVIEWS_FILE).open("rb") as reader:
        append_reviews(folder, gallery(([0, 1, 1], "oil"), prefix="review:cam/2"))
        assert os.stat(folder / REVIEWS_FILE).st_ino != before
        with np.load(reader) as old:
            assert len(old["labels"]) == 1
    assert len(load_gallery(folder / REVIEWS_FILE)) == 2


def test_a_worker_reloads_the_gallery_and_its_section_when_its_revision_moves(
    tmp_path: Path, redis_client, redis_url, line_name, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(defaults, "MODEL_POLL_S", 0.0)  # every batch, not every 2 s
    settings = make_settings(tmp_path, line_name, redis_url)
    folder = copy_with_version(tmp_path, "v7")  # a whole folder: the section is read again
    write_gallery_section(folder, SECTION)
    save_gallery(folder / GALLERY_FILE, AXES)
    section = gallery_settings({"Gallery": SECTION})
    info = ModelInfo("m", "v7", ("crack", "free"), ("free",), 0.5, 2, gallery=section)
    follower = GalleryFollower(partial(read_revision, redis_client, settings))
    first = follower.current(folder, info)
    assert first is not None and len(first.gallery) == 2 and first.revision == 0
    assert follower.current(folder, info) is first, "not read again without a new revision"

    append_reviews(folder, gallery(([0, 0, 1], "oil"), prefix="review:cam/1"))
    assert bump_revision(redis_client, settings, "v7") == 1
    grown = follower.current(folder, info)
    assert grown is not None and grown.gallery.counts()["oil"] == 1 and grown.revision == 1
    assert grown.section.novelty_threshold == SECTION["novelty_threshold"]

    # `gallery build` rewrote the section (a new threshold) and bumped the revision
    write_gallery_section(folder, {**SECTION, "novelty_threshold": 0.123})
    bump_revision(redis_client, settings, "v7")
    rebuilt = follower.current(folder, info)
    assert rebuilt is not None and rebuilt.section.novelty_threshold == 0.123

    (folder / REVIEWS_FILE).write_bytes(b"torn")
    bump_revision(redis_client, settings, "v7")
    assert follower.current(folder, info) is rebuilt, "a broken file keeps the loaded gallery"
    assert "not loaded" in caplog.text and REVIEWS_FILE in caplog.text
    without = ModelInfo("m", "v8", ("crack", "free"), ("free",), 0.5, 2)
    assert follower.current(folder, without) is None, "a model without a gallery has none"


def test_linewatch_check_reports_the_gallery_and_a_broken_file(
    tmp_path: Path, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    folder = copy_with_version(tmp_path, "v1")
    write_gallery_section(folder, SECTION)
    save_gallery(folder / GALLERY_FILE, AXES)
    append_reviews(folder, gallery(([0, 0, 1], "oil"), prefix="review:cam/1"))
    settings = make_settings(tmp_path, line_name, redis_url, inference={"model_dir": str(folder)})
    checks = {result.name: result for result in run_checks(settings)}
    assert checks["gallery"].ok, checks["gallery"]
    assert checks["gallery"].detail.startswith("2 trained + 1 reviewed entries, 3 classes")
    (folder / REVIEWS_FILE).write_bytes(b"torn")
    broken = {result.name: result for result in run_checks(settings)}["gallery"]
    assert not broken.ok and REVIEWS_FILE in broken.detail and "cannot be read" in broken.detail
    teacher = Path(__file__).resolve().parents[1] / "models" / "linewatch-tile-teacher"
    plain = make_settings(tmp_path, line_name, redis_url, inference={"model_dir": str(teacher)})
    assert "gallery" not in {result.name for result in run_checks(plain)}


def test_a_reviewed_crop_brings_its_eight_turns_and_mirrors() -> None:
    crop = np.arange(12, dtype=np.uint8).reshape(3, 4)
    views = dihedral_views(crop)
    assert len(views) == REVIEW_VIEWS == 8
    assert len({(v.shape, v.tobytes()) for v in views}) == 8, "all different"
    assert np.array_equal(views[0], crop) and np.array_equal(views[4], crop[:, ::-1])
    assert views[1].shape == (4, 3)
    sources = [entry_source("review:cam/9", v) for v in range(REVIEW_VIEWS)]
    assert {part_source(s) for s in sources} == {"review:cam/9"}
    assert part_source("review:cam/9") == "review:cam/9", "entries from before keep theirs"
    assert part_source("train:crack/a#b.jpg#2") == "train:crack/a#b.jpg"
