"""The `kshd` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kshd.config.schema import ProjectConfig

DEMO = "+experiment=demo"


def _compose_params(args: argparse.Namespace) -> int:
    """Regenerate params.yaml from conf/ exactly as `dvc exp run` does."""
    from kshd.config.compose import compose_params

    compose_params(args.output, list(args.overrides))
    logging.info(
        "wrote %s from conf/%s",
        args.output,
        f" with {list(args.overrides)}" if args.overrides else "",
    )
    return 0


def _tiny_models(args: argparse.Namespace) -> int:
    from kshd_world.tiny import build_tiny_models

    for name, path in build_tiny_models(args.dir, args.seed).items():
        logging.info("tiny %s: %s", name, path)
    return 0


def _samples(args: argparse.Namespace) -> int:
    from kshd_world.samples import write_samples

    write_samples(args.dir)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kshd_world.demo import run_demo

    return run_demo(Path.cwd(), list(args.dvc_args))


def _compare(args: argparse.Namespace) -> int:
    from kshd.experiments.compare import build_comparison
    from kshd.experiments.dvc import DvcError

    try:
        build_comparison(Path.cwd(), Path(args.output), list(args.experiments))
    except DvcError as err:
        logging.error("kshd compare: %s", err)
        return 2
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from kshd.config.errors import UserError  # DvcError is one
    from kshd.experiments.gpus import parse_gpus
    from kshd.experiments.sweep import run_sweep

    overrides = ([DEMO] if args.demo else []) + list(args.set)
    prepare = None
    if args.demo:
        from kshd_world.demo import demo_models as prepare
    try:
        gpus = None if args.gpus is None else parse_gpus(args.gpus)
        return run_sweep(Path.cwd(), overrides, args.jobs, args.group, prepare, gpus)
    except UserError as err:
        logging.error("kshd sweep: %s", err)
        return 2


def _push_dataset(args: argparse.Namespace) -> int:
    from kshd.config.compose import load_params
    from kshd.config.errors import UserError
    from kshd.data.dataset import push_dataset

    try:
        cfg = load_params(list(args.overrides))
        d = cfg.dataset
        push_dataset(cfg.data.dataset_dir, d.hub_repo, d.private)
    except (UserError, FileNotFoundError) as err:
        logging.error("kshd push-dataset: %s", err)
        return 2
    return 0


def _build_demo_models(cfg: ProjectConfig) -> None:
    """Before drawing: the demo profile's tiny models (`tiny.build`), built or made current."""
    if cfg.tiny.build:
        from kshd_world.demo import build_demo_models

        build_demo_models(cfg)


def _add_experiment_commands(sub) -> None:
    p = sub.add_parser("compare", help="one offline HTML page comparing finished DVC experiments")
    p.add_argument("experiments", nargs="*", help="experiment names (default: all finished)")
    p.add_argument("-o", "--output", default="reports/compare", help="folder for index.html")
    p.set_defaults(func=_compare)
    p = sub.add_parser("sweep", help="queue a grid of experiments in DVC, run them, compare")
    p.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a Hydra override as for `dvc exp run -S`; comma lists sweep",
    )
    p.add_argument("--demo", action="store_true", help=f"add {DEMO} (tiny offline models)")
    p.add_argument(
        "-j", "--jobs", type=int, help="experiments run at once (default: one per GPU, or 1)"
    )
    p.add_argument(
        "--gpus",
        metavar="0,1",
        help="one experiment at a time on each of these GPUs, each seeing only its own "
        "(CUDA_VISIBLE_DEVICES); default: every visible GPU",
    )
    p.add_argument("--group", help="wandb group (default: sweep-<date-time>)")
    p.set_defaults(func=_sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kshd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compose-params", help="regenerate params.yaml from conf/ (as DVC does)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=10")
    p.add_argument("--output", default="params.yaml")
    p.set_defaults(func=_compose_params)
    p = sub.add_parser("tiny-models", help="build the tiny offline models into a folder")
    p.add_argument("dir", nargs="?", default="models/tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_models)
    p = sub.add_parser("samples", help="redraw the bundled sample drawings")
    p.add_argument("dir", nargs="?", default="data/samples")
    p.set_defaults(func=_samples)
    p = sub.add_parser("demo", help="run the pipeline on the samples with tiny models")
    p.add_argument("dvc_args", nargs="*", help="extra arguments for `dvc exp run`")
    p.set_defaults(func=_demo)
    p = sub.add_parser("push-dataset", help="upload data/dataset to the Hub (dataset.hub_repo)")
    p.add_argument("overrides", nargs="*", help="e.g. dataset.hub_repo=you/ksh-drawings")
    p.set_defaults(func=_push_dataset)
    _add_experiment_commands(sub)
    from kshd.data.caption_commands import add_captions_command
    from kshd.drawing.commands import add_commands
    from kshd.drawing.xyz_command import add_xyz_command

    add_captions_command(sub)

    add_commands(sub)
    add_xyz_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpx2", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.prepare_models = _build_demo_models
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
