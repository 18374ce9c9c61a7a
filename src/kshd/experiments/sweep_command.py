"""`kshd sweep`: a grid of experiments on this machine (DVC's queue) or as cluster jobs
(submitit: `--executor slurm|local`), then the comparison page; `--collect` gathers a cluster
sweep's pushed experiments."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEMO = "+experiment=demo"
EXECUTORS = ("queue", "slurm", "local")


def add_sweep_command(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of DVC experiments (here or on SLURM), compare")
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
    p.add_argument("--group", help="wandb group and sweep name (default: sweep-<date-time>)")
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="queue",
        help="queue: DVC's queue on this machine; slurm: a SLURM job per experiment (submitit, "
        "resources from conf/cluster/); local: the same jobs through submitit on this machine",
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="pull the experiments a cluster sweep's jobs pushed (--group, default the newest) "
        "and write reports/compare/",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="slurm/local: submit and return (then --collect)"
    )
    p.add_argument(
        "cluster",
        nargs="*",
        metavar="cluster.KEY=V",
        help="overrides of the sweep's own config (conf/cluster/), e.g. cluster.partition=gpu",
    )
    p.set_defaults(func=sweep_main)


def sweep_main(args: argparse.Namespace) -> int:
    from kshd.config.errors import UserError

    root = Path.cwd()
    overrides = ([DEMO] if args.demo else []) + list(args.set)
    # the demo's tiny models, built in the workspace first (kshd.cli hands the builder in: the
    # product never imports the demo world)
    prepare = args.demo_models if args.demo else None
    try:
        if args.collect or args.executor != "queue":
            if args.gpus is not None or args.jobs is not None:
                raise UserError(
                    "--gpus and -j are for the queue on this machine; a cluster job's GPUs "
                    "are cluster.gpus_per_job, how many run at once cluster.max_running"
                )
            return _cluster(args, root, overrides, prepare)
        if args.cluster:
            raise UserError(f"{' '.join(args.cluster)}: only for --executor slurm|local")
        from kshd.experiments.gpus import parse_gpus
        from kshd.experiments.sweep import run_sweep

        gpus = None if args.gpus is None else parse_gpus(args.gpus)
        return run_sweep(root, overrides, args.jobs, args.group, prepare, gpus)
    except UserError as err:
        logging.error("kshd sweep: %s", err)
        return 2


def _cluster(args: argparse.Namespace, root: Path, overrides: list[str], prepare) -> int:
    from kshd.config.compose import compose_conf
    from kshd.config.errors import UserError
    from kshd.experiments.cluster import experiment_grid, run_cluster_sweep
    from kshd.experiments.collect import collect, find_record

    for o in args.cluster:
        key = o.lstrip("+~").split("=", 1)[0]
        if key != "cluster" and not key.startswith("cluster."):
            raise UserError(
                f"{o}: not a cluster.* key; an experiment's value goes after -S: -S {o}"
            )
    if args.collect:
        cfg = compose_conf(list(args.cluster), conf_dir=root / "conf")
        return collect(root, find_record(root, cfg.cluster.dir, args.group))
    # the experiments' own config (models to link into the clones): the grid's first point
    cfg = compose_conf([*experiment_grid(overrides)[0], *args.cluster], conf_dir=root / "conf")
    return run_cluster_sweep(root, args.executor, overrides, cfg, args.group, prepare,
                             not args.no_wait)  # fmt: skip
