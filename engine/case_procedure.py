"""Which procedure a case shows, remembered per case.

A case is keyed, as its case store is, by the video's content fingerprint, so a renamed or moved
video keeps its procedure. The choice lives in a small JSON file beside the case store
(``data_home()/cases/<fingerprint>.procedure.json``) rather than in the store's schema, so an older
store, a read-only store or a store being migrated is never touched to record it. Without a stored
choice the video's own layout is a hint (SAR-RARP50's ``video_XX/video_left.avi``, MultiBypass140's
``BBPnn``/``SBPnn`` names), else the default procedure (cholecystectomy).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.procedures import DEFAULT_PROCEDURE, Procedure, ProcedureError, get_procedure
from engine.store import video_fingerprint
from engine.userdata import data_home

__all__ = ["CaseProcedure", "ProcedureChoiceError", "case_procedure", "guess_procedure", "set_case_procedure"]

_BYPASS_NAME = re.compile(r"^[BS]BP\d{2}\b", re.IGNORECASE)


class ProcedureChoiceError(Exception):
    """The stored choice cannot be read or written (one line, naming the file)."""


@dataclass(frozen=True)
class CaseProcedure:
    procedure: Procedure
    source: str  # "chosen" (stored for this case), "layout" (the video's folder says) or "default"
    note: str  # one line saying why, for a status bar or a log


def _path(fingerprint: str) -> Path:
    return data_home() / "cases" / f"{fingerprint}.procedure.json"


def guess_procedure(video: Path) -> str | None:
    """The procedure a dataset's own layout implies, or None."""
    video = Path(video)
    if video.name == "video_left.avi" and re.fullmatch(r"video_\d+", video.parent.name):
        return "rarp"
    if _BYPASS_NAME.match(video.name):
        return "bypass"
    return None


def case_procedure(video: Path, fingerprint: str | None = None) -> CaseProcedure:
    """The procedure of the case ``video``: the stored choice, else the layout's hint, else the default."""
    fingerprint = fingerprint or video_fingerprint(Path(video))
    path = _path(fingerprint)
    if path.is_file():
        try:
            name = json.loads(path.read_text(encoding="utf-8"))["procedure"]
            proc = get_procedure(str(name))
        except (OSError, ValueError, KeyError, TypeError, ProcedureError) as exc:
            raise ProcedureChoiceError(f"{path}: cannot read the case's procedure: {exc}") from None
        return CaseProcedure(proc, "chosen", f"procedure {proc.name} (chosen for this case)")
    guessed = guess_procedure(Path(video))
    if guessed is not None:
        proc = get_procedure(guessed)
        return CaseProcedure(proc, "layout", f"procedure {proc.name} (from the dataset layout of {Path(video).name})")
    proc = get_procedure(DEFAULT_PROCEDURE)
    return CaseProcedure(proc, "default", f"procedure {proc.name} (default; choose with --procedure)")


def set_case_procedure(video: Path, procedure: str, fingerprint: str | None = None) -> Procedure:
    """Remember ``procedure`` (any spelling) for the case ``video``; returns the canonical procedure."""
    proc = get_procedure(procedure)
    fingerprint = fingerprint or video_fingerprint(Path(video))
    path = _path(fingerprint)
    record = {"procedure": proc.name, "set_at": datetime.now(UTC).isoformat(timespec="seconds")}
    part = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ProcedureChoiceError(f"{path}: cannot record the case's procedure: {exc.strerror or exc}") from None
    return proc
