"""The studio's Dataset tab: review the training captions (kshd.data.caption_review).

The drawings of the last caption run, each with its thumbnail, file, caption and where the caption
came from; a filter; a drawing chosen in the gallery or the table is edited in place and saved
as an override; a tag replaced or removed in every caption; a drawing excluded or taken back;
the tag frequency table. Every action is an endpoint for gradio_client (`/dataset_set_caption`,
`/dataset_replace_tag`, `/dataset_remove_tag`, `/dataset_exclude`, `/dataset_include`,
`/dataset_list`, `/dataset_tags`) and writes caption.overrides or caption.exclusions under the
lists' lock, so two tabs editing at once lose nothing. Nothing retrains here: the status line
says what was written and that `dvc repro` retrains with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from kshd.config.errors import UserError
from kshd.data import caption_review as review
from kshd.drawing.gui_actions import user_error

log = logging.getLogger(__name__)
GALLERY_SIZE = 120  # thumbnails shown at once (a real folder holds thousands): filter to narrow
COLUMNS = ["file", "caption", "source", "excluded"]
RETRAIN = "`dvc repro` captions, rebuilds the dataset and retrains with it"


@dataclass(frozen=True)
class DatasetActions:
    """The tab's handlers over one workspace's review files (each an API endpoint)."""

    files: review.ReviewFiles

    def drawings(self) -> list[review.Drawing]:
        """As they are now; none before the first caption run."""
        try:
            return review.load(self.files)
        except review.NoCaptionReport:
            return []

    def summary(self) -> str:
        """The status line before any edit: what is there, or that nothing is yet."""
        if not self.files.items.is_file():
            return (
                "No caption report yet: run `dvc repro` (or `dvc repro caption`) once, "
                "then review the captions here."
            )
        drawings = self.drawings()
        edited = sum(d.edited for d in drawings)
        excluded = sum(d.excluded for d in drawings)
        pending = f" · {edited} edited since the last caption run ({RETRAIN})" if edited else ""
        return f"{len(drawings)} drawings · {excluded} excluded{pending}"

    def rows(self, text: str = "", tag: str = "", source: str = "") -> list[list]:
        """`/dataset_list`: [file, caption, source, excluded] of the drawings the filter keeps
        (`tag` a whole tag, `source` a prefix, `text` in the name or caption)."""
        shown = review.select(self.drawings(), (tag or "").strip(), source or "", text or "")
        return [[d.file, d.caption, _source(d), d.excluded] for d in shown]

    def tags(self) -> list[list]:
        """`/dataset_tags`: [tag, drawings] over the drawings not excluded, most frequent first."""
        return [[tag, n] for tag, n in review.tag_counts(self.drawings())]

    def _do(self, action, *args) -> str:
        try:
            change = action(self.files, *args)
        except UserError as err:
            log.info("refused: dataset: %s", err)
            raise user_error(str(err), title="Cannot change the dataset") from err
        log.info("dataset: %s", change.message)
        if not change.files:
            return f"{change.message}."
        return f"{change.message}. {RETRAIN}."

    def set_caption(self, file: str, caption: str) -> str:
        """`/dataset_set_caption`: the drawing's caption, without the trigger phrase."""
        return self._do(review.set_caption, file or "", caption or "")

    def replace_tag(self, old: str, new: str) -> str:
        return self._do(review.replace_tag, old or "", new or "")

    def remove_tag(self, tag: str) -> str:
        return self._do(review.remove_tag, tag or "")

    def exclude(self, file: str, reason: str) -> str:
        return self._do(review.exclude, file or "", reason or "")

    def include(self, file: str) -> str:
        return self._do(review.include, file or "")

    def view(self, text: str, tag: str, source: str) -> tuple[list, list, list, list]:
        """The gallery (capped), the table, the tag table and the files shown, after a filter
        or an edit."""
        rows = self.rows(text, tag, source)
        by_file = {d.file: d for d in self.drawings()}
        gallery = [(str(self.files.prepared / by_file[r[0]].output), r[0])
                   for r in rows[:GALLERY_SIZE]]  # fmt: skip
        return gallery, rows, self.tags(), [r[0] for r in rows]


def _source(d: review.Drawing) -> str:
    return f"{d.source} (edited)" if d.edited else d.source


def _chosen(files: list[str], actions: DatasetActions, index: int) -> tuple[str, str, str]:
    """(file, caption, reason) of the drawing chosen in the gallery or the table."""
    if not 0 <= index < len(files):
        return "", "", ""
    d = review.find(actions.drawings(), files[index])
    return d.file, d.caption, d.reason


