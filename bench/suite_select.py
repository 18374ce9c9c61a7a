"""A pytest plugin for bench/suite.py: keep only the tests an earlier commit had.

$KSHD_SUITE_IDS names a file of that commit's node ids (its checkout's path already replaced by
this one's). A test that was parametrized since counts as its first case; an id that matches
nothing is listed in $KSHD_SUITE_IDS.unmatched, so that nothing is left out unsaid.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def kept(base_ids: list[str], today: list[str]) -> tuple[set[str], list[str]]:
    """Today's ids for the base's, and the base ids that none stands for."""
    now = set(today)
    keep, unmatched = set(), []
    for nodeid in base_ids:
        if nodeid in now:
            keep.add(nodeid)
        elif cases := [t for t in today if t.startswith(f"{nodeid}[")]:
            keep.add(cases[0])  # since parametrized: its first case
        else:
            unmatched.append(nodeid)
    return keep, unmatched


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    path = Path(os.environ["KSHD_SUITE_IDS"])
    keep, unmatched = kept(path.read_text(encoding="utf-8").splitlines(), [i.nodeid for i in items])
    dropped = [i for i in items if i.nodeid not in keep]
    items[:] = [i for i in items if i.nodeid in keep]
    config.hook.pytest_deselected(items=dropped)
    path.with_name(path.name + ".unmatched").write_text("\n".join(unmatched), encoding="utf-8")
