"""The exported graph's second output (the view embedding) and the gallery beside it, on a
real model trained on generated tiles: export + reload equality of both outputs, the
gallery file and its `Gallery:` section, model folders without a gallery, the embedding
head's training (resumed) and export, the default whitened embedding, and the gallery
figures of `model eval`."""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

import linewatch.pipeline.training  # noqa: F401  (sets the legacy export format first)
from linewatch.pipeline.errors import LinewatchError, ModelError
from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.gallery.settings import gallery_settings
from linewatch.pipeline.gallery.store import GALLERY_FILE, Gallery, load_gallery
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data
from linewatch.pipeline.training.embedding import load_embedding_head, load_held_out
from linewatch.pipeline.training.embedding_train import EmbeddingConfig, train_embedding
from linewatch.pipeline.training.evaluate import evaluate
from linewatch.pipeline.training.export import (
    WithSoftmax,
    export_run,
    exported_inverse_temperature,
    load_run,
)
from linewatch.pipeline.training.gallery_export import (
    GALLERY_VIEWS,
    embed_views,
    photo_line_views,
    rejecting_threshold,
)
from linewatch.pipeline.training.gallery_metrics import auroc, gallery_figures
from linewatch.pipeline.training.line_views import WIDE_JITTER, canonical_view
from linewatch.pipeline.training.static_runner import export_layer
from tests.support.tiny_run import TRAINED_A_LITTLE, tiny_run

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "linewatch-tile"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PP-LCNet run on generated tiles (its images in run/../images), trained enough
    that its embeddings tell views apart."""
    return tiny_run(tmp_path_factory.mktemp("gallery"), **TRAINED_A_LITTLE)


@pytest.fixture(scope="module")
def exported(run: Path) -> tuple[Path, Path, float]:
    """(run folder, exported folder, export_run's max difference)."""
    diff = export_run(run, run.parent / "model")
    return run, run.parent / "model", diff


def test_export_reloads_both_outputs_equal(exported: tuple[Path, Path, float]) -> None:
    _, model, diff = exported
    assert diff < 1e-4
    classifier = Classifier(model, max_batch=4)
    images = [np.random.default_rng(i).integers(0, 255, (30, 40, 3), np.uint8) for i in range(5)]
    probs, embeddings = classifier.predict_with_embeddings(images)
    assert classifier.embedding_size == 1280  # PP-LCNet's pooled pre-fc features
    assert embeddings is not None and embeddings.shape == (5, 1280)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-4)
    assert np.ptp(embeddings, axis=0).max() > 0.01, "different views embed apart"
    assert np.array_equal(probs, classifier.predict(images)), "existing callers see the same"
    again = Classifier(model, max_batch=8).predict_with_embeddings(images)
    assert np.abs(again[0] - probs).max() < 1e-5 and np.abs(again[1] - embeddings).max() < 1e-5


def test_gallery_file_and_section(exported: tuple[Path, Path, float]) -> None:
    run, model, _ = exported
    config = yaml.safe_load((model / "inference.yml").read_text())
    settings = gallery_settings(config)
    assert settings is not None and settings.file == GALLERY_FILE
    gallery = load_gallery(model / settings.file)
    split = data.Split.load(run / "split.json")
    assert settings.entries == len(gallery) == GALLERY_VIEWS * len(split.train)
    assert settings.embedding_size == gallery.size == 1280
    assert 0 < settings.novelty_threshold < 2 and settings.top_views >= 1
    assert "out-of-fold training photos" in settings.novelty_from
    assert config["Gallery"]["selection_false_reject_rate"] <= 0.005
    assert set(gallery.counts()) == set(split.labels)
    first = gallery.sources[0]
    assert first.startswith("train:") and first.endswith("#0") and ".." not in first
    root = Path(yaml.safe_load((run / "config.json").read_text())["data"])
    photos = {s.split(":", 1)[1].split("#")[0] for s in gallery.sources}
    assert photos == {str(Path(item).relative_to(root)) for item, _ in split.train}
    # the worker's embedding of the same views finds them in the gallery, labelled
    classifier = Classifier(model, max_batch=8)
    views = photo_line_views(split.train[:2], 48, GALLERY_VIEWS, seed=0)
    matches = search(gallery, embed_views(classifier, views))
    assert matches.novelty.max() < 1e-4
    assert matches.labels == [split.labels[t] for _, t in split.train[:2] for _ in range(4)]


