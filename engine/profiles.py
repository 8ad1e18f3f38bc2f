"""Model profiles: how a model is asked about a frame, the way it was trained to be asked.

A model answers best to the questions, system prompt and image size it was trained on. The one
released surgical reasoning model (Surg-R1, served by vLLM) answers three questions per frame at
840×476 with its own system prompt; surgview's own models answer one ``frame_analysis`` prompt;
a general Qwen2.5-VL or Qwen3-VL instruct model can be asked for the three levels in surgview's
format, each in the coordinates it was trained to give boxes in (Qwen2.5-VL: pixels of the image it
saw; Qwen3-VL: 0–1000 of that image's width and height). A :class:`ModelProfile` holds all of that:
the questions (each stored under its own task in the case store), the system prompt, how the frame is
sized and encoded, the sampling settings, and how the boxes a model answers map back to pixels of the
source frame. The answers of one frame merge into one record in :mod:`engine.frame_record`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache

import cv2
import numpy as np

from engine.backend_factory import LOCAL_KINDS
from engine.backends.base import GenerationRequest, StreamLimits
from engine.backends.onnx.inputs import grid_resize
from engine.modeldir import BOX_PIXELS, BOX_THOUSANDTHS
from engine.procedures import DEFAULT_PROCEDURE, procedure_for_version
from engine.prompts import load_prompts
from engine.tasks import Task

__all__ = [
    "BOX_PIXELS",
    "BOX_THOUSANDTHS",
    "DEFAULT_PROFILE",
    "PROFILE_NAMES",
    "ImageSpec",
    "ModelProfile",
    "ProfileError",
    "Question",
    "Sampling",
    "default_profile",
    "get_profile",
    "in_thousandths",
    "procedure_for_version",
    "profile_for_version",
    "qwen_grid_size",
    "resolve_profile",
    "thousandths_wording",
    "with_sampling",
]

DEFAULT_PROFILE = "surgview"

SURG_R1_SYSTEM = (
    "A conversation between User and Surgical Assistant. The user asks a question related, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
)
"""The Surg-R1 release's system prompt, verbatim (its demo server sends it with every question)."""

SURG_R1_QUESTIONS = (
    (
        Task.PHASE,
        "Phase",
        "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?",
    ),
    (
        Task.TRIPLET,
        "Action",
        "Given the laparoscopic cholecystectomy image <image>, describe the complete surgical action in terms of "
        "tool, action, and tissue.",
    ),
    (
        Task.LOCALISATION,
        "Tools",
        "Given the laparoscopic cholecystectomy image <image>, locate all the tools in the format of bbox "
        "(x1,y1), (x2,y2).",
    ),
)
"""The release's three questions per frame, verbatim: (store task, panel title, user prompt)."""

SURG_R1_VERSION = "surg-r1-release"
QWEN_VL_VERSION_PREFIX = "qwen-vl-"
QWEN3_VL_VERSION_PREFIX = "qwen3-vl-"
QWEN_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches merged 2x2
QWEN_MIN_PIXELS = 256 * 28 * 28  # 200704, the release's server setting
QWEN_MAX_PIXELS = 1280 * 28 * 28  # 1003520
QWEN3_FACTOR = 32  # Qwen3-VL: 16-pixel patches merged 2x2
QWEN3_MIN_PIXELS = 256 * 32 * 32  # the same 256 to 1280 image tokens as Qwen2.5-VL's bounds
QWEN3_MAX_PIXELS = 1280 * 32 * 32


class ProfileError(ValueError):
    """An unknown profile name, or a task a profile cannot ask."""


@dataclass(frozen=True)
class Question:
    """One question asked of every frame; its answers are stored under ``task``."""

    task: str
    title: str  # the reasoning panel's heading for this question's chain
    prompt: str  # the user turn; "<image>" marks the frame; {width}/{height}: the image the model sees


@dataclass(frozen=True)
class ImageSpec:
    """How the frame is sized before it is sent: as it is, to a fixed size, or to a Qwen VL grid (28 or 32 pixels)."""

    size: tuple[int, int] | None = None  # exact (width, height)
    qwen_grid: bool = False  # resize as a Qwen VL processor would (multiples of grid_factor, pixel bounds)
    grid_factor: int = QWEN_FACTOR
    min_pixels: int = QWEN_MIN_PIXELS
    max_pixels: int = QWEN_MAX_PIXELS
    jpeg_quality: int = 90


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 768


