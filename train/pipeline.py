"""The four-stage pipeline in one command: ``surgview-train run RECIPE.yaml``.

data → CoT → SFT → GRPO → self-iteration rounds → evaluation → export, for the hierarchical
chain and (``ablation: true``) for the same stages answering directly, without the chain.

Every stage leaves an artifact in the run folder and is skipped when that artifact exists, so an
interrupted run started again resumes at the stage it stopped in (and the trainers inside a stage
resume from their last checkpoint). Each training stage also writes its own recipe YAML beside
its output, so any stage can be rerun alone (``surgview-train sft|grpo STAGE.yaml``) or under
``accelerate launch`` (recipe key ``accelerate``: ddp, fsdp, zero3 or a config file).

The recipe's ``sft:`` and ``grpo:`` sections (and ``iterate``'s) are the stages' own recipe classes,
trl's ``SFTConfig`` / ``GRPOConfig`` with surgview's fields, read by trl's parser like every other
section (:func:`train.stage_inputs.parse_settings`): a misspelt key fails at load, before any stage.

At the end a table shows what each stage bought on held-out cases (the paper's ablation): SFT;
+ GRPO; + each iteration round; and the direct-answer variant of each.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from engine.modeldir import BOX_PIXELS, BOX_UNITS, Manifest, Stage, inspect_model_dir
from engine.ontology import normalise_key
from engine.tasks import Task
from train.cot.datasets import chain_row, write_jsonl
from train.cot.procedure_sets import write_procedure_grpo_set, write_procedure_sft_set
from train.data.repeat_factor import repeat_factor_sampled
from train.data.sample import Sample
from train.grpo.rewards import REWARDS
from train.grpo.stage import GRPORecipe
from train.image_budget import ImageBudgetError, set_image_pixels
from train.iterate import IterationConfig
from train.model_output import replace_tree
from train.rope_layout import RopeLayoutError, interleave_mrope
from train.sft import SFTRecipe
from train.stage_inputs import StageRecipe, evenly_spaced, flat_settings, parse_settings, read_mapping, resolve_path

__all__ = [
    "DataSpec",
    "IterationRounds",
    "PipelineError",
    "PipelineRecipe",
    "check_recipe",
    "load_pipeline_recipe",
    "run_pipeline",
    "stage_settings",
    "write_stage_recipe",
]

Say = Callable[[str], None]
ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "accelerate"


class PipelineError(Exception):
    """A recipe or a stage that cannot go on; the message says why in one line."""


@dataclass
class SyntheticSpec:
    train_cases: int = 4
    test_cases: int = 2
    minutes: float = 2.0
    seed: int = 0
    width: int = 640
    height: int = 360
    procedure: str = "cholecystectomy"  # or rarp: robotic suturing cases in SAR-RARP50's layout (train.synth.rarp)


@dataclass
class DataSpec:
    """Where samples come from: synthetic cases, or the real datasets' folders (official splits)."""

    synthetic: SyntheticSpec | None = None
    cholec80: str | None = None  # folder with videos/, phase_annotations/, tool_annotations/
    cholect50: str | None = None  # folder with labels/ and videos/
    endoscapes: str | None = None  # folder with all_metadata.csv (and the frames or videos)
    sar_rarp50: str | None = None  # folder with train1/, train2/, test/ of video_NN folders (action tasks)
    reviewed: list[str] | None = None  # reviewed cases for training (case stores, videos, label exports)
    reviewed_test: list[str] | None = None  # reviewed cases held out for evaluation
    tasks: list[str] = field(default_factory=lambda: ["phase"])
    fps: float = 1.0
    frame_size: list[int] | None = field(default_factory=lambda: [224, 126])  # cached frames (w, h)
    max_train: int | None = None  # evenly spaced subsample of the training samples
    max_test: int | None = None
    # The last N training cases set aside, never trained on: the validation split choices such as the
    # self-iteration round's learning rate are tuned on (the held-out set only judges the result).
    validation_cases: int = 0
    max_validation: int | None = None
    # Phase → how many times each of its training samples is used (whole numbers >= 1): more of the frames where
    # the hard calls are made (CVS is decided in Calot triangle dissection) without new rendering.
    oversample: dict[str, int] | None = None
    # LVIS repeat-factor sampling over instrument classes (train/data/repeat_factor.py): a frame showing a class seen
    # in fewer than this fraction of training frames is repeated sqrt(threshold / fraction) times. None: off.
    repeat_factor_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.synthetic is None and not (
            self.cholec80 or self.cholect50 or self.endoscapes or self.sar_rarp50 or self.reviewed
        ):
            raise ValueError("data needs synthetic settings, a dataset folder or reviewed cases")
        unknown = [t for t in self.tasks if t not in {t.value for t in Task}]
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; known: {', '.join(t.value for t in Task)}")


