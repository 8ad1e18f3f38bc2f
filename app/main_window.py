"""The main window: video canvas, transport bar, reasoning panel, timelines, case library, bookmarks.

It wires the parts together and holds no decoding or inference itself: frames come from the
playback worker, reasoning from the engine child process, and everything stored from the case
store (the source of truth). UI state lives in the plain models of :mod:`app.state`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine_link import EngineLink
from app.export.pictures import format_seconds
from app.export.ui import add_export_actions
from app.first_run import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, ProfileChoice, check_urls, parse_urls
from app.playback import PlaybackController
from app.review_memory import ReviewMemory, ReviewSpot
from app.shortcuts import SPEEDS, describe, keymap
from app.state import AnalysisState, CaseState, LayerState, Playhead
from app.widgets.reasoning_panel import ReasoningPanel
from app.widgets.timeline_view import TimelineView
from app.widgets.video_canvas import VideoCanvas
from engine.backend_factory import default_kind
from engine.frame_record import CaseAnalysis, FrameRecord, merge_results
from engine.phase_labels import LabelFileError, read_cholec80_phases
from engine.profiles import ModelProfile, ProfileError, get_profile, profile_for_version
from engine.store import CaseStore, FrameResult, StoreError, video_fingerprint
from engine.timecode import format_time, format_timecode, parse_position
from engine.timeline import build_timelines

ORGANIZATION, APPLICATION = "surgview", "surgview"
MAX_RECENT = 12


def profile_from_info(info: Mapping[str, Any] | None) -> ModelProfile:
    """The engine's model profile from what it reports (``ready``'s dict: name, version, questions).

    The store keys come from the engine: its version wins over this process's, so the viewer reads
    exactly what the engine writes. Nothing reported: surgview's own profile.
    """
    if not info:
        return get_profile()
    version = str(info.get("version") or "")
    name = str(info.get("name") or "") or profile_for_version(version)
    questions = [q for q in info.get("questions") or [] if isinstance(q, Mapping)]
    task = None  # the surgview profile asks one question, the one the engine names
    if name == "surgview" and questions:
        task = str(questions[0].get("task") or "") or None
    try:
        profile = get_profile(name, task)
    except ProfileError:
        profile = get_profile()
    return replace(profile, version=version) if version and version != profile.version else profile


class SurgviewWindow(QMainWindow):
    """The surgview viewer."""

    caseOpened = Signal(str)

    def __init__(self, engine_spec: dict | None = None, settings: QSettings | None = None, start_engine: bool = True):
        super().__init__()
        self.settings = settings or QSettings(ORGANIZATION, APPLICATION)
        self.case = CaseState()
        self.playhead = Playhead()
        self.analysis = AnalysisState()
        self.layers = LayerState()
        self.store: CaseStore | None = None
        self.engine_spec = engine_spec or self._spec_from_settings()
        self.model_id = ""
        self.profile: ModelProfile = get_profile()  # until the engine says which it asks with
        self.prompt_version = self.profile.version
        self.timelines = None
        self._shuttle = 0.0
        self._live_frame: int | None = None  # the displayed frame while its questions stream
        self._live_tasks: set[str] = set()  # its questions streaming now
        self._bookmarks: list[tuple[int, str]] = []
        self.review_memory = ReviewMemory(self.settings)
        self._fingerprint: str | None = None  # of the case on screen, once it has opened

        self.setWindowTitle("surgview")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        self.canvas = VideoCanvas()
        self.canvas.set_layers(self.layers)
        self.panel = ReasoningPanel()
        self.timeline = TimelineView()
        self.library = QListWidget()
        self.bookmark_list = QListWidget()
        self._build_central()
        self._build_docks()
        self._build_status_bar()
        self._build_actions()

        self.player = PlaybackController(self)
        self.player.opened.connect(self._on_opened)
        self.player.frameReady.connect(self._on_frame)
        self.player.failed.connect(self._on_video_failed)
        self.player.playingChanged.connect(self._on_playing_changed)

        self.engine = EngineLink(self)
        self.engine.ready.connect(self._on_engine_ready)
        self.engine.case_opened.connect(self._on_engine_case_opened)
        self.engine.pieces.connect(self._on_pieces)
        self.engine.started.connect(self._on_started)
        self.engine.done.connect(self._on_done)
        self.engine.failed.connect(self._on_frame_failed)
        self.engine.progress.connect(self._on_progress)
        self.engine.rate.connect(self._on_rate)
        self.engine.idle.connect(self._on_idle)
        self.engine.error.connect(self._on_engine_error)
        self.engine.died.connect(self._on_engine_died)

        self.timeline.seekRequested.connect(self.seek)
        self.timeline.selectionChanged.connect(lambda frames: setattr(self.case, "selection", frames))
        self.case.subscribe(lambda name, value: self.timeline.set_selection(value) if name == "selection" else None)
        self.panel.reaskRequested.connect(self.reask)
        self.panel.frameRequested.connect(self.seek)
        self.panel.bind_layers(self.layers)  # hovering an entity or a box highlights it in both
        self.layers.subscribe(lambda name, value: self.canvas.update())

        self._ask_timer = QTimer(self, singleShot=True, interval=120)  # ask once the playhead settles
        self._ask_timer.timeout.connect(self._ask_for_displayed)
        self._timeline_timer = QTimer(self, singleShot=True, interval=1500)  # results arrive: refresh, throttled
        self._timeline_timer.timeout.connect(self.refresh_timelines)
        self._spot_timer = QTimer(self, singleShot=True, interval=2000)  # keep the reviewer's place, throttled
        self._spot_timer.timeout.connect(self.remember_spot)
        self.case.subscribe(lambda name, value: self.remember_spot() if name == "selection" else None)

        self._refresh_library()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1440, 900)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        if start_engine and self.engine_spec:
            self.analysis.engine = "starting"
            self.engine.start(self.engine_spec)
        self._update_status()

    # ------------------------------------------------------------------ layout
    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        bar = QWidget()
        row = QHBoxLayout(bar)
        row.setContentsMargins(8, 4, 8, 4)
        style = self.style()
        self._icons = {
            name: style.standardIcon(getattr(QStyle.StandardPixmap, f"SP_Media{name}"))
            for name in ("Play", "Pause", "SkipBackward", "SeekBackward", "SeekForward", "SkipForward")
        }
        self.play_button = QToolButton(toolTip="Play / pause (Space)")
        self.play_button.setIcon(self._icons["Play"])
        self.play_button.clicked.connect(self.toggle_play)
        self.frame_label = QLabel("frame –")
        self.frame_label.setObjectName("frameLabel")
        self.time_label = QLabel("--:--:--.--")
        self.time_label.setObjectName("timeLabel")
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}×" for s in SPEEDS])
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_box.currentIndexChanged.connect(self._on_speed)
        buttons = [
            ("SkipBackward", "first_frame", "First frame (Home)"),
            ("SeekBackward", "step_back", "Previous frame (←)"),
            ("SeekForward", "step_forward", "Next frame (→)"),
            ("SkipForward", "last_frame", "Last frame (End)"),
        ]
        row.addWidget(self.play_button)
        for icon, action, tip in buttons:
            b = QToolButton(toolTip=tip)
            b.setIcon(self._icons[icon])
            b.clicked.connect(lambda _=False, a=action: self.trigger(a))
            row.addWidget(b)
        row.addSpacing(12)
        row.addWidget(self.frame_label)
        row.addWidget(self.time_label)
        row.addStretch(1)
        row.addWidget(QLabel("speed"))
        row.addWidget(self.speed_box)
        layout.addWidget(bar)
        self.setCentralWidget(central)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        self.reasoning_dock = self._dock(
            "Reasoning", "reasoningDock", self.panel, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.timeline_dock = self._dock(
            "Timelines", "timelineDock", self.timeline, Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.library.itemActivated.connect(lambda item: self.open_case(item.data(Qt.ItemDataRole.UserRole)))
        self.library_dock = self._dock("Cases", "libraryDock", self.library, Qt.DockWidgetArea.LeftDockWidgetArea)
        marks = QWidget()
        col = QVBoxLayout(marks)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.bookmark_list)
        row = QHBoxLayout()
        for text, slot in (("Add", self.add_bookmark), ("Edit", self.edit_bookmark), ("Delete", self.delete_bookmark)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        col.addLayout(row)
        self.bookmark_list.itemActivated.connect(lambda item: self.seek(item.data(Qt.ItemDataRole.UserRole)[1]))
        self.bookmarks_dock = self._dock("Bookmarks", "bookmarksDock", marks, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tabifyDockWidget(self.library_dock, self.bookmarks_dock)
        self.library_dock.raise_()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("no model")
        self.device_label = QLabel("")
        self.rate_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(180)
        self.progress.setFormat("analysed %v/%m")
        self.pause_button = QToolButton(text="Pause analysis", checkable=True)
        self.pause_button.toggled.connect(self.set_analysis_paused)
        self.restart_button = QPushButton("Restart engine")
        self.restart_button.clicked.connect(self.restart_engine)
        self.restart_button.hide()
        for w in (
            self.model_label,
            self.device_label,
            self.rate_label,
            self.progress,
            self.pause_button,
            self.restart_button,
        ):
            bar.addPermanentWidget(w)

    def _build_actions(self) -> None:
        keys = keymap(self.settings)
        self.actions_by_name: dict[str, QAction] = {}
        handlers = {
            "play_pause": self.toggle_play,
            "step_back": lambda: self.step(-1),
            "step_forward": lambda: self.step(1),
            "second_back": lambda: self.step(-max(1, round(self.case.fps))),
            "second_forward": lambda: self.step(max(1, round(self.case.fps))),
            "shuttle_back": lambda: self.shuttle(-1),
            "shuttle_forward": lambda: self.shuttle(1),
            "first_frame": lambda: self.seek(0),
            "last_frame": lambda: self.seek(self.case.frame_count - 1),
            "go_to": self.go_to_dialog,
            "prev_phase": lambda: self.jump_phase(-1),
            "next_phase": lambda: self.jump_phase(1),
            "prev_bookmark": lambda: self.jump_bookmark(-1),
            "next_bookmark": lambda: self.jump_bookmark(1),
            "add_bookmark": self.add_bookmark,
            "reask": lambda: self.reask(self.playhead.displayed),
            "pause_analysis": lambda: self.pause_button.toggle(),
            "toggle_boxes": lambda: setattr(self.layers, "boxes", not self.layers.boxes),
            "toggle_triplets": lambda: setattr(self.layers, "triplets", not self.layers.triplets),
            "toggle_phase": lambda: setattr(self.layers, "phase", not self.layers.phase),
            "toggle_cvs": lambda: setattr(self.layers, "cvs", not self.layers.cvs),
            "open": self.open_dialog,
            "help": self.show_help,
            "quit": self.close,
        }
        for name, handler in handlers.items():
            action = QAction(name.replace("_", " "), self)
            action.setShortcuts([QKeySequence(k) for k in keys[name]])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(handler)
            self.addAction(action)
            self.actions_by_name[name] = action
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.actions_by_name["open"])
        prefs = QAction("Preferences…", self)
        prefs.triggered.connect(self.preferences_dialog)
        file_menu.addAction(prefs)
        file_menu.addSeparator()
        self.actions_by_name.update(add_export_actions(self, file_menu))  # report, clip, blank areas
        file_menu.addSeparator()
        file_menu.addAction(self.actions_by_name["quit"])
        view_menu = menu.addMenu("&View")
        for dock in (self.reasoning_dock, self.timeline_dock, self.library_dock, self.bookmarks_dock):
            view_menu.addAction(dock.toggleViewAction())
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.actions_by_name["help"])
        about = QAction("About surgview", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def trigger(self, name: str) -> None:
        self.actions_by_name[name].trigger()

    # ------------------------------------------------------------------ cases
    def open_dialog(self) -> None:
        start = self.settings.value("cases/last_dir", str(Path.home()))
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a case", start, "Videos (*.mp4 *.mkv *.mov *.avi *.ts *.m4v *.webm);;All files (*)"
        )
        if path:
            self.open_case(path)

    def open_case(self, path: str | Path) -> None:
        path = Path(path)
        self.remember_spot()
        self._fingerprint = None
        self.settings.setValue("cases/last_dir", str(path.parent))
        self.case.update(video=path, error=None, selection=None)
        self.playhead.update(requested=0, displayed=-1, playing=False)
        self.panel.clear("Opening…")
        self.player.open(str(path))

    def _on_opened(self, facts: dict) -> None:
        path = Path(facts["path"])
        self.case.update(
            fps=float(facts["fps"]),
            frame_count=int(facts["frame_count"]),
            width=int(facts["width"]),
            height=int(facts["height"]),
        )
        self.setWindowTitle(f"surgview — {path.name}")
        self.canvas.set_fps(self.case.fps)
        fps = self.case.fps
        self.panel.set_frame_formatter(lambda frame: f"{frame} ({format_timecode(frame, fps)})")
        self._remember(path)
        if self.store is not None:
            self.store.close()
            self.store = None
        try:
            self.store = CaseStore.for_video(path, fps=self.case.fps, frame_count=self.case.frame_count)
        except (StoreError, OSError) as exc:
            self.statusBar().showMessage(f"analysis will not be kept: {exc}", 10000)
        self.timeline.set_case(self.case.fps, self.case.frame_count)
        self.timeline.set_ground_truth(self._ground_truth(path))
        self._load_bookmarks()
        self.refresh_timelines()
        if self.engine.alive:
            self.engine.open_case(str(path))
        spot = self._recall_spot(path)
        self.seek(spot.frame if spot is not None else 0)
        if spot is not None and spot.selection is not None:
            self.case.selection = spot.selection
        self.caseOpened.emit(str(path))

    def _recall_spot(self, path: Path) -> ReviewSpot | None:
        """Where the reviewer left this case (None for a case never opened here)."""
        info = self.store.case_info() if self.store is not None else None
        try:
            self._fingerprint = info.fingerprint if info is not None else video_fingerprint(path)
        except OSError:
            self._fingerprint = None
            return None
        spot = self.review_memory.recall(self._fingerprint)
        return spot.clamped(self.case.frame_count) if spot is not None else None

    def remember_spot(self) -> None:
        """Keep the frame on screen and the selection of the open case for its next opening."""
        self._spot_timer.stop()
        if self._fingerprint is None or self.case.frame_count <= 0:
            return
        frame = self.playhead.displayed if self.playhead.displayed >= 0 else self.playhead.requested
        self.review_memory.remember(self._fingerprint, ReviewSpot(frame, self.case.selection))

    def _ground_truth(self, video: Path) -> list[str] | None:
        labels = video.parent.parent / "phase_annotations" / f"{video.stem}-phase.txt"
        if not labels.exists():
            return None
        try:
            return read_cholec80_phases(labels)
        except LabelFileError as exc:
            self.statusBar().showMessage(f"ground truth ignored: {exc}", 8000)
            return None

    def _on_video_failed(self, message: str) -> None:
        self.case.error = message
        self.panel.clear("No case open.")
        QMessageBox.warning(self, "Cannot open this case", message)

    def _remember(self, path: Path) -> None:
        recent = [p for p in self.settings.value("cases/recent", [], type=list) if p != str(path)]
        self.settings.setValue("cases/recent", [str(path), *recent][:MAX_RECENT])
        self._refresh_library()

    def _refresh_library(self) -> None:
        self.library.clear()
        for p in self.settings.value("cases/recent", [], type=list):
            item = QListWidgetItem(Path(p).name)
            item.setToolTip(p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            if not Path(p).exists():
                item.setForeground(Qt.GlobalColor.gray)
                item.setToolTip(f"{p} (not found)")
            self.library.addItem(item)

    # ------------------------------------------------------------------ navigation
    def seek(self, frame: int) -> None:
        if self.case.frame_count <= 0:
            return
        frame = self.playhead.clamp(int(frame), self.case.frame_count)
        self.playhead.requested = frame
        self.player.seek(frame)

    def step(self, delta: int) -> None:
        if self.playhead.playing:
            self.player.pause()
        base = self.playhead.displayed if self.playhead.displayed >= 0 else self.playhead.requested
        self.seek(base + delta)

    def toggle_play(self) -> None:
        if self.case.frame_count <= 0:
            return
        if self.playhead.playing:
            self.player.pause()
        else:
            self._shuttle = 0.0
            self.player.play(SPEEDS[self.speed_box.currentIndex()])

    def shuttle(self, direction: int) -> None:
        """J/L: each press in the same direction doubles the speed (up to 4x); K stops."""
        if self.case.frame_count <= 0:
            return
        same = self._shuttle != 0 and math.copysign(1, self._shuttle) == direction
        self._shuttle = max(-4.0, min(4.0, self._shuttle * 2 if same else float(direction)))
        self.player.play(self._shuttle)

    def _on_speed(self, index: int) -> None:
        if self.playhead.playing:
            self.player.play(SPEEDS[index])

    def go_to_dialog(self) -> None:
        if self.case.frame_count <= 0:
            return
        text, ok = QInputDialog.getText(
            self,
            "Go to",
            "Frame number or time (hh:mm:ss.ff):",
            text=format_timecode(max(0, self.playhead.displayed), self.case.fps),
        )
        if ok:
            self.go_to(text)

    def go_to(self, text: str) -> bool:
        try:
            times = (self.player.info or {}).get("times")
            frame = parse_position(text, self.case.fps, times.index_at if times is not None else None)
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 5000)
            return False
        if frame >= self.case.frame_count:
            self.statusBar().showMessage(f"the case has {self.case.frame_count} frames", 5000)
            return False
        self.seek(frame)
        return True

    def jump_phase(self, direction: int) -> None:
        if not self.timelines or not self.timelines.phase:
            return
        here = max(0, self.playhead.displayed)
        starts = sorted({s.start for s in self.timelines.phase} | {s.end for s in self.timelines.phase})
        targets = [s for s in starts if (s > here if direction > 0 else s < here)]
        if targets:
            self.seek(targets[0] if direction > 0 else targets[-1])

    def jump_bookmark(self, direction: int) -> None:
        here = max(0, self.playhead.displayed)
        frames = sorted(f for f, _ in self._bookmarks)
        targets = [f for f in frames if (f > here if direction > 0 else f < here)]
        if targets:
            self.seek(targets[0] if direction > 0 else targets[-1])

    def _on_playing_changed(self, playing: bool) -> None:
        self.playhead.playing = playing
        self.play_button.setIcon(self._icons["Pause" if playing else "Play"])
        if not playing:
            self._shuttle = 0.0
            self._ask_timer.start()

    def _on_frame(self, index: int, image) -> None:
        self.canvas.set_frame(index, image)
        self.playhead.displayed = index
        self.frame_label.setText(f"frame {index} / {self.case.frame_count - 1}")
        seconds = self.player.time_of(index)  # presentation time: right for variable frame rates too
        self.time_label.setText(
            format_time(seconds, self.case.fps) if seconds is not None else format_timecode(index, self.case.fps)
        )
        self.timeline.set_playhead(index)
        self._show_stored(index)
        if not self.playhead.playing:
            self._ask_timer.start()
        if not self._spot_timer.isActive():
            self._spot_timer.start()

    # ------------------------------------------------------------------ reasoning
    def case_analysis(self) -> CaseAnalysis | None:
        """The engine's analysis of the open case: its model, profile and store keys (None without either)."""
        if self.store is None or not self.model_id:
            return None
        return CaseAnalysis(self.model_id, self.prompt_version, self.profile, frames=0, last_created=0.0)

    def _frame_results(self, frame: int) -> dict[str, FrameResult]:
        """Every stored answer of ``frame``, by question."""
        analysis = self.case_analysis()
        if analysis is None or frame < 0:
            return {}
        try:
            return analysis.frame_results(self.store, frame)
        except StoreError:
            return {}

    def frame_record(self, frame: int) -> FrameRecord | None:
        """The merged record of ``frame`` (all its questions, boxes in video pixels); None if not analysed."""
        results = self._frame_results(frame)
        return self._merge(results) if results else None

    def _merge(self, results: Mapping[str, FrameResult]) -> FrameRecord:
        return merge_results(self.profile, results, self.case.width, self.case.height)

    def _show_stored(self, frame: int) -> bool:
        """Show what is stored of ``frame``: the merged record on the video, each answer in the panel
        (left alone while a question of this frame still streams there)."""
        results = self._frame_results(frame)
        streaming_here = self._live_frame == frame and bool(self._live_tasks) and self.panel.frame == frame
        if not results:
            self.canvas.set_chain(frame, None)
            if not streaming_here:
                self.panel.clear("Not analysed yet: the model is asked when playback stops here.")
            return False
        self.canvas.set_chain(frame, self._merge(results).to_chain())
        if not streaming_here:
            self.panel.show_cached(frame, {task: r.raw_text for task, r in results.items()})
        self._update_nearby(frame)
        return True

    def _ask_for_displayed(self) -> None:
        frame = self.playhead.displayed
        if frame < 0 or self.playhead.playing or not self.engine.alive:
            return
        if len(self._frame_results(frame)) < len(self.profile.tasks):  # a question not answered yet
            self.engine.request(frame)

    def reask(self, frame: int) -> None:
        if frame >= 0 and self.engine.alive:
            self.engine.reask(frame)

    def _on_started(self, frame: int, task: str, requested: bool) -> None:
        if frame != self.playhead.displayed:
            return
        if self._live_frame != frame:
            self._live_frame, self._live_tasks = frame, set()
        self._live_tasks.add(task)
        self.panel.begin(frame, "live", task)

    def _on_pieces(self, frame: int, task: str, text: str) -> None:
        if frame == self._live_frame and task in self._live_tasks:
            self.panel.feed(frame, text, task)

    def _on_done(self, frame: int, info: dict) -> None:
        if info.get("tokens") and info.get("total_s"):
            first = info.get("first_token_s") or 0.0
            gen = max(1e-6, info["total_s"] - first)
            self.analysis.tokens_per_s = max(0, info["tokens"] - 1) / gen
        task = str(info.get("task") or "")
        if frame == self._live_frame and task in self._live_tasks:
            self.panel.finish(frame, task=task)
            self._live_tasks.discard(task)
            if not self._live_tasks:
                self._live_frame = None
        if frame == self.playhead.displayed:
            self._show_stored(frame)  # the merged record so far; the panel once no question streams
        if not self._timeline_timer.isActive():
            self._timeline_timer.start()
        self._update_status()

    def _on_frame_failed(self, frame: int, message: str) -> None:
        if frame == self._live_frame:
            self._live_frame, self._live_tasks = None, set()
        if frame == self.playhead.displayed:
            self.panel.clear(f"The model could not analyse this frame: {message}")

    def _update_nearby(self, frame: int) -> None:
        analysis = self.case_analysis()
        if analysis is None:
            return
        try:
            statuses = dict(analysis.statuses(self.store))
        except StoreError:
            return
        near = sorted(statuses, key=lambda f: abs(f - frame))[:9]
        self.panel.set_nearby([(f, statuses[f]) for f in sorted(near) if f != frame])

    def refresh_timelines(self) -> None:
        analysis = self.case_analysis()
        if analysis is None or self.case.frame_count <= 0:
            self.timeline.set_timelines(None)
            self.timelines = None
            return
        try:
            rows = analysis.timeline_rows(self.store)  # merged: the phase question's phase, every question's tools
            statuses = analysis.statuses(self.store)
        except StoreError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        self.timelines = build_timelines(rows, self.case.fps, self.case.frame_count) if rows else None
        self.timeline.set_timelines(self.timelines)
        self.timeline.set_confidence([f for f, _ in statuses], [s or None for _, s in statuses])

    # ------------------------------------------------------------------ engine
    def _spec_from_settings(self) -> dict:
        return spec_from_settings(self.settings)

    def _on_engine_ready(self, model_id: str, device: str, profile: dict | None = None) -> None:
        self.model_id = model_id
        self._set_profile(profile)
        self.analysis.update(engine="ready", engine_error=None, model_id=model_id, device=device)
        self.restart_button.hide()
        note = self.analysis.profile_note
        if "default" in note:  # a guess the reviewer should know about (and can change)
            self.statusBar().showMessage(f"{note} — change it under File ▸ Preferences", 15000)
        if self.case.video is not None and self.case.frame_count > 0:
            self.engine.open_case(str(self.case.video))
            self._show_stored(self.playhead.displayed)
            self.refresh_timelines()
            self._ask_timer.start()
        self._update_status()

    def _set_profile(self, info: Mapping[str, Any] | None) -> None:
        """Follow the engine's model profile: the store keys to read and the questions the panel shows."""
        self.profile = profile_from_info(info)
        self.prompt_version = self.profile.version
        self._live_frame, self._live_tasks = None, set()
        self.panel.set_questions([(q.task, q.title) for q in self.profile.questions])
        note = str(info.get("note") or "") if info else ""
        self.analysis.update(profile=self.profile.name, profile_note=note)

    def _on_engine_case_opened(self, path: str, info: dict) -> None:
        """The engine's store keys for this case; should they differ from ``ready``'s, the case's win."""
        version, tasks = str(info.get("prompt_version") or ""), tuple(info.get("tasks") or ())
        if (version and version != self.prompt_version) or (tasks and tasks != self.profile.tasks):
            self._set_profile(
                {
                    "name": info.get("profile"),
                    "version": version,
                    "questions": [{"task": t} for t in tasks],
                    "note": self.analysis.profile_note,
                }
            )
            self._show_stored(self.playhead.displayed)
            self.refresh_timelines()

    def _on_rate(self, frames_per_s: float, eta_s: object) -> None:
        eta = float(eta_s) if isinstance(eta_s, int | float) else None
        self.analysis.update(frames_per_s=float(frames_per_s), eta_s=eta)
        self._update_status()

    def _on_idle(self) -> None:
        """Nothing left to sweep (or paused): no pace to show until the next frame is done."""
        self.analysis.update(frames_per_s=0.0, eta_s=None)
        self._update_status()

    def _on_progress(self, done: int, total: int) -> None:
        self.analysis.update(done=done, total=total)
        self._update_status()

    def _on_engine_error(self, message: str) -> None:
        self.analysis.update(engine="failed", engine_error=message)
        self.restart_button.show()
        self.statusBar().showMessage(f"engine: {message}", 15000)
        self._update_status()

    def _on_engine_died(self, reason: str) -> None:
        self.analysis.update(engine="died", engine_error=reason)
        self._live_frame = None
        self.restart_button.show()
        self.panel.clear(
            f"The engine stopped: {reason}. Everything already analysed is kept; use Restart engine to continue."
        )
        self.statusBar().showMessage(f"engine stopped: {reason}", 15000)
        self._update_status()

    def restart_engine(self) -> None:
        if not self.engine_spec:
            self.preferences_dialog()
            return
        self.analysis.update(engine="starting", engine_error=None)
        self.restart_button.hide()
        if self.engine.state in ("died", "failed", "stopped"):
            self.engine.start(self.engine_spec)
        else:
            self.engine.restart()
        self._update_status()

    def set_analysis_paused(self, paused: bool) -> None:
        self.analysis.paused = paused
        self.pause_button.setText("Resume analysis" if paused else "Pause analysis")
        if self.engine.alive:
            (self.engine.pause if paused else self.engine.resume)()

    def _update_status(self) -> None:
        a = self.analysis
        names = {
            "ready": a.model_id or "model ready",
            "starting": "starting the model…",
            "failed": f"model failed: {a.engine_error}",
            "died": "engine stopped",
            "stopped": "no model (File ▸ Preferences)",
        }
        label = names.get(a.engine, a.engine)
        if a.engine == "ready" and a.profile:
            label += f" · {a.profile}"
        self.model_label.setText(label)
        self.model_label.setToolTip(self._profile_tooltip())
        self.device_label.setText(a.device)
        self.rate_label.setText(rate_text(a.tokens_per_s, a.frames_per_s, a.eta_s))
        self.progress.setMaximum(max(1, a.total))
        self.progress.setValue(a.done)
        self.progress.setVisible(a.total > 0)

    def _profile_tooltip(self) -> str:
        a = self.analysis
        if a.engine != "ready" or not a.profile:
            return ""
        lines = [a.model_id, a.profile_note or f"profile {a.profile}", self.profile.description]
        titles = [q.title for q in self.profile.questions]
        if len(titles) > 1:
            lines.append("questions per frame: " + ", ".join(titles))
        lines.append("Choose the profile under File ▸ Preferences.")
        return "\n".join(line for line in lines if line)

    # ------------------------------------------------------------------ bookmarks
    def _load_bookmarks(self) -> None:
        self.bookmark_list.clear()
        self._bookmarks = []
        if self.store is None:
            self.timeline.set_bookmarks([])
            return
        try:
            marks = self.store.bookmarks()
            notes = {n.frame: n.text for n in self.store.notes() if n.frame is not None}
        except StoreError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        for mark in marks:
            note = notes.get(mark.frame, "")
            item = QListWidgetItem(f"{format_timecode(mark.frame, self.case.fps)}  {mark.title}")
            item.setToolTip(note or mark.title)
            item.setData(Qt.ItemDataRole.UserRole, (mark.id, mark.frame))
            self.bookmark_list.addItem(item)
            self._bookmarks.append((mark.frame, mark.title))
        self.timeline.set_bookmarks(self._bookmarks)

    def add_bookmark(self) -> None:
        frame = self.playhead.displayed
        if self.store is None or frame < 0:
            return
        dialog = BookmarkDialog(self, f"Frame {frame} ({format_timecode(frame, self.case.fps)})")
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.save_bookmark(frame, dialog.title.text(), dialog.note.text())

    def save_bookmark(self, frame: int, title: str, note: str = "") -> None:
        try:
            self.store.add_bookmark(frame, title or f"frame {frame}")
            if note:
                self.store.add_note(note, frame=frame)
        except StoreError as exc:
            QMessageBox.warning(self, "Bookmark not saved", str(exc))
        self._load_bookmarks()

    def edit_bookmark(self) -> None:
        item = self.bookmark_list.currentItem()
        if item is None or self.store is None:
            return
        mark_id, _ = item.data(Qt.ItemDataRole.UserRole)
        title, ok = QInputDialog.getText(self, "Edit bookmark", "Title:", text=item.text().split("  ", 1)[-1])
        if ok:
            self.store.update_bookmark(mark_id, title=title)
            self._load_bookmarks()

    def delete_bookmark(self) -> None:
        item = self.bookmark_list.currentItem()
        if item is None or self.store is None:
            return
        mark_id, _ = item.data(Qt.ItemDataRole.UserRole)
        self.store.delete_bookmark(mark_id)
        self._load_bookmarks()

    # ------------------------------------------------------------------ misc
    def show_help(self) -> None:
        rows = describe(keymap(self.settings))
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(rows), 2, dialog)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        for r, (keys, what) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(keys))
            table.setItem(r, 1, QTableWidgetItem(what))
        table.resizeColumnsToContents()
        table.verticalHeader().hide()
        note = QLabel("Change a shortcut in the settings file under [shortcuts], e.g. play_pause=Space;K")
        note.setWordWrap(True)
        layout = QVBoxLayout(dialog)
        layout.addWidget(table)
        layout.addWidget(note)
        dialog.resize(560, 640)
        self.help_dialog = dialog
        dialog.show()

    def show_about(self) -> None:
        from app.about import AboutDialog

        self.about_dialog = AboutDialog(self.engine_spec, self.analysis.model_id, self.analysis.device, self)
        self.about_dialog.show()

    def preferences_dialog(self) -> None:
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        self.engine_spec = self._spec_from_settings()
        if self.engine_spec:
            self.engine.stop()
            self.restart_engine()

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_case(urls[0].toLocalFile())

    def closeEvent(self, event) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.remember_spot()
        self.player.close()
        self.engine.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)


