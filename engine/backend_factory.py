"""Choose and open a backend from command-line or settings values."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.backends.base import Backend, BackendError, StreamLimits

if TYPE_CHECKING:
    from engine.backends.server_pool import ServerStateCallback

__all__ = [
    "API_KEY_ENV",
    "LOCAL_KINDS",
    "BackendSpec",
    "add_backend_arguments",
    "answer_limits",
    "default_kind",
    "default_threads",
    "has_onnx_export",
    "no_torch_message",
    "open_backend",
    "spec_from_args",
    "torch_available",
]

API_KEY_ENV = "SURGVIEW_API_KEY"
BACKENDS = ("transformers", "openai", "onnx")
LOCAL_KINDS = ("transformers", "onnx")  # run on this machine, one answer at a time


def machine_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, not the whole machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """CPU threads for a local model when none are chosen: half the cores, never all of them.

    Each engine used to take every core, so two engines at once (two ``analyze`` runs, or one
    beside the viewer's) fought over them: on 2 cores two runs took ~12x as long as one. With half
    each, two engines fill the machine without oversubscribing it, one core is left for the
    decoder, the UI and the rest when one runs alone, and a single engine on many cores loses
    little (a small VLM's decode gains little beyond a few threads). bench/engine_sharing.py.
    """
    cores = cores or machine_cores()
    return max(1, min(cores - 1, cores // 2))


def torch_available() -> bool:
    """Whether torch can be imported here, found without importing it (the torch-free desktop bundle lacks it)."""
    return importlib.util.find_spec("torch") is not None


def has_onnx_export(model_dir: str | os.PathLike[str]) -> bool:
    """A complete ``onnx/`` export in ``model_dir`` (sizes checked; checksums are the backend's job at load)."""
    from engine.backends.onnx.layout import OnnxDirError, read_onnx_dir

    try:
        read_onnx_dir(model_dir, verify=False)
    except OnnxDirError:
        return False
    return True


def default_kind(model_dir: str | os.PathLike[str] | None) -> str:
    """The backend for a local model folder: "onnx" where torch is missing and the folder has an export,
    else "transformers" (which then refuses with :func:`no_torch_message` when torch is missing)."""
    if model_dir and not torch_available() and has_onnx_export(model_dir):
        return "onnx"
    return "transformers"


def no_torch_message(model_dir: str | os.PathLike[str] | None) -> str:
    """One line for a model folder this install cannot run with transformers: no torch here."""
    where = Path(model_dir) if model_dir else "the model folder"
    if model_dir and has_onnx_export(model_dir):
        return f"this install has no torch: run {where} with the onnx backend (--backend onnx, or Preferences)"
    return (
        f"this install has no torch and {where} has no onnx/ export: export it where the training stack is "
        f"installed (surgview-train export-onnx {where}), or choose the demo model or a server"
    )


@dataclass(frozen=True)
class BackendSpec:
    kind: str = "transformers"
    model: str | None = None  # a model directory (transformers) or the server's model name (openai)
    url: str | None = None  # openai: a server's base URL, e.g. http://127.0.0.1:8000/v1 (callers that know one)
    urls: tuple[str, ...] = ()  # openai: every server's base URL, replicas of one model (wins over url)
    api_key: str | None = None
    threads: int | None = None  # transformers / onnx on CPU: threads (None: the library's default)
    give_up_s: float = 120.0  # openai: every server failing this long stops the analysis

    def server_urls(self) -> tuple[str, ...]:
        """The openai servers: ``urls``, else ``url`` alone, else none."""
        return self.urls or ((self.url,) if self.url else ())


def open_backend(spec: BackendSpec, on_server_state: ServerStateCallback | None = None) -> Backend:
    """Load the model (transformers) or configure the client (openai: no connection is made; always a
    :class:`~engine.backends.server_pool.ServerPool`, one server being a pool of one). ``on_server_state``
    hears (url, up, message) when an openai server goes down or comes back."""
    if spec.kind == "transformers":
        if not spec.model:
            raise BackendError("give the model directory with --model DIR")
        if not torch_available():
            raise BackendError(no_torch_message(spec.model))
        from engine.backends.transformers_backend import TransformersBackend

        if spec.threads:
            _one_interop_thread()
        return TransformersBackend(spec.model, threads=spec.threads)
    if spec.kind == "onnx":
        if not spec.model:
            raise BackendError("give the model directory (holding an onnx/ export) with --model DIR")
        from engine.backends.onnx import OnnxBackend

        return OnnxBackend(spec.model, threads=spec.threads)
    if spec.kind == "openai":
        urls = spec.server_urls()
        if not urls:
            raise BackendError("the openai backend needs the server's --url (e.g. http://127.0.0.1:8000/v1)")
        from engine.backends.server_pool import PoolConfig, ServerPool

        return ServerPool.from_urls(
            urls,
            model=spec.model or "default",
            api_key=spec.api_key,
            config=PoolConfig(give_up_s=spec.give_up_s),
            on_server_state=on_server_state,
        )
    raise BackendError(f"unknown backend {spec.kind!r}; choose from {', '.join(BACKENDS)}")


def _one_interop_thread() -> None:
    """torch's inter-op pool (another pool as large as the machine) does nothing for generation: one thread."""
    import torch

    with contextlib.suppress(RuntimeError):  # set already, or parallel work has started here: it stays
        torch.set_num_interop_threads(1)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR|NAME", help="model directory (transformers, onnx) or served model name")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="default: transformers, or onnx where torch is missing and the model folder has an onnx/ export",
    )
    parser.add_argument(
        "--url",
        action="append",
        help="openai backend: a server's base URL (e.g. http://127.0.0.1:8000/v1); "
        "give it several times to spread the work over several servers",
    )
    parser.add_argument(
        "--give-up-after",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="openai backend: stop when no server has answered for this long (default: 120)",
    )
    parser.add_argument(
        "--threads",
        type=_count,
        default=None,
        help="CPU threads for the transformers and onnx backends (default: half the cores, so that several "
        f"engines share the machine; here {default_threads()})",
    )


def spec_from_args(args: argparse.Namespace) -> BackendSpec:
    urls = tuple(args.url or ())
    kind = args.backend or default_kind(args.model)
    threads = args.threads or (default_threads() if kind in LOCAL_KINDS else None)
    return BackendSpec(
        kind=kind,
        model=args.model,
        url=urls[0] if urls else None,
        urls=urls,
        api_key=os.environ.get(API_KEY_ENV) or None,
        threads=threads,
        give_up_s=getattr(args, "give_up_after", 120.0),
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


_seconds.__name__ = "seconds"  # argparse names the type in its message: "invalid seconds value"


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_count.__name__ = "positive int"


def answer_limits(
    kind: str,
    *,
    max_chars: int | None = None,
    idle_timeout_s: float | None = None,
    total_timeout_s: float | None = None,
) -> StreamLimits:
    """Each answer's bounds for a backend of ``kind``: what is given, else the defaults, except that a
    local model may take the whole answer's time for its first words (a large model on a CPU may think
    for minutes), while a server silent for the default 60 s is stuck."""
    default = StreamLimits()
    local_idle = default.total_timeout_s if kind in LOCAL_KINDS else default.idle_timeout_s
    return StreamLimits(
        max_chars=max_chars or default.max_chars,
        max_bytes=max(default.max_bytes, 4 * (max_chars or 0)),  # room for 4-byte characters up to the cap
        idle_timeout_s=idle_timeout_s or local_idle,
        total_timeout_s=total_timeout_s or default.total_timeout_s,
    )