@dataclass(frozen=True)
class IterationRounds(IterationConfig):
    """Self-iteration: how many rounds, how to sample, and each round's SFT and GRPO settings."""

    rounds: int = 1
    seed: int | None = None  # None: the pipeline's seed plus the round
    # Candidate learning rates for each round's SFT: each is trained, and the one whose model scores best on the
    # validation split (arena score; a tie goes to the gentler rate) goes on to the round's GRPO. None: sft's own.
    learning_rates: list[float] | None = None
    sft: SFTRecipe = field(default_factory=SFTRecipe)
    grpo: GRPORecipe = field(default_factory=GRPORecipe)


@dataclass
class EvaluationSpec:
    max_new_tokens: int = 256
    batch_size: int = 16


@dataclass
class GrowSpec:
    """A deeper copy of the base model to start from (train.grow: block expansion); None keeps a depth as it is."""

    vision_depth: int | None = None
    text_layers: int | None = None


@dataclass
class ExportSpec:
    onnx: bool = False  # also write the ONNX graphs (train.onnx_export)
    # Which stage's model of the first variant is exported: "sft", "grpo" or "iterN"; None: the last stage. A
    # stage measured to add nothing (a short GRPO) need not be what ships.
    stage: str | None = None


@dataclass
class PipelineRecipe:
    name: str
    out: str  # the run folder
    data: DataSpec
    seed: int = 0
    base_model: str = "tiny"  # engine.tiny_model size ("tiny", "small", "demo") or a model directory
    # Read frames at this many pixels (min = max) instead of the base model's own budget: a model continued at a
    # higher resolution (train.image_budget). None: the base model's processor as it is.
    image_pixels: int | None = None
    # "interleaved": the base model's decoder reads image rows and columns on fast and slow rotary frequencies
    # alike (train.rope_layout); None: its M-RoPE layout as it is.
    mrope: str | None = None
    # Grow the base model folder before the first SFT (more capacity, its skills kept): {vision_depth, text_layers}.
    grow: GrowSpec | None = None
    canonical_chains: bool = False  # one fixed phrasing per level (very small models learn it faster)
    # How the chains write boxes: "pixels" of the frame, or "thousandths" (0-1000 across it, as Qwen2-VL and Qwen3-VL
    # were pretrained). Every model the run trains records it in its manifest, and is asked and mapped so.
    box_units: str = BOX_PIXELS
    sft: SFTRecipe = field(default_factory=SFTRecipe)  # every SFT stage's settings but model, data, folder
    grpo: GRPORecipe = field(default_factory=GRPORecipe)  # likewise for GRPO (rewards: the chain variant's)
    iterate: IterationRounds = field(default_factory=IterationRounds)
    ablation: bool = True  # also train and evaluate the direct-answer variant
    # Which variants to train, the first exported; None: chain (and direct with ablation). [direct] makes a
    # neutral warm-up model: it learns to read the frames without learning the chain's form.
    variants: list[str] | None = None
    direct_rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    accelerate: str | None = None  # run the training stages under accelerate launch with this config

    @property
    def rounds(self) -> int:
        return self.iterate.rounds


PER_STAGE = frozenset(StageRecipe.PATHS) | {"name"}  # set by the pipeline for each stage


def _stage_section(cls: type[StageRecipe], section: Any, where: str, managed: frozenset[str] = PER_STAGE):
    """A trainer section read into its stage recipe class; keys the pipeline sets per stage are refused."""
    section = section or {}
    if not isinstance(section, dict):
        raise PipelineError(f"{where} must be a mapping")
    recipe = parse_settings(cls, flat_settings(section, where, PipelineError), where, PipelineError)
    clash = sorted(set(recipe.given) & managed)
    if clash:
        raise PipelineError(f"{where}: {', '.join(clash)} are set by the pipeline for each stage")
    return recipe


def load_pipeline_recipe(path: Path) -> PipelineRecipe:
    """Read and check a recipe; relative paths are relative to the recipe file."""
    path = Path(path)
    where = f"recipe {path}"
    raw = dict(read_mapping(path, PipelineError))

    def section(cls: type, value: Any, key: str) -> Any:
        return parse_settings(cls, value or {}, f"{where}: {key}", PipelineError)

    data = raw.get("data") or {}
    if isinstance(data, dict) and data.get("synthetic") is not None:
        data = {**data, "synthetic": section(SyntheticSpec, data["synthetic"], "data.synthetic")}
    iterate = raw.get("iterate") or {}
    if not isinstance(iterate, dict):
        raise PipelineError(f"{where}: iterate must be a mapping")
    iterate = {
        **iterate,
        "sft": _stage_section(SFTRecipe, iterate.get("sft"), f"{where}: iterate.sft"),
        "grpo": _stage_section(GRPORecipe, iterate.get("grpo"), f"{where}: iterate.grpo", PER_STAGE | {"rewards"}),
    }
    sections = {
        "data": section(DataSpec, data, "data"),
        "sft": _stage_section(SFTRecipe, raw.get("sft"), f"{where}: sft"),
        "grpo": _stage_section(GRPORecipe, raw.get("grpo"), f"{where}: grpo"),
        "iterate": section(IterationRounds, iterate, "iterate"),
        "evaluation": section(EvaluationSpec, raw.get("evaluation"), "evaluation"),
        "export": section(ExportSpec, raw.get("export"), "export"),
    }
    if raw.get("grow") is not None:
        sections["grow"] = section(GrowSpec, raw["grow"], "grow")
    recipe = parse_settings(PipelineRecipe, {**raw, **sections}, where, PipelineError)
    for key in ("cholec80", "cholect50", "endoscapes"):
        value = getattr(recipe.data, key)
        if value is not None:
            setattr(recipe.data, key, str(resolve_path(path.parent, value)))
    for key in ("reviewed", "reviewed_test"):
        value = getattr(recipe.data, key)
        if value is not None:
            setattr(recipe.data, key, [str(resolve_path(path.parent, v)) for v in value])
    recipe.out = str(resolve_path(path.parent, recipe.out))
    from engine.tiny_model import SIZES

    if recipe.base_model not in SIZES:
        recipe.base_model = str(resolve_path(path.parent, recipe.base_model))
    if recipe.accelerate and not Path(recipe.accelerate).suffix:
        recipe.accelerate = str(ACCELERATE_CONFIGS / f"{recipe.accelerate}.yaml")
    return recipe


