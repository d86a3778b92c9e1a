"""``busassist-train``: the trainer's command line (fit, export, evaluate, publish, compare)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from busassist.constants import W_CLF, W_P

DEFAULT_DATA = Path("../shared/data/busi")
DEFAULT_PRETRAINED = Path("../shared/data/pretrained/mobilenet_v1_1.0_224_imagenet_frozen.pb")


def _fit(args: argparse.Namespace) -> int:
    from busassist.training.trainer import TrainConfig, train

    pretrained = None
    if not args.no_pretrained:
        if not Path(args.pretrained).exists():
            print(
                f"busassist-train: {args.pretrained}: pretrained graph not found "
                "(pass --no-pretrained to train from scratch)",
                file=sys.stderr,
            )
            return 1
        pretrained = str(args.pretrained)
    config = TrainConfig(
        data_root=str(args.data),
        out_dir=str(args.out),
        task=args.task,
        pretrained=pretrained,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        w_p=args.w_p,
        w_clf=args.w_clf,
        mask_bce=args.mask_bce,
        schedule=args.schedule,
        seed=args.seed,
        limit=args.limit,
        device=args.device,
        image_size=args.image_size,
        cache_dir=str(args.cache_dir),
    )
    out = train(config, resume=not args.restart)
    print(f"training finished: {out}")
    if args.export:
        return _export_and_evaluate(out, args.data)
    return 0


def _export_and_evaluate(run: Path, data: Path) -> int:
    from busassist.training.evaluate import evaluate_run
    from busassist.training.export import export_run

    onnx_path = export_run(run)
    print(f"exported {onnx_path}")
    card = evaluate_run(run, onnx_path, data)
    print(json.dumps(card["test"], indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    return _export_and_evaluate(Path(args.run), Path(args.data))


def _publish(args: argparse.Namespace) -> int:
    from busassist.training.model_card import publish

    target = publish(Path(args.run), Path(args.models_dir))
    print(f"published the model of {args.run} into {target}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from busassist.training.model_card import compare_cards

    print(compare_cards(Path(args.run) / "model_card.json", Path(args.models_dir) / "model_card.json"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busassist-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train one model (what `make reproduce` runs)")
    fit.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BUSI root folder")
    fit.add_argument("--out", type=Path, required=True, help="run folder (resumed if it exists)")
    fit.add_argument("--task", default="emtnet", choices=["emtnet", "single-clf", "single-sgm"])
    fit.add_argument("--pretrained", type=Path, default=DEFAULT_PRETRAINED)
    fit.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    fit.add_argument("--epochs", type=int, default=40)
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--lr", type=float, default=3e-4)
    fit.add_argument("--patience", type=int, default=10)
    fit.add_argument("--w-p", type=float, default=W_P)
    fit.add_argument("--w-clf", type=float, default=W_CLF)
    fit.add_argument("--mask-bce", type=float, default=0.0, help="extra pixel-BCE weight for the mask loss")
    fit.add_argument("--schedule", default="plateau", choices=["plateau", "cosine"])
    fit.add_argument("--seed", type=int, default=42)
    fit.add_argument("--limit", type=int, default=None, help="use only N cases (smoke tests)")
    fit.add_argument("--image-size", type=int, default=224)
    fit.add_argument("--device", default="auto", help="auto, cpu or cuda")
    fit.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    fit.add_argument("--restart", action="store_true", help="ignore last.pt and start over")
    fit.add_argument("--export", action="store_true", help="export to ONNX and evaluate when done")
    fit.set_defaults(handler=_fit)

    export = sub.add_parser("export", help="export a run to ONNX and evaluate it on its test split")
    export.add_argument("run", type=Path)
    export.add_argument("--data", type=Path, default=DEFAULT_DATA)
    export.set_defaults(handler=_export)

    publish = sub.add_parser("publish", help="copy a run's model and card into Resources/Models")
    publish.add_argument("run", type=Path)
    publish.add_argument("--models-dir", type=Path, default=Path("Resources/Models"))
    publish.set_defaults(handler=_publish)

    compare = sub.add_parser("compare", help="difference between a run's card and the shipped card")
    compare.add_argument("run", type=Path)
    compare.add_argument("--models-dir", type=Path, default=Path("Resources/Models"))
    compare.set_defaults(handler=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
