#!/usr/bin/env python3
"""Mutation testing of the core with mutmut: each module's mutants against that module's own fast tests.

    .venv/bin/python scripts/mutation.py                    # every module, smallest first
    .venv/bin/python scripts/mutation.py chain_parser timeline --workers 2

Runs in a throw-away git worktree of HEAD (``/tmp/wt-mut``; what is not committed is not tested, and edits in
the checkout during the run do not leak into it), one module at a time under ``nice``: mutmut copies the tree
to ``mutants/``, runs the module's tests once to learn which test calls which function, then runs every mutant
against only the tests that reach the mutated function. Writes a Markdown report (kill rate per module, every
surviving mutant with its diff and, where ``scripts/mutation-equivalent.txt`` has one, the verdict that it is
equivalent). Not part of the default test run: a full pass takes hours on two cores.

The kill rate counts killed and timed-out mutants (a mutant that makes a test hang is caught) over all mutants
that tests reach; mutants no selected test reaches are listed as "no tests" and count as survivors.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = ROOT / "scripts" / "mutation-equivalent.txt"


@dataclass(frozen=True)
class Module:
    name: str
    source: str
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()  # test ids left out: timing tests (not what a mutant breaks) and slow setups


_TIMING = (
    "tests/engine/test_chain_parser.py::"
    "test_text_after_the_answer_in_one_character_pieces_four_times_longer_takes_under_eight_times_as_long",
    "tests/engine/test_chain_parser.py::"
    "test_an_instrument_list_without_anatomy_four_times_longer_parses_in_under_eight_times_as_long",
)


# test_chain_properties.py stays out: Hypothesis costs ~5 s per mutant under mutmut's trampolines (ten times the
# rest together); the explicit tests are judged here, the properties in every default run.
_CHAIN_TESTS = (
    "tests/engine/test_chain_parser.py",
    "tests/engine/test_core_mutants.py",
    "tests/engine/test_chain_mutants.py",
)

# Smallest first: a run cut short has still covered the most modules.
MODULES: tuple[Module, ...] = (
    Module("scoring", "engine/scoring.py", ("tests/engine/test_scoring.py", "tests/engine/test_scoring_mutants.py")),
    Module("chain", "engine/chain.py", _CHAIN_TESTS, _TIMING),
    Module(
        "rewards",
        "train/grpo/rewards.py",
        ("tests/train/test_rewards.py", "tests/train/test_rewards_mutants.py", "tests/train/test_action_path.py"),
        # encodes a synthetic video per mutant (7 s); test_rewards_mutants.py checks the same on drawn labels
        ("tests/train/test_rewards.py::test_chains_built_from_labels_earn_full_reward",),
    ),
    Module("chain_parser", "engine/chain_parser.py", _CHAIN_TESTS, _TIMING),
    Module(
        "chain_fields",
        "engine/chain_fields.py",
        (*_CHAIN_TESTS, "tests/engine/test_chain_fields_mutants.py"),
        _TIMING,
    ),
    Module(
        "timeline",
        "engine/timeline.py",
        (
            "tests/engine/test_timeline.py",
            "tests/engine/test_cvs_assessment.py",
            "tests/engine/test_core_mutants.py",
            "tests/engine/test_timeline_mutants.py",
            "tests/engine/test_action_track.py",
        ),
        ("tests/engine/test_timeline.py::test_an_hour_at_one_frame_per_second_builds_in_under_a_second",),
    ),
    Module(
        "store",
        "engine/store.py",
        ("tests/engine/test_store.py", "tests/engine/test_core_mutants.py", "tests/engine/test_store_mutants.py"),
    ),
    Module(
        "video",
        "engine/video.py",
        (
            "tests/engine/test_video.py",
            "tests/engine/test_video_rotation_vfr.py",
            "tests/engine/test_timecode_and_labels.py",
            "tests/engine/test_video_mutants.py",
        ),
    ),
)
BY_NAME = {m.name: m for m in MODULES}

CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}
# mutmut's exit codes (mutmut/stats.py): what each means for the report.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}
STATUS.update({-24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault"})
STATUS[37] = "caught by type check"


@dataclass
class ModuleResult:
    module: Module
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, diff
    seconds: float = 0.0
    error: str = ""
    skipped: int = 0  # mutants not run (a sample)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def caught(self) -> int:
        return sum(n for s, n in self.counts.items() if s in CAUGHT)


def load_equivalent() -> dict[str, str]:
    """``mutant name: reason`` lines of mutants judged equivalent (no test can tell them from the original)."""
    verdicts: dict[str, str] = {}
    if EQUIVALENT_FILE.exists():
        for line in EQUIVALENT_FILE.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and ":" in line:
                name, reason = line.split(":", 1)
                verdicts[name.strip()] = reason.strip()
    return verdicts


def mutmut_section(pyproject: Path, module: Module) -> None:
    """Point the worktree's [tool.mutmut] at one module and its tests (existing files only)."""
    text = pyproject.read_text()
    config = tomllib.loads(text)["tool"]["mutmut"]
    config["only_mutate"] = [module.source]
    config["pytest_add_cli_args_test_selection"] = [t for t in module.tests if (pyproject.parent / t).exists()]
    config["pytest_add_cli_args"] = [*config.get("pytest_add_cli_args", []), *_deselect_args(module.deselect)]
    lines = ["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    section = re.compile(r"^\[tool\.mutmut\]\n.*?(?=^\[)", re.MULTILINE | re.DOTALL)
    pyproject.write_text(section.sub(lambda _: "\n".join(lines) + "\n\n", text, count=1))


def _deselect_args(ids: tuple[str, ...]) -> list[str]:
    return [arg for test_id in ids for arg in ("--deselect", test_id)]


def make_worktree(path: Path, ref: str) -> None:
    remove_worktree(path)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), ref], check=True)