def check_recipe(recipe: PipelineRecipe) -> None:
    """What loading cannot see: the rewards named outside a GRPO section, the accelerate config, the rounds."""
    if recipe.box_units not in BOX_UNITS:
        raise PipelineError(f"box_units must be one of {', '.join(BOX_UNITS)}; got {recipe.box_units!r}")
    if recipe.box_units != BOX_PIXELS and recipe.data.reviewed:
        raise PipelineError(
            f"box_units {recipe.box_units} with data.reviewed: reviewer-accepted chains keep the boxes their model "
            "wrote; train on reviewed cases in pixels"
        )
    for name in [*recipe.direct_rewards, *recipe.iterate.thresholds]:
        if name not in REWARDS:
            raise PipelineError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}")
    if recipe.accelerate and not Path(recipe.accelerate).is_file():
        raise PipelineError(f"no accelerate config {recipe.accelerate}")
    if recipe.rounds < 0:
        raise PipelineError("iterate.rounds must be 0 or more")
    from engine.tiny_model import SIZES

    if recipe.mrope not in (None, "interleaved"):
        raise PipelineError(f"mrope must be interleaved (or left out); got {recipe.mrope!r}")
    if recipe.grow is not None and recipe.base_model in SIZES:
        raise PipelineError(f"grow: base_model {recipe.base_model!r} is built at its size; grow a model folder")
    rates = recipe.iterate.learning_rates
    if rates is not None and (not rates or any(not isinstance(r, int | float) or r <= 0 for r in rates)):
        raise PipelineError(f"iterate.learning_rates must be positive numbers; got {rates}")
    if rates and recipe.rounds and recipe.data.validation_cases < 1:
        raise PipelineError(
            "iterate.learning_rates are tuned on a validation split: set data.validation_cases (never the held-out set)"
        )
    if recipe.data.validation_cases < 0:
        raise PipelineError("data.validation_cases must be 0 or more")
    for phase, times in (recipe.data.oversample or {}).items():
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise PipelineError(f"data.oversample.{phase} must be a whole number of 1 or more; got {times!r}")
    threshold = recipe.data.repeat_factor_threshold
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1
    ):
        raise PipelineError(f"data.repeat_factor_threshold must be a fraction of frames in (0, 1]; got {threshold!r}")
    stage = recipe.export.stage
    stages = {"sft", "grpo"} | {f"iter{k}" for k in range(1, recipe.rounds + 1)}
    if stage is not None and stage not in stages:
        raise PipelineError(f"export.stage must be one of {', '.join(sorted(stages))}; got {stage!r}")
    if recipe.image_pixels is not None and (not isinstance(recipe.image_pixels, int) or recipe.image_pixels <= 0):
        raise PipelineError(f"image_pixels must be a positive whole number of pixels; got {recipe.image_pixels!r}")
    named = recipe.variants
    if named is not None and (not named or set(named) - {"chain", "direct"} or len(set(named)) < len(named)):
        raise PipelineError(f"variants must name chain and/or direct, once each; got {recipe.variants}")


def recipe_record(value: Any) -> Any:
    """The recipe as the run folder records it: plain values, each trainer section as given."""
    if isinstance(value, StageRecipe):
        return value.given
    if is_dataclass(value):
        return {f.name: recipe_record(getattr(value, f.name)) for f in fields(value)}
    return value


def stage_settings(
    recipe: PipelineRecipe, section: StageRecipe, base: Path, data: Path, folder: Path, name: str, **extra: Any
) -> dict[str, Any]:
    """One stage's recipe: its section's settings as given, with this stage's model, data and folder."""
    return {
        "seed": recipe.seed,
        **section.given,
        "model": str(base),
        "data": str(data),
        "output_dir": str(folder),
        "name": name,
        **extra,
    }


