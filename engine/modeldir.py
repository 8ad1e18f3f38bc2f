"""The model directory contract (DESIGN.md §3): what an exported model folder must hold.

A model is a folder the engine loads offline: ``config.json``, ``*.safetensors`` weights, the
tokenizer and image-processor files, a chat template, and ``surgview.json`` — the manifest
(format version, base architecture, ontology and prompt versions, training lineage,
evaluation). :func:`inspect_model_dir` checks all of it *without* loading torch, so the app
and the CLI can refuse a bad folder with one clear line before spending seconds on a load.
Pickle weights are refused outright: unpickling runs arbitrary code. A plain Hugging Face VLM
folder without a manifest (a released Surg-R1 or Qwen2.5-VL) loads with default prompts, and
the returned warnings say so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BOX_PIXELS",
    "BOX_THOUSANDTHS",
    "BOX_UNITS",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "NO_MANIFEST_WARNING",
    "PICKLE_SUFFIXES",
    "Manifest",
    "ModelDirError",
    "ModelInfo",
    "Stage",
    "check_safe_files",
    "config_architecture",
    "inspect_model_dir",
    "supported_architectures",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "surgview.json"
BOX_PIXELS = "pixels"  # boxes in pixels of the image the model saw (Qwen2.5-VL, the Surg-R1 release, surgview)
BOX_THOUSANDTHS = "thousandths"  # x and y from 0 to 1000 across that image's width and height (Qwen2-VL, Qwen3-VL)
BOX_UNITS = (BOX_PIXELS, BOX_THOUSANDTHS)
NO_MANIFEST_WARNING = "no surgview.json: loading as a plain Hugging Face model with default prompts"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Architecture (config.json "architectures") → the transformers module that must exist for it.
_ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "transformers.models.qwen2_5_vl",
    "Qwen2VLForConditionalGeneration": "transformers.models.qwen2_vl",
    "Qwen3VLForConditionalGeneration": "transformers.models.qwen3_vl",
}
# Small files that change what a model answers: hashed whole into the fingerprint.
_FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    MANIFEST_NAME,
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
)
_HASH_WHOLE_BYTES = 64 << 20  # weights up to this size are hashed whole; larger ones sampled
_SAMPLE_CHUNKS, _SAMPLE_BYTES = 64, 64 << 10
_MAX_HEADER_BYTES = 100 << 20


class ModelDirError(Exception):
    """A model directory that cannot be loaded; the message says why in one line."""


@dataclass
class Stage:
    """One training stage of a model's lineage (e.g. ``sft``, ``grpo``, ``self-iteration``)."""

    name: str
    data: list[str] = field(default_factory=list)  # data sets or files, as the recipe named them
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # recipe, steps, base model, ...

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": list(self.data), "seed": self.seed, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        seed = data.get("seed")
        return cls(
            name=str(data["name"]),
            data=[str(d) for d in data.get("data") or []],
            seed=None if seed is None else int(seed),
            details=dict(data.get("details") or {}),
        )