def test_wide_jitter_views_are_all_randomised(run: Path) -> None:
    """With a jitter, `photo_line_views` cuts every view with it (no canonical view)."""
    split = data.Split.load(run / "split.json")
    items = split.train[:2]
    plain = photo_line_views(items, 48, GALLERY_VIEWS, seed=3)
    wide = photo_line_views(items, 48, GALLERY_VIEWS, seed=3, jitter=WIDE_JITTER)
    assert wide.shape == plain.shape == (2 * GALLERY_VIEWS, 48, 48)
    canonical = canonical_view(data.load_image(items[0][0], 55), 48)
    assert np.array_equal(plain[0], canonical)
    assert not any(np.array_equal(view, canonical) for view in wide[:GALLERY_VIEWS])
    again = photo_line_views(items, 48, GALLERY_VIEWS, seed=3, jitter=WIDE_JITTER)
    assert np.array_equal(wide, again)


def test_threshold_rejects_at_most_the_budget() -> None:
    scores = np.linspace(0, 1, 1000)
    threshold = rejecting_threshold(scores, 0.005)
    assert (scores >= threshold).sum() == 5 and (scores >= threshold - 2e-3).sum() > 5


@pytest.fixture(scope="module")
def one_output(exported: tuple[Path, Path, float]) -> Path:
    """The run exported as every model was before galleries: probabilities only."""
    run, model, _ = exported
    _, _, network = load_run(run)
    folder = run.parent / "one-output"
    classifier = WithSoftmax(network)
    classifier.inverse_temperature = exported_inverse_temperature(model)
    export_layer(classifier, 48, folder / "inference")
    config = yaml.safe_load((model / "inference.yml").read_text())
    config.pop("Gallery")
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder


def test_a_model_without_a_gallery_loads_as_today(
    one_output: Path, exported: tuple[Path, Path, float]
) -> None:
    classifier = Classifier(one_output, max_batch=4)
    images = [np.full((50, 60, 3), 90, np.uint8)] * 3
    probs, embeddings = classifier.predict_with_embeddings(images)
    assert classifier.info.gallery is None and classifier.embedding_size is None
    assert embeddings is None and np.array_equal(probs, classifier.predict(images))
    with_gallery = Classifier(exported[1], max_batch=4).predict(images)
    assert np.abs(with_gallery - probs).max() < 1e-5, "the embedding output changed nothing"
    empty_probs, empty = classifier.predict_with_embeddings([])
    assert empty_probs.shape == (0, 6) and empty is None


def test_a_gallery_section_the_graph_cannot_serve_is_refused(
    one_output: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(one_output, folder)
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Gallery"] = {"file": GALLERY_FILE, "embedding_size": 128, "novelty_threshold": 0.4}
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match="embedding output is absent"):
        Classifier(folder, max_batch=4)
    config["Gallery"]["novelty_threshold"] = 3.0
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match="novelty_threshold 3.0"):
        Classifier(folder, max_batch=4)


def test_the_shipped_model_has_its_gallery() -> None:
    classifier = Classifier(SHIPPED, max_batch=4)
    assert classifier.info.gallery is not None
    assert classifier.embedding_size == classifier.info.gallery.embedding_size
    gallery = load_gallery(SHIPPED / classifier.info.gallery.file)
    assert len(gallery) == classifier.info.gallery.entries and gallery.size == 128
    # its threshold was set on training parts cut with the wide line jitter
    assert "wide line jitter" in classifier.info.gallery.novelty_from
    assert np.allclose(np.linalg.norm(gallery.embeddings, axis=1), 1, atol=1e-4)


def test_model_eval_reports_the_gallery(exported: tuple[Path, Path, float]) -> None:
    run, model, _ = exported
    results = evaluate(model, run.parent / "images", run / "split.json", threads=2)
    gallery = results["gallery"]
    assert set(results) == {"line", "photo", "gallery"}
    assert 0 <= gallery["nn_macro_f1"] <= 1
    defects = set(data.Split.load(run / "split.json").labels) - {"free"}
    assert set(gallery["novelty_auroc"]) == defects
    assert set(gallery["few_shot_recall"]) == {"5", "10"}
    assert set(gallery["few_shot_recall"]["5"]) == defects
    assert (
        gallery["entries"]
        == yaml.safe_load((model / "inference.yml").read_text())["Gallery"]["entries"]
    )