def write_stage_recipe(kind: str, settings: dict[str, Any], folder: Path) -> Path:
    """``folder/KIND.yaml``: the stage's recipe, runnable alone (keys in order: rewards pair with their weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file = folder / f"{kind}.yaml"
    recipe_file.write_text(yaml.safe_dump({kind: settings}, sort_keys=False), encoding="utf-8")
    return recipe_file


# ----------------------------------------------------------------------------- data
def _spread(items: list, limit: int | None) -> list:
    return [items[k] for k in evenly_spaced(len(items), limit)]


def oversampled(samples: list[Sample], repeats: Mapping[str, int] | None) -> list[Sample]:
    """Each sample whose phase ``repeats`` names, that many times (in place, so the order stays case by case).
    A named phase no sample has is refused: a misspelt phase would otherwise change nothing, silently."""
    if not repeats:
        return samples
    wanted = {normalise_key(name): times for name, times in repeats.items()}
    present = {normalise_key(s.truth.phase) for s in samples if s.truth.phase}
    missing = [name for name in repeats if normalise_key(name) not in present]
    if missing:
        raise PipelineError(f"data.oversample names {missing[0]!r}, a phase no training sample has")
    out: list[Sample] = []
    for sample in samples:
        out += [sample] * (wanted.get(normalise_key(sample.truth.phase), 1) if sample.truth.phase else 1)
    return out


def _real_samples(spec: DataSpec, tasks: set[Task]) -> tuple[list[Sample], list[Sample]]:
    from train.data.cholec80 import cholec80_samples
    from train.data.cholect50 import cholect50_samples
    from train.data.endoscapes import endoscapes_samples

    samples: list[Sample] = []
    if spec.cholec80:
        wanted = tasks & {Task.PHASE, Task.TOOLS}
        samples += cholec80_samples(spec.cholec80, fps=spec.fps, tasks=wanted) if wanted else []
    if spec.cholect50:
        wanted = tasks & {Task.TRIPLET, Task.TOOLS, Task.PHASE}
        samples += cholect50_samples(spec.cholect50, tasks=wanted) if wanted else []
    if spec.endoscapes and Task.CVS in tasks:
        samples += endoscapes_samples(spec.endoscapes)
    if spec.sar_rarp50 and tasks & {Task.ACTION, Task.ACTION_MCQ}:
        samples += _sar_rarp50(spec.sar_rarp50, spec, tasks)
    train = [s for s in samples if s.split == "train" and s.task in tasks]
    test = [s for s in samples if s.split == "test" and s.task in tasks]
    return train, test


def _sar_rarp50(root: str | Path, spec: DataSpec, tasks: set[Task]) -> list[Sample]:
    """SAR-RARP50 action samples at ``spec.fps`` (its rows are at 10 Hz)."""
    from train.data.sar_rarp50 import sar_rarp50_samples

    wanted = tasks & {Task.ACTION, Task.ACTION_MCQ}
    return sar_rarp50_samples(root, tasks=wanted, every=max(1, round(10 / spec.fps))) if wanted else []


@dataclass
class Samples:
    """What the stages learn from and are judged on; ``chains``: reviewer-accepted chains and their cached
    frames; ``reviewed``: the reviewed cases that went in (for the lineage)."""

    train: list[Sample]
    test: list[Sample]
    chains: list[tuple[Any, Sample]] = field(default_factory=list)
    reviewed: list[Any] = field(default_factory=list)
    validation: list[Sample] = field(default_factory=list)  # cases set aside from training (data.validation_cases)


def split_off_cases(samples: list[Sample], n: int) -> tuple[list[Sample], list[Sample]]:
    """The samples of all but the last ``n`` cases (in name order), and those of the last ``n``: a split by case,
    so no frame of a validation case, nor its neighbours, is ever trained on."""
    cases = sorted({(s.dataset, s.case) for s in samples})
    if n >= len(cases):
        raise PipelineError(f"data.validation_cases {n} leaves no training case ({len(cases)} in all)")
    held = set(cases[len(cases) - n :])
    return [s for s in samples if (s.dataset, s.case) not in held], [s for s in samples if (s.dataset, s.case) in held]


def recipe_samples(recipe: PipelineRecipe, out: Path, *, remake_cases: bool = True) -> Samples:
    """Training and held-out samples, their frames in the cache (extracted once). ``remake_cases=False``: synthetic
    cases made with other settings or by an older renderer are an error, not made again (see train_test_cases)."""
    from train.data.frames import extract_frames, with_cached_frames
    from train.data.reviewed import reviewed_data
    from train.data.synthetic import synthetic_samples
    from train.synth.generate import cpu_workers, train_test_cases

    spec = recipe.data
    tasks = {Task(t) for t in spec.tasks}
    train: list[Sample] = []
    test: list[Sample] = []
    if spec.synthetic is not None and spec.synthetic.procedure != "cholecystectomy":
        from train.synth.rarp import rarp_train_test_cases

        synthetic = spec.synthetic
        if synthetic.procedure != "rarp":
            raise PipelineError(
                f"no synthetic cases of procedure {synthetic.procedure!r}; choose cholecystectomy or rarp"
            )
        root = rarp_train_test_cases(
            out / "data" / "sar_rarp50", synthetic.train_cases, synthetic.test_cases, synthetic.minutes,
            synthetic.seed, width=synthetic.width, height=synthetic.height, remake=remake_cases,
        )  # fmt: skip
        samples = _sar_rarp50(root, spec, tasks)
        train = [s for s in samples if s.split == "train"]
        test = [s for s in samples if s.split == "test"]
    elif spec.synthetic is not None:
        synthetic = spec.synthetic
        train_root, test_root = train_test_cases(
            out / "data",
            synthetic.train_cases,
            synthetic.test_cases,
            synthetic.minutes,
            synthetic.seed,
            width=synthetic.width,
            height=synthetic.height,
            remake=remake_cases,
            workers=cpu_workers(),
        )
        train = [s for s in synthetic_samples(train_root, tasks=tasks) if s.task in tasks]
        test = [s for s in synthetic_samples(test_root, tasks=tasks) if s.task in tasks]
    elif spec.cholec80 or spec.cholect50 or spec.endoscapes or spec.sar_rarp50:
        train, test = _real_samples(spec, tasks)
    validation: list[Sample] = []
    if spec.validation_cases:
        train, validation = split_off_cases(train, spec.validation_cases)
    reviewed = reviewed_data(spec.reviewed or [], tasks, fps=spec.fps)
    held_out = reviewed_data(spec.reviewed_test or [], tasks, fps=spec.fps, split="test")
    train, test = _spread(train, spec.max_train), _spread(test, spec.max_test)
    train = repeat_factor_sampled(oversampled(train, spec.oversample), spec.repeat_factor_threshold, recipe.seed)
    validation = _spread(validation, spec.max_validation)
    train += reviewed.samples  # the reviewer's truth is never thinned out
    test += held_out.samples
    if not train or not test:
        raise PipelineError(f"no {'training' if not train else 'held-out'} samples for tasks {sorted(spec.tasks)}")
    size = tuple(spec.frame_size) if spec.frame_size else None
    cache = out / "data" / "frames"
    frames = [c.sample for c in reviewed.chains]
    mapping = extract_frames([*train, *test, *validation, *frames], cache, size=size, workers=cpu_workers())
    chains = list(zip(reviewed.chains, with_cached_frames(frames, mapping), strict=True))
    return Samples(
        with_cached_frames(train, mapping),
        with_cached_frames(test, mapping),
        chains,
        reviewed.cases,  # the lineage names the cases trained on; held-out ones only judged the model
        with_cached_frames(validation, mapping),
    )


def write_verified_set(chains: list[tuple[Any, Sample]], out_jsonl: Path) -> int:
    """SFT rows of the reviewer-accepted chains: the question as their profile asks it of the cached frame."""
    rows = []
    for chain, cached in chains:
        system, prompt = chain.prompt(cached.frame.width, cached.frame.height)
        rows.append(chain_row(system, prompt, chain.text, cached.frame.path))
    return write_jsonl(rows, out_jsonl)


# ----------------------------------------------------------------------------- stages
@dataclass
class StageResult:
    variant: str  # "chain" or "direct"
    stage: str  # "sft", "grpo", "iter1", ...
    model: Path
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


class Run:
    """One pipeline run: the folder, the recipe, progress lines, and the stage records."""

    def __init__(self, recipe: PipelineRecipe, say: Say, stop_after: str | None = None):
        self.recipe = recipe
        self.out = Path(recipe.out)
        self.say = say
        self.stop_after = stop_after
        self.results: list[StageResult] = []
        self.records = self.out / "stages.json"

    # -- bookkeeping ---------------------------------------------------------------------
    def _timings(self) -> dict[str, float]:
        if self.records.exists():
            return json.loads(self.records.read_text(encoding="utf-8"))
        return {}

    def _record(self, key: str, seconds: float) -> None:
        timings = self._timings()
        timings[key] = round(seconds, 1)
        self.records.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")

    def stage(self, key: str, done: Path, work: Callable[[], Any]) -> float:
        """Run ``work`` unless ``done`` exists; returns the stage's seconds (from this or an earlier run)."""
        if done.exists():
            self.say(f"  {key}: done earlier ({done.relative_to(self.out)}), skipped")
            return self._timings().get(key, 0.0)
        self.say(f"▶ {key}")
        start = time.monotonic()
        work()
        seconds = time.monotonic() - start
        self._record(key, seconds)
        self.say(f"  {key}: {seconds:.0f} s")
        if self.stop_after == key:
            raise StopRequested(key)
        return seconds

    def _key(self, folder: Path) -> str:
        return folder.relative_to(self.out).as_posix()

    # -- training stages -----------------------------------------------------------------
    def _train(self, kind: str, settings: dict[str, Any], folder: Path) -> Path:
        recipe_file = write_stage_recipe(kind, settings, folder)
        if self.recipe.accelerate:
            command = [
                sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.recipe.accelerate,
                "-m", "train.distributed_entry", str(recipe_file), "--stage", kind,
            ]  # fmt: skip
            if subprocess.run(command, check=False).returncode != 0:
                raise PipelineError(f"{kind} under accelerate failed (recipe {recipe_file})")
            return folder / "model"
        if kind == "sft":
            from train.sft import load_recipe, run_sft

            return run_sft(load_recipe(recipe_file))
        from train.grpo.stage import load_grpo_recipe, run_grpo

        return run_grpo(load_grpo_recipe(recipe_file))

    def sft(self, variant: str, base: Path, data: Path, folder: Path, section: SFTRecipe) -> Path:
        return self._training_stage("sft", section, base, data, folder)

    def grpo(self, variant: str, base: Path, data: Path, folder: Path, section: GRPORecipe) -> Path:
        rewards = self.recipe.direct_rewards if variant == "direct" else self.recipe.grpo.rewards
        return self._training_stage("grpo", section, base, data, folder, rewards=dict(rewards))

    def _training_stage(
        self, kind: str, section: StageRecipe, base: Path, data: Path, folder: Path, **extra: Any
    ) -> Path:
        """One SFT or GRPO stage from ``base`` on ``data`` into ``folder``, unless done earlier."""
        name = f"{self.recipe.name}-{self._key(folder).replace('/', '-')}"
        settings = stage_settings(self.recipe, section, base, data, folder, name, **extra)
        done = folder / "model" / "surgview.json"

        def work() -> None:
            record_box_units(self._train(kind, settings, folder), self.recipe.box_units)

        self.stage(self._key(folder), done, work)
        return folder / "model"

    def iteration(
        self, variant: str, model: Path, round_: int, sets: dict[str, Path], validation: list[Sample] | None = None
    ) -> Path:
        from train.iterate import sample_chains, write_iteration_set

        folder = self.out / variant / f"iter{round_}"
        rounds = self.recipe.iterate
        config = replace(rounds, seed=self.recipe.seed + round_ if rounds.seed is None else rounds.seed)
        if variant == "direct":
            config = replace(config, thresholds={"accuracy": 1.0})
        mixed = folder / "sft.jsonl"
        stats_file = folder / "samples.json"

        def sample() -> None:
            samples = sample_chains(model, sets["grpo"], config)
            verified = sets["verified"] if variant == "chain" else None  # the direct variant learns no chains
            verified = verified if verified is not None and verified.exists() else None  # a run begun before
            stats = write_iteration_set(samples, sets["grpo"], sets[f"sft-{variant}"], mixed, verified)
            folder.mkdir(parents=True, exist_ok=True)
            stats_file.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            self.say(
                f"  sampled {stats['sampled']} chains, kept {stats['kept']} ({stats['pass_rate']:.0%}), "
                f"{stats['kept_unique']} new rows, {stats.get('human_verified', 0)} reviewer-accepted"
            )

        self.stage(f"{variant}/iter{round_}/sample", stats_file, sample)
        if rounds.learning_rates:
            tuned = self._tuned_sft(model, mixed, folder, validation or [])
        else:
            tuned = self.sft(variant, model, mixed, folder / "sft", rounds.sft)
        return self.grpo(variant, tuned, sets["grpo"], folder / "grpo", rounds.grpo)

    def _tuned_sft(self, model: Path, data: Path, folder: Path, validation: list[Sample]) -> Path:
        """The round's SFT at each candidate learning rate, judged on the validation split; the best model."""
        if not validation:
            raise PipelineError("iterate.learning_rates need validation samples: data.validation_cases gave none")
        scores: dict[float, float | None] = {}
        for rate in self.recipe.iterate.learning_rates or []:
            sub = folder / f"sft-lr{rate:g}"
            tuned = self._training_stage("sft", self.recipe.iterate.sft, model, data, sub, learning_rate=rate)
            report = _evaluate(self, f"validation {self._key(sub)}", tuned, validation, f"validation-{self._key(sub)}")
            scores[rate] = report.get("arena_score")
        best = choose_learning_rate(scores)
        shown = {f"{r:g}": v for r, v in scores.items()}
        choice = {"chosen": best, "validation_arena": shown, "validation_samples": len(validation)}
        (folder / "learning-rate.json").write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
        listing = ", ".join(f"{r}: {'–' if v is None else f'{v:.3f}'}" for r, v in shown.items())
        self.say(f"  {self._key(folder)} learning rate {best:g} (validation arena score {listing})")
        return folder / f"sft-lr{best:g}" / "model"


