"""`kshd captions`: review the captions from the shell (kshd.data.caption_review does the work).

    kshd captions list [--tag 1girl] [--source blip2] [--text umbrella] [--excluded]
    kshd captions set <drawing> "<caption without the trigger phrase>"
    kshd captions replace-tag OLD NEW  |  remove-tag TAG
    kshd captions exclude <drawing> [--reason "a near copy"]  |  include <drawing>
    kshd captions tags [--top 30]

Each reads the workspace's config (params.yaml, plus Hydra overrides after the arguments) and
writes caption.overrides or caption.exclusions; `dvc repro` then reruns caption and what
follows it. A bad name or value is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import shutil

from kshd.config.errors import UserError
from kshd.data import caption_review as review

log = logging.getLogger(__name__)
AFTER = "dvc repro reruns caption, dataset and train with it"


def add_captions_command(sub) -> None:
    p = sub.add_parser(
        "captions",
        help="review captions: list, set, replace or remove a tag, exclude a drawing, tags",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="each drawing: file, source, caption")
    a.add_argument("--tag", default="", help="only drawings with this whole tag")
    a.add_argument("--source", default="", help="override, sidecar, blip2 (cached or new), ...")
    a.add_argument("--text", default="", help="only names or captions holding this text")
    a.add_argument("--excluded", action="store_true", help="only the excluded drawings")
    _done(a, _list)
    a = actions.add_parser("set", help="give a drawing a reviewed caption")
    a.add_argument("drawing", help="raw file name or prepared name (`kshd captions list`)")
    a.add_argument("caption", help="the caption without the trigger phrase (the stage adds it)")
    _done(a, lambda files, args: review.set_caption(files, args.drawing, args.caption))
    a = actions.add_parser("replace-tag", help="replace a whole tag in every caption")
    a.add_argument("old")
    a.add_argument("new")
    _done(a, lambda files, args: review.replace_tag(files, args.old, args.new))
    a = actions.add_parser("remove-tag", help="remove a whole tag from every caption")
    a.add_argument("tag")
    _done(a, lambda files, args: review.remove_tag(files, args.tag))
    a = actions.add_parser("exclude", help="leave a drawing out of training")
    a.add_argument("drawing", help="raw file name or prepared name")
    a.add_argument("--reason", default="", help="kept in the exclusions file")
    _done(a, lambda files, args: review.exclude(files, args.drawing, args.reason))
    a = actions.add_parser("include", help="take an excluded drawing back")
    a.add_argument("drawing", help="raw file name or prepared name")
    _done(a, lambda files, args: review.include(files, args.drawing))
    a = actions.add_parser("tags", help="the tag frequency table")
    a.add_argument("--top", type=int, default=0, help="only the N most frequent (0: all)")
    _done(a, _tags)


def _done(p: argparse.ArgumentParser, action) -> None:
    """The workspace's config overrides last, and the action run by `captions`."""
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. +experiment=demo")
    p.set_defaults(func=captions, review_action=action)


def captions(args: argparse.Namespace) -> int:
    """Run one review action; a user's error is one line and exit code 2."""
    from kshd.config.compose import load_params

    try:
        files = review.ReviewFiles.of(load_params(list(args.overrides)))
        change = args.review_action(files, args)
    except (UserError, FileNotFoundError) as err:
        log.error("kshd captions %s: %s", args.action, err)
        return 2
    if isinstance(change, review.Change):
        log.info("%s; %s", change.message, AFTER if change.files else "nothing to rerun")
    return 0


def _list(files: review.ReviewFiles, args: argparse.Namespace) -> None:
    drawings = review.load(files)
    shown = review.select(drawings, args.tag, args.source, args.text)
    if args.excluded:
        shown = [d for d in shown if d.excluded]
    width = max((len(d.file) for d in shown), default=4)
    room = max(shutil.get_terminal_size((120, 24)).columns - width - 22, 30)
    for d in shown:
        marks = ("excluded " if d.excluded else "") + ("edited" if d.edited else "")
        caption = d.caption if len(d.caption) <= room else d.caption[: room - 1] + "…"
        log.info("%-*s  %-14s %s%s", width, d.file, d.source, caption,
                 f"  [{marks.strip()}]" if marks else "")  # fmt: skip
    edited = sum(d.edited for d in drawings)
    log.info("%d of %d drawings (%d excluded%s)", len(shown), len(drawings),
             sum(d.excluded for d in drawings),
             f"; {edited} edited since the last caption run: dvc repro applies them" * bool(edited),
             )  # fmt: skip


def _tags(files: review.ReviewFiles, args: argparse.Namespace) -> None:
    drawings = review.load(files)
    counts = review.tag_counts(drawings)
    shown = counts[: args.top] if args.top > 0 else counts
    width = max((len(t) for t, _ in shown), default=3)
    for tag, n in shown:
        log.info("%-*s  %d", width, tag, n)
    log.info("%d tags over %d drawings", len(counts), sum(not d.excluded for d in drawings))
