"""The open case's procedure in the viewer: shown, chosen under Case ▸ Procedure, remembered per case.

A suturing case reviewed as a cholecystectomy would be asked for Cholec80 phases and CVS on every
frame. When a case opens, its procedure is read (:func:`engine.case_procedure.case_procedure`: the
choice stored for this case, ``surgview CASE --procedure rarp`` included; else the dataset layout's
hint; else cholecystectomy; the status bar says which, and where to change it). The timeline then draws
that procedure's rows (:meth:`app.widgets.timeline_view.TimelineView.set_procedure`: a suturing case's
action track, a bypass's phase and step tracks, never CVS rows elsewhere) and the reasoning panel reads
chains in its vocabulary. Choosing another procedure stores it for the case
(:func:`engine.case_procedure.set_case_procedure`) and opens the case again in the engine, which asks
the procedure's default question in its own prompts from then on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup

from engine.case_procedure import CaseProcedure, ProcedureChoiceError, case_procedure, set_case_procedure
from engine.procedures import Procedure, get_procedure, load_procedures

__all__ = ["ProcedureChoice", "install_procedures"]

_NOTE_MS = 15000


class ProcedureChoice(QObject):
    """The Case ▸ Procedure menu and what follows the open case's procedure (``window``: the main window)."""

    changed = Signal(str)  # the canonical name of the procedure now shown

    def __init__(self, window: Any):
        super().__init__(window)
        self.window = window
        self.current: CaseProcedure | None = None
        self.menu = window.menuBar().addMenu("&Case")
        help_menu = next((a for a in window.menuBar().actions() if a.text() == "&Help"), None)
        if help_menu is not None:  # Case sits before Help
            window.menuBar().insertMenu(help_menu, self.menu)
        submenu = self.menu.addMenu("&Procedure")
        submenu.setToolTipsVisible(True)
        self.group = QActionGroup(self)
        self.group.setExclusive(True)
        self.actions: dict[str, QAction] = {}
        for proc in load_procedures().values():
            action = QAction(proc.display, self, checkable=True)
            action.setData(proc.name)
            action.setToolTip(f"Review this case as {proc.display.lower()} (remembered for the case)")
            action.triggered.connect(lambda _checked=False, name=proc.name: self.choose(name))
            self.group.addAction(action)
            submenu.addAction(action)
            self.actions[proc.name] = action
        self.group.setEnabled(False)  # until a case is open
        window.caseOpened.connect(self.case_opened)

    @property
    def procedure(self) -> Procedure:
        """The procedure of the open case (cholecystectomy before one opens)."""
        return self.current.procedure if self.current is not None else get_procedure()

    def case_opened(self, path: str) -> None:
        """A case opened: read its procedure and show the case as that procedure."""
        video = Path(path)
        try:
            self.current = case_procedure(video, self.window.session.fingerprint(video))
        except ProcedureChoiceError as exc:
            self.current = CaseProcedure(get_procedure(), "default", f"{exc}; reviewed as a cholecystectomy")
        self.group.setEnabled(True)
        self._show(self.current.procedure)
        if self.current.source == "layout":
            self._say(f"{self.current.note} — change it under Case ▸ Procedure")
        elif self.current.source == "default":  # most cases: said once, plainly
            self._say(f"Reviewed as {self.current.procedure.display.lower()} — another procedure: Case ▸ Procedure")

    def choose(self, name: str) -> None:
        """The reviewer chose ``name`` for the open case: remember it, show it, and ask the engine again."""
        video = self.window.case.video
        if video is None:
            return
        try:
            proc = set_case_procedure(Path(video), name, self.window.session.fingerprint(Path(video)))
        except ProcedureChoiceError as exc:
            self._say(str(exc))
            self._show(self.procedure)  # the menu shows what still holds
            return
        self.current = CaseProcedure(proc, "chosen", f"procedure {proc.name} (chosen for this case)")
        self._show(proc)
        self._say(f"{proc.display}: remembered for this case")
        if self.window.engine.alive:
            self.window.engine.open_case(str(video))  # the engine asks this procedure's questions from now on

    def _show(self, proc: Procedure) -> None:
        self.actions[proc.name].setChecked(True)
        self.window.timeline.set_procedure(proc)
        self.window.panel.set_ontology(proc.ontology)
        self.changed.emit(proc.name)

    def _say(self, text: str) -> None:
        self.window.statusBar().showMessage(text, _NOTE_MS)


def install_procedures(window: Any) -> ProcedureChoice:
    """Add the Case ▸ Procedure menu to ``window`` and follow each opened case's procedure."""
    return ProcedureChoice(window)