def record_box_units(model: Path, units: str) -> None:
    """Say in ``model``'s manifest how it writes boxes (it learnt the units of the rows it was trained on, whatever
    its base wrote), so the engine and the evaluation ask it and map its boxes accordingly."""
    manifest = Manifest.read(model)
    wanted = None if units == BOX_PIXELS else units
    if manifest.box_units != wanted:
        manifest.box_units = wanted
        manifest.write(model)


def choose_learning_rate(scores: dict[float, float | None]) -> float:
    """The rate whose model scored best on the validation split; a tie goes to the smaller, gentler rate, and a
    model with no score (nothing parsed) ranks last."""
    return max(sorted(scores), key=lambda rate: -math.inf if scores[rate] is None else scores[rate])


class StopRequested(Exception):
    """``--stop-after STAGE`` reached (the run resumes from here next time)."""


def _base_model(recipe: PipelineRecipe, out: Path) -> Path:
    """The model the first SFT starts from: a size built here, or a folder (copied here, or grown into here, when
    its depth, rotary layout or pixel budget changes, so the source folder is never modified)."""
    from engine.tiny_model import SIZES, build_tiny_model

    base = out / "base-model"
    if recipe.base_model in SIZES:
        if not (base / "surgview.json").exists():
            build_tiny_model(base, seed=recipe.seed, size=recipe.base_model)
    else:
        source = inspect_model_dir(recipe.base_model).path
        if recipe.image_pixels is None and recipe.grow is None and recipe.mrope is None:
            return source
        if not (base / "surgview.json").exists():
            if recipe.grow is None:
                replace_tree(source, base, ignore=("onnx", "__pycache__"))  # the graphs would keep the old budget
            else:
                from train.grow import GrowError, grow_model

                shutil.rmtree(base, ignore_errors=True)  # grow_model writes only into an empty folder
                try:
                    grow_model(source, base, vision_depth=recipe.grow.vision_depth, text_layers=recipe.grow.text_layers)
                except GrowError as exc:
                    raise PipelineError(f"grow: {exc}") from None
    if recipe.image_pixels is not None:
        try:
            set_image_pixels(base, recipe.image_pixels)
        except ImageBudgetError as exc:
            raise PipelineError(str(exc)) from None
    if recipe.mrope == "interleaved":
        try:
            interleave_mrope(base)
        except RopeLayoutError as exc:
            raise PipelineError(f"mrope: {exc}") from None
    return base