@dataclass(frozen=True)
class ModelProfile:
    name: str
    description: str
    version: str  # the case store's prompt_version: results are keyed on (model, version, task)
    system: str
    questions: tuple[Question, ...]
    image: ImageSpec = ImageSpec()
    sampling: Sampling = Sampling()
    box_units: str = BOX_PIXELS  # how the model's boxes are written: BOX_PIXELS or BOX_THOUSANDTHS

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(q.task for q in self.questions)

    def question(self, task: str) -> Question:
        for q in self.questions:
            if q.task == task:
                return q
        raise ProfileError(f"profile {self.name!r} asks no {task!r} question; it asks: {', '.join(self.tasks)}")

    def sent_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the image the model sees for a ``width`` x ``height`` source frame."""
        if self.image.size is not None:
            return self.image.size
        if self.image.qwen_grid:
            return qwen_grid_size(width, height, self.image.min_pixels, self.image.max_pixels, self.image.grid_factor)
        return width, height

    def box_scale(self, width: int, height: int) -> tuple[float, float]:
        """Factors that map the model's boxes (pixels of the sent image, or thousandths of it) to the source
        frame's pixels."""
        if self.box_units == BOX_THOUSANDTHS:
            return width / 1000, height / 1000
        sent_w, sent_h = self.sent_size(width, height)
        return width / sent_w, height / sent_h

    def prepare_image(self, frame: np.ndarray) -> np.ndarray:
        """The frame as the model sees it (RGB uint8), resized where the profile says so."""
        height, width = frame.shape[:2]
        size = self.sent_size(width, height)
        if size == (width, height):
            return frame
        interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_CUBIC
        return cv2.resize(frame, size, interpolation=interpolation)

    def prompt(self, task: str, width: int, height: int) -> str:
        """The user text of ``task`` for a source frame of ``width`` x ``height``."""
        sent_w, sent_h = self.sent_size(width, height)
        return _fill(self.question(task).prompt, sent_w, sent_h)

    def request(
        self,
        task: str,
        image: np.ndarray | None,
        width: int,
        height: int,
        max_tokens: int | None = None,
        limits: StreamLimits | None = None,
    ) -> GenerationRequest:
        """The generation request of one question about one frame (``image``: the prepared frame)."""
        return GenerationRequest(
            prompt=self.prompt(task, width, height),
            image=image,
            system=self.system,
            max_new_tokens=max_tokens or self.sampling.max_tokens,
            temperature=self.sampling.temperature,
            top_p=self.sampling.top_p,
            limits=limits or StreamLimits(),
        )


def _fill(template: str, width: int, height: int) -> str:
    # Only the size fields are filled here; the ontology's lists were filled when the profile was built.
    return template.replace("{width}", str(width)).replace("{height}", str(height))


def qwen_grid_size(
    width: int,
    height: int,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
    factor: int = QWEN_FACTOR,
) -> tuple[int, int]:
    """Qwen2.5-VL's ``smart_resize``: each side a multiple of ``factor`` (28; Qwen3-VL's is 32), the area within
    the pixel bounds, the aspect ratio kept as well as that allows. Boxes a Qwen2.5-VL model answers are in these
    pixels."""
    h, w = grid_resize(height, width, factor, min_pixels, max_pixels)
    return w, h


# ------------------------------------------------------------------------------------- the shipped profiles
def _surgview(task: str, procedure: str | None = None) -> ModelProfile:
    prompts = load_prompts()
    own = procedure if procedure and procedure != DEFAULT_PROCEDURE else None
    system, templates = prompts.for_procedure(own)
    template = templates.get(task)
    if template is None:
        where = f" of procedure {own!r}" if own else ""
        raise ProfileError(f"no prompt for task {task!r}{where}; known: {', '.join(templates)}")
    size_fields = {name: "{" + name + "}" for name in ("width", "height") if name in template.fields}
    text = prompts.build(task, procedure=own, **size_fields)
    title = "Frame analysis" if task == Task.FRAME else task.replace("_", " ").capitalize()
    return ModelProfile(
        name="surgview",
        description="surgview's own prompts: one question per frame (a model trained by surgview-train)",
        # Another procedure's prompts are other prompts: its answers are stored apart.
        version=prompts.version if own is None else f"{prompts.version}+{own}",
        system=system,
        questions=(Question(task, title, text),),
    )


