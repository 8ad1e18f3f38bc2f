"""Choose and open a backend from command-line or settings values."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from engine.backends.base import Backend, BackendError

__all__ = ["API_KEY_ENV", "BackendSpec", "add_backend_arguments", "open_backend", "spec_from_args"]

API_KEY_ENV = "SURGVIEW_API_KEY"
BACKENDS = ("transformers", "openai", "onnx")


@dataclass(frozen=True)
class BackendSpec:
    kind: str = "transformers"
    model: str | None = None  # a model directory (transformers) or the server's model name (openai)
    url: str | None = None  # openai: the server's base URL, e.g. http://127.0.0.1:8000/v1
    api_key: str | None = None
    threads: int | None = None  # transformers / onnx on CPU: threads (leave a core for the rest)


def open_backend(spec: BackendSpec) -> Backend:
    """Load the model (transformers) or configure the client (openai: no connection is made)."""
    if spec.kind == "transformers":
        if not spec.model:
            raise BackendError("give the model directory with --model DIR")
        from engine.backends.transformers_backend import TransformersBackend

        return TransformersBackend(spec.model, threads=spec.threads)
    if spec.kind == "onnx":
        if not spec.model:
            raise BackendError("give the model directory (holding an onnx/ export) with --model DIR")
        from engine.backends.onnx_backend import OnnxBackend

        return OnnxBackend(spec.model, threads=spec.threads)
    if spec.kind == "openai":
        if not spec.url:
            raise BackendError("the openai backend needs the server's --url (e.g. http://127.0.0.1:8000/v1)")
        from engine.backends.openai_backend import OpenAIBackend, OpenAIConfig

        return OpenAIBackend(OpenAIConfig(base_url=spec.url, model=spec.model or "default", api_key=spec.api_key))
    raise BackendError(f"unknown backend {spec.kind!r}; choose from {', '.join(BACKENDS)}")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR|NAME", help="model directory (transformers, onnx) or served model name")
    parser.add_argument("--backend", choices=BACKENDS, default="transformers")
    parser.add_argument("--url", help="openai backend: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the transformers and onnx backends")


def spec_from_args(args: argparse.Namespace) -> BackendSpec:
    return BackendSpec(
        kind=args.backend,
        model=args.model,
        url=args.url,
        api_key=os.environ.get(API_KEY_ENV) or None,
        threads=args.threads,
    )