def _evaluate(run: Run, key: str, model: Path, test: list[Sample], name: str | None = None) -> dict[str, Any]:
    """``model``'s report on ``test`` (written once, in eval/NAME; NAME defaults to the key)."""
    from train.eval.run import evaluate_model

    folder = run.out / "eval" / (name or key).replace("/", "-")
    report_file = folder / "report.json"
    options = run.recipe.evaluation
    run.stage(
        f"eval {key}",
        report_file,
        lambda: evaluate_model(
            model,
            test,
            folder,
            max_new_tokens=options.max_new_tokens,
            batch_size=options.batch_size,
        ),
    )
    return json.loads(report_file.read_text(encoding="utf-8"))


def _row(variant: str, stage: str, report: dict[str, Any]) -> dict[str, Any]:
    tasks = report.get("tasks", {})
    phase = tasks.get("phase") or tasks.get("phase_mcq") or {}
    return {
        "variant": variant,
        "stage": stage,
        "arena": report.get("arena_score"),
        "phase_accuracy": phase.get("accuracy"),
        "format_ok": report.get("format_ok"),
        "n": report.get("n") or phase.get("n"),
    }


_LABELS = {"sft": "SFT", "grpo": "+ GRPO"}


def stage_label(stage: str) -> str:
    """A stage as the ablation tables name it: SFT, + GRPO, + iteration N."""
    return _LABELS.get(stage, f"+ iteration {stage.removeprefix('iter')}")


