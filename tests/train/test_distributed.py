"""Multi-process SFT: the accelerate configs are well-formed, and a 2-process CPU (gloo) run trains the tiny model.

The run goes through the real launcher (``accelerate launch --config_file train/accelerate/cpu_gloo_2proc.yaml
-m train.distributed_entry RECIPE.yaml``) on loopback only, and checks that both ranks joined one process
group, that only rank 0 wrote the final model directory, and that the directory loads.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.modeldir import Manifest, inspect_model_dir
from engine.tiny_model import build_tiny_model
from tests.train.test_sft import write_set

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "train" / "accelerate"
COMMON = {"compute_environment", "distributed_type", "num_machines", "num_processes", "mixed_precision", "use_cpu"}
EXPECTED = {
    "ddp.yaml": {"distributed_type": "MULTI_GPU", "mixed_precision": "bf16", "use_cpu": False},
    "fsdp.yaml": {"distributed_type": "FSDP", "mixed_precision": "bf16", "use_cpu": False},
    "zero3.yaml": {"distributed_type": "DEEPSPEED", "mixed_precision": "bf16", "use_cpu": False},
    # MULTI_GPU + use_cpu: torchrun starts the processes, accelerate runs them on CPU over gloo
    # (MULTI_CPU would start one process without an mpirun hostfile).
    "cpu_gloo_2proc.yaml": {"distributed_type": "MULTI_GPU", "num_processes": 2, "use_cpu": True},
}


def _config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


def test_every_accelerate_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_parses_with_the_expected_keys(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = _config(name)
    assert set(config) >= COMMON, f"{name} lacks {sorted(COMMON - set(config))}"
    assert config["compute_environment"] == "LOCAL_MACHINE" and config["num_machines"] == 1
    assert config["main_process_ip"] == "127.0.0.1"
    for key, value in EXPECTED[name].items():
        assert config[key] == value, f"{name}: {key} = {config[key]!r}, expected {value!r}"
    # accelerate itself reads it, and knows every top-level field (a typo would raise TypeError here)
    cluster = load_config_from_file(str(CONFIGS / name))
    assert isinstance(cluster, ClusterConfig) and cluster.distributed_type.value == config["distributed_type"]


def test_accelerate_launch_accepts_every_config():
    """The launcher's own validation (what ``accelerate launch --config_file`` runs before starting anything)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    for name in sorted(EXPECTED):
        args = launch_command_parser().parse_args(
            ["--config_file", str(CONFIGS / name), "-m", "train.distributed_entry"]
        )
        args, defaults, _ = _validate_launch_command(args)
        assert defaults.distributed_type.value == _config(name)["distributed_type"]
        if name == "zero3.yaml":
            assert args.use_deepspeed and args.zero_stage == 3 and args.zero3_save_16bit_model
        if name == "fsdp.yaml":
            assert args.use_fsdp and args.fsdp_state_dict_type == "SHARDED_STATE_DICT"
        if name == "cpu_gloo_2proc.yaml":
            # the 2-process launch path: torchrun (multi_gpu) with CPU processes
            assert args.multi_gpu and args.use_cpu and not args.cpu and args.num_processes == 2


def test_fsdp_wraps_real_qwen2_5_vl_layer_classes():
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen

    fsdp = _config("fsdp.yaml")["fsdp_config"]
    assert fsdp["fsdp_reshard_after_forward"] == "FULL_SHARD" and fsdp["fsdp_version"] == 1
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["fsdp_sync_module_states"] or not fsdp["fsdp_cpu_ram_efficient_loading"]
    classes = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert classes == ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    assert all(isinstance(getattr(qwen, c, None), type) for c in classes)
    assert set(classes) <= set(qwen.Qwen2_5_VLForConditionalGeneration._no_split_modules)


def test_zero3_config_is_stage_3_and_leaves_trainer_settings_to_the_recipe():
    ds = _config("zero3.yaml")["deepspeed_config"]
    assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    assert ds["offload_optimizer_device"] == "none" and ds["offload_param_device"] == "none"
    # set here as well as in the recipe, accelerate refuses the run when the two differ
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_sft_trains_and_rank_zero_writes_a_loadable_model(tmp_path):
    base = build_tiny_model(tmp_path / "base", seed=0)
    (tmp_path / "data").mkdir()
    data = write_set(tmp_path / "data", 16)
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    trainer = {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1}
    recipe.write_text(
        yaml.safe_dump(
            {
                "sft": {
                    "model": str(base),
                    "data": str(data),
                    "output_dir": str(out),
                    "trainer": {**trainer, "report_to": []},
                }
            }
        )
    )
    port = _free_port()
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",  # 2 processes on 2 cores
        "SURGVIEW_NO_TENSORBOARD": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_gloo_2proc.yaml"),
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "-m",
        "train.distributed_entry",
        str(recipe),
    ]
    start = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers
        log, _ = process.communicate()
        pytest.fail(f"2-process run passed 120 s:\n{log[-4000:]}")
    elapsed = time.monotonic() - start
    print(f"2-process SFT run: {elapsed:.1f} s")
    assert process.returncode == 0, log[-4000:]

    records = {r["rank"]: r for r in (json.loads(p.read_text()) for p in (out / "distributed").glob("rank-*.json"))}
    assert sorted(records) == [0, 1], log[-4000:]
    assert records[0]["skipped_writes"] == []
    assert {"model", "processor", "manifest"} <= set(records[1]["skipped_writes"])
    for rank, record in records.items():
        assert record["world_size"] == 2 and record["backend"] == "gloo" and record["local_rank"] == rank
    # only rank 0 wrote the model directory; rank 1's final writes were skipped

    info = inspect_model_dir(out / "model")
    assert info.architecture == "Qwen2_5_VLForConditionalGeneration"
    stage = Manifest.read(out / "model").lineage[-1]
    assert stage.name == "sft" and stage.details["steps"] == 4 and stage.details["rows"] == 16
    assert stage.details["final_loss"] is not None
