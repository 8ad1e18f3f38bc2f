"""Every documented shortcut (the table in app/shortcuts.py, shown by ?) fires its action when its
key is pressed on the window: real key events, one effect each. No sequence is ambiguous (Qt fires
neither action of an ambiguous pair), and a shifted symbol is its character (``{``, not ``Shift+[``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog

import app.main_window as main_window
from app.bookmarks import BookmarkDialog
from app.shortcuts import DEFAULTS, describe, keymap
from engine.review_labels import ReviewLabels
from tests.app.test_viewer_profiles import engine_ready, fill_surg_r1

HERE = 500  # every press starts here, paused: phases change at 750, bookmarks at 300 and 900


def test_keymap_folds_shifted_symbols_and_never_binds_a_key_twice(tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("shortcuts/next_bookmark", "Shift+];N")
    settings.setValue("shortcuts/reask", "R;Space")  # Space is play/pause's already
    keys = keymap(settings)
    assert keys["next_bookmark"] == ("}", "N") and keys["reask"] == ("R",)
    portable = [QKeySequence(k).toString().lower() for ks in keymap().values() for k in ks]
    assert len(portable) == len(set(portable))
    assert all("Shift+[" not in k and "Shift+]" not in k for k, _ in describe(keymap()))


@pytest.fixture
def window(open_viewer, video, monkeypatch):
    fill_surg_r1(video)
    w = open_viewer(video)
    engine_ready(w)
    w.save_bookmark(300, "C1 visible")
    w.save_bookmark(900, "first clip")
    labels = ReviewLabels(w.session.store, reviewer="test")
    labels.set_phase(0, 450, "Preparation")  # the model says Calot there: disagreements before HERE
    labels.reject_item(1000, "instrument", "Grasper")  # and one after it
    w.review.session.reload()
    w.calls = []
    monkeypatch.setattr(w, "reask", lambda frame: w.calls.append(("reask", frame)))
    monkeypatch.setattr(main_window, "shortcuts_dialog", lambda *a: w.calls.append(("help",)))
    monkeypatch.setattr(
        main_window.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (w.calls.append(("open",)), "")[::-1])
    )
    monkeypatch.setattr(main_window.QInputDialog, "getText", staticmethod(lambda *a, **k: ("100", True)))

    def accept(dialog: BookmarkDialog) -> int:
        dialog.title.setText("by key")
        dialog.note.setText("pressed B")
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(BookmarkDialog, "exec", accept)
    return w


def test_every_documented_shortcut_fires_its_action(qtbot, window):
    w = window
    layer = {"toggle_boxes": "boxes", "toggle_triplets": "triplets", "toggle_phase": "phase", "toggle_cvs": "cvs"}

    def at(frame: int) -> Callable[[], bool]:
        return lambda: w.playhead.displayed == frame and not w.playhead.playing

    effects: dict[str, Callable[[dict], Callable[[], bool]]] = {
        "play_pause": lambda before: lambda: w.playhead.playing,
        "step_back": lambda before: at(HERE - 1),
        "step_forward": lambda before: at(HERE + 1),
        "second_back": lambda before: at(HERE - 25),
        "second_forward": lambda before: at(HERE + 25),
        "shuttle_back": lambda before: lambda: w.playhead.playing and w._shuttle < 0,
        "shuttle_forward": lambda before: lambda: w.playhead.playing and w._shuttle > 0,
        "first_frame": lambda before: at(0),
        "last_frame": lambda before: at(1499),
        "go_to": lambda before: at(100),
        "prev_phase": lambda before: at(before["phases"][0]),
        "next_phase": lambda before: at(before["phases"][1]),
        "prev_bookmark": lambda before: at(300),
        "next_bookmark": lambda before: at(900),
        "add_bookmark": lambda before: (
            lambda: any(b.frame == HERE and b.note == "pressed B" for b in w.session.bookmarks)
        ),
        "reask": lambda before: lambda: w.calls[-1:] == [("reask", HERE)],
        "pause_analysis": lambda before: lambda: w.analysis.paused != before["paused"],
        **{
            name: (lambda before, attr=attr: lambda: getattr(w.layers, attr) != before[attr])
            for name, attr in layer.items()
        },
        "review_phase": lambda before: lambda: closed(w.review.tracks.menu),
        "review_boundary": lambda before: lambda: HERE in w.review.session.boundaries(),
        **{
            f"review_c{k}": (lambda before, k=k: lambda: w.review.session.review.cvs_range_at(k, HERE) is not None)
            for k in (1, 2, 3)
        },
        "next_disagreement": lambda before: at(before["disagreements"][1]),
        "prev_disagreement": lambda before: at(before["disagreements"][0]),
        "open": lambda before: lambda: w.calls[-1:] == [("open",)],
        "help": lambda before: lambda: w.calls[-1:] == [("help",)],
        "quit": lambda before: lambda: not w.isVisible(),
    }
    assert set(effects) == {s.action for s in DEFAULTS}
    keys = keymap(w.settings)
    pressed = []
    for shortcut in DEFAULTS:
        for key in keys[shortcut.action]:
            if w.playhead.playing:
                w.toggle_play()
                qtbot.waitUntil(lambda: not w.playhead.playing, timeout=5000)
            w.seek(HERE)
            qtbot.waitUntil(at(HERE), timeout=5000)
            w.calls.clear()
            phases = (w.session.phase_target(-1), w.session.phase_target(1))
            assert phases[0] is not None and phases[0] < HERE < (phases[1] or 0)  # a boundary on each side
            w.activateWindow()  # a menu shown by the last key took the focus
            qtbot.waitUntil(w.isActiveWindow, timeout=3000)
            found = [w.review.session.next_disagreement(HERE, forward) for forward in (False, True)]
            before = {
                "disagreements": [d.frame if d is not None else None for d in found],
                "phases": phases,
                "paused": w.analysis.paused,
                **{a: getattr(w.layers, a) for a in layer.values()},
            }
            combo = QKeySequence(key)[0]
            qtbot.keyClick(w, combo.key(), combo.keyboardModifiers())
            qtbot.waitUntil(effects[shortcut.action](before), timeout=5000)
            pressed.append(key)
    assert {"{", "}", "?", "Space", "K", "F1", "Shift+D"} <= set(pressed)


def closed(menu) -> bool:
    """E showed the reviewer's phase menu: close it (as Esc would) once it is up."""
    if menu is None or not menu.isVisible():
        return False
    menu.close()
    return True