def variant_label(variant: str) -> str:
    return "hierarchical chain" if variant == "chain" else "direct answer"


def table_markdown(rows: list[dict[str, Any]], chance: float | None = None, majority: float | None = None) -> str:
    lines = [
        "| variant | stage | arena | phase accuracy | well-formed outputs |",
        "| --- | --- | ---: | ---: | ---: |",
    ]

    def pct(value: Any) -> str:
        return "–" if value is None else f"{100 * float(value):.1f}"

    for row in rows:
        stage, variant = stage_label(row["stage"]), variant_label(row["variant"])
        scores = " | ".join(pct(row[k]) for k in ("arena", "phase_accuracy", "format_ok"))
        lines.append(f"| {variant} | {stage} | {scores} |")
    notes = []
    if majority is not None:
        notes.append(f"majority-class baseline {pct(majority)}")
    if chance is not None:
        notes.append(f"chance {pct(chance)}")
    if notes:
        lines += ["", "Phase accuracy baselines: " + ", ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def _export(
    run: Run, model: Path, report: dict[str, Any], rows: list[dict[str, Any]], reviewed: list[Any] | None = None
) -> Path:
    target = run.out / "export" / "model"

    def work() -> None:
        from train.eval.report import headline

        staging = target.with_name("model.part")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model, staging)
        manifest = Manifest.read(staging)
        manifest.name = run.recipe.name
        if reviewed:  # which reviewed cases, and how many of their frames, the model learnt from
            cases = [c.to_json() for c in reviewed]
            details = {"cases": cases, "frames_reviewed": sum(c.frames_reviewed for c in reviewed)}
            details["accepted_chains"] = sum(c.accepted_chains for c in reviewed)
            manifest.lineage.append(Stage("reviewed", data=[c.case for c in reviewed], details=details))
        manifest.lineage.append(Stage("export", details={"from": str(model)}))
        held_out = {k: v for k, v in report.items() if k in ("arena_score", "format_ok", "key_metrics", "n")}
        manifest.evaluation = {
            "held_out": held_out | {"headline": headline(report)},
            "stages": rows,
        }
        manifest.write(staging)
        if run.recipe.export.onnx:
            from train.onnx_export import export_onnx

            export_onnx(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)

    if _exported_from(target) not in (None, str(model)):  # the recipe now ships another stage: export again
        shutil.rmtree(target)
    run.stage("export", target / "surgview.json", work)
    return target