def remove_worktree(path: Path) -> None:
    if path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def run_module(worktree: Path, module: Module, workers: int, nice: int, log: Path, patterns: list[str]) -> ModuleResult:
    result = ModuleResult(module)
    shutil.rmtree(worktree / "mutants", ignore_errors=True)
    mutmut_section(worktree / "pyproject.toml", module)
    mutmut = str(Path(sys.executable).parent / "mutmut")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    env.pop("HYPOTHESIS_PROFILE", None)
    command = ["nice", "-n", str(nice), mutmut, "run", "--max-children", str(workers), *patterns]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=worktree, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    result.seconds = time.monotonic() - started
    meta = worktree / "mutants" / (module.source + ".meta")
    if not meta.exists():
        result.error = f"mutmut exited {done.returncode} without results (see {log})"
        return result
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    functions = _functions(worktree / "mutants" / module.source)
    for name, code in sorted(codes.items(), key=lambda kv: _mutant_order(kv[0])):
        if code is None:  # left out by --sample or --mutants
            result.skipped += 1
            continue
        status = STATUS.get(code, "suspicious")
        result.counts[status] = result.counts.get(status, 0) + 1
        if status not in CAUGHT:
            result.survivors.append((name, status, _mutant_diff(functions, name.rsplit(".", 1)[-1])))
    return result


def _mutant_order(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def _functions(mutated: Path) -> dict[str, str]:
    """Source of every function in mutmut's mutated copy of a module, by name (originals end in
    ``__mutmut_orig``, mutants in ``__mutmut_N``; methods are named ``xǁClassǁmethod``)."""
    text = mutated.read_text()
    lines = text.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _mutant_diff(functions: dict[str, str], name: str) -> str:
    """The lines a mutant changed, original (-) then mutant (+); what ``mutmut show`` prints, without
    starting mutmut once per mutant."""
    base = name.rsplit("__mutmut_", 1)[0]
    original, mutant = functions.get(base + "__mutmut_orig"), functions.get(name)
    if original is None or mutant is None:
        return f"(source not found: mutmut show {name})"
    original, mutant = original.replace(base + "__mutmut_orig", base), mutant.replace(name, base)
    diff = difflib.unified_diff(original.splitlines(), mutant.splitlines(), lineterm="", n=0)
    return "\n".join(line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))


_SQL = re.compile(r"\b(?:SELECT|INSERT|UPDATE|DELETE|CREATE|INDEX|VALUES|WHERE|FROM|ORDER BY|PRAGMA)\b", re.I)


def _automatic_verdict(diff: str) -> str | None:
    """Mutants equivalent by rule: only the letter case of SQL or of a codec name changed (both are read
    case-insensitively by SQLite and Python)."""
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    if not removed or len(removed) != len(added) or removed == added:
        return None
    if all(a.lower() == b.lower() for a, b in zip(removed, added, strict=True)):
        if all(_SQL.search(a) for a in removed):
            return "only the letter case of SQL changed (SQLite reads keywords and names case-insensitively)"
        if all(re.search(r"\.(?:en|de)code\(", a) for a in removed):
            return "only the letter case of a codec name changed (Python looks codecs up case-insensitively)"
    return None


