"""Fill a case store with chains written from a synthetic case's exact labels.

A synthetic case analysed "perfectly": one three-level chain per labelled second, built by the
CoT builder from the ground truth and parsed like model output. Reports, clips, demos and
benchmarks get a realistic analysed case without running a model (and with known answers).
"""

from __future__ import annotations

import random
from pathlib import Path

from engine.store import CaseStore, FrameResult
from engine.tasks import Task
from engine.video_probe import probe_video
from train.cot.chains import build_chain
from train.data.synthetic import synthetic_samples

__all__ = ["TRUTH_MODEL_ID", "store_truth_chains"]

TRUTH_MODEL_ID = "ground-truth@synthetic"


def store_truth_chains(
    root: Path,
    case: str = "video01",
    *,
    model_id: str = TRUTH_MODEL_ID,
    prompt_version: str = "truth",
    task: str = "frame_analysis",
    every: int = 1,
    seed: int = 0,
) -> tuple[Path, int]:
    """Store a ground-truth chain for every ``every``-th labelled second of ``case`` in its case
    store (under the user's data folder); returns the video and the number of results stored."""
    video = Path(root) / "cholec80" / "videos" / f"{case}.mp4"
    facts = probe_video(video)
    samples = sorted(
        (s for s in synthetic_samples(root, tasks=(Task.FRAME,)) if s.case == case),
        key=lambda s: s.frame.index or 0,
    )[::every]
    rng = random.Random(seed)
    with CaseStore.for_video(video, fps=float(facts.fps), frame_count=facts.frames) as store:
        for sample in samples:
            text = build_chain(sample, rng)
            store.put_result(FrameResult.from_text(int(sample.frame.index or 0), model_id, prompt_version, task, text))
    return video, len(samples)
