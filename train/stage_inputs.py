"""What the training stages read: recipe files, chat rows with their frames, the model to train,
the trainer settings they share, and which of many rows (:func:`evenly_spaced`).

SFT and GRPO (and the pipeline's own recipe) read the same kinds of input with the same rules, so
the rules live once: a recipe is a YAML mapping whose paths are relative to the file, read into a
subclass of trl's config by trl's own parser (:func:`parse_settings`, as open-r1 reads its
recipes), so a key that is no field of it is refused by the library; a user turn is laid out
exactly as the engine lays it out at run time (:func:`engine.prompts.user_content`); frame paths
are relative to the JSONL file and must exist; a model folder is checked by the engine's contract
and loaded from safetensors only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import yaml

from engine.modeldir import ModelDirError, ModelInfo, inspect_model_dir
from engine.prompts import IMAGE_PLACEHOLDER, user_content
from engine.textfiles import read_json_lines
from train.model_output import has_tensorboard

__all__ = [
    "StageRecipe",
    "checked_model",
    "evenly_spaced",
    "flat_settings",
    "image_dataset",
    "jsonl_rows",
    "load_stage_recipe",
    "load_trainable",
    "parse_settings",
    "placed_turns",
    "read_mapping",
    "resolve_path",
    "resolved_images",
]

ErrorType = Callable[[str], Exception]
T = TypeVar("T")


def evenly_spaced(n: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` of ``n`` items, spread evenly from the first (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    step = n / limit
    return [int(k * step) for k in range(limit)]


def resolve_path(base: Path, value: str | Path) -> Path:
    """``value`` (``~`` expanded) made absolute against ``base``, the folder of the file naming it."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def read_mapping(path: Path, error: ErrorType) -> dict[str, Any]:
    """A recipe file's YAML mapping; unreadable, invalid or non-mapping files raise ``error``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"recipe {path} must be a mapping")
    return data


def flat_settings(section: Mapping[str, Any], where: str, error: ErrorType) -> dict[str, Any]:
    """A section's settings with those grouped under ``trainer:`` lifted beside the rest.

    The shipped pipeline recipes group GRPO's trainer settings under ``trainer:`` (beside
    ``rewards``), and stage recipes written before the trainer configs became recipes did too.
    """
    settings = dict(section)
    grouped = settings.pop("trainer", None) or {}
    if not isinstance(grouped, dict):
        raise error(f"{where}: trainer must be a mapping")
    twice = sorted(set(grouped) & set(settings))
    if twice:
        raise error(f"{where}: {', '.join(twice)} given both in trainer: and beside it")
    return {**settings, **grouped}


def parse_settings(cls: type[T], settings: Any, where: str, error: ErrorType) -> T:
    """``settings`` read into the dataclass ``cls`` by trl's parser, every failure one line naming ``where``.

    A key that is no field of ``cls`` is refused by the parser itself (``allow_extra_keys=False``);
    a value the class refuses (trl's own checks in ``__post_init__``) is reported the same way.
    """
    from trl import TrlParser

    if not isinstance(settings, Mapping):
        raise error(f"{where} must be a mapping")
    try:
        (parsed,) = TrlParser([cls]).parse_dict(dict(settings), allow_extra_keys=False)
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split()).replace("Some keys are not used by the HfArgumentParser", "unknown key(s)")
        raise error(f"{where}: {message}") from None
    return parsed


def load_stage_recipe(path: Path, cls: type[T], name: str, error: ErrorType) -> T:
    """A stage's recipe (the top level, or the ``name:`` section) with its paths relative to the file."""
    path = Path(path)
    data = read_mapping(path, error)
    section = data.get(name, data)
    where = f"recipe {path}"
    if not isinstance(section, dict):
        raise error(f"{where}: {name} must be a mapping")
    settings = flat_settings(section, where, error)
    missing = [key for key in cls.PATHS if not settings.get(key)]
    if missing:
        raise error(f"{where}: missing {', '.join(missing)}")
    for key in cls.PATHS:
        settings[key] = str(resolve_path(path.parent, settings[key]))
    return parse_settings(cls, settings, where, error)


def jsonl_rows(path: Path, error: ErrorType) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; unreadable files and bad JSON raise ``error``."""
    yield from read_json_lines(path, error, on_bad_json=lambda number, exc: None)


def placed_turns(messages: list[dict[str, Any]], images: int) -> list[dict[str, Any]]:
    """Chat turns in trl's vision form, the frames where the user turns say ``<image>``.

    The engine's own layout, so a model is trained on exactly the prompt it will be asked at run
    time. Without placeholders, the first user turn takes every frame.
    """
    turns, unplaced = [], images
    for message in messages:
        content = message.get("content", "")
        if message.get("role") == "user" and isinstance(content, str) and unplaced:
            count = min(content.count(IMAGE_PLACEHOLDER) or unplaced, unplaced)
            turns.append({"role": "user", "content": user_content(content, count)})
            unplaced -= count
        else:
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            turns.append({"role": message["role"], "content": [{"type": "text", "text": text}]})
    return turns


def resolved_images(path: Path, number: int, images: list[str], error: ErrorType) -> list[str]:
    """A row's frame paths made absolute against the JSONL file's folder; a missing frame raises."""
    resolved = [str(resolve_path(Path(path).parent, p)) for p in images]
    for image in resolved:
        if not Path(image).is_file():
            raise error(f"{path}:{number}: image {image} not found")
    return resolved


def image_dataset(rows: list[dict[str, Any]]):
    """A datasets.Dataset whose ``images`` column holds decoded images (what trl's collators take)."""
    from datasets import Dataset, Image, Sequence

    return Dataset.from_list(rows).cast_column("images", Sequence(Image()))


def checked_model(model_dir: str | Path, error: ErrorType) -> ModelInfo:
    """The model folder checked by the engine's contract (before any data or weights are read)."""
    try:
        return inspect_model_dir(model_dir)
    except ModelDirError as exc:
        raise error(str(exc)) from exc


def load_trainable(info: ModelInfo, seed: int) -> tuple[Any, Any]:
    """The folder's model in float32 (safetensors only, no remote code) and its processor."""
    import torch
    import transformers

    from engine.vlm_processor import load_processor

    transformers.set_seed(seed)
    model = getattr(transformers, info.architecture).from_pretrained(
        info.path, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32
    )
    return model, load_processor(info.path)


@dataclass(kw_only=True)
class StageRecipe:
    """surgview's fields of a training stage, and the trainer settings SFT and GRPO share.

    Mixed in before trl's config class (``class SFTRecipe(StageRecipe, SFTConfig)``), so a recipe
    *is* the trainer's config and its keys are checked by trl's parser. The defaults here override
    trl's; ``None`` ones depend on the machine and are settled when the recipe is made.
    """

    PATHS: ClassVar[tuple[str, ...]] = ("model", "data", "output_dir")  # relative to the recipe file

    model: str | None = field(default=None, metadata={"help": "the model folder this stage starts from"})
    data: str | None = field(default=None, metadata={"help": "the JSONL set written by the CoT builder"})
    output_dir: str | None = field(default=None, metadata={"help": "stage folder: checkpoints/ and model/"})
    name: str = field(default="stage", metadata={"help": "the trained model's name in its manifest"})
    seed: int = 0
    bf16: bool | None = None  # None: on a GPU only (trl defaults it to True, which fails on CPU)
    use_cpu: bool | None = None  # None: when there is no GPU
    # None: TensorBoard when installed (the union in TrainingArguments' order: trl's parser reads it so)
    report_to: None | str | list[str] = None  # noqa: RUF036
    save_strategy: str = "steps"
    save_total_limit: int | None = 2
    dataloader_num_workers: int = 0
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "fit training to this many minutes: the schedule is laid out again over the steps that fit"},
    )
    # the settings as given (those that differ from the defaults), taken before anything is resolved: what a
    # stage's own recipe file repeats, so machine-dependent and derived values are settled where it runs
    given: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        self.given = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.init and getattr(self, f.name) != _default(f)
        }
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be a positive number of minutes, not {self.max_minutes}")
        on_gpu = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = on_gpu
        if self.use_cpu is None:
            self.use_cpu = not on_gpu
        if self.report_to is None:
            self.report_to = ["tensorboard"] if has_tensorboard() else []
        if getattr(self, "activation_checkpointing", False) is None:
            # trl still defaults the name transformers 5 deprecated; the same value under the new name, so
            # every run (and every one-line recipe error) is not preceded by a warning about a default
            self.activation_checkpointing = self.gradient_checkpointing
        super().__post_init__()  # trl's config, next in the subclass's MRO

    @property
    def checkpoints(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    def trainer_args(self) -> Self:
        """This recipe as the trainer's config, writing checkpoints under ``output_dir/checkpoints``.

        A copy with one field changed: making it anew would run trl's post-init twice, which GRPO
        refuses (its generation batch, derived once, would then be given twice).
        """
        args = copy.copy(self)
        args.output_dir = str(self.checkpoints)
        return args

    def require_paths(self, error: ErrorType) -> None:
        """A stage runs only with its paths given (a pipeline section leaves them to each stage; trl
        would have filled ``output_dir`` with ``trainer_output``)."""
        missing = [key for key in self.PATHS if not self.given.get(key)]
        if missing:
            raise error(f"the {self.name} recipe names no {', '.join(missing)}")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def train_resuming(trainer: Any, checkpoints: Path, resume: bool, max_minutes: float | None = None) -> dict[str, Any]:
    """Run ``trainer``, from the last checkpoint under ``checkpoints`` when ``resume`` and one exists. With
    ``max_minutes``, the run is fitted to that many minutes (:func:`time_fit`); what is returned then says so, for
    the stage's manifest: ``{"stopped_by_time_cap": minutes, "planned_steps": n, "fitted_steps": m}``."""
    import transformers

    last = transformers.trainer_utils.get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    cap = time_fit(max_minutes) if max_minutes else None
    if cap is not None:
        trainer.add_callback(cap)
    trainer.train(resume_from_checkpoint=last if (resume and last) else None)
    if cap is None or not cap.stopped:
        return {}
    return {"stopped_by_time_cap": max_minutes, "planned_steps": cap.planned_steps, "fitted_steps": cap.fitted_steps}


# steps left out of the rate a run's pace is measured by (the first ones pay for loader workers, CUDA start-up and
# compilation), then steps measured: a run too short for both keeps its plan and only the hard stop applies
PACE_SKIP_STEPS = 5
PACE_STEPS = 20
# the share of the minutes the fitted plan fills: later steps can run slower (checkpoints, logging, a busy machine)
PACE_MARGIN = 0.95


def time_fit(minutes: float, clock: Callable[[], float] | None = None) -> Any:
    """A trainer callback that fits a run to ``minutes``.

    A learning-rate schedule laid out for ``max_steps`` and cut off by a clock ends at a high rate: the model
    written is the one mid-schedule, never decayed. So once the run's pace is measured (``PACE_STEPS`` steps
    after ``PACE_SKIP_STEPS``), the steps that fit the minutes become the plan, and the same schedule (type,
    warm-up, its own settings) is laid out again over them, so it still ends decayed. A run slower than its
    pace said still stops at the first step past the minutes (saving a checkpoint), as a plain cap would.
    ``clock`` is for tests (default ``time.monotonic``)."""
    import time

    from transformers import TrainerCallback

    now = clock or time.monotonic

    class TimeFit(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.first_step = 0
            self.paced_from: float | None = None
            self.planned_steps: int | None = None
            self.fitted_steps: int | None = None
            self.stopped = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.first_step = now(), state.global_step
            self.planned_steps = int(state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if self.started is None:
                return control
            elapsed = now() - self.started
            done = state.global_step - self.first_step
            if done == PACE_SKIP_STEPS:
                self.paced_from = elapsed
            elif done == PACE_SKIP_STEPS + PACE_STEPS and self.paced_from is not None:
                self._fit(args, state, kwargs.get("lr_scheduler"), elapsed, (elapsed - self.paced_from) / PACE_STEPS)
            past_fit = self.fitted_steps is not None and state.global_step >= self.fitted_steps
            if elapsed >= minutes * 60 or past_fit:
                self.stopped = control.should_training_stop = control.should_save = True
            return control

        def _fit(self, args, state, scheduler, elapsed: float, pace: float) -> None:
            room = (minutes * 60 * PACE_MARGIN - elapsed) / pace if pace > 0 else float("inf")
            steps = state.global_step + max(1, int(room))
            # a warm-up longer than a tenth of the fitted run would leave no room to decay: it ends sooner (at the
            # step reached, where that is later)
            warmup = min(args.get_warmup_steps(steps), max(state.global_step, steps // 10))
            if steps >= state.max_steps or not relaid_schedule(args, scheduler, steps, warmup):
                return
            self.fitted_steps = state.max_steps = steps

    return TimeFit()


def relaid_schedule(args: Any, scheduler: Any, steps: int, warmup: int) -> bool:
    """Lay ``scheduler`` (the trainer's, a ``LambdaLR``) out again over ``steps`` with ``warmup`` steps of warm-up
    and ``args``' schedule type and settings, keeping its position; False where it is no ``LambdaLR`` (it is then
    left alone)."""
    import torch
    from transformers import get_scheduler

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper, where one is used
    if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
        return False
    spare = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = get_scheduler(
        args.lr_scheduler_type,
        optimizer=spare,
        num_warmup_steps=warmup,
        num_training_steps=steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(fresh, torch.optim.lr_scheduler.LambdaLR):
        return False
    inner.lr_lambdas = [fresh.lr_lambdas[0]] * len(inner.lr_lambdas)
    return True