def _surg_r1() -> ModelProfile:
    return ModelProfile(
        name="surg-r1",
        description="the Surg-R1 release's serving setup: its system prompt, three questions per frame, 840×476",
        version=SURG_R1_VERSION,
        system=SURG_R1_SYSTEM,
        questions=tuple(Question(task, title, prompt) for task, title, prompt in SURG_R1_QUESTIONS),
        image=ImageSpec(size=(840, 476)),
        sampling=Sampling(temperature=0.1, top_p=0.95, max_tokens=1024),
    )


def _qwen_vl() -> ModelProfile:
    base = _surgview(Task.FRAME)
    return ModelProfile(
        name="qwen-vl",
        description="a general Qwen2.5-VL instruct model asked for the three levels in surgview's format",
        version=QWEN_VL_VERSION_PREFIX + base.version,
        system=base.system,
        questions=base.questions,
        image=ImageSpec(qwen_grid=True),
        sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=1024),
    )


# What surgview's prompts say about box coordinates, and what a model that gives thousandths is asked instead.
_PIXEL_WORDING = re.compile(r"in pixels of the (?:original|\{width\}x\{height\}|\d+x\d+) frame")
_THOUSANDTHS_WORDING = "with x and y from 0 to 1000 across the frame's width and height"


def thousandths_wording(text: str) -> str:
    """``text`` (a system prompt or a question, filled or not) asking for boxes in 0–1000 coordinates where it asks
    for pixels: how a model trained on thousandths is asked, at training and at inference alike."""
    return _PIXEL_WORDING.sub(_THOUSANDTHS_WORDING, text)


def in_thousandths(profile: ModelProfile) -> ModelProfile:
    """``profile`` asking for boxes in 0–1000 coordinates wherever its texts ask for pixels, and mapping them so."""
    questions = tuple(replace(q, prompt=thousandths_wording(q.prompt)) for q in profile.questions)
    return replace(profile, system=thousandths_wording(profile.system), questions=questions, box_units=BOX_THOUSANDTHS)


def _qwen3_vl() -> ModelProfile:
    base = _qwen_vl()
    asked = in_thousandths(base)
    if asked.system == base.system or asked.questions == base.questions:
        raise ProfileError("surgview's prompts no longer say how boxes are written; the qwen3-vl profile cannot ask")
    return replace(
        asked,
        name="qwen3-vl",
        description="a general Qwen3-VL instruct model asked for the three levels, boxes in its 0–1000 coordinates",
        version=QWEN3_VL_VERSION_PREFIX + _surgview(Task.FRAME).version,
        image=ImageSpec(
            qwen_grid=True, grid_factor=QWEN3_FACTOR, min_pixels=QWEN3_MIN_PIXELS, max_pixels=QWEN3_MAX_PIXELS
        ),
    )


_BUILDERS = {
    "surgview": lambda: _surgview(Task.FRAME),
    "surg-r1": _surg_r1,
    "qwen-vl": _qwen_vl,
    "qwen3-vl": _qwen3_vl,
}
PROFILE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


@cache
def _profile(name: str) -> ModelProfile:
    return _BUILDERS[name]()


def get_profile(name: str | None = None, task: str | None = None, procedure: str | None = None) -> ModelProfile:
    """The profile called ``name`` (default ``surgview``). ``task`` picks the one question of the
    ``surgview`` profile (e.g. ``phase_mcq`` for an evaluation); other profiles ask what they ask.
    ``procedure`` (canonical name; None: cholecystectomy) asks in that procedure's prompts and
    vocabularies: the ``surgview`` profile asks its ``default_task`` unless ``task`` says otherwise."""
    name = name or DEFAULT_PROFILE
    if name not in _BUILDERS:
        raise ProfileError(f"unknown model profile {name!r}; choose from {', '.join(PROFILE_NAMES)}")
    if procedure and procedure != DEFAULT_PROCEDURE:
        return _for_procedure(name, task, procedure)
    if name == "surgview" and task and task != Task.FRAME:
        return _surgview(task)
    profile = _profile(name)
    if task and task not in profile.tasks:
        raise ProfileError(f"profile {name!r} asks its own questions ({', '.join(profile.tasks)}); drop --task")
    return profile


def _for_procedure(name: str, task: str | None, procedure: str) -> ModelProfile:
    """Another procedure's profile: surgview's own question in its prompts; the surg-r1 and qwen-vl
    settings (system prompt, image size, sampling) asking that question."""
    from engine.procedures import get_procedure

    proc = get_procedure(procedure)
    question = task or proc.default_task
    if question not in proc.tasks:
        raise ProfileError(f"procedure {proc.name!r} has no {question!r} task; it has: {', '.join(proc.tasks)}")
    own = _surgview(question, proc.name)
    if name == "surgview":
        return own
    base = _profile(name)
    system = base.system if name == "surg-r1" else own.system
    asked = replace(base, version=f"{base.version}+{proc.name}", system=system, questions=own.questions)
    return in_thousandths(asked) if base.box_units == BOX_THOUSANDTHS else asked


