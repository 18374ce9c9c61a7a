"""The `kshd` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _compose_params(args: argparse.Namespace) -> int:
    """Regenerate params.yaml from conf/ exactly as `dvc exp run` does."""
    from dvc.utils.hydra import compose_and_dump

    root = Path.cwd()
    compose_and_dump(
        Path(args.output), str(root / "conf"), None, "config", str(root), list(args.overrides)
    )
    logging.info(
        "wrote %s from conf/%s",
        args.output,
        f" with {list(args.overrides)}" if args.overrides else "",
    )
    return 0


def _tiny_models(args: argparse.Namespace) -> int:
    from kshd.models import build_tiny_models

    for name, path in build_tiny_models(args.dir, args.seed).items():
        logging.info("tiny %s: %s", name, path)
    return 0


def _samples(args: argparse.Namespace) -> int:
    from kshd.samples import write_samples

    write_samples(args.dir)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kshd.demo import run_demo

    return run_demo(Path.cwd(), list(args.dvc_args))


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
    from kshd.app.commands import add_commands

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