def _exported_from(target: Path) -> str | None:
    """The model folder an earlier export was copied from (None: nothing exported yet)."""
    if not (target / "surgview.json").exists():
        return None
    lineage = Manifest.read(target).lineage
    return str(lineage[-1].details.get("from")) if lineage and lineage[-1].name == "export" else None


def run_pipeline(recipe: PipelineRecipe, say: Say = print, stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; return the per-stage table and the exported model's path."""
    check_recipe(recipe)
    run = Run(recipe, say, stop_after)
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    record = json.dumps(recipe_record(recipe), indent=2, default=str)
    (out / "recipe.json").write_text(record + "\n", encoding="utf-8")
    try:
        return _run(run)
    except StopRequested as stop:
        say(f"stopped after {stop}; run the same command again to continue")
        return {"stopped_after": str(stop)}


def _run(run: Run) -> dict[str, Any]:
    recipe, out, say = run.recipe, run.out, run.say
    say(f"run folder: {out}")
    from train.synth.generate import SynthError
    from train.synth.rarp import RarpSynthError

    try:  # cases are remade only before any stage was built on them
        data = recipe_samples(recipe, out, remake_cases=not run.records.exists())
    except (SynthError, RarpSynthError) as exc:
        raise PipelineError(f"{exc} (this run's stages were built on those cases)") from exc
    train, test = data.train, data.test
    say(f"  {len(train)} training and {len(test)} held-out samples ({', '.join(recipe.data.tasks)})")
    if data.validation:
        say(f"  {len(data.validation)} validation samples from {recipe.data.validation_cases} case(s) set aside")
    if data.reviewed:
        frames = sum(c.frames_reviewed for c in data.reviewed)
        say(f"  {len(data.reviewed)} reviewed case(s): {frames} reviewed frames, {len(data.chains)} accepted chains")
    cot = out / "cot"
    sets = {"sft-chain": cot / "sft.jsonl", "sft-direct": cot / "sft-direct.jsonl", "grpo": cot / "grpo.jsonl"}
    sets["verified"] = cot / "reviewer-accepted.jsonl"

    def write_sets() -> None:
        image = lambda s: s.frame.path  # noqa: E731
        write_verified_set(data.chains, sets["verified"])
        # Each sample asked in its procedure's prompts (cholecystectomy rows as train.cot.datasets writes them).
        units = recipe.box_units
        write_procedure_grpo_set(train, image, sets["grpo"], box_units=units)
        write_procedure_sft_set(train, image, sets["sft-direct"], seed=recipe.seed, direct=True, box_units=units)
        # the chain set last: its presence marks the stage done
        write_procedure_sft_set(
            train, image, sets["sft-chain"], seed=recipe.seed, canonical=recipe.canonical_chains, box_units=units
        )

    run.stage("cot", sets["sft-chain"], write_sets)
    base = _base_model(recipe, out)
    variants = recipe.variants or (["chain", "direct"] if recipe.ablation else ["chain"])
    rows: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    finals: dict[str, dict[str, Path]] = {}
    for variant in variants:
        models: list[tuple[str, Path]] = []
        model = run.sft(variant, base, sets[f"sft-{variant}"], out / variant / "sft", recipe.sft)
        models.append(("sft", model))
        model = run.grpo(variant, model, sets["grpo"], out / variant / "grpo", recipe.grpo)
        models.append(("grpo", model))
        for round_ in range(1, recipe.rounds + 1):
            model = run.iteration(variant, model, round_, sets, data.validation)
            models.append((f"iter{round_}", model))
        finals[variant] = dict(models)
        for stage, path in models:
            report = _evaluate(run, f"{variant}/{stage}", path, test)
            reports[f"{variant}/{stage}"] = report
            rows.append(_row(variant, stage, report))
    phases = [s.truth.phase for s in test if s.truth.phase]
    majority = max((phases.count(p) for p in set(phases)), default=0) / len(phases) if phases else None
    table = table_markdown(rows, chance=1 / 7 if phases else None, majority=majority)
    (out / "table.md").write_text(table, encoding="utf-8")
    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    shipped = recipe.export.stage or (f"iter{recipe.rounds}" if recipe.rounds else "grpo")
    exported = _export(run, finals[variants[0]][shipped], reports[f"{variants[0]}/{shipped}"], rows, data.reviewed)
    say(table)
    say(f"model: {exported}")
    return {"rows": rows, "model": str(exported), "table": table}
