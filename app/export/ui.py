"""The viewer's export menu: Export report…, Export clip…, Blank areas….

Exports run in a worker thread behind a QProgressDialog (the UI thread never decodes or encodes);
Cancel stops a clip between frames and nothing is left at the chosen path. Blank areas are drawn
as rectangles on the frame on screen and kept in the case store, once per case.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QPointF, QRectF, QSettings, QSize, Qt, QThread, Signal, Slot
from PySide6.QtGui import QAction, QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import palette
from app.dialogs import add_ok_cancel
from app.export.blank_edit import save_blank_areas
from app.export.clip import ClipCancelled, ClipOptions, clip_for_video
from app.export.report import ReportOptions, report_for_video
from app.session import CaseSession
from engine.procedures import procedure_for_version
from engine.report_data import ReportError, default_title
from engine.store import BlankArea, StoreError
from engine.timecode import format_timecode, parse_position
from engine.video import VideoError

__all__ = ["BlankAreasDialog", "ClipDialog", "ExportWorker", "Exports"]


class ExportWorker(QThread):
    """Runs one export job off the UI thread; reports progress, success or a one-line failure."""

    progressed = Signal(int, int)
    succeeded = Signal(str)
    failed = Signal(str)

    def __init__(self, job: Callable[[Callable[[int, int], None], threading.Event], Any], out: Path, parent=None):
        super().__init__(parent)
        self.job, self.out = job, out
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            self.job(lambda done, total: self.progressed.emit(done, total), self.cancel)
        except ClipCancelled as exc:
            self.failed.emit(str(exc))
        except (ReportError, StoreError, VideoError, OSError, ValueError) as exc:
            self.failed.emit(str(exc))
        else:
            self.succeeded.emit(str(self.out))


class _Progress(QObject):
    """Receives the worker's signals on the UI thread (a QObject living there: queued delivery)."""

    def __init__(self, exports: Exports, title: str, worker: ExportWorker, determinate: bool):
        super().__init__(exports.parent_widget)
        self.exports, self.title, self.worker = exports, title, worker
        dialog = QProgressDialog(title, "Cancel", 0, 100 if determinate else 0, exports.parent_widget)
        dialog.setWindowTitle(title)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(worker.cancel.set)
        self.dialog = dialog
        worker.progressed.connect(self.progressed)
        worker.succeeded.connect(self.succeeded)
        worker.failed.connect(self.failed)

    @Slot(int, int)
    def progressed(self, done: int, total: int) -> None:
        self.dialog.setMaximum(max(1, total))
        self.dialog.setValue(done)

    @Slot(str)
    def succeeded(self, path: str) -> None:
        self.dialog.close()
        self.exports.status(f"exported {Path(path).name}", 8000)

    @Slot(str)
    def failed(self, message: str) -> None:
        self.dialog.close()
        if self.worker.cancel.is_set():
            self.exports.status("export cancelled; nothing was written", 8000)
        else:
            QMessageBox.warning(self.exports.parent_widget, f"{self.title} failed", message)


class ClipDialog(QDialog):
    """From / to (frame or timecode), panel and blanking switches.

    Timecodes are presentation times where the caller knows them: ``timecode`` (frame → its
    ``hh:mm:ss.ff``, e.g. :meth:`CaseSession.timecode`) shows the default range and ``index_at``
    (seconds → the frame on screen then, e.g. ``FrameTimes.index_at``) reads typed timecodes back,
    so a variable-frame-rate video's range means the frames shown at those times. Without them
    frames are counted at the nominal ``fps``.
    """

    def __init__(
        self,
        parent: QWidget,
        fps: float,
        frame_count: int,
        start: int,
        stop: int,
        blank_count: int,
        timecode: Callable[[int], str] | None = None,
        index_at: Callable[[float], int] | None = None,
    ):
        super().__init__(parent)
        self.setWindowTitle("Export clip")
        self.fps, self.frame_count = fps, frame_count
        self.index_at = index_at
        shown = timecode if timecode is not None else (lambda frame: format_timecode(frame, fps))
        form = QFormLayout(self)
        self.start = QLineEdit(shown(start))
        self.stop = QLineEdit(shown(stop))
        self.panel = QCheckBox("Reasoning panel beside the picture")
        self.panel.setChecked(True)
        self.blank = QCheckBox(f"Blank burned-in text ({blank_count} area{'s' if blank_count != 1 else ''} marked)")
        self.blank.setChecked(blank_count > 0)
        self.blank.setEnabled(blank_count > 0)
        form.addRow("From (frame or hh:mm:ss.ff)", self.start)
        form.addRow("To", self.stop)
        form.addRow(self.panel)
        form.addRow(self.blank)
        self.error = QLabel("")
        form.addRow(self.error)
        add_ok_cancel(self, form, self._check)

    def range(self) -> tuple[int, int]:
        """The chosen frames; ValueError with a readable message when they make no clip."""
        start, stop = (parse_position(field.text(), self.fps, self.index_at) for field in (self.start, self.stop))
        if not 0 <= start <= stop < self.frame_count:
            raise ValueError(f"choose 0 ≤ from ≤ to ≤ {self.frame_count - 1} (frames)")
        return start, stop

    def _check(self) -> None:
        try:
            self.range()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.accept()


