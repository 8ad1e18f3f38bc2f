"""The reviewer's word in the reasoning panel: accept or reject each question's chain of the frame on
screen, and fix one of its items (an instrument or a triplet).

A chain verdict is tied to the answer's text (``engine.review_rows.ChainVerdict.text_sha``): after a
re-ask the old verdict is shown as being about an earlier answer. Pressing the verdict already in force
withdraws it. Items are the model's merged instruments and triplets of the frame; *Accept*, *Reject* and
*Change to* write the reviewer's verdict on the chosen one (its box kept), each one undoable edit.
Verdicts are written in the reviewer's colours (``palette.REVIEWER`` / ``REVIEW_REJECTED``), never the
model's.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import palette
from app.review_session import ReviewSession
from app.review_undo import ReviewUndo
from app.timeline_model import display_name
from engine.ontology import load_ontology
from engine.review_labels import ModelRef, ReviewError, canonical_item, triplet_label
from engine.store import FrameResult

__all__ = ["ChainVerdictBox", "ModelItem", "triplet_names"]


def triplet_names() -> list[str]:
    """Every CholecT50 triplet as ``instrument,verb,target`` (what a triplet can be changed to)."""
    onto = load_ontology()
    return [onto.triplet_name(t.id) for t in onto.triplets]


@dataclass(frozen=True)
class ModelItem:
    """One of the model's items of the frame on screen, as the reviewer's labels name it."""

    kind: str  # instrument | triplet
    label: str  # canonical
    box: tuple[float, ...] | None = None

    @property
    def text(self) -> str:
        name = display_name(self.label) if self.kind == "instrument" else self.label.replace(",", ", ")
        return f"{self.kind.capitalize()}: {name}"


class ChainVerdictBox(QGroupBox):
    """Accept / reject the chains of the frame on screen, and fix an item (see the module's docstring)."""

    def __init__(self, review: ReviewSession, undo: ReviewUndo, parent: QWidget | None = None):
        super().__init__("Your review of this frame", parent)
        self.setObjectName("chainVerdict")
        self.review, self.undo = review, undo
        self.frame = -1
        self.rows: dict[str, tuple[QLabel, QPushButton, QPushButton]] = {}  # by task
        self.model_items: list[ModelItem] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(6, 4, 6, 4)
        self.items = QComboBox(self)
        self.items.setObjectName("reviewItems")
        self.items.currentIndexChanged.connect(self._on_item)
        self.item_state = QLabel(self)
        self.accept_item = QPushButton("Accept", self)
        self.reject_item = QPushButton("Reject", self)
        self.fix_to = QComboBox(self)
        self.fix_to.setObjectName("reviewFixTo")
        self.fix_to.setEditable(True)
        self.fix_button = QPushButton("Change to", self)
        self.accept_item.clicked.connect(lambda: self._judge_item("accept"))
        self.reject_item.clicked.connect(lambda: self._judge_item("reject"))
        self.fix_button.clicked.connect(self._fix_item)
        # The item's name gets a line of its own and the answer's status wraps: in a dock ~400 px wide a
        # single row cut both ("Instrument: Grasp", "not rev").
        rows = QVBoxLayout()
        rows.setContentsMargins(0, 0, 0, 0)
        rows.addWidget(self.items)
        line = QHBoxLayout()
        for widget in (self.accept_item, self.reject_item, self.fix_button, self.fix_to):
            line.addWidget(widget)
        line.setStretchFactor(self.fix_to, 1)
        rows.addLayout(line)
        self._item_row = QWidget(self)
        self._item_row.setLayout(rows)
        self._grid.setColumnStretch(0, 1)
        session = review.session
        review.subscribe(lambda name, value: self.refresh() if name == "labels" else None)
        session.playhead.subscribe(self._on_playhead)
        session.subscribe(
            lambda name, value: self.refresh() if name == "results" and value in (None, self.frame) else None
        )

    # ------------------------------------------------------------------ showing
    def _on_session(self, name: str, value: object) -> None:
        if name == "results" and value in (None, self.frame):
            self.refresh()

    def _on_playhead(self, name: str, value: object) -> None:
        """Follow the frame on screen; while the video plays the box waits (no widgets rebuilt per frame)."""
        playhead = self.review.session.playhead
        if name == "displayed" and isinstance(value, int):
            self.frame = value
            if not playhead.playing:
                self.refresh()
        elif name == "playing":
            self.setEnabled(not value)
            if not value:
                self.refresh()

    def results(self) -> dict[str, FrameResult]:
        return self.review.session.results(self.frame) if self.frame >= 0 else {}

    def refresh(self) -> None:
        """Rebuild the rows for the frame on screen (a few widgets: one row per question)."""
        results = self.results()
        for task in [t for t in self.rows if t not in results]:
            for widget in self.rows.pop(task):
                self._grid.removeWidget(widget)
                widget.deleteLater()
        titles = {q.task: q.title for q in self.review.session.profile.questions}
        for k, (task, result) in enumerate(results.items()):
            if task not in self.rows:
                label, accept, reject = (
                    QLabel(self),
                    QPushButton("Accept chain", self),
                    QPushButton("Reject chain", self),
                )
                label.setWordWrap(True)
                accept.setObjectName(f"acceptChain:{task}")
                reject.setObjectName(f"rejectChain:{task}")
                accept.clicked.connect(lambda _=False, task=task: self.judge(task, "accepted"))
                reject.clicked.connect(lambda _=False, task=task: self.judge(task, "rejected"))
                self.rows[task] = (label, accept, reject)
            label, accept, reject = self.rows[task]
            self._grid.addWidget(label, k, 0)
            self._grid.addWidget(accept, k, 1)
            self._grid.addWidget(reject, k, 2)
            label.setText(self._verdict_text(titles.get(task, task), result))
        self._grid.addWidget(self._item_row, len(results), 0, 1, 3)
        self._grid.addWidget(self.item_state, len(results) + 1, 0, 1, 3)
        self._fill_items()
        self.setVisible(bool(results))

    def verdict(self, task: str) -> str | None:
        """The reviewer's verdict on the shown answer of ``task`` ("accepted", "rejected", "earlier", None)."""
        result = self.results().get(task)
        if result is None:
            return None
        model = ModelRef(result.model_id, result.prompt_version, result.task)
        found = [c for c in self.review.review.chains_at(self.frame) if c.model == model]
        if not found:
            return None
        return found[-1].verdict if found[-1].matches(result) else "earlier"

    def _verdict_text(self, title: str, result: FrameResult) -> str:
        verdict = self.verdict(result.task)
        words = {
            "accepted": (palette.REVIEWER, "✓ you accepted this chain"),
            "rejected": (palette.REVIEW_REJECTED, "✗ you rejected this chain"),
            "earlier": (palette.TEXT_DIM, "your verdict was on an earlier answer"),
        }
        colour, text = words.get(verdict or "", (palette.TEXT_DIM, "not reviewed"))
        return f'<b>{html.escape(title)}</b> <span style="color:{colour}">{html.escape(text)}</span>'

    def _fill_items(self) -> None:
        record = self.review.session.record(self.frame) if self.frame >= 0 else None
        found: list[ModelItem] = []
        if record is not None:
            for sighting in record.instruments:
                try:
                    label = canonical_item("instrument", sighting.name.label or sighting.name.text)
                except ReviewError:
                    continue
                box = tuple(round(float(v), 2) for v in sighting.box) if sighting.box is not None else None
                found.append(ModelItem("instrument", label, box))
            for triplet in record.triplets:
                try:
                    found.append(ModelItem("triplet", canonical_item("triplet", triplet_label(triplet))))
                except ReviewError:
                    continue
        current = self.items.currentIndex()
        self.model_items = found
        self.items.blockSignals(True)
        self.items.clear()
        self.items.addItems([item.text for item in found])
        self.items.setCurrentIndex(min(max(current, 0), len(found) - 1))
        self.items.blockSignals(False)
        self._item_row.setVisible(bool(found))
        self._on_item()

    def selected_item(self) -> ModelItem | None:
        k = self.items.currentIndex()
        return self.model_items[k] if 0 <= k < len(self.model_items) else None

    def item_verdict(self, item: ModelItem) -> str | None:
        """The reviewer's verdict on one of the model's items ("accepted", "rejected", "edited", None)."""
        mine = [
            i
            for i in self.review.review.items_at(self.frame, item.kind)
            if i.model_label == item.label and (item.kind == "triplet" or i.model_box == item.box)
        ]
        return mine[-1].verdict if mine else None

    def _on_item(self) -> None:
        item = self.selected_item()
        self.item_state.setText("")
        if item is None:
            return
        vocabulary = _tools() if item.kind == "instrument" else triplet_names()
        if [self.fix_to.itemText(k) for k in range(self.fix_to.count())] != vocabulary:
            self.fix_to.blockSignals(True)
            self.fix_to.clear()
            self.fix_to.addItems(vocabulary)
            self.fix_to.blockSignals(False)
        self.fix_to.setCurrentIndex(-1)
        self.fix_to.setEditText("")
        verdict = self.item_verdict(item)
        colour = palette.REVIEW_REJECTED if verdict == "rejected" else palette.REVIEWER
        if verdict is not None:
            self.item_state.setText(f'<span style="color:{colour}">you {html.escape(verdict)} this item</span>')

    # ------------------------------------------------------------------ editing
    def judge(self, task: str, verdict: str) -> None:
        """Accept or reject ``task``'s chain; the verdict already in force is withdrawn instead."""
        result = self.results().get(task)
        if result is None:
            return
        if self.verdict(task) == verdict:
            model, frame = ModelRef(result.model_id, result.prompt_version, task), self.frame
            self.undo.edit(lambda labels: labels.clear_chain_verdict(frame, model), kind=task)
        else:
            self.undo.edit(lambda labels: labels.judge_chain(result, verdict), kind=task)

    def _judge_item(self, how: str) -> None:
        item, frame = self.selected_item(), self.frame
        if item is None:
            return
        if how == "accept":
            self.undo.edit(lambda labels: labels.accept_item(frame, item.kind, item.label, item.box), kind=item.kind)
        else:
            self.undo.edit(lambda labels: labels.reject_item(frame, item.kind, item.label, item.box), kind=item.kind)

    def _fix_item(self) -> None:
        """The chosen item is really what ``fix_to`` says (a tool, or ``instrument,verb,target``)."""
        item, frame, text = self.selected_item(), self.frame, self.fix_to.currentText().strip()
        if item is None or not text:
            return
        self.undo.edit(
            lambda labels: labels.edit_item(frame, item.kind, item.label, item.box, text, item.box), kind=item.kind
        )


def _tools() -> list[str]:
    return load_ontology().tool.names
