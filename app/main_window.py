"""The main window, wiring only: canvas and transport bar in the centre, docks for the reasoning panel, timelines,
case library and bookmarks, the menus and shortcuts. The open case is a Qt-free :class:`app.session.CaseSession`
(store, analysis, records, timelines, bookmarks, playhead, previews); widgets subscribe to the models they show.
Frames come from the playback worker (:mod:`app.previews` meanwhile), reasoning from the engine process
(:class:`app.reasoning_feed.ReasoningFeed`), the reviewer's tools from :func:`app.review_ui.install_review`."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.bookmark_undo import BookmarkUndo, add_edit_menu
from app.bookmarks import BookmarksPanel
from app.case_library import MAX_RECENT, CaseLibrary, shortcuts_dialog
from app.case_loading import CaseLoading
from app.engine_link import EngineLink
from app.export.ui import Exports
from app.playback import PlaybackController
from app.preferences import PreferencesDialog, edit_preferences, spec_from_settings
from app.previews import Previews
from app.procedure_choice import install_procedures
from app.reasoning_feed import ReasoningFeed
from app.review_memory import ReviewMemory, ReviewSpot
from app.review_ui import install_review
from app.session import CaseSession, profile_from_info
from app.shortcuts import keymap
from app.state import AnalysisState, LayerState
from app.status_bar import EngineStatus, rate_text
from app.widgets.reasoning_panel import ReasoningPanel
from app.widgets.timeline_view import TimelineView
from app.widgets.transport_bar import TransportBar
from app.widgets.video_canvas import VideoCanvas
from app.window_layout import apply_default_layout
from engine.timecode import parse_position

__all__ = ["MAX_RECENT", "PreferencesDialog", "SurgviewWindow", "profile_from_info", "rate_text", "spec_from_settings"]

ORGANIZATION, APPLICATION = "surgview", "surgview"


class SurgviewWindow(QMainWindow):
    """The surgview viewer."""

    caseOpened = Signal(str)

    def __init__(self, engine_spec: dict | None = None, settings: QSettings | None = None, start_engine: bool = True):
        super().__init__()
        self.settings = settings or QSettings(ORGANIZATION, APPLICATION)
        self.session = CaseSession()
        self.case, self.playhead = self.session.case, self.session.playhead
        self.analysis = AnalysisState()
        self.layers = LayerState()
        self.engine_spec = engine_spec or spec_from_settings(self.settings)
        self.session.stride_s = float((self.engine_spec or {}).get("stride_s") or 1.0)  # how long answers hold
        self._shuttle = 0.0
        self.review_memory = ReviewMemory(self.settings)
        self._fingerprint: str | None = None  # of the case on screen, once it has opened

        self.setWindowTitle("surgview")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        self.canvas = VideoCanvas(layers=self.layers)
        self.canvas.follow(self.session)
        self.panel = ReasoningPanel()
        self.timeline = TimelineView()
        self.timeline.follow(self.session)
        self.library = CaseLibrary(self.settings, self.open_case)
        self.bookmarks = BookmarksPanel(self.session, self.seek, undo=BookmarkUndo(self.session, self))
        self.bookmark_list = self.bookmarks.list
        self.transport = TransportBar(self.session, self.trigger)
        self.frame_label, self.time_label = self.transport.frame_label, self.transport.time_label
        self.transport.speed_box.currentIndexChanged.connect(self._on_speed)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.transport)
        self.setCentralWidget(central)
        self._build_docks()
        self.status = EngineStatus(
            self.statusBar(), self.analysis, self.session, self.set_analysis_paused, self.restart_engine
        )
        for name in ("model_label", "device_label", "rate_label", "progress", "pause_button", "restart_button"):
            setattr(self, name, getattr(self.status, name))
        self.exports = Exports(
            self.session, self, self.settings, self.statusBar().showMessage, self._model_dir, lambda: self.canvas.image
        )
        self._build_actions()
        self.review = install_review(self)  # reviewer rows, box editor, verdicts, agreement, keys
        self.procedures = install_procedures(self)  # Case ▸ Procedure; the case's rows and vocabulary follow it

        self.player = PlaybackController(self)
        self.previews = Previews(self.session, self.canvas, self.timeline, self.player.holds, self)  # seek previews
        self.loading = CaseLoading(self)  # what can wait at opening waits for the first frame
        self.player.opened.connect(self._on_opened)
        self.player.frameReady.connect(self._on_frame)
        self.player.failed.connect(self._on_video_failed)
        self.player.playingChanged.connect(lambda playing: setattr(self.playhead, "playing", playing))

        self.engine = EngineLink(self)
        self.feed = ReasoningFeed(self.session, self.panel, self.engine, self.analysis)
        self.status.follow(self.engine, self.player, self.previews)  # engine, indexing and previews in the status bar
        self.engine.ready.connect(self._on_engine_ready)
        self.engine.case_opened.connect(self._on_engine_case_opened)
        self.engine.done.connect(lambda frame, info: self._timeline_timer.isActive() or self._timeline_timer.start())

        self.timeline.seekRequested.connect(self.seek)
        self.timeline.selectionChanged.connect(lambda frames: setattr(self.case, "selection", frames))
        self.panel.reaskRequested.connect(self.reask)
        self.panel.frameRequested.connect(self.seek)
        self.panel.bind_layers(self.layers)  # hovering an entity or a box highlights it in both

        self._ask_timer = QTimer(self, singleShot=True, interval=120)  # ask once the playhead settles
        self._ask_timer.timeout.connect(self._ask_for_displayed)
        self._timeline_timer = QTimer(self, singleShot=True, interval=1500)  # results arrive: refresh, throttled
        self._timeline_timer.timeout.connect(self.refresh_timelines)
        self._spot_timer = QTimer(self, singleShot=True, interval=2000)  # keep the reviewer's place, throttled
        self._spot_timer.timeout.connect(self.remember_spot)
        self.case.subscribe(lambda name, value: self.remember_spot() if name == "selection" else None)
        self.playhead.subscribe(self._on_playhead)

        if (geometry := self.settings.value("window/geometry")) is not None:
            self.restoreGeometry(geometry)
        else:
            apply_default_layout(self)  # dock sizes: app/window_layout.py
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        if start_engine and self.engine_spec:
            self.analysis.engine = "starting"
            self.engine.start(self.engine_spec)

    @property
    def store(self):
        return self.session.store

    @property
    def model_id(self) -> str:
        return self.session.model_id

    @property
    def prompt_version(self) -> str:
        return self.session.prompt_version

    def _model_dir(self) -> Path | None:
        model = (self.engine_spec or {}).get("model")
        return Path(model) if model and Path(model).is_dir() else None

    def _dock(self, title: str, name: str, widget: QWidget, area: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(getattr(Qt.DockWidgetArea, f"{area}DockWidgetArea"), dock)
        return dock

    def _build_docks(self) -> None:
        self.reasoning_dock = self._dock("Reasoning", "reasoningDock", self.panel, "Right")
        self.timeline_dock = self._dock("Timelines", "timelineDock", self.timeline, "Bottom")
        self.library_dock = self._dock("Cases", "libraryDock", self.library, "Left")
        self.bookmarks_dock = self._dock("Bookmarks", "bookmarksDock", self.bookmarks, "Left")
        self.tabifyDockWidget(self.library_dock, self.bookmarks_dock)
        self.library_dock.raise_()
        self.panel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # text never moves the video

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
            "prev_phase": lambda: self._jump(self.session.phase_target(-1)),
            "next_phase": lambda: self._jump(self.session.phase_target(1)),
            "prev_bookmark": lambda: self._jump(self.session.bookmark_target(-1)),
            "next_bookmark": lambda: self._jump(self.session.bookmark_target(1)),
            "add_bookmark": self.bookmarks.add,
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
        file_menu.addAction("Preferences…", self.preferences_dialog)
        file_menu.addSeparator()
        self.actions_by_name.update(self.exports.add_actions(file_menu, self.timeline))  # report, clip, blank areas
        file_menu.addSeparator()
        file_menu.addAction(self.actions_by_name["quit"])
        view_menu = menu.addMenu("&View")
        for dock in (self.reasoning_dock, self.timeline_dock, self.library_dock, self.bookmarks_dock):
            view_menu.addAction(dock.toggleViewAction())
        add_edit_menu(menu, self.bookmarks.undo, before=view_menu)  # undo/redo of bookmark edits
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.actions_by_name["help"])
        help_menu.addAction("About surgview", self.show_about)

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
        self.setWindowTitle(f"surgview — {path.name}")
        self.timeline.set_case(float(facts["fps"]), int(facts["frame_count"]), facts.get("times"))
        if problem := self.session.open_store(path, facts):
            self.statusBar().showMessage(problem, 10000)
        self.canvas.set_fps(self.case.fps)
        self.panel.set_frame_formatter(lambda frame: f"{frame} ({self.session.timecode(frame)})")
        self.loading.after_opening(lambda: self.library.remember(path, getattr(facts.get("times"), "duration_s", None)))
        if self.engine.alive:
            self.engine.open_case(str(path))
        self.seek(spot.frame if (spot := self._recall_spot(path)) is not None else 0)
        if spot is not None and spot.selection is not None:
            self.case.selection = spot.selection
        self.caseOpened.emit(str(path))

    def _recall_spot(self, path: Path) -> ReviewSpot | None:
        """Where the reviewer left this case (None for a case never opened here)."""
        self._fingerprint = self.session.fingerprint(path)
        spot = self.review_memory.recall(self._fingerprint) if self._fingerprint is not None else None
        return spot.clamped(self.case.frame_count) if spot is not None else None

    def remember_spot(self) -> None:
        """Keep the frame on screen and the selection of the open case for its next opening."""
        self._spot_timer.stop()
        if self._fingerprint is None or self.case.frame_count <= 0:
            return
        self.review_memory.remember(self._fingerprint, ReviewSpot(self.session.here, self.case.selection))

    def _on_video_failed(self, message: str) -> None:
        self.case.error = message
        self.panel.clear("No case open.")
        QMessageBox.warning(self, "Cannot open this case", message)

    # ------------------------------------------------------------------ navigation
    def seek(self, frame: int) -> None:
        target = self.session.seek(frame)  # clamped there, once
        if target is not None:
            self.player.seek(target)

    def _jump(self, frame: int | None) -> None:
        if frame is not None:
            self.seek(frame)

    def step(self, delta: int) -> None:
        if self.playhead.playing:
            self.player.pause()
        self.seek(self.session.here + delta)

    def toggle_play(self) -> None:
        if self.case.frame_count <= 0:
            return
        if self.playhead.playing:
            self.player.pause()
        else:
            self._shuttle = 0.0
            self.player.play(self.transport.speed)

    def shuttle(self, direction: int) -> None:
        """J/L: each press in the same direction doubles the speed (up to 4x); K stops."""
        if self.case.frame_count <= 0:
            return
        same = self._shuttle != 0 and math.copysign(1, self._shuttle) == direction
        self._shuttle = max(-4.0, min(4.0, self._shuttle * 2 if same else float(direction)))
        self.player.play(self._shuttle)

    def _on_speed(self, index: int) -> None:
        if self.playhead.playing:
            self.player.play(self.transport.speed)

    def go_to_dialog(self) -> None:
        if self.case.frame_count <= 0:
            return
        here = self.session.timecode(max(0, self.playhead.displayed))
        text, ok = QInputDialog.getText(self, "Go to", "Frame number or time (hh:mm:ss.ff):", text=here)
        if ok:
            self.go_to(text)

    def go_to(self, text: str) -> bool:
        try:
            times = self.session.times
            frame = parse_position(text, self.case.fps, times.index_at if times is not None else None)
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 5000)
            return False
        if frame >= self.case.frame_count:
            self.statusBar().showMessage(f"the case has {self.case.frame_count} frames", 5000)
            return False
        self.seek(frame)
        return True

    def _on_frame(self, index: int, image) -> None:
        self.canvas.set_frame(index, image)
        self.playhead.displayed = index  # subscribers: canvas overlay, read-outs, timeline, panel

    def _on_playhead(self, name: str, value: object) -> None:
        if name == "playing":
            if not value:
                self._shuttle = 0.0
                self._ask_timer.start()
        elif name == "displayed" and isinstance(value, int) and value >= 0:
            if not self.playhead.playing:
                self._ask_timer.start()
            if not self._spot_timer.isActive():
                self._spot_timer.start()

    # ------------------------------------------------------------------ reasoning and engine
    def save_bookmark(self, frame: int, title: str, note: str = "") -> None:
        self.bookmarks.save(frame, title, note)

    def _ask_for_displayed(self) -> None:
        frame = self.playhead.displayed
        if frame < 0 or self.playhead.playing or not self.engine.alive:
            return
        if self.session.needs_answer(frame):  # a question not answered yet
            self.engine.request(frame)

    def reask(self, frame: int) -> None:
        if frame >= 0 and self.engine.alive:
            self.engine.reask(frame)

    def refresh_timelines(self) -> None:
        problem = self.session.refresh_timelines()
        if problem:
            self.statusBar().showMessage(problem, 8000)

    def _on_engine_ready(self, model_id: str, device: str, profile: dict | None = None) -> None:
        note = str(profile.get("note") or "") if profile else ""
        self.analysis.update(engine="ready", engine_error=None, model_id=model_id, device=device)
        self.session.set_engine(model_id, profile)
        self.analysis.update(profile=self.session.profile.name, profile_note=note)
        if "default" in note:  # a guess the reviewer should know about (and can change)
            self.statusBar().showMessage(f"{note} — change it under File ▸ Preferences", 15000)
        if self.case.video is not None and self.case.frame_count > 0:
            self.engine.open_case(str(self.case.video))
            self._ask_timer.start()

    def _on_engine_case_opened(self, path: str, info: dict) -> None:
        """The engine's store keys for this case; should they differ from ``ready``'s, the case's win."""
        version, tasks = str(info.get("prompt_version") or ""), tuple(info.get("tasks") or ())
        profile = self.session.profile
        if (version and version != profile.version) or (tasks and tasks != profile.tasks):
            questions = [{"task": t} for t in tasks]
            self.session.set_engine(None, {"name": info.get("profile"), "version": version, "questions": questions})
            self.analysis.profile = self.session.profile.name

    def restart_engine(self) -> None:
        if not self.engine_spec:
            self.preferences_dialog()
            return
        self.analysis.update(engine="starting", engine_error=None)
        if self.engine.state in ("died", "failed", "stopped"):
            self.engine.start(self.engine_spec)
        else:
            self.engine.restart()

    def set_analysis_paused(self, paused: bool) -> None:
        self.analysis.paused = paused
        if self.engine.alive:
            (self.engine.pause if paused else self.engine.resume)()

    # ------------------------------------------------------------------ dialogs and window events
    def show_help(self) -> None:
        self.help_dialog = shortcuts_dialog(self.settings, self)

    def show_about(self) -> None:
        from app.about import AboutDialog

        self.about_dialog = AboutDialog(self.engine_spec, self.analysis.model_id, self.analysis.device, self)
        self.about_dialog.show()

    def preferences_dialog(self) -> None:
        spec = edit_preferences(self.settings, self)
        if spec is None:
            return
        self.engine_spec = spec
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
        self.session.close_store()
        super().closeEvent(event)