def profile_for_version(prompt_version: str) -> str:
    """Which profile stored results of ``prompt_version`` (the case store keeps the version, not the name).
    Another procedure's answers carry ``+<procedure>`` after the profile's own version."""
    prompt_version = prompt_version.split("+", 1)[0]
    if prompt_version == SURG_R1_VERSION:
        return "surg-r1"
    if prompt_version.startswith(QWEN3_VL_VERSION_PREFIX):
        return "qwen3-vl"
    if prompt_version.startswith(QWEN_VL_VERSION_PREFIX):
        return "qwen-vl"
    return "surgview"


def default_profile(
    manifest_profile: str | None, has_manifest: bool, model_name: str | None, architecture: str | None = None
) -> tuple[str, str]:
    """The profile to use when none was chosen, and one line saying why.

    A surgview manifest names its profile (``surgview`` when it says nothing: surgview trained it).
    A folder or a server without one is most likely the Surg-R1 release when its name says so, else
    a general Qwen-VL instruct model: a Qwen3-VL (its folder's architecture, or a name that says so) gives
    boxes in thousandths, which only the ``qwen3-vl`` profile maps right.
    """
    if manifest_profile:
        if manifest_profile not in _BUILDERS:
            raise ProfileError(
                f"the model's manifest names profile {manifest_profile!r}, which this surgview does not know "
                f"({', '.join(PROFILE_NAMES)})"
            )
        return manifest_profile, f"profile {manifest_profile} (named in the model's manifest)"
    if has_manifest:
        return "surgview", "profile surgview (a surgview model)"
    plain_name = re.sub(r"[^a-z0-9]", "", (model_name or "").lower())
    if "surgr1" in plain_name:
        return "surg-r1", f"profile surg-r1 (default for a model called {model_name!r}; choose with --profile)"
    if architecture == "Qwen3VLForConditionalGeneration" or "qwen3vl" in plain_name:
        why = "default for a Qwen3-VL without a surgview manifest; choose with --profile"
        return "qwen3-vl", f"profile qwen3-vl ({why})"
    return "qwen-vl", "profile qwen-vl (default for a model without a surgview manifest; choose with --profile)"


def with_sampling(profile: ModelProfile, **changes: float | int) -> ModelProfile:
    """A copy of ``profile`` with other sampling settings (e.g. a longer token cap)."""
    return replace(profile, sampling=replace(profile.sampling, **changes))


def resolve_profile(
    name: str | None, *, kind: str, model: str | None, task: str | None = None, procedure: str | None = None
) -> tuple[ModelProfile, str]:
    """The profile to ask a model with, and one line saying which and why.

    ``name`` is the user's choice (``--profile``, Preferences); without one, a local model folder's
    manifest decides, and a folder or a server without one gets :func:`default_profile`'s default. A manifest's
    ``box_units: thousandths`` (a model trained on 0–1000 boxes) asks and maps boxes so under any profile.
    """
    manifest_profile, has_manifest, model_name, architecture, box_units = None, False, model, None, None
    if kind in LOCAL_KINDS and model:
        from pathlib import Path

        from engine.modeldir import MANIFEST_NAME, Manifest, ModelDirError, config_architecture

        folder = Path(model).expanduser()
        model_name = folder.name
        architecture = config_architecture(folder)
        if (folder / MANIFEST_NAME).is_file():
            try:
                manifest = Manifest.read(folder)
            except ModelDirError:
                manifest = None  # the backend reports the bad manifest when it loads the folder
            has_manifest = manifest is not None
            manifest_profile = manifest.profile if manifest is not None else None
            box_units = manifest.box_units if manifest is not None else None
    if name:
        chosen, note = name, f"profile {name}"
    else:
        chosen, note = default_profile(manifest_profile, has_manifest, model_name, architecture)
    profile = get_profile(chosen, task, procedure)
    if box_units == BOX_THOUSANDTHS and profile.box_units != BOX_THOUSANDTHS:
        # the model was trained to write boxes in thousandths: asked so and mapped so, whichever prompts it is asked in
        return in_thousandths(profile), f"{note}, boxes in 0–1000 coordinates (the model's manifest)"
    return profile, note
