"""Script entry for multi-process SFT: ``accelerate launch ... -m train.distributed_entry RECIPE.yaml``.

``accelerate launch`` needs a script or a module to start once per process; this is it. Every rank
runs :func:`train.sft.run_sft` (the trainer's collectives need all of them), but only rank 0 may
write the final model directory: ``run_sft`` writes it unconditionally after training, so on the
other ranks the writes (model and processor ``save_pretrained``, the chat template, the manifest)
are turned into no-ops for the duration of the call. Each rank then records what it saw in
``OUTPUT_DIR/distributed/rank-N.json`` (rank, world size, backend), so a
run can be checked after the fact. Configs for ``--config_file`` live in ``train/accelerate/``.

Under FSDP or DeepSpeed ZeRO-3 the weights are sharded: ``run_sft`` gathers them on *every* rank
first (``train.sft.save_trained_model``: ``accelerator.get_state_dict``, a collective), and only
then does the guard keep the write to rank 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["main", "rank_and_world", "rank_zero_writes"]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size: from torch.distributed once it is up, else the launcher's env."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def rank_zero_writes(rank: int) -> Iterator[list[str]]:
    """On ranks other than 0, skip run_sft's final writes; yield the list of what was skipped.

    The gather that FSDP and ZeRO-3 need happens before the write, on every rank (see
    ``train.sft.save_trained_model``), so skipping only the write is right for all strategies.
    """
    skipped: list[str] = []
    if rank == 0:
        yield skipped
        return
    import transformers

    from engine.modeldir import Manifest
    from train import model_output

    def skip(label: str):
        def no_write(*args, **kwargs):
            skipped.append(label)

        return no_write

    patches = [
        (transformers.PreTrainedModel, "save_pretrained", skip("model")),
        (transformers.ProcessorMixin, "save_pretrained", skip("processor")),
        (Manifest, "write", skip("manifest")),
        (model_output, "copy_template", skip("chat_template")),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield skipped
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.distributed_entry", description="multi-process training (start it with accelerate launch)"
    )
    parser.add_argument("recipe", metavar="RECIPE.yaml")
    parser.add_argument("--stage", choices=("sft", "grpo"), default="sft", help="which trainer the recipe is for")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints of this recipe")
    args = parser.parse_args(argv)

    from train.grpo.stage import GRPORunError, load_grpo_recipe, run_grpo
    from train.sft import SFTRunError, load_recipe, run_sft

    load, run = (load_grpo_recipe, run_grpo) if args.stage == "grpo" else (load_recipe, run_sft)
    try:
        recipe = load(Path(args.recipe))
    except (SFTRunError, GRPORunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, _ = rank_and_world()  # process group not up yet: the launcher's env
    try:
        with rank_zero_writes(rank) as skipped:
            model_dir = run(recipe, resume=not args.fresh)
    except (SFTRunError, GRPORunError) as exc:
        print(f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2

    import torch.distributed as dist

    rank, world = rank_and_world()
    record = {
        "rank": rank,
        "world_size": world,
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "skipped_writes": skipped,
        "model_dir": str(model_dir),
    }
    records = Path(recipe.output_dir) / "distributed"
    records.mkdir(parents=True, exist_ok=True)
    (records / f"rank-{rank}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0's model directory is complete before any rank reports success
        dist.destroy_process_group()
    if rank == 0:
        print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
