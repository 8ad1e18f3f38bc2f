"""What goes into the desktop bundle and what is left out, as data the spec, the build and the tests share.

Left out, and why:

* the training stack (``train`` and what only it uses): surgeons review, they do not train;
  ``build.py --with-train`` keeps it.
* ``accelerate`` and ``scipy``: transformers imports them when they are installed (device-map
  helpers; a detection loss) and checks for them first, so the engine runs without them.
  ``runtime_modules.py`` lists what a real run imports; the test allows exactly these.
* development tools, and Qt modules the viewer does not use (PyInstaller collects only Qt
  modules something imports; the list keeps a stray import from pulling in QML/WebEngine).
* modules nothing in a run imports: the Hub's download client, pydantic.
* files, not modules: torch's C++ headers, CMake files, test executables and test libraries,
  and Qt translations other than English (the viewer is in English).

The ``onnx`` variant (the default) also leaves out torch and everything only torch and
transformers use (``TORCH_STACK``): its engine runs the model folder's ``onnx/`` export with
onnxruntime, which needs numpy, ``tokenizers``, jinja2 and Pillow only. The shipped demo model
carries such an export; other folders need one (``surgview-train export-onnx``).

The CPU variant also refuses CUDA: it is built from a CPU build of torch, and the NVIDIA
library packages are never collected. The GPU variant keeps whatever CUDA libraries the
installed torch loads (it needs a CUDA build of torch in the build environment).
"""

from __future__ import annotations

import fnmatch

__all__ = [
    "CUDA_MODULES",
    "CUDA_PATTERNS",
    "DEV_TOOLS",
    "OPTIONAL",
    "PRUNE_PATTERNS",
    "QT_EXCLUDES",
    "TORCH_STACK",
    "TRAIN_STACK",
    "UNUSED",
    "VARIANTS",
    "excluded",
    "excludes",
    "pruned",
]

TRAIN_STACK = {
    "train": "surgview's training pipeline",
    "trl": "SFT/GRPO trainers",
    "peft": "LoRA fine-tuning",
    "datasets": "trl's dataset type",
    "pyarrow": "used by datasets only",
    "pandas": "used by datasets only",
    "multiprocess": "used by datasets only",
    "xxhash": "used by datasets only",
    "tensorboard": "the trainers' logger",
    "torch.utils.tensorboard": "torch's TensorBoard writer (pulls in tensorboard)",
    "sklearn": "metrics of `surgview-engine score` and training evaluation",
    "ivtmetrics": "triplet mAP (training evaluation)",
    "pycocotools": "box mAP (training evaluation)",
    "onnx": "ONNX export (the onnxruntime backend, if installed, stays)",
    "onnxscript": "ONNX export",
    "onnx_ir": "ONNX export",
    "google.protobuf": "used by onnx and tensorboard only",
}

OPTIONAL = {
    "accelerate": "transformers imports it when installed (device maps); loads without it",
    "scipy": "transformers' object-detection loss imports it when installed; generation never uses it",
}

UNUSED = {
    "hf_xet": "the Hugging Face Hub's Xet download client: the viewer never downloads",
    "pydantic": "not used by the viewer or the engine",
    "pydantic_core": "not used by the viewer or the engine",
}

DEV_TOOLS = {
    name: "development and build tools"
    for name in (
        "pytest",
        "_pytest",
        "pytestqt",
        "hypothesis",
        "ruff",
        "PyInstaller",
        "pip",
        "IPython",
        "jedi",
        "matplotlib",
        "tkinter",
        "_tkinter",
        "torch.utils.benchmark",
        "torch.testing._internal.opinfo",
        "torch.testing._internal.distributed.rpc",
    )
}

