"""The tasks a frame can be asked about: one vocabulary for the engine (profiles, prompts, the case
store's ``task`` key), the viewer and training (datasets, CoT sets, rewards).

``Task`` is a ``StrEnum``: a member equals its string (``Task.FRAME == "frame_analysis"``), so task
names read back from the case store, a recipe or the command line compare and look up as before.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TASK_LEVEL", "Task"]


class Task(StrEnum):
    PHASE = "phase"  # Level 3: surgical phase (free answer)
    PHASE_MCQ = "phase_mcq"  # Level 3: phase as a multiple-choice question (Surg-R1 release form)
    TOOLS = "tools"  # Level 1: instruments present
    LOCALISATION = "localisation"  # Level 1: box of one instrument
    TRIPLET = "triplet"  # Level 2: instrument-verb-target triplets
    CVS = "cvs"  # Level 3: Critical View of Safety criteria
    ACTION = "action"  # Level 2: what the instrument is doing now (SAR-RARP50 suturing actions)
    ACTION_MCQ = "action_mcq"  # Level 2: the action as a multiple-choice question (Surg-R1 release form)
    STEP = "step"  # Level 3: surgical step (MultiBypass140), finer than the phase
    FRAME = "frame_analysis"  # all three levels at once (the viewer's task)


TASK_LEVEL = {
    Task.TOOLS: 1,
    Task.LOCALISATION: 1,
    Task.TRIPLET: 2,
    Task.ACTION: 2,
    Task.ACTION_MCQ: 2,
    Task.PHASE: 3,
    Task.PHASE_MCQ: 3,
    Task.CVS: 3,
    Task.STEP: 3,
    Task.FRAME: 3,
}
"""The chain level at which each task's answer stands."""