class _RectCanvas(QWidget):
    """The frame, scaled to fit, where rectangles are drawn by dragging (in frame pixels)."""

    def __init__(self, image: QImage, areas: list[BlankArea]):
        super().__init__()
        self.image = image
        self.areas = list(areas)
        self._drag: tuple[QPointF, QPointF] | None = None
        self.setMinimumSize(480, 270)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def sizeHint(self) -> QSize:
        return QSize(960, 540)

    def _target(self) -> QRectF:
        iw, ih = self.image.width(), self.image.height()
        scale = min(self.width() / iw, self.height() / ih)
        return QRectF((self.width() - iw * scale) / 2, (self.height() - ih * scale) / 2, iw * scale, ih * scale)

    def _to_frame(self, pos: QPointF) -> QPointF:
        t = self._target()
        x = (pos.x() - t.x()) * self.image.width() / t.width()
        y = (pos.y() - t.y()) * self.image.height() / t.height()
        return QPointF(min(max(x, 0.0), self.image.width()), min(max(y, 0.0), self.image.height()))

    def _to_widget(self, a: BlankArea) -> QRectF:
        t = self._target()
        sx, sy = t.width() / self.image.width(), t.height() / self.image.height()
        return QRectF(t.x() + a.x * sx, t.y() + a.y * sy, a.width * sx, a.height * sy)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        p = self._to_frame(event.position())
        self._drag = (p, p)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self._drag = (self._drag[0], self._to_frame(event.position()))
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            return
        a, b = self._drag[0], self._to_frame(event.position())
        self._drag = None
        x0, y0 = int(min(a.x(), b.x())), int(min(a.y(), b.y()))
        x1, y1 = round(max(a.x(), b.x())), round(max(a.y(), b.y()))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            self.areas.append(BlankArea(x0, y0, x1 - x0, y1 - y0))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(palette.BACKGROUND))
        p.drawImage(self._target(), self.image)
        p.setPen(QPen(QColor(palette.BOX_HIGHLIGHT), 2))
        for area in self.areas:
            rect = self._to_widget(area)
            p.fillRect(rect, QColor(0, 0, 0, 200))
            p.drawRect(rect)
        if self._drag is not None:
            t = self._target()
            sx, sy = t.width() / self.image.width(), t.height() / self.image.height()
            a, b = self._drag
            p.setPen(QPen(QColor(palette.BOX_HIGHLIGHT), 1, Qt.PenStyle.DashLine))
            p.drawRect(QRectF(t.x() + a.x() * sx, t.y() + a.y() * sy, (b.x() - a.x()) * sx, (b.y() - a.y()) * sy))
        p.end()


