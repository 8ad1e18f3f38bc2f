"""Training's CUDA paths on NVIDIA GPUs (``-m gpu``; bench/gpu_check.sh runs every gpu-marked test): SFT in
bf16, the FSDP and DeepSpeed ZeRO-3 accelerate configs (train/accelerate/) launched for real on the GPUs there
are, and GRPO generating with vLLM colocated as the real recipe asks. Without a GPU (or without deepspeed or
vllm, which surgview does not install) they skip, saying why."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "train" / "accelerate"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gpu-train") / "tiny", seed=0)


def _sft_set(folder: Path, n: int = 16) -> Path:
    from tests.train.test_sft import write_set

    folder.mkdir(parents=True, exist_ok=True)
    return write_set(folder, n)


def test_sft_trains_in_bf16_on_the_gpu(base, tmp_path):
    from engine.modeldir import Manifest
    from train.sft import SFTRecipe, run_sft

    recipe = SFTRecipe(
        model=str(base),
        data=str(_sft_set(tmp_path / "data")),
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,  # a loss to check: trl logs every 10 steps by default (an H200 lease found it None)
        report_to=[],
    )
    assert recipe.bf16 is True  # a recipe that says nothing gets bf16 on a GPU
    model_dir = run_sft(recipe)
    stage = Manifest.read(model_dir).lineage[-1]
    assert stage.name == "sft" and stage.details["steps"] == 4 and np.isfinite(stage.details["final_loss"])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: str, base: Path, tmp_path: Path, timeout: float = 240) -> Path:
    """``accelerate launch --config_file train/accelerate/CONFIG`` of a 4-step SFT on every GPU (at most 2)."""
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    trainer = {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "report_to": []}
    recipe.write_text(
        yaml.safe_dump(
            {"sft": {"model": str(base), "data": str(_sft_set(tmp_path / "data")), "output_dir": str(out), **trainer}}
        )
    )
    processes = min(2, torch.cuda.device_count())
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "SURGVIEW_NO_TENSORBOARD": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
        "--num_processes",
        str(processes),
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "-m",
        "train.distributed_entry",
        str(recipe),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        pytest.fail(f"{config} run passed {timeout:.0f} s:\n{log[-4000:]}")
    assert process.returncode == 0, log[-4000:]
    records = [json.loads(p.read_text()) for p in (out / "distributed").glob("rank-*.json")]
    assert sorted(r["rank"] for r in records) == list(range(processes)), log[-4000:]
    assert all(r["world_size"] == processes and r["backend"] == "nccl" for r in records), records
    return out / "model"


def _loads_whole(model_dir: Path) -> None:
    """The final folder holds the full (gathered) weights: it loads and answers."""
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend
    from engine.modeldir import Manifest

    assert Manifest.read(model_dir).lineage[-1].details["steps"] == 4
    with TransformersBackend(model_dir, device="cuda") as backend:
        frame = np.full((112, 112, 3), (200, 40, 40), np.uint8)
        assert isinstance(backend.generate(GenerationRequest("Which phase?", frame, max_new_tokens=8)), str)


def test_fsdp_config_trains_and_writes_a_whole_model(base, tmp_path):
    _loads_whole(_launch("fsdp.yaml", base, tmp_path))


def test_zero3_config_trains_and_writes_a_whole_model(base, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is installed on training machines only")
    _loads_whole(_launch("zero3.yaml", base, tmp_path))


def test_grpo_generates_with_vllm_colocated_as_the_real_recipe_asks(base, tmp_path):
    pytest.importorskip("vllm", reason="vllm is installed on training machines only")
    import cv2

    from engine.modeldir import Manifest
    from engine.prompts import system_prompt
    from train.grpo.stage import GRPORecipe, run_grpo

    real = yaml.safe_load((ROOT / "train" / "recipes" / "qwen2_5_vl_3b-real.yaml").read_text())
    vllm = {k: v for k, v in real["grpo"]["trainer"].items() if k.startswith(("use_vllm", "vllm_"))}
    assert vllm["use_vllm"] is True and vllm["vllm_mode"] == "colocate"
    rows = []
    for i in range(4):
        image = tmp_path / f"{i}.png"
        cv2.imwrite(str(image), np.full((112, 112, 3), (40, 40, 200) if i % 2 else (40, 200, 40), np.uint8))
        prompt = [{"role": "system", "content": system_prompt()}, {"role": "user", "content": "<image>Which phase?"}]
        rows.append({"prompt": prompt, "images": [image.name], "task": "phase", "level": 3, "phase": "Preparation"})
    data = tmp_path / "grpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = GRPORecipe(
        model=str(base),
        data=str(data),
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=32,
        report_to=[],
        **{**vllm, "vllm_gpu_memory_utilization": 0.2},
    )
    model_dir = run_grpo(recipe)
    stage = Manifest.read(model_dir).lineage[-1]
    assert stage.name == "grpo" and stage.details["steps"] == 1