@dataclass
class Manifest:
    """``surgview.json``: what a model is, what it was trained with and how well it did."""

    name: str
    base_architecture: str
    ontology_version: str
    prompts_version: str
    lineage: list[Stage] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)  # metric name → value (or a table)
    format_version: int = FORMAT_VERSION
    profile: str | None = None  # how to ask the model (engine.profiles); None: surgview's own prompts
    # How the model writes boxes when it was trained on other units than its profile's: "thousandths" (0-1000 across
    # the frame, as Qwen2-VL and Qwen3-VL were trained) or "pixels"; None: the profile's own.
    box_units: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept on rewrite

    _REQUIRED = ("name", "base_architecture", "ontology_version", "prompts_version")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "base_architecture": self.base_architecture,
            "ontology_version": self.ontology_version,
            "prompts_version": self.prompts_version,
            "lineage": [stage.to_dict() for stage in self.lineage],
            "evaluation": self.evaluation,
            **({"profile": self.profile} if self.profile else {}),
            **({"box_units": self.box_units} if self.box_units else {}),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise ModelDirError(f"{source} is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelDirError(
                f"{source} has format_version {version!r}; this surgview reads format_version {FORMAT_VERSION}"
            )
        missing = [key for key in cls._REQUIRED if not isinstance(data.get(key), str)]
        if missing:
            raise ModelDirError(f"{source} lacks the text field(s) {', '.join(missing)}")
        try:
            lineage = [Stage.from_dict(stage) for stage in data.get("lineage") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelDirError(f"{source} has an invalid lineage entry: {exc!r}") from exc
        evaluation = data.get("evaluation") or {}
        if not isinstance(evaluation, dict):
            raise ModelDirError(f"{source}: evaluation must be an object of metrics")
        profile = data.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ModelDirError(f"{source}: profile must be a profile name")
        box_units = data.get("box_units")
        if box_units is not None and box_units not in BOX_UNITS:
            raise ModelDirError(f"{source}: box_units must be one of {', '.join(BOX_UNITS)}, not {box_units!r}")
        known = {*cls._REQUIRED, "format_version", "lineage", "evaluation", "profile", "box_units"}
        return cls(
            name=data["name"],
            base_architecture=data["base_architecture"],
            ontology_version=data["ontology_version"],
            prompts_version=data["prompts_version"],
            lineage=lineage,
            evaluation=evaluation,
            format_version=version,
            profile=profile,
            box_units=box_units,
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read ``surgview.json`` (``path`` is the file or the model directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return cls.from_dict(_read_json(path), source=f"{path.name} in {path.parent}")

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write ``surgview.json`` atomically (``path`` is the file or the model directory).

        A temporary file in the same folder is flushed to disk and renamed over the old one,
        so a crash leaves either the old manifest or the new one, never half of one.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it private; a model folder is meant to be shared
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect_model_dir` found in a valid model directory."""

    path: Path
    name: str
    architecture: str
    manifest: Manifest | None
    fingerprint: str  # sha256 hex of config, tokenizer, manifest and weight headers (+ samples)
    weights: tuple[Path, ...]
    warnings: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        """Identity for the case store: name and a short content fingerprint."""
        return f"{self.name}@{self.fingerprint[:12]}"

    @property
    def weight_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weights)


@cache
def supported_architectures() -> tuple[str, ...]:
    """The VLM architectures this engine loads (Qwen3-VL only if transformers has it)."""
    return tuple(arch for arch, module in _ARCHITECTURES.items() if _module_exists(module))


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def inspect_model_dir(path: str | os.PathLike[str]) -> ModelInfo:
    """Validate a model directory without loading it; raise :class:`ModelDirError` if unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelDirError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelDirError(f"{path} is not a directory (a model is a folder with config.json and *.safetensors)")
    check_safe_files(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelDirError(f"no config.json in {path}: not a Hugging Face model directory")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ModelDirError(f"config.json in {path} is not a JSON object")

    warnings: list[str] = []
    manifest = None
    if (path / MANIFEST_NAME).exists():
        manifest = Manifest.read(path)
    else:
        warnings.append(NO_MANIFEST_WARNING)

    architecture = _architecture(config, path)
    weights = _check_weights(path)
    _check_tokenizer(path)
    _check_processor(path)
    if manifest is not None:
        warnings += _version_warnings(manifest, architecture)
    return ModelInfo(
        path=path,
        name=manifest.name if manifest else path.name,
        architecture=architecture,
        manifest=manifest,
        fingerprint=_fingerprint(path, weights),
        weights=weights,
        warnings=tuple(warnings),
    )


def check_safe_files(path: Path) -> None:
    """Refuse a folder holding pickle files anywhere (unpickling runs code) or, at its top, a FIFO,
    socket or device where a file belongs (opening a FIFO waits for a writer: a load that hangs).
    Every backend that reads a model folder calls this first."""
    pickles = _pickle_files(path)
    if pickles:
        names = ", ".join(str(p.relative_to(path)) for p in pickles[:3]) + (" ..." if len(pickles) > 3 else "")
        raise ModelDirError(
            f"{path} holds pickle files ({names}), which can run code when loaded: refusing the folder; "
            "keep the weights as safetensors and remove the pickle files"
        )
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise ModelDirError(f"cannot list {path}: {exc.strerror or exc}") from exc
    for entry in entries:
        try:
            mode = os.stat(entry.path).st_mode  # through symlinks (a Hugging Face cache links its blobs)
        except OSError:
            continue  # a dangling link: the checks of the file it stands for say what is missing
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ModelDirError(f"{entry.name} in {path} is {_kind(mode)}, not a file: refusing the folder")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a directory" if stat.S_ISDIR(mode) else "not a regular file"


def _open_file(path: Path) -> IO[bytes]:
    """Open a regular file for reading, refusing anything else without blocking (O_NONBLOCK makes
    opening a FIFO return at once; fstat then tells what was opened, with no race against a swap)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ModelDirError(f"cannot read {path.name} in {path.parent}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ModelDirError(f"{path.name} in {path.parent} is {_kind(mode)}, not a file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_json(path: Path) -> Any:
    try:
        with _open_file(path) as fh:
            text = fh.read().decode("utf-8")
    except OSError as exc:
        raise ModelDirError(f"cannot read {path.name} in {path.parent}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelDirError(f"{path.name} in {path.parent} is not UTF-8 text") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{path.name} in {path.parent} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except RecursionError:
        raise ModelDirError(f"{path.name} in {path.parent} is not valid JSON (nested too deeply)") from None


def _pickle_files(path: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(PICKLE_SUFFIXES)]
    return found


def config_architecture(path: Path) -> str | None:
    """The first architecture a model folder's ``config.json`` names, read as loading reads it (nothing that could
    block is opened); None when there is none to read: loading the folder says what is wrong with it."""
    try:
        config = _read_json(Path(path) / "config.json")
    except ModelDirError:
        return None
    names = config.get("architectures") if isinstance(config, dict) else None
    return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None


def _architecture(config: dict[str, Any], path: Path) -> str:
    names = config.get("architectures") or []
    if not isinstance(names, list) or not names:
        raise ModelDirError(f'config.json in {path} names no architecture ("architectures" is missing)')
    supported = supported_architectures()
    for name in names:
        if name in supported:
            return str(name)
    known = ", ".join(supported)
    if any(name in _ARCHITECTURES for name in names):
        raise ModelDirError(
            f"architecture {names[0]} needs a newer transformers than the one installed (have: {known})"
        )
    raise ModelDirError(f"architecture {names[0]} is not a supported vision-language model (supported: {known})")


def _check_weights(path: Path) -> tuple[Path, ...]:
    weights = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.exists():
        data = _read_json(index)
        shards = sorted(set((data.get("weight_map") or {}).values())) if isinstance(data, dict) else []
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelDirError(
                f"{path} lacks {len(missing)} of {len(shards)} weight shards (first: {missing[0]}): a partial download?"
            )
    if not weights:
        raise ModelDirError(
            f"no *.safetensors weights in {path}: a partial download, or an export that did not finish?"
        )
    for weight in weights:
        _safetensors_header(weight)
    return tuple(weights)


def _safetensors_header(path: Path) -> bytes:
    """The raw JSON header of a safetensors file, after checking the file holds all its data."""
    with _open_file(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise ModelDirError(f"{path.name} in {path.parent} is empty or truncated: a partial download?")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise ModelDirError(f"{path.name} in {path.parent} is not a safetensors file, or is truncated")
        raw = fh.read(length)
    try:
        header = json.loads(raw)
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ModelDirError(f"{path.name} in {path.parent} has an unreadable safetensors header") from exc
    if 8 + length + end > size:
        raise ModelDirError(
            f"{path.name} in {path.parent} is truncated ({size} of {8 + length + end} bytes): a partial download?"
        )
    return raw


def _check_tokenizer(path: Path) -> None:
    if not (
        (path / "tokenizer.json").is_file() or ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
    ):
        raise ModelDirError(f"no tokenizer files (tokenizer.json, or vocab.json + merges.txt) in {path}")
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return
    config = path / "tokenizer_config.json"
    if not (config.is_file() and isinstance(data := _read_json(config), dict) and data.get("chat_template")):
        raise ModelDirError(f"no chat template in {path} (chat_template.jinja, or one in tokenizer_config.json)")


def _check_processor(path: Path) -> None:
    if (path / "preprocessor_config.json").is_file():
        _read_json(path / "preprocessor_config.json")
        return
    config = path / "processor_config.json"
    if not (config.is_file() and isinstance(data := _read_json(config), dict) and "image_processor" in data):
        raise ModelDirError(f"no image processor settings in {path} (preprocessor_config.json)")


def _version_warnings(manifest: Manifest, architecture: str) -> list[str]:
    from engine.ontology import load_ontology
    from engine.prompts import prompts_version

    warnings = []
    if manifest.base_architecture != architecture:
        warnings.append(
            f"surgview.json names {manifest.base_architecture} but config.json holds {architecture}: using config.json"
        )
    ontology = load_ontology().version
    if manifest.ontology_version != ontology:
        warnings.append(f"model was trained with ontology {manifest.ontology_version}; this surgview has {ontology}")
    prompts = prompts_version()
    if manifest.prompts_version != prompts:
        warnings.append(
            f"model was trained with prompts {manifest.prompts_version}; this surgview's prompts are {prompts}"
        )
    return warnings


def _fingerprint(path: Path, weights: tuple[Path, ...]) -> str:
    """sha256 over the small files that shape answers and the weights' headers and sampled bytes.

    Weights up to 64 MiB are hashed whole; larger files contribute their size, header and 64
    evenly spaced 64 KiB samples, so a multi-GB model is fingerprinted in milliseconds while a
    fine-tune (which changes every tensor) still gets a new fingerprint.
    """
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        file = path / name
        if file.is_file():
            digest.update(f"{name}\0".encode())
            with _open_file(file) as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
    for weight in weights:
        with _open_file(weight) as fh:
            size = os.fstat(fh.fileno()).st_size
            digest.update(f"{weight.name}\0{size}\0".encode())
            if size <= _HASH_WHOLE_BYTES:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
                continue
            header = _safetensors_header(weight)
            digest.update(header)
            start = 8 + len(header)
            span = max(size - start - _SAMPLE_BYTES, 0)  # first chunk at the data's start, last at the file's end
            for i in range(_SAMPLE_CHUNKS):
                fh.seek(start + span * i // (_SAMPLE_CHUNKS - 1))
                digest.update(fh.read(_SAMPLE_BYTES))
    return digest.hexdigest()
