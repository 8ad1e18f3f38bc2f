"""The reviewer's boxes over the video: drawn beside the model's, and edited with the mouse and keys.

The editor works over :class:`app.widgets.video_canvas.VideoCanvas` from outside it: an event filter on the
canvas takes the presses that edit, and a child widget (transparent to the mouse) draws the reviewer's
boxes over the model's, in :data:`app.palette.REVIEWER` (the model's stay in ``BOX`` blue); a model box
the reviewer rejected is crossed out in ``REVIEW_REJECTED``. Boxes are kept in pixels of the source frame,
as the model's are, so they land on the same place at any window size.

* drag a box (inside: move; near a corner: resize): a reviewer's box changes, a model's box becomes the
  reviewer's *edited* box;
* Ctrl+drag on the picture: a new box, whose instrument is asked (the ontology's tools);
* a click selects a box; Enter accepts the selected model box, Delete rejects it (or deletes a reviewer's
  box, or withdraws a verdict), Esc deselects; a right click offers the same and *Change label*.

Every edit is one undoable command (``app.review_undo``); nothing here writes the store itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QApplication, QInputDialog, QMenu, QWidget

from app import palette
from app.review_session import ReviewSession
from app.review_undo import ReviewUndo
from app.timeline_model import display_name
from app.widgets.video_canvas import VideoCanvas
from engine.ontology import load_ontology
from engine.review_labels import ItemLabel, ReviewChange, ReviewError, canonical_item

__all__ = ["BoxEditor", "BoxTarget", "instrument_names"]

Box = tuple[float, float, float, float]
HANDLE_PX = 8.0  # how near a corner (widget pixels) a press resizes instead of moving
MIN_BOX_PX = 4.0  # a new box smaller than this (widget pixels) is a click, not a box
MARKS = {"accepted": "✓", "edited": "✎", "added": "+", "rejected": "✗"}


def instrument_names() -> list[str]:
    """The tools a reviewer can name a box with (canonical Cholec80 names, the ontology's order)."""
    return load_ontology().tool.names


@dataclass(frozen=True)
class BoxTarget:
    """A box under the mouse: a reviewer's item (``item`` set) or a model box not judged yet."""

    label: str  # canonical tool name
    box: Box  # source-frame pixels
    item: ItemLabel | None = None
    model_box: Box | None = None  # the model's box it stands for (None: the reviewer added it)

    @property
    def is_model(self) -> bool:
        return self.item is None


def _rounded(box: tuple[float, ...]) -> Box:
    return tuple(round(float(v), 2) for v in box)  # type: ignore[return-value]


class _Overlay(QWidget):
    """Paints the reviewer's boxes and the edit in progress over the canvas (never takes the mouse)."""

    def __init__(self, editor: BoxEditor):
        super().__init__(editor.canvas)
        self.editor = editor
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.paints = 0

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paints += 1
        editor = self.editor
        if not editor.active():
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        for item in editor.items():
            if item.verdict == "rejected" and item.model_box is not None:
                self._cross(p, editor.to_widget(item.model_box), f"{MARKS['rejected']} {display_name(item.label)}")
            elif item.kept and item.box is not None:
                box = editor.live_box(item.id) or item.box
                self._box(p, editor.to_widget(box), f"{MARKS.get(item.verdict, '')} {display_name(item.label)}")
        selected = editor.selected
        if selected is not None:
            rect = editor.to_widget(editor.live_box(None) or selected.box) if selected.is_model else None
            if rect is not None:
                self._box(p, rect, f"✎ {display_name(selected.label)}", dashed=True)
            self._handles(p, editor.to_widget(editor.live_box(selected.item.id if selected.item else None)
                                              or selected.box))  # fmt: skip
        if editor.rubber is not None:
            self._box(p, editor.rubber.normalized(), "new box", dashed=True)
        p.end()

    def _box(self, p: QPainter, rect: QRectF, text: str, dashed: bool = False) -> None:
        pen = QPen(QColor(palette.REVIEWER), 2.5)
        pen.setStyle(Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(rect)
        self._tag(p, rect, text, palette.REVIEWER)

    def _cross(self, p: QPainter, rect: QRectF, text: str) -> None:
        p.setPen(QPen(QColor(palette.REVIEW_REJECTED), 2.5))
        p.drawLine(rect.topLeft(), rect.bottomRight())
        p.drawLine(rect.topRight(), rect.bottomLeft())
        self._tag(p, rect, text, palette.REVIEW_REJECTED)

    def _tag(self, p: QPainter, rect: QRectF, text: str, colour: str) -> None:
        metrics = p.fontMetrics()
        tag = QRectF(rect.left(), rect.bottom() + 2, metrics.horizontalAdvance(text) + 8, metrics.height() + 2)
        p.fillRect(tag, QColor(colour))
        p.setPen(QColor(palette.HIGHLIGHT_TEXT))
        p.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)

    def _handles(self, p: QPainter, rect: QRectF) -> None:
        p.setPen(QPen(QColor(palette.HIGHLIGHT_TEXT), 1))
        p.setBrush(QColor(palette.REVIEWER))
        for corner in (rect.topLeft(), rect.topRight(), rect.bottomLeft(), rect.bottomRight()):
            p.drawRect(QRectF(corner.x() - 3.5, corner.y() - 3.5, 7, 7))


class BoxEditor(QObject):
    """The reviewer's instrument boxes over ``canvas`` (see the module's docstring)."""

    def __init__(
        self,
        canvas: VideoCanvas,
        review: ReviewSession,
        undo: ReviewUndo,
        ask_label: Callable[[QWidget, str, str | None], str | None] | None = None,
    ):
        super().__init__(canvas)
        self.canvas, self.review, self.undo = canvas, review, undo
        self.ask_label = ask_label or _ask_label
        self.selected: BoxTarget | None = None
        self.rubber: QRectF | None = None  # a Ctrl+drag in progress (widget coordinates)
        self.menu: QMenu | None = None  # the last context menu shown
        self._drag: tuple[str, QPointF, Box] | None = None  # (move | corner index, press point, box at press)
        self._live: Box | None = None  # the dragged box now (source pixels)
        self._press = QPointF()
        self.overlay = _Overlay(self)
        self.overlay.resize(canvas.size())
        self.overlay.show()
        canvas.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        canvas.installEventFilter(self)
        review.subscribe(lambda name, value: self._on_labels() if name == "labels" else None)
        review.session.playhead.subscribe(lambda name, value: self._on_frame() if name == "displayed" else None)

    # ------------------------------------------------------------------ geometry and state
    def active(self) -> bool:
        """A frame is on screen (not a preview) with boxes shown (key 1), so boxes are drawn and edited."""
        canvas = self.canvas
        return canvas.image is not None and not canvas.previewing and canvas.index >= 0 and canvas.layers.boxes

    def to_widget(self, box: tuple[float, ...]) -> QRectF:
        a = self.canvas.map_from_frame(box[0], box[1])
        b = self.canvas.map_from_frame(box[2], box[3])
        return QRectF(a, b).normalized()

    def to_frame(self, point: QPointF) -> tuple[float, float]:
        image, rect = self.canvas.image, self.canvas.image_rect()
        assert image is not None
        x = (point.x() - rect.x()) * image.width() / rect.width()
        y = (point.y() - rect.y()) * image.height() / rect.height()
        return min(max(x, 0.0), float(image.width())), min(max(y, 0.0), float(image.height()))

    def items(self) -> tuple[ItemLabel, ...]:
        """The reviewer's instrument items of the frame on screen."""
        return self.review.review.items_at(self.canvas.index, "instrument") if self.canvas.index >= 0 else ()

    def model_boxes(self) -> list[tuple[str, Box]]:
        """The model's boxes on screen, (canonical tool, source-pixel box), that no verdict judged yet."""
        chain = self.canvas.chain
        if chain is None or chain.perception is None or self.canvas.held_label is not None:
            return []  # a held overlay is an earlier frame's: its boxes are not this frame's to judge
        judged = {(i.model_label, i.model_box) for i in self.items() if i.model_label is not None}
        found = []
        for sighting in chain.perception.instruments:
            if sighting.box is None:
                continue
            try:
                label = canonical_item("instrument", sighting.name.label or sighting.name.text)
            except ReviewError:
                continue  # a name outside the ontology: nothing to accept
            box = _rounded(sighting.box)
            if (label, box) not in judged:
                found.append((label, box))
        return found

    def live_box(self, item_id: int | None) -> Box | None:
        """The box being dragged, when it is ``item_id``'s (None: the selected model box)."""
        selected = self.selected
        if self._live is None or selected is None:
            return None
        return self._live if (selected.item.id if selected.item else None) == item_id else None

    def target_at(self, pos: QPointF) -> BoxTarget | None:
        """The reviewer's box under ``pos`` (the smallest), else the model's, else a rejected model box."""
        kept = [i for i in self.items() if i.kept and i.box is not None and self.to_widget(i.box).contains(pos)]
        if kept:
            return _target_of(min(kept, key=lambda i: _area(i.box)))  # type: ignore[arg-type]
        model = [(label, box) for label, box in self.model_boxes() if self.to_widget(box).contains(pos)]
        if model:
            label, box = min(model, key=lambda m: _area(m[1]))
            return BoxTarget(label, box, None, box)
        rejected = [i for i in self.items() if i.verdict == "rejected" and i.model_box is not None]
        hit = next((i for i in rejected if self.to_widget(i.model_box).contains(pos)), None)  # type: ignore[arg-type]
        return _target_of(hit) if hit is not None else None

    def select(self, target: BoxTarget | None) -> None:
        self.selected = target
        self.overlay.update()

    # ------------------------------------------------------------------ edits
    def _edit(self, run: Callable, keep: Callable[[ReviewChange], BoxTarget | None] | None = None) -> None:
        change = self.undo.edit(run, kind="instrument")
        if change is not None and not change.empty and keep is not None:
            self.select(keep(change))
        self.overlay.update()

    def accept(self, target: BoxTarget | None = None) -> None:
        """The model's box is right."""
        target = target or self.selected
        if target is not None and target.is_model:
            frame = self.canvas.index
            self._edit(lambda labels: labels.accept_item(frame, "instrument", target.label, target.box), _kept)

    def reject_or_delete(self, target: BoxTarget | None = None) -> None:
        """Delete: a model box is rejected; a reviewer's box (or verdict) is withdrawn."""
        target = target or self.selected
        if target is None:
            return
        frame = self.canvas.index
        if target.is_model:
            self._edit(lambda labels: labels.reject_item(frame, "instrument", target.label, target.box), _none)
        elif target.item is not None and target.item.id is not None:
            item_id = target.item.id
            self._edit(lambda labels: labels.remove_item(item_id), _none)

    def relabel(self, target: BoxTarget, label: str) -> None:
        """The box is another instrument."""
        frame = self.canvas.index
        if target.is_model:
            self._edit(
                lambda labels: labels.edit_item(frame, "instrument", target.label, target.box, label, target.box), _kept
            )
        elif target.item is not None and target.item.id is not None:
            item_id = target.item.id
            self._edit(lambda labels: labels.update_item(item_id, label=label), _kept)

    def move(self, target: BoxTarget, box: Box) -> None:
        """The box now lies at ``box`` (source pixels)."""
        frame = self.canvas.index
        if target.is_model:
            self._edit(
                lambda labels: labels.edit_item(frame, "instrument", target.label, target.box, target.label, box), _kept
            )
        elif target.item is not None and target.item.id is not None:
            item_id = target.item.id
            self._edit(lambda labels: labels.update_item(item_id, box=box), _kept)

    def add(self, box: Box) -> None:
        """A box the model missed: its instrument is asked."""
        label = self.ask_label(self.canvas, "Add an instrument box", None)
        if label:
            frame = self.canvas.index
            self._edit(lambda labels: labels.add_item(frame, "instrument", label, box), _kept)

    # ------------------------------------------------------------------ events
    def _on_labels(self) -> None:
        if self.selected is not None and self.selected.item is not None:  # follow the item (undo may drop it)
            still = next((i for i in self.items() if i.id == self.selected.item.id), None)
            self.selected = _target_of(still) if still is not None else None
        self.overlay.update()

    def _on_frame(self) -> None:
        self.selected, self.rubber, self._drag, self._live = None, None, None, None
        self.overlay.update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Resize:
            self.overlay.resize(self.canvas.size())
        elif kind == QEvent.Type.MouseButtonPress and self.active():
            return self._press_event(event)  # type: ignore[arg-type]
        elif kind == QEvent.Type.MouseMove and (self._drag is not None or self.rubber is not None):
            self._move_event(event)  # type: ignore[arg-type]
            return True
        elif kind == QEvent.Type.MouseButtonRelease and (self._drag is not None or self.rubber is not None):
            self._release_event(event)  # type: ignore[arg-type]
            return True
        elif kind == QEvent.Type.KeyPress and self.active():
            return self._key_event(event)  # type: ignore[arg-type]
        return super().eventFilter(watched, event)

    def _press_event(self, event: QMouseEvent) -> bool:
        pos = event.position()
        self._press = pos
        if event.button() == Qt.MouseButton.RightButton:
            target = self.target_at(pos)
            if target is None:
                return False
            self.select(target)
            self.menu = self.context_menu(target)
            self.menu.popup(event.globalPosition().toPoint())
            return True
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.rubber = QRectF(pos, pos)
            self.select(None)
            return True
        corner = self._corner_at(pos)
        if corner is not None and self.selected is not None:
            self._drag = (str(corner), pos, self.selected.box)
            return True
        target = self.target_at(pos)
        self.select(target)
        if target is None:
            return False
        self._drag = ("move", pos, target.box)
        return True

    def _corner_at(self, pos: QPointF) -> int | None:
        if self.selected is None:
            return None
        rect = self.to_widget(self.selected.box)
        corners = (rect.topLeft(), rect.topRight(), rect.bottomLeft(), rect.bottomRight())
        near = [k for k, c in enumerate(corners) if max(abs(c.x() - pos.x()), abs(c.y() - pos.y())) <= HANDLE_PX]
        return near[0] if near else None

    def _move_event(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self.rubber is not None:
            self.rubber = QRectF(self._press, pos)
        elif self._drag is not None:
            how, start, box = self._drag
            x, y = self.to_frame(pos)
            x0, y0 = self.to_frame(start)
            if how == "move":
                dx, dy = x - x0, y - y0
                self._live = self._clamped((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy))
            else:
                corner = int(how)
                left, top, right, bottom = box
                left, right = (x, right) if corner in (0, 2) else (left, x)
                top, bottom = (y, bottom) if corner in (0, 1) else (top, y)
                self._live = _rounded((min(left, right), min(top, bottom), max(left, right), max(top, bottom)))
        self.overlay.update()

    def _clamped(self, box: tuple[float, float, float, float]) -> Box:
        image = self.canvas.image
        assert image is not None
        w, h = box[2] - box[0], box[3] - box[1]
        x = min(max(box[0], 0.0), image.width() - w)
        y = min(max(box[1], 0.0), image.height() - h)
        return _rounded((x, y, x + w, y + h))

    def _release_event(self, event: QMouseEvent) -> None:
        pos = event.position()
        moved = (pos - self._press).manhattanLength() >= QApplication.startDragDistance()
        if self.rubber is not None:
            rect, self.rubber = self.rubber.normalized(), None
            if rect.width() >= MIN_BOX_PX and rect.height() >= MIN_BOX_PX:
                (x0, y0), (x1, y1) = self.to_frame(rect.topLeft()), self.to_frame(rect.bottomRight())
                self.add(_rounded((x0, y0, x1, y1)))
        elif self._drag is not None:
            live, target = self._live, self.selected
            self._drag, self._live = None, None
            if moved and live is not None and target is not None and live[2] > live[0] and live[3] > live[1]:
                self.move(target, live)
        self.overlay.update()

    def _key_event(self, event: QKeyEvent) -> bool:
        key = event.key()
        if self.selected is None:
            return False
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.reject_or_delete()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.accept()
        elif key == Qt.Key.Key_Escape:
            self.select(None)
        else:
            return False
        return True

    def context_menu(self, target: BoxTarget) -> QMenu:
        """Accept / reject a model box, delete a reviewer's box or withdraw a verdict, change the label."""
        menu = QMenu(self.canvas)
        name = display_name(target.label)
        if target.is_model:
            menu.addAction(f"Accept {name} (Enter)", lambda: self.accept(target))
            menu.addAction(f"Reject {name} (Delete)", lambda: self.reject_or_delete(target))
        elif target.item is not None and target.item.verdict == "rejected":
            menu.addAction(f"Withdraw the rejection of {name}", lambda: self.reject_or_delete(target))
        else:
            menu.addAction(f"Delete my box {name} (Delete)", lambda: self.reject_or_delete(target))
        if target.item is None or target.item.verdict != "rejected":
            change = menu.addMenu("Change label to")
            for tool in instrument_names():
                if tool != target.label:
                    change.addAction(display_name(tool), lambda tool=tool: self.relabel(target, tool))
        return menu


def _area(box: tuple[float, ...]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _kept(change: ReviewChange) -> BoxTarget | None:
    """Select the reviewer's box an edit wrote."""
    item = next((r for r in change.added if isinstance(r, ItemLabel) and r.kept and r.box is not None), None)
    return _target_of(item) if item is not None else None


def _target_of(item: ItemLabel) -> BoxTarget:
    """A reviewer's item as a box target: its own box, or the model's box it judged."""
    return BoxTarget(item.label, item.box or item.model_box, item, item.model_box)  # type: ignore[arg-type]


def _none(change: ReviewChange) -> None:
    return None


def _ask_label(parent: QWidget, title: str, current: str | None) -> str | None:
    """The instrument of a new box, chosen from the ontology's tools (None: cancelled)."""
    names = instrument_names()
    shown = [display_name(n) for n in names]
    index = names.index(current) if current in names else 0
    text, ok = QInputDialog.getItem(parent, title, "Instrument:", shown, index, False)
    return names[shown.index(text)] if ok and text in shown else None
