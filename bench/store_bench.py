"""Case store: reopening an analysed case and showing its timelines, side by side with raw SQLite.

    .venv/bin/python bench/store_bench.py [--frames 3600] [--runs 7]

Writes a case of ``--frames`` analysed frames (one per second of a 25 fps video; realistic
three-level chains of 1-2 KB, their chain JSON, timings), then times what reopening the case
costs the viewer: ``CaseStore.open`` (read-only) + ``timeline_rows`` + ``build_timelines``.
Beside it: plain ``sqlite3`` connecting and SELECTing the same rows (the floor any store pays),
and the naive way (SELECT every chain's JSON and decode it). Budget (DESIGN.md §6): reopening a
3,600-frame case shows its timelines in ≤ 0.5 s. Also prints the time per committed result
(``put_result``) on this disk, durable (fsync per commit, the default) and not.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.chain_parser import parse_chain  # noqa: E402
from engine.store import CaseStore, FrameResult  # noqa: E402
from engine.timeline import build_timelines  # noqa: E402

FPS = 25
KEY = ("surg-r1-qwen2.5-vl-7b@5f3c2a1", "prompts-2026.1", "chain")
PHASES = [
    ("Preparation", 0.04),
    ("Calot Triangle Dissection", 0.30),
    ("Clipping Cutting", 0.08),
    ("Gallbladder Dissection", 0.30),
    ("Gallbladder Packaging", 0.07),
    ("Cleaning Coagulation", 0.12),
    ("Gallbladder Retraction", 0.09),
]
TOOLS = ["Grasper", "Hook", "Clipper", "Scissors", "Irrigator", "Bipolar", "Specimen Bag"]


def chain_text(i: int, n: int, rng: np.random.Generator) -> str:
    """A three-level chain of 1-2 KB like a 7B model writes, with a noisy phase."""
    bounds = np.cumsum([share for _, share in PHASES]) * n
    true_phase = int(np.searchsorted(bounds, i, side="right"))
    phase = PHASES[min(true_phase if rng.random() > 0.15 else int(rng.integers(7)), 6)][0]
    tools = [t for t in TOOLS if rng.random() < (0.8 if t in ("Grasper", "Hook") else 0.1)]
    instruments = ", ".join(
        f"{t} [{rng.integers(0, 900)}, {rng.integers(0, 500)}, {rng.integers(900, 1900)}, {rng.integers(500, 1070)}]"
        f" ({rng.uniform(0.5, 1):.2f})"
        for t in tools
    )
    cvs = ["met" if i > n * (0.3 + 0.03 * c) else "not met" for c in range(3)]
    prose = (
        "The gallbladder is retracted cranially exposing the hepatocystic triangle; the peritoneum over the "
        "infundibulum has been incised and fibrofatty tissue is being cleared with the hook in short bursts. "
    ) * int(rng.integers(2, 6))
    return (
        "<think>\n"
        f"Level 1 (Perception): Instruments: {instruments or 'none'}. Anatomy: gallbladder, liver, cystic duct, "
        f"omentum. {prose}\n"
        "Level 2 (Relation): Triplets: grasper retract gallbladder; hook dissect cystic duct. The grasper holds the "
        "fundus under tension while the hook works along the cystic duct.\n"
        f"Level 3 (Context): Phase: {phase}. CVS: C1 {cvs[0]}, C2 {cvs[1]}, C3 {cvs[2]}. Safety: keep dissection "
        "close to the gallbladder; do not clip or divide any structure before the critical view is confirmed.\n"
        f"</think>\n<answer>{phase}</answer>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3600)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    n, stride = args.frames, FPS
    rng = np.random.default_rng(0)
    texts = [chain_text(i, n, rng) for i in range(n)]
    timings = {"first_token_s": 0.21, "total_s": 3.4, "tokens": 310}
    results = [FrameResult(i * stride, *KEY, t, parse_chain(t), **timings) for i, t in enumerate(texts)]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.sqlite"
        puts = []
        with CaseStore.open(path) as store:
            for r in results:
                t0 = time.perf_counter()
                store.put_result(r)
                puts.append(time.perf_counter() - t0)
        fast = []
        with CaseStore.open(Path(tmp) / "fast.sqlite", durable=False) as store:
            for r in results[:600]:
                t0 = time.perf_counter()
                store.put_result(r)
                fast.append(time.perf_counter() - t0)
        size = path.stat().st_size

        ours, parts, raw, naive = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            with CaseStore.open(path, readonly=True) as store:
                t1 = time.perf_counter()
                rows = store.timeline_rows(*KEY)
                t2 = time.perf_counter()
                timelines = build_timelines(rows, FPS, frame_count=n * stride)
                t3 = time.perf_counter()
            ours.append(t3 - t0)
            parts.append((t1 - t0, t2 - t1, t3 - t2))

            t0 = time.perf_counter()
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.execute(
                "SELECT frame, phase, cvs1, cvs2, cvs3, tools FROM results WHERE model_id = ? AND prompt_version = ? "
                "AND task = ? ORDER BY frame",
                KEY,
            ).fetchall()
            conn.close()
            raw.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            blobs = conn.execute(
                "SELECT frame, chain_json FROM results WHERE model_id = ? AND prompt_version = ? AND task = ? "
                "ORDER BY frame",
                KEY,
            ).fetchall()
            [json.loads(b) for _, b in blobs]
            conn.close()
            naive.append(time.perf_counter() - t0)

    med = statistics.median
    o, r = med(ours), med(raw)
    print(
        f"case: {n} analysed frames (stride {stride}, {FPS} fps), {len(timelines.phase)} phase segments, "
        f"store {size / 1e6:.1f} MB, mean raw text {sum(map(len, texts)) / n / 1024:.2f} KiB"
    )
    print(
        f"reopen + timelines (open, timeline_rows, build_timelines): {o * 1000:.1f} ms "
        f"(first run {ours[0] * 1000:.1f} ms; budget 500 ms)"
    )
    print(
        "  parts (median): open {:.1f} ms, timeline_rows {:.1f} ms, build_timelines {:.1f} ms".format(
            *(med(p[i] for p in parts) * 1000 for i in range(3))
        )
    )
    print(f"raw sqlite3 connect + SELECT of the same columns: {r * 1000:.1f} ms")
    print(f"ratio ours / raw SELECT: {o / r:.1f}x")
    print(f"naive (SELECT chain JSON + json.loads per row): {med(naive) * 1000:.1f} ms")
    print(
        f"put_result, durable (fsync per commit): mean {statistics.mean(puts) * 1000:.2f} ms, "
        f"median {med(puts) * 1000:.2f} ms, p99 {np.percentile(puts, 99) * 1000:.2f} ms"
    )
    print(f"put_result, durable=False: mean {statistics.mean(fast) * 1000:.2f} ms, median {med(fast) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
