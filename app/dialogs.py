"""What every small dialog of the viewer ends with, written once."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout

__all__ = ["add_ok_cancel"]


def add_ok_cancel(dialog: QDialog, form: QFormLayout, on_ok: Callable[[], None] | None = None) -> QDialogButtonBox:
    """OK and Cancel as the form's last row; OK accepts (or runs ``on_ok``, which may check first)."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(on_ok or dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    return buttons
