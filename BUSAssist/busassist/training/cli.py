"""``busassist-train``: the trainer's command line.

Eight verbs. The production line: ``fit`` -> ``export`` -> ``calibrate`` (operating table and temperature
fitted on validation, written into the model and sealed by its checksum) -> ``evaluate`` (the card; reads
the model, never writes it) -> ``publish``; ``fit --export`` runs the middle three. Beside it: ``compare``
(a run against the shipped model: does it reproduce it, ``--check``; may it replace it, ``--replace``; or
two cross-validations / study variants fold by fold), ``study``
(run or report a spec: cross-validation, the W_p sweep, the grid, the ablation, seed spreads; and
``agreement``: would one seed pass ``compare --check`` against another) and
``tools`` (occasional: quantize, equalize, qat, cv-rescore, mask-study, experiments-report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from busassist.constants import MODEL_FILENAME
from busassist.core.model_store import ModelError
from busassist.training.cli_parts import (
    DATA_VARIABLE,
    PRETRAINED_VARIABLE,
    UsageError,
    from_environment,
    run_command,
)
from busassist.training.cli_tools import add_tools

if TYPE_CHECKING:
    from busassist.training.trainer import TrainConfig


class WholeNamesHelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped only at spaces: a study name such as ``pinned-seeds`` is never cut at its hyphen."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _generated_settings():
    """The TrainConfig fields that are command-line options (those declared with ``config.setting``)."""
    from dataclasses import fields

    from busassist.training.trainer import TrainConfig

    return [f for f in fields(TrainConfig) if "section" in f.metadata]


def _flag(setting) -> str:
    return setting.metadata.get("flag", "--" + setting.name.replace("_", "-"))


def config_from_args(args: argparse.Namespace, out: Path) -> TrainConfig:
    """TrainConfig from the generated training options; a preset fills the preset settings not given."""
    from busassist.training.experiments import PRESETS
    from busassist.training.trainer import TrainConfig

    pretrained = None
    if not args.no_pretrained:
        if args.pretrained is None:
            raise UsageError(
                f"no pretrained graph: give --pretrained FILE or set {PRETRAINED_VARIABLE} (or --no-pretrained)"
            )
        if not Path(args.pretrained).exists():
            raise UsageError(
                f"{args.pretrained}: pretrained graph not found (pass --no-pretrained to train from scratch)"
            )
        pretrained = str(args.pretrained)
    preset = PRESETS[args.preset]
    values = {}
    for setting in _generated_settings():
        value = getattr(args, setting.name)
        if value is None and setting.metadata.get("preset"):
            value = preset[setting.name]
        values[setting.name] = value
    return TrainConfig(data_root=str(args.data), out_dir=str(out), pretrained=pretrained, **values)


def _fit(args: argparse.Namespace) -> int:
    from busassist.training.trainer import train

    try:
        out = train(config_from_args(args, args.out), resume=not args.restart)
    except ValueError as error:  # a configuration the trainer refuses, with its reason
        raise UsageError(str(error)) from error
    print(f"training finished: {out}")
    if args.export:
        return _export_and_evaluate(out, args.data)
    return 0


def _study_run(args: argparse.Namespace) -> int:
    from busassist.training.study import SpecError, load_spec, resolve_spec, run_study, study_report

    try:
        spec = load_spec(resolve_spec(args.spec))
    except SpecError as error:
        raise UsageError(str(error)) from error
    if args.preset is None:
        args.preset = spec.preset
    try:
        rows = run_study(spec, config_from_args(args, args.out), args.out)
    except (SpecError, ValueError) as error:  # a study folder of other data, a setting the trainer refuses
        raise UsageError(str(error)) from error
    study_report(args.out)
    print(f"{len(rows)} trainings; tables {args.out / 'summary.csv'}, report {args.out / 'report.md'}")
    return 0


def _study_report(args: argparse.Namespace) -> int:
    from busassist.training.study import study_report

    if not (args.out / "study.json").exists():
        raise UsageError(f"{args.out}: not a study folder (no study.json)")
    print(study_report(args.out))
    return 0


def _study_agreement(args: argparse.Namespace) -> int:
    from busassist.training.agreement import AGREEMENT_MARKDOWN, replicate_agreement

    if not (args.out / "study.json").exists():
        raise UsageError(f"{args.out}: not a study folder (no study.json)")
    models_dir = None if args.no_shipped else args.models_dir
    try:
        rows = replicate_agreement(args.out, args.data, models_dir)
    except ValueError as error:  # folds instead of seeds, missing images, nothing finished
        raise UsageError(str(error)) from error
    print((args.out / AGREEMENT_MARKDOWN).read_text(), end="")
    print(f"{sum(row['passes'] for row in rows)} of {len(rows)} comparisons pass; {args.out / AGREEMENT_MARKDOWN}")
    return 0


def _export_and_evaluate(run: Path, data: Path) -> int:
    """The production line after fit: export, calibrate (seals the model), evaluate (reads it)."""
    from busassist.training.evaluate import calibrate_run, evaluate_run
    from busassist.training.export import export_run

    onnx_path = export_run(run)
    print(f"exported {onnx_path}")
    calibrate_run(run, onnx_path, data)
    print(f"calibrated on the validation split and sealed: {onnx_path}.sha256")
    card = evaluate_run(run, onnx_path, data)
    print(json.dumps(card["test"], indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from busassist.training.export import export_run

    if args.exporter_graph:
        print(f"exported the exporter's graph to {export_run(Path(args.run), args.exporter_graph)}")
        return 0
    print(f"exported {export_run(Path(args.run))} (next: calibrate, then evaluate)")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from busassist.training.evaluate import calibrate_run

    pooled = Path(args.pooled) if args.pooled else None
    try:
        record = calibrate_run(Path(args.run), Path(args.run) / MODEL_FILENAME, Path(args.data), pooled)
    except ValueError as error:  # not a finished K-fold run, or one of another W_p
        raise UsageError(str(error)) from error
    print(f"fitted on {record['fitted_on']}")
    print(
        f"temperature {record['temperature']:.3f}, operating table of {len(record['operating_table'])} rows; "
        f"model sealed (SHA-256 {record['model_sha256'][:12]})"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from busassist.core.model_store import verify_model
    from busassist.training.evaluate import evaluate_run

    model = Path(args.run) / MODEL_FILENAME
    verify_model(model)  # evaluates the sealed model, or says it was changed after calibration
    try:
        card = evaluate_run(Path(args.run), model, Path(args.data), derived_from=args.derived_from)
    except (ValueError, KeyError) as error:  # a card it cannot derive from
        raise UsageError(f"{args.derived_from or args.run}: {error}") from error
    print(json.dumps(card["test"], indent=1))
    if args.report:
        from busassist.training.report import write_report

        print(f"report written to {write_report(args.run, args.report, args.data)}")
    return 0


def _cv_compare(args: argparse.Namespace) -> int:
    from busassist.training.cv_compare import compare_cv, format_comparison

    try:
        result = compare_cv(args.candidate, args.reference)
    except ValueError as error:
        raise UsageError(str(error)) from error
    path = Path(args.candidate) / f"compare-vs-{Path(args.reference).name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(format_comparison(result))
    print(f"written to {path}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from busassist.training.model_card import publish

    try:
        target = publish(Path(args.run), Path(args.models_dir))
    except (ModelError, ValueError) as error:
        raise UsageError(str(error)) from error
    print(f"published the model of {args.run} into {target}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    if args.check and args.replace:
        raise UsageError(
            "--check (does RUN reproduce the shipped model?) and --replace (may it replace it?) "
            "ask different questions; give one"
        )
    if args.reference is not None:
        if args.check or args.replace:
            raise UsageError(
                f"{'--check' if args.check else '--replace'} compares a run with the shipped model; "
                "give one RUN, not A B"
            )
        args.candidate = args.run
        return _cv_compare(args)
    from busassist.training.model_card import compare_cards
    from busassist.training.paired_compare import beyond_noise, compare_with_shipped, real_gains, replacement_failures

    not_checked = 3 if args.check or args.replace else 0  # a verdict was promised: no comparison is no pass
    shipped_card = Path(args.models_dir) / "model_card.json"
    print(compare_cards(Path(args.run) / "model_card.json", shipped_card))
    if not shipped_card.exists():
        return not_checked
    if args.data is None or not Path(args.data).is_dir():
        print(
            f"paired intervals skipped: {args.data or 'no BUSI folder'}: not found (give --data or set {DATA_VARIABLE})"
        )
        return not_checked
    try:
        report, table = compare_with_shipped(Path(args.run), Path(args.models_dir), Path(args.data))
    except ValueError as error:
        raise UsageError(str(error)) from error
    path = Path(args.run) / "compare-vs-shipped.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nPaired on the same {args.run} test images (both models scored on each bootstrap resample):")
    print(table)
    print(f"written to {path}")
    if args.replace:
        failures = replacement_failures(report)
        if failures:
            print(f"may not replace the shipped model: {'; '.join(failures)}")
            return 3
        gains = real_gains(report)
        reason = (
            f"better: {' and '.join(gains)} beyond noise"
            if gains
            else "equal within noise: it replaces the shipped model only with a study, fixed before it ran, "
            "that shows its recipe more stable (docs/training.md)"
        )
        print(f"may replace the shipped model (better or equal, nothing lower than the rule allows); {reason}")
        return 0
    differing = beyond_noise(report)
    if not differing:
        print("within the shipped card's paired 95 % intervals: no metric differs beyond resampling noise")
        return 0
    print(f"outside the shipped card's paired 95 % intervals: {', '.join(differing)} (or undefined)")
    from busassist.training.agreement import RECIPE_AGREEMENT, seed_to_seed_context

    context = seed_to_seed_context(differing, report)
    if context:
        print(f"for scale, the seed study {RECIPE_AGREEMENT.parent.name} (docs/training.md):")
        print("\n".join(context))
    return not_checked


def training_options(preset_default: str | None = "full") -> argparse.ArgumentParser:
    """Options every training command shares, generated from ``TrainConfig`` (one source of defaults).

    Each setting's default, help and choices are declared once, on the field (``config.setting``); the
    options appear in ``--help`` grouped by the config's sections. Only where things are (data, output,
    pretrained graph) and the preset are declared here.
    """
    from busassist.training.config import SECTIONS
    from busassist.training.experiments import PRESETS

    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where")
    where.add_argument(
        "--data",
        type=Path,
        default=from_environment(DATA_VARIABLE),
        help=f"BUSI root folder (default: ${DATA_VARIABLE})",
    )
    where.add_argument("--out", type=Path, required=True, help="output folder (resumed if it exists)")
    where.add_argument(
        "--pretrained",
        type=Path,
        default=from_environment(PRETRAINED_VARIABLE),
        help=f"ImageNet MobileNetV1 frozen graph (default: ${PRETRAINED_VARIABLE})",
    )
    where.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    where.add_argument(
        "--preset",
        default=preset_default,
        choices=list(PRESETS),
        help="; ".join(
            f"{name}: {preset['image_size']} px, {preset['epochs']} epochs" for name, preset in PRESETS.items()
        )
        + ("" if preset_default else " (default: the spec's own preset)"),
    )
    groups = {section: common.add_argument_group(section) for section in SECTIONS}
    for setting in _generated_settings():
        meta = setting.metadata
        options: dict = {"dest": setting.name, "help": meta["help"]}
        if meta.get("action") == "append":
            options.update(action="append", default=[], type=str)
        else:
            default = None if meta.get("preset") else setting.default
            kind = meta.get("type") or type(setting.default)
            options.update(default=default, type=kind)
            if "choices" in meta:
                options["choices"] = meta["choices"]
        if "metavar" in meta:
            options["metavar"] = meta["metavar"]
        if meta.get("preset"):
            options["help"] += " (default: the preset's)"
        groups[meta["section"]].add_argument(_flag(setting), **options)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busassist-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = training_options()

    fit = sub.add_parser("fit", parents=[common], help="train one model (what `make reproduce` runs)")
    fit.add_argument("--restart", action="store_true", help="ignore last.pt and start over")
    fit.add_argument("--export", action="store_true", help="export to ONNX and evaluate when done")
    fit.set_defaults(handler=_fit)

    study = sub.add_parser("study", help="run or report a study spec (variants x folds or seeds; TOML)")
    study_sub = study.add_subparsers(dest="study_command", required=True)
    # its own copy of the shared options: --preset defaults to the spec's (argparse parents share actions)
    study_run = study_sub.add_parser(
        "run",
        parents=[training_options(preset_default=None)],
        help="train every variant x replicate of SPEC (resumable)",
        formatter_class=WholeNamesHelpFormatter,
    )
    from busassist.training.study import builtin_specs  # the parser already loads the trainer

    study_run.add_argument("spec", help=f"a spec file, or a built-in study: {', '.join(builtin_specs())}")
    study_run.set_defaults(handler=_study_run)
    study_report_parser = study_sub.add_parser(
        "report", help="report.md of a study folder: spread and paired comparisons"
    )
    study_report_parser.add_argument("out", type=Path, help="the study's output folder")
    study_report_parser.set_defaults(handler=_study_report)
    agreement = study_sub.add_parser(
        "agreement",
        help="would one seed pass make reproduce's check against another? (and against the shipped model)",
    )
    agreement.add_argument("out", type=Path, help="a seed study's output folder (one test split)")
    agreement.add_argument("--data", type=Path, default=from_environment(DATA_VARIABLE))
    agreement.add_argument("--models-dir", type=Path, default=Path("Resources/Models"))
    agreement.add_argument("--no-shipped", action="store_true", help="only replicate against replicate")
    agreement.set_defaults(handler=_study_agreement)

    export = run_command(
        sub, "export", "export a run's kept weights to ONNX (the exact fast graph form)", _export, data=False
    )
    export.add_argument(
        "--exporter-graph",
        type=Path,
        metavar="FILE",
        help="write the exporter's own graph to FILE instead (the input of tools equalize / quantize)",
    )
    calibrate = run_command(
        sub,
        "calibrate",
        "fit the operating table and temperature on validation, write them into the model, seal it",
        _calibrate,
    )
    calibrate.add_argument(
        "--pooled",
        type=Path,
        default=None,
        metavar="KFOLD_RUN",
        help="fit on the pooled out-of-fold predictions of a K-fold run of the same recipe instead of validation",
    )
    evaluate = run_command(
        sub, "evaluate", "the model card on validation and test (reads the model, never writes it)", _evaluate
    )
    evaluate.add_argument("--report", type=Path, default=None, metavar="FOLDER", help="also a Markdown report")
    evaluate.add_argument(
        "--derived-from",
        type=Path,
        default=None,
        metavar="CARD",
        help="model_card.json of the float32 model this one was made from without training (equalize, quantize): "
        "its data and training sections are carried over",
    )

    add_tools(sub)

    publish = sub.add_parser("publish", help="copy a run's model and card into Resources/Models")
    publish.add_argument("run", type=Path)
    publish.add_argument("--models-dir", type=Path, default=Path("Resources/Models"))
    publish.set_defaults(handler=_publish)

    compare = sub.add_parser(
        "compare",
        help="RUN against the shipped model (paired bootstrap on its test images), or A against B "
        "(two cross-validations or study variants, paired fold by fold)",
    )
    compare.add_argument("run", type=Path, help="a finished run, or the candidate cross-validation / study variant")
    compare.add_argument(
        "reference", type=Path, nargs="?", default=None, help="the reference cross-validation / study variant"
    )
    compare.add_argument("--models-dir", type=Path, default=Path("Resources/Models"))
    compare.add_argument(
        "--check",
        action="store_true",
        help="exit 3 when RUN differs from the shipped model beyond noise on any metric (make reproduce)",
    )
    compare.add_argument(
        "--replace",
        action="store_true",
        help="exit 3 unless RUN's card is better or equal to the shipped one by the one replacement rule: "
        "sensitivity no lower, ACC/SPE/lesions found at most 0.05 and AUC 0.02 lower; says whether Dice or "
        "AUC is better beyond noise (docs/training.md)",
    )
    compare.add_argument(
        "--data",
        type=Path,
        default=from_environment(DATA_VARIABLE),
        help="BUSI root, to score the shipped model for paired intervals",
    )
    compare.set_defaults(handler=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "data", "") is None and args.handler is not _compare:
            raise UsageError(f"no BUSI folder: give --data DIR or set {DATA_VARIABLE}")
        return args.handler(args)
    except UsageError as error:
        print(f"busassist-train: {error}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:  # e.g. a RUN folder that is not a finished, exported run
        reason = f"{error.filename}: not found ({error.strerror})" if error.filename else str(error)
        print(f"busassist-train: {reason}", file=sys.stderr)
        return 1
    except ModelError as error:  # e.g. a run that was trained but never exported
        print(f"busassist-train: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # without the kernel pins: ``python -m busassist.training`` sets them first
    sys.exit(main())