def test_gallery_figures_on_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8, dtype=np.float32)
    labels = ["free", "a", "b", "c"]

    def draw(per_class: int) -> tuple[np.ndarray, list[str]]:
        rows = np.repeat(centres, per_class, axis=0) + rng.normal(0, 0.05, (4 * per_class, 8))
        return rows.astype(np.float32), [label for label in labels for _ in range(per_class)]

    rows, truth = draw(12)
    photos = [f"train:{label}{i // 2}#{i % 2}" for label in labels for i in range(12)]
    gallery = Gallery.of(rows, truth, photos)
    queries, query_truth = draw(5)
    figures = gallery_figures(gallery, queries, query_truth, ["a", "b", "c"])
    assert figures["nn_macro_f1"] == 1.0
    assert figures["novelty_auroc"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert figures["few_shot_recall"]["5"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert auroc(np.array([0.1, 0.9, 0.5]), np.array([False, True, False])) == 1.0
    assert auroc(np.array([0.1, 0.9, 0.5]), np.array([True, False, False])) == 0.0


def test_embedding_head_trains_resumes_and_exports(run: Path, tmp_path: Path) -> None:
    own = tmp_path / "run"
    shutil.copytree(run, own)
    config = EmbeddingConfig(
        run_dir=str(own),
        views_per_image=8,
        size=16,
        keep=8,
        whiten=False,  # the 1-epoch run's features hardly vary: whitening is tested below
        hidden=32,
        epochs=2,
        batch_size=16,
        folds=2,
        threshold_views="default",  # the held-out parts: views 4-7 of the cached taps
    )
    train_embedding(config)
    assert not list((own / "embedding").glob("threshold_taps_*"))
    log = (own / "embedding" / "train.log").read_text()
    assert "fold 2: epoch 2/2" in log and "head: epoch 2/2" in log
    with pytest.raises(LinewatchError, match="--resume"):
        train_embedding(config)
    train_embedding(replace(config, epochs=3), resume=True)
    log = (own / "embedding" / "train.log").read_text()
    assert "head: resumed after epoch 2" in log and "head: epoch 3/3" in log
    assert "head: epoch 1/3" not in log
    diff = export_run(own, tmp_path / "model")
    assert diff < 1e-4
    classifier = Classifier(tmp_path / "model", max_batch=4)
    assert classifier.embedding_size == 16 + 8
    section = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())["Gallery"]
    assert section["embedding_size"] == 24 and "embedding heads" in section["novelty_from"]
    assert "line jitter" not in section["novelty_from"]
    assert load_gallery(tmp_path / "model" / GALLERY_FILE).size == 24


def test_the_default_embedding_is_the_whitened_axes(run: Path, tmp_path: Path) -> None:
    """`train-embedding`'s default trains nothing: the embedding is the features' first
    `keep` principal axes, centred and whitened on the training views, and the re-exported
    folder's output 1 is that map (the shipped model's trunk: its features vary, unlike
    the 1-epoch run's)."""
    own = tmp_path / "run"
    config = EmbeddingConfig(
        run_dir=str(own),
        model=str(SHIPPED),
        split_file=str(run / "split.json"),
        data=str(run.parent / "images"),
        views_per_image=8,  # 4 for the gallery, 4 as the held-out parts
        keep=8,
        folds=2,
    )
    train_embedding(config)
    assert "epoch" not in (own / "embedding" / "train.log").read_text()
    # the threshold's held-out parts are by default cut with the wide line jitter
    split = data.Split.load(run / "split.json")
    with np.load(own / "embedding" / "threshold_taps_wide.npz") as wide:
        assert wide["features"].shape[0] == GALLERY_VIEWS * len(split.train)
    held_out = load_held_out(own)
    assert held_out is not None and len(held_out[0]) == len(split.train)
    assert "wide line jitter" in held_out[1]
    head = load_embedding_head(own)
    assert head is not None
    with np.load(own / "embedding" / "taps.npz") as taps:
        features, val = taps["train"], taps["val"]
    # the map's own weights; paddle is not imported here: it must come after
    # linewatch.pipeline.training, which sets the legacy program format
    projected = (features - head.centre.numpy()) @ head.projection.weight.numpy()
    covariance = np.cov(projected, rowvar=False)
    assert np.abs(projected.mean(axis=0)).max() < 1e-3
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-3
    assert 0.9 < np.diag(covariance).min() and np.diag(covariance).max() <= 1.0
    # the command, in its own process (loading an exported folder twice in one process
    # meets paddle's per-process tensor names)
    exported = subprocess.run(
        [sys.executable, "-m", "linewatch.cli", "export", "--run-dir", str(own)]
        + ["--out", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "probabilities\non the validation line views: 0.00e+00" in exported.stdout
    classifier = Classifier(tmp_path / "model", max_batch=8)
    assert classifier.embedding_size == 8
    assert load_gallery(tmp_path / "model" / GALLERY_FILE).size == 8
    views = [
        np.repeat(canonical_view(data.load_image(item, 183), 160)[..., None], 3, axis=2)
        for item, _ in split.val
    ]
    _, embeddings = classifier.predict_with_embeddings(views)
    expected = (val - head.centre.numpy()) @ head.projection.weight.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert embeddings is not None and np.abs(embeddings - expected).max() < 1e-3


def simulate_line(out: Path, images: Path, split_file: Path, split: str, seed: int) -> Path:
    """A short moving line (320×180) of the run's generated photos of one split."""
    command = [sys.executable, "-m", "linewatch.cli", "simulate", "--out", str(out)]
    command += ["--images", str(images), "--split-file", str(split_file), "--split", split]
    command += ["--parts", "8", "--seed", str(seed), "--width", "320", "--height", "180"]
    command += ["--frames-per-part", "10", "--defect-rate", "0.6"]
    subprocess.run(command, check=True, capture_output=True)
    return out


def test_gallery_build_from_line_video(exported: tuple[Path, Path, float], tmp_path: Path) -> None:
    """`linewatch gallery build --line-video`: the folder's gallery becomes the video
    parts' views, labelled from the video's truth; the graph stays as it was."""
    import csv

    from linewatch.pipeline.training.line_gallery import VIEWS_PER_PART

    run, model, _ = exported
    folder = shutil.copytree(model, tmp_path / "model")
    split_file, images = run / "split.json", run.parent / "images"
    graph = {f: (folder / f).read_bytes() for f in ("inference.pdmodel", "inference.pdiparams")}
    before = yaml.safe_load((folder / "inference.yml").read_text())
    video = simulate_line(tmp_path / "line", images, split_file, "train", seed=3)
    command = [sys.executable, "-m", "linewatch.cli", "gallery", "build", "--model", str(folder)]
    command += ["--line-video", str(video), "--split-file", str(split_file)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "entries, novelty threshold" in done.stdout

    config = yaml.safe_load((folder / "inference.yml").read_text())
    settings = gallery_settings(config)
    assert settings is not None
    gallery = load_gallery(folder / settings.file)
    truth = list(csv.DictReader((video / "cam1.parts.csv").open()))
    label_of = {"/".join(Path(row["source"]).parts[-2:]): row["label"] for row in truth}
    assert settings.entries == len(gallery) and 0 < len(gallery) <= VIEWS_PER_PART * len(truth)
    for label, source in zip(gallery.labels.tolist(), gallery.sources.tolist(), strict=True):
        assert source.startswith("line:") and "#" in source
        assert label_of[source[len("line:") :].split("#")[0]] == label
    assert set(gallery.labels.tolist()) == {row["label"] for row in truth}
    assert 0 < settings.novelty_threshold < 2 and "moving-line" in settings.novelty_from
    assert {k: v for k, v in config.items() if k != "Gallery"} == {
        k: v for k, v in before.items() if k != "Gallery"
    }
    assert graph == {f: (folder / f).read_bytes() for f in graph}
    assert np.allclose(np.linalg.norm(gallery.embeddings, axis=1), 1, atol=1e-4)

    # a video of photos outside the training split is refused
    val = simulate_line(tmp_path / "val-line", images, split_file, "val", seed=4)
    command[command.index(str(video))] = str(val)
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and "not in the split's training list" in refused.stderr