def _int_setting(settings: QSettings, key: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(settings.value(key, default))))
    except (TypeError, ValueError):
        return default


def spec_from_settings(settings: QSettings) -> dict:
    """The engine spec the Preferences (or the first-run dialog) chose; empty when no model is set."""
    kind = settings.value("engine/backend", "transformers")
    model = settings.value("engine/model", "")
    urls = parse_urls(str(settings.value("engine/url", "") or ""))
    if not model and not urls:
        return {}
    if kind == "transformers" and model:
        kind = default_kind(model)  # onnx in the torch-free bundle, when the folder has an export
    spec = {
        "kind": kind,
        "model": model or None,
        "url": urls[0] if urls else None,  # one server as always; several also as "urls"
        "stride_s": float(settings.value("engine/stride", 1.0)),
        "profile": str(settings.value("engine/profile", "") or "") or None,  # None: the model's own, or the default
        "concurrency": _int_setting(settings, "engine/concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY),
    }
    if len(urls) > 1:
        spec["urls"] = urls
    return spec


def rate_text(tokens_per_s: float, frames_per_s: float, eta_s: float | None) -> str:
    """The status bar's pace: generation speed, the sweep's frames per second and its time left."""
    parts = []
    if tokens_per_s:
        parts.append(f"{tokens_per_s:.0f} tokens/s")
    if frames_per_s:
        parts.append(f"{frames_per_s:.2f} frames/s")
    if eta_s:
        parts.append(f"{format_seconds(eta_s)} left")
    return " · ".join(parts)


class PreferencesDialog(QDialog):
    """The engine settings: backend, model, server(s), model profile, concurrency, sweep stride.

    Accepting writes them to ``settings`` (the keys the first-run dialog writes too); the window
    then restarts the engine with them.
    """

    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Preferences")
        form = QFormLayout(self)
        self.backend = QComboBox()
        self.backend.addItems(["transformers", "onnx", "openai"])  # onnx: the model folder's onnx/ export
        self.backend.setCurrentText(settings.value("engine/backend", "transformers"))
        self.model = QLineEdit(settings.value("engine/model", ""))
        browse = QPushButton("Browse…")
        browse.clicked.connect(
            lambda: self.model.setText(QFileDialog.getExistingDirectory(self, "Model directory") or self.model.text())
        )
        self.url = QLineEdit(settings.value("engine/url", ""))
        self.url.setPlaceholderText("http://127.0.0.1:8000/v1 (several: separated by spaces or commas)")
        self.url.setToolTip("Several servers of the same model share the frames between them")
        self.profile = ProfileChoice(str(settings.value("engine/profile", "") or ""))
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, MAX_CONCURRENCY)
        self.concurrency.setValue(_int_setting(settings, "engine/concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY))
        self.concurrency.setToolTip("Questions sent to the server(s) at once; a local model answers one at a time")
        self.stride = QLineEdit(str(settings.value("engine/stride", 1.0)))
        self.error = QLabel()
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setWordWrap(True)
        self.error.hide()
        row = QHBoxLayout()
        row.addWidget(self.model)
        row.addWidget(browse)
        form.addRow("Backend", self.backend)
        form.addRow("Model directory (or served model name)", row)
        form.addRow("Server URL(s) (openai backend)", self.url)
        form.addRow("Model profile", self.profile)
        form.addRow("Requests in flight (openai backend)", self.concurrency)
        form.addRow("Background analysis: seconds between frames", self.stride)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.backend.currentTextChanged.connect(self._follow_backend)
        self._follow_backend(self.backend.currentText())

    def _follow_backend(self, kind: str) -> None:
        self.concurrency.setEnabled(kind == "openai")

    def accept(self) -> None:
        """Save, or say why the server URLs cannot be used and stay open."""
        try:
            urls = check_urls(self.url.text()) if self.url.text().strip() else []
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        s = self.settings
        s.setValue("engine/backend", self.backend.currentText())
        s.setValue("engine/model", self.model.text().strip())
        s.setValue("engine/url", " ".join(urls))
        s.setValue("engine/profile", self.profile.profile())
        s.setValue("engine/concurrency", self.concurrency.value())
        with contextlib.suppress(ValueError):  # an unreadable number keeps the previous stride
            s.setValue("engine/stride", max(0.04, float(self.stride.text())))
        super().accept()


class BookmarkDialog(QDialog):
    def __init__(self, parent: QWidget, where: str):
        super().__init__(parent)
        self.setWindowTitle(f"Bookmark — {where}")
        form = QFormLayout(self)
        self.title = QLineEdit()
        self.title.setPlaceholderText("e.g. critical view achieved")
        self.note = QLineEdit()
        self.note.setPlaceholderText("reviewer's note (optional)")
        form.addRow("Title", self.title)
        form.addRow("Note", self.note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
