"""The studio's Dataset tab: the drawings of the last caption run with their captions and
sources, edited in the page and through its endpoints, every edit landing in the workspace's
overrides or exclusions CSV; before any caption run it says so in one line."""

from __future__ import annotations

import json
import threading

import pytest
from PIL import Image

from kshd.data.caption_lists import EXCLUSIONS_HEADER, OVERRIDES_HEADER, read_rows
from kshd.data.caption_review import ReviewFiles
from kshd.drawing.gui_dataset import DatasetActions

from .helpers.studio import free_port, gui_cfg, open_page

pytestmark = pytest.mark.slow
TRIGGER = "drawn by KSH drawing style"
MADE = [  # (raw name, prepared name, caption, source) as the caption stage wrote them
    ("a.png", "a-01.png", "1girl, smile", "blip2_new"),
    ("b.png", "b-02.png", "1girl, hat", "sidecar"),
    ("c.png", "c-03.png", "1boy, smile", "blip2_cached"),
]


def write_workspace(work) -> None:
    """Three drawings prepared and captioned, an overrides CSV with a row of another drawing."""
    (work / "prepared").mkdir(parents=True)
    for n, (_, output, _, _) in enumerate(MADE):
        Image.new("RGB", (32, 32), (80 * n, 120, 200)).save(work / "prepared" / output)
    drawings = [{"file": f, "output": o, "caption": c, "source": s, "split": "train",
                 "excluded": False} for f, o, c, s in MADE]  # fmt: skip
    (work / "reports").mkdir()
    (work / "reports" / "caption_items.json").write_text(json.dumps({"drawings": drawings}))
    (work / "overrides.csv").write_text('image,text\r\nold.png,"kept, as is"\r\n', "utf-8")


@pytest.fixture(scope="module")
def server(tiny_models, random_lora, tmp_path_factory):
    """The studio (`serve`, as `kshd gui` starts it) with its review files in a folder of
    the test's."""
    from kshd.drawing.gui import serve

    work = tmp_path_factory.mktemp("dataset")
    write_workspace(work)
    port = free_port()
    cfg = gui_cfg(tiny_models, random_lora, work / "outputs", port,
                  f"data.reports_dir={work / 'reports'}", f"data.prepared_dir={work / 'prepared'}",
                  f"caption.overrides={work / 'overrides.csv'}",
                  f"caption.exclusions={work / 'exclusions.csv'}")  # fmt: skip
    ui, engine = serve(cfg, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "work": work}
    with engine.lock:
        ui.close()


def _overrides(server) -> dict[str, str]:
    return dict(read_rows(server["work"] / "overrides.csv", OVERRIDES_HEADER))


def test_a_caption_edited_in_the_tab_lands_in_the_overrides(browser, server):
    page, failed = open_page(browser, server)
    page.click("button[role=tab]:has-text('Dataset')")
    page.wait_for_selector("#dataset-table >> text=b.png", timeout=30_000)
    assert "3 drawings" in page.inner_text("#dataset-status")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dataset-gallery img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 3",
        timeout=30_000,
    )
    assert "1girl" in page.inner_text("#dataset-tags")
    page.click("#dataset-table [role=gridcell]:has-text('b.png')")
    page.wait_for_function(
        "() => document.querySelector('#dataset-file textarea, #dataset-file input')?.value"
        " === 'b.png'"
    )
    assert page.input_value("#dataset-caption textarea") == "1girl, hat"
    page.fill("#dataset-caption textarea", f"1girl, red hat, {TRIGGER}")
    page.click("#dataset-save")
    page.wait_for_selector("#dataset-status >> text=dvc repro", timeout=30_000)
    assert "b.png: caption set" in page.inner_text("#dataset-status")
    assert _overrides(server) == {"old.png": "kept, as is", "b.png": "1girl, red hat"}
    page.wait_for_function(  # the table shown again after the edit
        "() => document.querySelector('#dataset-table').innerText.includes('override (edited)')",
        timeout=30_000,
    )
    page.fill("#dataset-reason textarea", "blurry")
    page.click("#dataset-exclude")
    page.wait_for_selector("#dataset-status >> text=excluded in", timeout=30_000)
    assert dict(read_rows(server["work"] / "exclusions.csv", EXCLUSIONS_HEADER)) == {
        "b.png": "blurry"
    }
    page.click("#dataset-include")
    page.wait_for_selector("#dataset-status >> text=included again", timeout=30_000)
    assert read_rows(server["work"] / "exclusions.csv", EXCLUSIONS_HEADER) == []
    assert failed == []
    page.close()


def test_endpoints_edit_the_lists_and_two_clients_at_once_lose_nothing(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {
        "/dataset_set_caption",
        "/dataset_replace_tag",
        "/dataset_remove_tag",
        "/dataset_exclude",
        "/dataset_include",
        "/dataset_list",
        "/dataset_tags",
    } <= names
    said = client.predict("smile", "grin", api_name="/dataset_replace_tag")
    assert said.startswith("'smile' replaced by 'grin': 2 captions changed")
    assert (
        _overrides(server)["a.png"] == "1girl, grin" and _overrides(server)["c.png"] == "1boy, grin"
    )
    rows = client.predict("", "grin", "", api_name="/dataset_list")
    assert [r[:3] for r in rows] == [["a.png", "1girl, grin", "override (edited)"],
                                     ["c.png", "1boy, grin", "override (edited)"]]  # fmt: skip
    with pytest.raises(AppError, match="nope.png"):
        client.predict("nope.png", "x", api_name="/dataset_set_caption")

    def edit(k: int) -> None:
        other = Client(server["url"], verbose=False)
        for i in range(8):
            other.predict(MADE[k][0], f"take {i}", api_name="/dataset_set_caption")

    threads = [threading.Thread(target=edit, args=(k,)) for k in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _overrides(server)
    assert after["a.png"] == "take 7" and after["c.png"] == "take 7"
    assert after["old.png"] == "kept, as is"


def test_without_a_caption_report_the_tab_says_so_in_one_line(tmp_path):
    files = ReviewFiles(tmp_path / "none.json", tmp_path / "o.csv", tmp_path / "e.csv",
                        tmp_path, TRIGGER)  # fmt: skip
    actions = DatasetActions(files)
    said = actions.summary()
    assert "No caption report yet" in said and "dvc repro" in said and "\n" not in said
    assert actions.rows() == [] and actions.tags() == []