def report(results: list[ModuleResult], equivalent: dict[str, str], head: str) -> str:
    out = [
        f"## Mutation testing (mutmut, commit {head})",
        "",
        "Each module's mutants run against that module's fast tests (`scripts/mutation.py`). *Killed* counts",
        "killed and timed-out mutants; *equivalent* survivors cannot be told from the original by any test",
        "(reason given); the adjusted rate leaves them out.",
        "",
        "| module | mutants run (of) | killed | survived | no tests | equivalent | kill rate | adjusted | minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    equivalent = dict(equivalent)
    for r in results:
        for name, _, diff in r.survivors:
            verdict = _automatic_verdict(diff)
            if verdict is not None and name not in equivalent:
                equivalent[name] = verdict
    all_total = all_caught = all_equiv = 0
    for r in results:
        if r.error:
            out.append(f"| {r.module.source} | — | — | — | — | — | {r.error} | | {r.seconds / 60:.0f} |")
            continue
        equiv = sum(1 for name, _, _ in r.survivors if name in equivalent)
        all_total, all_caught, all_equiv = all_total + r.total, all_caught + r.caught, all_equiv + equiv
        out.append(
            f"| {r.module.source} | {r.total} ({r.total + r.skipped}) | {r.caught} | {r.counts.get('survived', 0)} | "
            f"{r.counts.get('no tests', 0)} | {equiv} | {_rate(r.caught, r.total)} | "
            f"{_rate(r.caught, r.total - equiv)} | {r.seconds / 60:.0f} |"
        )
    if len(results) > 1:
        out.append(
            f"| **all** | {all_total} | {all_caught} | | | {all_equiv} | {_rate(all_caught, all_total)} | "
            f"{_rate(all_caught, all_total - all_equiv)} | |"
        )
    for r in results:
        if not r.survivors:
            continue
        out += ["", f"### Survivors in {r.module.source}", ""]
        for name, status, diff in r.survivors:
            verdict = f"equivalent: {equivalent[name]}" if name in equivalent else status
            out.append(f"- `{name}` ({verdict})")
            out += ["  ```diff", *("  " + line for line in diff.splitlines()), "  ```"]
    return "\n".join(out) + "\n"


def _patterns(module: Module, args: argparse.Namespace) -> list[str]:
    """mutmut name globs for this module: the mutants asked for, or the sample, or none (every mutant)."""
    prefix = module.source.removesuffix(".py").replace("/", ".") + "."
    if args.mutants:
        return [m for m in args.mutants if m.startswith(prefix)]
    if args.sample:
        return [f"{prefix}*__mutmut_*[{args.sample}]"]
    return []


def _rate(caught: int, total: int) -> str:
    return f"{100 * caught / total:.1f}%" if total > 0 else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to run (default: all): {', '.join(BY_NAME)}")
    parser.add_argument("--workers", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--nice", type=int, default=15, help="niceness of the mutmut runs (default 15)")
    parser.add_argument("--ref", default="HEAD", help="the commit to test (default HEAD)")
    parser.add_argument("--worktree", type=Path, default=Path("/tmp/wt-mut"))
    parser.add_argument("--report", type=Path, default=ROOT / "scripts" / "mutation-report.md")
    parser.add_argument(
        "--sample",
        default="",
        metavar="DIGITS",
        help="run only mutants whose number ends in one of DIGITS (e.g. 05: a fifth of them, spread over every "
        "function); the report counts what was run",
    )
    parser.add_argument("--mutants", nargs="+", default=[], metavar="GLOB", help="run only these mutant names/globs")
    parser.add_argument("--keep", action="store_true", help="keep the worktree (mutmut browse/show there)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in BY_NAME]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    modules = [BY_NAME[m] for m in args.modules] if args.modules else list(MODULES)
    if args.mutants:  # only the modules those mutants are in
        modules = [m for m in modules if _patterns(m, args)]

    equivalent = load_equivalent()
    make_worktree(args.worktree, args.ref)
    head = subprocess.run(
        ["git", "-C", str(args.worktree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    results: list[ModuleResult] = []
    try:
        for module in modules:
            log = args.worktree.parent / f"mutation-{module.name}.log"
            print(f"[mutation] {module.name}: {module.source} (log: {log})", flush=True)
            result = run_module(args.worktree, module, args.workers, args.nice, log, _patterns(module, args))
            results.append(result)
            print(
                f"[mutation] {module.name}: {result.caught}/{result.total} caught "
                f"({_rate(result.caught, result.total)}) in {result.seconds / 60:.1f} min {result.error}",
                flush=True,
            )
            args.report.write_text(report(results, equivalent, head))  # written after each module
    finally:
        if not args.keep:
            remove_worktree(args.worktree)
    print(f"[mutation] report: {args.report}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