class BlankAreasDialog(QDialog):
    """Draw the rectangles of burned-in text (name, date, device) that exports paint black."""

    def __init__(self, parent: QWidget, image: QImage, areas: list[BlankArea]):
        super().__init__(parent)
        self.setWindowTitle("Blank areas — drag rectangles over burned-in text")
        self.canvas = _RectCanvas(image, areas)
        note = QLabel(
            "Exports (reports and clips) paint these areas black. They are kept with this case's analysis, "
            "never in the video file."
        )
        note.setWordWrap(True)
        clear = QPushButton("Clear all")
        clear.clicked.connect(self._clear)
        undo = QPushButton("Remove last")
        undo.clicked.connect(self._undo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(undo)
        row.addWidget(clear)
        row.addStretch(1)
        row.addWidget(buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(note)
        layout.addLayout(row)

    @property
    def areas(self) -> list[BlankArea]:
        return list(self.canvas.areas)

    def _clear(self) -> None:
        self.canvas.areas.clear()
        self.canvas.update()

    def _undo(self) -> None:
        if self.canvas.areas:
            self.canvas.areas.pop()
            self.canvas.update()


class ReportDialog(QDialog):
    """Export report…: the title (default: "<the case's procedure> review, <date>") and the reviewer."""

    def __init__(self, reviewer: str = "", parent: QWidget | None = None, procedure: str | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export report")
        self._procedure = procedure
        self.title_edit = QLineEdit(default_title(procedure=procedure))
        self.title_edit.selectAll()
        self.reviewer_edit = QLineEdit(reviewer)
        self.reviewer_edit.setPlaceholderText("left blank: a line to write on")
        form = QFormLayout(self)
        form.addRow("Title", self.title_edit)
        form.addRow("Reviewer", self.reviewer_edit)
        add_ok_cancel(self, form)

    def values(self) -> tuple[str, str]:
        return self.title_edit.text().strip() or default_title(
            procedure=self._procedure
        ), self.reviewer_edit.text().strip()


class Exports:
    """The export actions of one case session: what they need is given, never read off a window.

    ``session``: the open case (video, store, playhead, selection, timelines); ``parent``: the
    widget dialogs open over; ``settings``: where the last export folder is kept; ``status``: a
    status-bar line (text, ms); ``model_dir``: the model folder for the report (or None);
    ``frame_image``: the picture on screen, for drawing blank areas.
    """

    def __init__(
        self,
        session: CaseSession,
        parent: QWidget,
        settings: QSettings,
        status: Callable[[str, int], None],
        model_dir: Callable[[], Path | None],
        frame_image: Callable[[], QImage | None],
    ):
        self.session, self.parent_widget, self.settings = session, parent, settings
        self.status, self.model_dir, self.frame_image = status, model_dir, frame_image
        self.progress: _Progress | None = None
        self.worker: ExportWorker | None = None
        self.blank_dialog: BlankAreasDialog | None = None

    def _run(self, title: str, worker: ExportWorker, determinate: bool) -> ExportWorker:
        self.progress = _Progress(self, title, worker, determinate)
        self.worker = worker
        worker.start()
        return worker

    def _output_path(self, path: str | Path | None, title: str, name: str, filters: str) -> Path | None:
        """``path``, or the file the user picks (starting in the last export folder); None if cancelled.
        The chosen folder is remembered for the next export."""
        if path is None:
            start = str(Path(self.settings.value("export/last_dir", str(Path.home()))) / name)
            path, _ = QFileDialog.getSaveFileName(self.parent_widget, title, start, filters)
            if not path:
                return None
        out = Path(path)
        self.settings.setValue("export/last_dir", str(out.parent))
        return out

    def report(
        self, path: str | Path | None = None, title: str | None = None, reviewer: str | None = None
    ) -> ExportWorker | None:
        """Ask for a title and reviewer, then a file (unless given), and write the case report there in a
        worker thread. The default title says what the report is and its date, never a file name or hash."""
        video = self.session.case.video
        if video is None:
            return None
        if path is None and title is None:
            asked = self._ask_title()
            if asked is None:
                return None
            title, reviewer = asked
        out = self._output_path(path, "Export report", "case-report.pdf", "PDF (*.pdf);;HTML (*.html)")
        if out is None:
            return None
        options = ReportOptions(
            title=title, reviewer=reviewer, model_dir=self.model_dir(), stride_s=self.session.stride_s
        )
        worker = ExportWorker(
            lambda progress, cancel: report_for_video(Path(video), out, options), out, self.parent_widget
        )
        return self._run("Export report", worker, determinate=False)

    def _ask_title(self) -> tuple[str, str] | None:
        """The report's title and the reviewer's name (remembered for the next report); None if cancelled."""
        procedure = procedure_for_version(self.session.profile.version)  # the analysis reported is the session's
        dialog = ReportDialog(str(self.settings.value("export/reviewer", "") or ""), self.parent_widget, procedure)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        title, reviewer = dialog.values()
        self.settings.setValue("export/reviewer", reviewer)
        return title, reviewer

    def clip(
        self, path: str | Path | None = None, frames: tuple[int, int] | None = None, panel: bool = True
    ) -> ExportWorker | None:
        """Ask for a range and a file (unless given) and export the clip in a worker thread."""
        case = self.session.case
        video = case.video
        if video is None or case.frame_count <= 0:
            return None
        areas = self._blank_areas()
        blank = bool(areas)
        if frames is None:
            start, stop = self.session.default_range()
            times = self.session.times  # presentation times of the open video, when known
            dialog = ClipDialog(
                self.parent_widget,
                case.fps,
                case.frame_count,
                start,
                stop,
                len(areas),
                timecode=self.session.timecode,
                index_at=times.index_at if times is not None else None,
            )
            if dialog.exec() != QDialog.DialogCode.Accepted:
                return None
            frames, panel, blank = dialog.range(), dialog.panel.isChecked(), dialog.blank.isChecked()
        out = self._output_path(path, "Export clip", "clip.mp4", "MP4 video (*.mp4)")
        if out is None:
            return None
        options = ClipOptions(frames[0], frames[1], panel=panel, blank=blank)
        worker = ExportWorker(
            lambda progress, cancel: clip_for_video(Path(video), out, options, progress=progress, cancel=cancel),
            out,
            self.parent_widget,
        )
        return self._run("Export clip", worker, determinate=True)

    def _blank_areas(self) -> list[BlankArea]:
        store = self.session.store
        if store is None:
            return []
        try:
            return store.blank_areas()
        except StoreError:
            return []

    def blank_areas(self) -> BlankAreasDialog | None:
        """Open the blank-areas dialog on the frame on screen; Save stores the rectangles (asking before marked
        areas are removed; undoable from the Edit menu)."""
        image = self.frame_image()
        parent = self.parent_widget
        if self.session.store is None or image is None:
            QMessageBox.information(parent, "Blank areas", "Open a case first: the areas are drawn on its picture.")
            return None
        dialog = BlankAreasDialog(parent, image, self._blank_areas())
        self.blank_dialog = dialog

        before = self._blank_areas()

        def save() -> None:
            try:
                if not save_blank_areas(parent, lambda: self.session.store, before, dialog.areas):
                    return  # the reviewer kept the areas marked
            except StoreError as exc:
                QMessageBox.warning(parent, "Blank areas not saved", str(exc))
                return
            n = len(dialog.areas)
            self.status(f"{n} blank area{'s' if n != 1 else ''} saved for this case", 6000)

        dialog.accepted.connect(save)
        dialog.open()
        return dialog

    def add_actions(self, menu: QMenu, timeline: QWidget) -> dict[str, QAction]:
        """Add Export report…, Export clip… and Blank areas… to ``menu``, and Export clip of selection… to
        the timeline's context menu (enabled while a range is selected there)."""
        parent = self.parent_widget
        actions = {}
        for name, text, slot in (
            ("export_report", "Export report…", lambda: self.report()),
            ("export_clip", "Export clip…", lambda: self.clip()),
            ("blank_areas", "Blank areas…", self.blank_areas),
        ):
            action = QAction(text, parent)
            action.triggered.connect(slot)
            menu.addAction(action)
            actions[name] = action
        case = self.session.case
        selection = QAction("Export clip of selection…", parent)
        selection.triggered.connect(lambda: self.clip())
        selection.setEnabled(case.selection is not None)
        timeline.addAction(selection)
        actions["export_clip_selection"] = selection

        def on_case(name: str, value: Any) -> None:
            if name != "selection":
                return
            selection.setEnabled(value is not None)
            if value is not None:
                span = self.session.timecode(value[0]) + " – " + self.session.timecode(value[1])
                self.status(f"selected {span}; right-click the timeline to export it as a clip", 8000)

        case.subscribe(on_case)
        return actions
