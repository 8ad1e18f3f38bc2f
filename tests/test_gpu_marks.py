"""The GPU check covers the CUDA paths: bench/gpu_check.sh selects every gpu-marked test in tests/, each CUDA
path (bf16 transformers, onnxruntime's CUDA provider, the FSDP and ZeRO-3 configs, vLLM GRPO) has one, and
without a GPU they skip cleanly, saying why (the default run leaves them out; this runs them here)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CUDA_PATHS = {
    "bf16 transformers": ("tests/engine/test_gpu.py", "test_the_engine_runs_in_bfloat16_on_cuda_by_default"),
    "onnxruntime CUDA provider": (
        "tests/engine/test_gpu.py",
        "test_onnxruntime_cuda_provider_gives_the_cpu_providers_tokens",
    ),
    "FSDP config": ("tests/train/test_gpu_train.py", "test_fsdp_config_trains_and_writes_a_whole_model"),
    "ZeRO-3 config": ("tests/train/test_gpu_train.py", "test_zero3_config_trains_and_writes_a_whole_model"),
    "vLLM GRPO": ("tests/train/test_gpu_train.py", "test_grpo_generates_with_vllm_colocated_as_the_real_recipe_asks"),
}


def _gpu_modules() -> list[str]:
    marked = re.compile(r"pytest\.mark\.gpu\b")
    return sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if marked.search(p.read_text("utf-8"))
    )


def _pytest_line() -> list[str]:
    script = (ROOT / "bench" / "gpu_check.sh").read_text("utf-8")
    (line,) = [ln for ln in script.splitlines() if " -m pytest " in ln and not ln.lstrip().startswith("#")]
    return shlex.split(line[line.index("-m pytest") :])


def test_the_gpu_check_runs_every_gpu_marked_test():
    args = _pytest_line()
    assert args[args.index("-m", 1) + 1] == "gpu"  # the marker, not a module list
    paths = [a for a in args[2:] if not a.startswith("-") and a != "gpu" and a != "no:cacheprovider"]
    assert paths == ["tests"], f"gpu_check.sh runs {paths}: tests/ holds gpu tests in {_gpu_modules()}"
    assert "-k" not in args and "--deselect" not in args


def test_every_cuda_path_has_a_gpu_test():
    modules = _gpu_modules()
    for path, (module, name) in CUDA_PATHS.items():
        assert module in modules, f"{path}: {module} is not gpu-marked"
        assert re.search(rf"^def {name}\(", (ROOT / module).read_text("utf-8"), re.MULTILINE), path


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="has a GPU: bench/gpu_check.sh runs them")
def test_without_a_gpu_the_gpu_tests_skip_cleanly():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *_gpu_modules()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"^\d+ skipped", done.stdout.splitlines()[-1]), done.stdout[-2000:]
    assert "needs a CUDA device" in done.stdout
