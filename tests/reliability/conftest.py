"""The reliability suite prints what it tried and what held, per area, after the run."""

from __future__ import annotations

from collections import Counter

AREAS = {
    "test_hostile_corpus.py": "hostile image corpus",
    "test_bad_config.py": "bad config and inputs",
    "test_full_disk.py": "full disk while writing",
    "test_interrupts.py": "Ctrl-C during training",
    "test_kills.py": "SIGKILL mid-stage, then rerun",
    "test_app_load.py": "app under load and abuse",
    "test_weights_safety.py": "pickled weights planted",
}


def pytest_terminal_summary(terminalreporter) -> None:
    rows: dict[str, Counter] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "reliability/" not in nodeid or getattr(report, "when", "call") not in (
                "call",
                "setup",
            ):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            rows.setdefault(nodeid.split("::")[0].rsplit("/", 1)[-1], Counter())[outcome] += 1
    if not rows:
        return
    from .corpus import CASES

    terminalreporter.section("reliability suite")
    for module, counts in sorted(rows.items()):
        area = AREAS.get(module, module)
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        extra = f" ({len(CASES)} files)" if module == "test_hostile_corpus.py" else ""
        terminalreporter.write_line(f"{area:32} {detail}{extra}")