QT_EXCLUDES = {
    f"PySide6.{name}": "Qt module the viewer does not use"
    for name in (
        "QtNetwork",
        "QtQml",
        "QtQuick",
        "QtQuickControls2",
        "QtQuickWidgets",
        "QtQuickTest",
        "QtSql",
        "QtXml",
        "QtDBus",
        "QtDesigner",
        "QtHelp",
        "QtUiTools",
        "QtPrintSupport",
        "QtConcurrent",
        "QtPdf",
        "QtPdfWidgets",
        "QtWebEngineCore",
        "QtWebEngineWidgets",
        "QtMultimedia",
        "QtMultimediaWidgets",
        "QtSvgWidgets",
    )
}

TORCH_STACK = {
    "torch": "the onnx variant's engine runs onnxruntime",
    "torchgen": "torch's code generator",
    "functorch": "part of torch",
    "transformers": "the onnxruntime backend builds its inputs itself (tokenizers, jinja2, Pillow)",
    "accelerate": "used by transformers only",
    "safetensors": "the weights the onnx export replaces",
    "huggingface_hub": "used by transformers only (and the viewer never downloads)",
    "sympy": "used by torch only",
    "mpmath": "used by sympy only",
    "networkx": "used by torch only",
    "fsspec": "used by torch and the Hub client only",
    "filelock": "used by torch and the Hub client only",
    "regex": "used by transformers' tokenizers only",
}

VARIANTS = ("onnx", "cpu", "gpu")

CUDA_MODULES = {"nvidia": "CUDA libraries (GPU variant only)", "triton": "GPU kernels compiler (GPU variant only)"}

# Bundle-relative paths (fnmatch patterns) of files dropped after analysis.
PRUNE_PATTERNS = (
    "torch/include/*",
    "torch/share/*",
    "torch/test/*",
    "torch/bin/test_*",
    "torch/bin/*Test",
    "torch/bin/protoc*",
    "torch/bin/*.pt",
    "torch/bin/*.ptl",
    "torch/bin/upgrader_models/*",
    "torch/lib/lib*test*.so",
    "torch/lib/libbackend_with_compiler.so",
    "torch/lib/libaoti_custom_ops.so",
    "torch/testing/_internal/data/*",
    "*/Qt/translations/*",
    "*/Qt/qml/*",
)
_KEEP = ("*/Qt/translations/qtbase_en.qm",)
# CPU variant only: CUDA runtime libraries, should any reach the analysis (the build refuses a CUDA torch).
CUDA_PATTERNS = (
    "nvidia/*",
    "*libcuda*.so*",
    "*libcudart*.so*",
    "*libcudnn*.so*",
    "*libcublas*.so*",
    "*libcufft*.so*",
    "*libcurand*.so*",
    "*libcusolver*.so*",
    "*libcusparse*.so*",
    "*libnccl*.so*",
    "*libnvrtc*.so*",
    "*libnvJitLink*.so*",
    "*libtorch_cuda*.so*",
)


def excludes(variant: str = "onnx", with_train: bool = False) -> dict[str, str]:
    """Module name → why it is left out, for one build."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: {', '.join(VARIANTS)}")
    chosen = {**DEV_TOOLS, **QT_EXCLUDES, **UNUSED}
    if not with_train:
        chosen.update(TRAIN_STACK)
        chosen.update(OPTIONAL)
    if variant in ("cpu", "onnx"):
        chosen.update(CUDA_MODULES)
    if variant == "onnx" and not with_train:  # the training stack needs torch
        chosen.update(TORCH_STACK)
    return chosen


def excluded(module: str, names: dict[str, str] | set[str]) -> str | None:
    """The entry of ``names`` that leaves ``module`` out (itself or a parent package), if any."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in names:
            return prefix
    return None


def pruned(dest: str, variant: str = "onnx") -> bool:
    """True if the bundle-relative file ``dest`` is one of the files left out of a ``variant`` build."""
    dest = dest.replace("\\", "/")
    if any(fnmatch.fnmatch(dest, keep) for keep in _KEEP):
        return False
    patterns = PRUNE_PATTERNS + (CUDA_PATTERNS if variant in ("cpu", "onnx") else ())
    return any(fnmatch.fnmatch(dest, pattern) for pattern in patterns)