def build_dataset(files: review.ReviewFiles, tab: gr.Tab) -> DatasetActions:
    """The Dataset tab's content (inside a gr.Tab `tab`) and its events."""
    actions = DatasetActions(files)
    parts = _layout(actions)
    _wire(actions, parts, tab)
    return actions


def _layout(actions: DatasetActions) -> SimpleNamespace:
    """The filter, the gallery and table, the editor, the tag tools and table; by name."""
    c = SimpleNamespace()
    c.status = gr.Markdown(actions.summary(), elem_id="dataset-status")
    with gr.Row(equal_height=True):
        c.text = gr.Textbox(label="Filter (file or caption)", elem_id="dataset-filter", scale=3)
        c.tag = gr.Textbox(label="With the tag", elem_id="dataset-filter-tag", scale=2)
        c.source = gr.Textbox(label="Source (override, sidecar, blip2...)",
                              elem_id="dataset-filter-source", scale=2)  # fmt: skip
        c.refresh = gr.Button("Refresh", size="sm", elem_id="dataset-refresh", scale=0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c.gallery = gr.Gallery(label="Drawings", elem_id="dataset-gallery", columns=8,
                                   height=300, object_fit="contain", interactive=False,
                                   allow_preview=False)  # fmt: skip
            c.table = gr.Dataframe(headers=COLUMNS, column_count=(4, "fixed"),
                                   interactive=False, elem_id="dataset-table", max_height=320,
                                   label="Captions (without the trigger phrase)")  # fmt: skip
        with gr.Column(scale=2):
            c.file = gr.Textbox(label="Drawing", elem_id="dataset-file")
            c.caption = gr.Textbox(label="Caption", lines=3, elem_id="dataset-caption")
            c.save = gr.Button("Save caption", variant="primary", elem_id="dataset-save")
            c.reason = gr.Textbox(label="Reason to exclude (optional)", elem_id="dataset-reason")
            with gr.Row():
                c.exclude = gr.Button("Exclude", size="sm", elem_id="dataset-exclude")
                c.include = gr.Button("Include", size="sm", elem_id="dataset-include")
            with gr.Row():
                c.old = gr.Textbox(label="Tag", elem_id="dataset-old-tag")
                c.new = gr.Textbox(label="Replace with", elem_id="dataset-new-tag")
            with gr.Row():
                c.replace = gr.Button("Replace tag", size="sm", elem_id="dataset-replace")
                c.remove = gr.Button("Remove tag", size="sm", elem_id="dataset-remove")
            c.counts = gr.Dataframe(headers=["tag", "drawings"], interactive=False,
                                    elem_id="dataset-tags", max_height=260,
                                    label="Tag frequency")  # fmt: skip
    c.shown = gr.State([])
    return c


def _wire(actions: DatasetActions, c: SimpleNamespace, tab: gr.Tab) -> None:
    """Filters and the tab's opening show the view; a choice fills the editor; each edit is
    an endpoint and shows the view again after it."""
    private = {"queue": False, "api_visibility": "private"}
    filters, views = [c.text, c.tag, c.source], [c.gallery, c.table, c.counts, c.shown]
    for event in (c.refresh.click, c.text.submit, c.tag.submit, c.source.submit, tab.select):
        event(actions.view, filters, views, **private)
    for event in (c.refresh.click, tab.select):
        event(actions.summary, None, c.status, **private)

    def pick(files: list[str], evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return _chosen(files, actions, index)

    for chooser in (c.gallery, c.table):
        chooser.select(pick, c.shown, [c.file, c.caption, c.reason], **private)
    edits = [
        (c.save, actions.set_caption, [c.file, c.caption], "dataset_set_caption"),
        (c.replace, actions.replace_tag, [c.old, c.new], "dataset_replace_tag"),
        (c.remove, actions.remove_tag, [c.old], "dataset_remove_tag"),
        (c.exclude, actions.exclude, [c.file, c.reason], "dataset_exclude"),
        (c.include, actions.include, [c.file], "dataset_include"),
    ]
    for button, handler, inputs, name in edits:
        done = button.click(handler, inputs, c.status, api_name=name, queue=False)
        done.success(actions.view, filters, views, **private)
    # scripts read the review too (the page fills its tables when the tab opens)
    gr.api(actions.rows, api_name="dataset_list", queue=False)
    gr.api(actions.tags, api_name="dataset_tags", queue=False)
