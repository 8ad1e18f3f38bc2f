"""Desktop bundle: size on disk and start-up time, side by side with the same program run from the venv.

    .venv/bin/python bench/bundle_size_start.py [--bundle dist/surgview] [--compare dist/cpu/surgview] [--rounds 3]

Sizes: the bundle folder, its largest parts, and the site-packages of the virtual environment it
was built from (what a pip install would put on the machine). Start-up, for the bundle and for the
venv's ``surgview`` command, each on the demo case:

* ``--demo --info``: process start, imports, demuxing the case (no Qt, no torch);
* ``--demo --smoke``: Qt offscreen, the main window, the spawned engine process importing its
  backend (onnxruntime in the default torch-free bundle; torch and transformers in the venv and
  the ``cpu`` bundle) and loading the model, up to the first streamed text and the finished chain
  (the times the program prints itself, plus the wall time to exit).

``--compare`` adds a second bundle (e.g. the torch ``cpu`` variant) as a third column.

"Cold" runs first evict every file of the program (bundle folder, or venv plus Python's standard
library) from the page cache with ``posix_fadvise(DONTNEED)``, which needs no root; "warm" runs
follow directly. Rounds alternate bundle and venv so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def evict(*trees: Path) -> int:
    """Drop the files under ``trees`` from the page cache; returns how many files were evicted."""
    count = 0
    for tree in trees:
        for path in tree.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    count += 1
                finally:
                    os.close(fd)
    return count


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    return wall, done.stdout


def smoke_marks(stdout: str) -> dict[str, float]:
    found = re.search(r"engine ready ([\d.]+) s, first text ([\d.]+) s, chain done ([\d.]+) s", stdout)
    if not found:
        raise SystemExit(f"unexpected --smoke output: {stdout!r}")
    marks = dict(zip(("ready", "first_text", "done"), map(float, found.groups()), strict=True))
    tokens = re.search(r"(\d+) tokens", stdout)  # chain done depends on the chain's length
    marks["tokens"] = float(tokens.group(1)) if tokens else float("nan")
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "surgview")
    parser.add_argument("--compare", type=Path, help="a second bundle to time beside it (e.g. the cpu variant)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--demo-dir", type=Path, default=ROOT / "build" / "pkg" / "demo", help="the venv's demo")
    parser.add_argument("--rounds", type=int, default=3, help="warm runs per program and command")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    bundle, venv = args.bundle.resolve(), args.venv.resolve()
    if not (bundle / "surgview").is_file():
        raise SystemExit(f"no bundle at {bundle}: packaging/build.sh builds it")
    site = Path(sysconfig.get_paths()["purelib"])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    demo = args.demo_dir.resolve()
    if demo.name != "demo" or not (demo / "model" / "surgview.json").is_file():
        raise SystemExit(f"no demo folder at {demo}: surgview-train demo --out {demo}")

    compare = args.compare.resolve() if args.compare else None
    if compare is not None and not (compare / "surgview").is_file():
        raise SystemExit(f"no bundle at {compare}")
    figures: dict = {"bundle_bytes": tree_bytes(bundle), "site_packages_bytes": tree_bytes(site)}
    internal = bundle / "_internal"
    parts = sorted(
        ((p.name, tree_bytes(p) if p.is_dir() else p.stat().st_size) for p in internal.iterdir() if not p.is_symlink()),
        key=lambda kv: -kv[1],
    )
    figures["largest"] = parts[:10]
    print(f"bundle {bundle}: {figures['bundle_bytes'] / 1e6:.0f} MB")
    print(f"venv site-packages {site}: {figures['site_packages_bytes'] / 1e6:.0f} MB")
    print(f"ratio bundle / site-packages: {figures['bundle_bytes'] / figures['site_packages_bytes']:.2f}x")
    for name, size in parts[:10]:
        print(f"  {size / 1e6:8.1f} MB  _internal/{name}")
    if compare is not None:
        figures["compare_bytes"] = tree_bytes(compare)
        print(f"compared bundle {compare}: {figures['compare_bytes'] / 1e6:.0f} MB", end="")
        print(f" (bundle / compared: {figures['bundle_bytes'] / figures['compare_bytes']:.2f}x)")

    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
        programs = {
            "bundle": ([str(bundle / "surgview")], [bundle]),
            "venv": ([str(venv / "bin" / "surgview")], [venv, stdlib, ROOT / "app", ROOT / "engine"]),
        }
        if compare is not None:
            programs["compared"] = ([str(compare / "surgview")], [compare])
        runs: dict[str, dict[str, list]] = {name: {"info": [], "smoke": []} for name in programs}
        cold: dict[str, dict[str, object]] = {name: {} for name in programs}
        venv_env = {**env, "SURGVIEW_DATA": str(demo.parent)}  # the venv's --demo: <data>/demo
        for command in ("info", "smoke"):
            flags = ["--demo", f"--{command}"]
            for name, (exe, trees) in programs.items():
                run_env = venv_env if name == "venv" else env
                evict(*trees)
                wall, out = timed(exe + flags, run_env)
                cold[name][command] = (wall, smoke_marks(out)) if command == "smoke" else wall
            for _ in range(args.rounds):
                for name, (exe, _) in programs.items():
                    wall, out = timed(exe + flags, venv_env if name == "venv" else env)
                    runs[name][command].append((wall, smoke_marks(out)) if command == "smoke" else wall)

    print(f"\nstart-up, demo case (seconds; warm = median of {args.rounds})")
    others = [n for n in programs if n != "bundle"]
    print(f"{'':34}{'bundle':>10}" + "".join(f"{n:>10}" for n in others) + "".join(f"{'÷' + n:>11}" for n in others))

    def row(label: str, values: dict[str, float]) -> None:
        ratios = "".join(f"{values['bundle'] / values[n]:10.2f}x" for n in others)
        print(f"{label:34}{values['bundle']:10.2f}" + "".join(f"{values[n]:10.2f}" for n in others) + ratios)

    figures["start"] = {}
    for state in ("cold", "warm"):
        for name in programs:
            figures["start"].setdefault(name, {})
        info = {n: cold[n]["info"] if state == "cold" else statistics.median(runs[n]["info"]) for n in programs}
        row(f"--info, {state} (wall)", info)
        marks = (
            ("ready", "engine ready"),
            ("first_text", "first streamed text"),
            ("done", "chain done"),
            ("tokens", "tokens in the chain"),
        )
        for key, label in marks:
            vals = {}
            for n in programs:
                if state == "cold":
                    vals[n] = cold[n]["smoke"][1][key]
                else:
                    vals[n] = statistics.median(m[key] for _, m in runs[n]["smoke"])
            row(f"--smoke, {state}: {label}", vals)
            for n in programs:
                figures["start"][n][f"smoke_{state}_{key}"] = vals[n]
        walls = {
            n: cold[n]["smoke"][0] if state == "cold" else statistics.median(w for w, _ in runs[n]["smoke"])
            for n in programs
        }
        row(f"--smoke, {state} (wall to exit)", walls)
        for n in programs:
            figures["start"][n][f"info_{state}"] = info[n]
            figures["start"][n][f"smoke_{state}_wall"] = walls[n]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
