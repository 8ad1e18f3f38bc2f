"""``surgview-engine``: the engine without a window.

surgview-engine parse [FILE] [--json]     read a model's output (file or stdin), print its chain
surgview-engine ontology [VOCAB] [--resolve NAME] [--procedure P]
surgview-engine probe VIDEO               frame count, rate, keyframes (read, not from headers)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from engine.chain import LEVEL_NAMES, Chain, ChainStatus
from engine.chain_parser import ChainParser, LevelClosed, ProblemFound
from engine.clitools import ArgumentParser, CliError, add_sweep_stride_argument, positive, run_subcommand
from engine.ontology import Ontology, UnknownLabelError, load_ontology
from engine.tasks import Task
from engine.terminal import safe_for_terminal, safe_json
from engine.timecode import format_time
from engine.video_probe import VideoError, probe_video

PROG = "surgview-engine"


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _say(line: str) -> None:
    """A line of the chain's printout: model text escaped (it may hold terminal escape sequences)."""
    print(safe_for_terminal(line))


def _print_chain(chain: Chain) -> None:
    _say(f"status: {chain.status.value}" + (f" (task stops at Level {chain.task_level})" if chain.task_level else ""))
    for problem in chain.problems:
        _say(f"  problem: {problem}")
    p, r, c = chain.perception, chain.relations, chain.context
    if p is not None:
        tools = [
            f"{s.name.label or s.name.text + ' (unknown)'}" + (f" {list(s.box)}" if s.box else "")
            for s in p.instruments
        ]
        anatomy = [m.label or m.text + " (unknown)" for m in p.anatomy]
        _say(
            f"Level 1 ({LEVEL_NAMES[1]}): instruments: {', '.join(tools) or 'none'}; "
            f"anatomy: {', '.join(anatomy) or 'none'}"
        )
    if r is not None:
        trips = [
            f"<{t.instrument.label or t.instrument.text}, {t.verb.label or t.verb.text}, "
            f"{t.target.label or t.target.text}>" + ("" if t.known else " (not a CholecT50 triplet)")
            for t in r.triplets
        ]
        _say(f"Level 2 ({LEVEL_NAMES[2]}): {', '.join(trips) or 'no triplets'}")
    if c is not None:
        phase = (c.phase.label or f"{c.phase.text} (unknown)") if c.phase else "not stated"
        cvs = ", ".join(f"C{i + 1} {s.value}" for i, s in enumerate(c.cvs) if s is not None) or "not stated"
        _say(f"Level 3 ({LEVEL_NAMES[3]}): phase: {phase}; CVS: {cvs}")
    if chain.answer is not None:
        _say(f"Answer: {chain.answer.text!r}")


def cmd_parse(args) -> int:
    text = _read_text(args.file)
    parser = ChainParser()
    # Feed in small pieces, as a stream would arrive, and report levels as they close.
    pieces = (text[start : start + 16] for start in range(0, len(text), 16))
    for events in [*(parser.feed(piece) for piece in pieces), parser.finish()]:
        for event in events if args.events else ():
            if isinstance(event, LevelClosed):
                print(f"[level {event.level} closed]", file=sys.stderr)
            elif isinstance(event, ProblemFound):
                print(f"[problem: {safe_for_terminal(event.message)}]", file=sys.stderr)
    chain = parser.close()
    if args.json:
        print(safe_json(chain.to_dict(), indent=2))
    else:
        _print_chain(chain)
    if chain.status is ChainStatus.MALFORMED and not args.lenient:
        raise CliError("the text is not a well-formed reasoning chain: " + "; ".join(chain.problems))
    return 0


def _vocab(onto: Ontology, name: str):
    try:
        return onto.vocabulary(name)
    except KeyError:
        raise CliError(f"no vocabulary {name!r}; choose from {', '.join(onto.names())}") from None


def _ontology_for(args) -> tuple[Ontology, str | None]:
    """The ontology the command reads and the procedure it belongs to (None: the default, unsaid).

    ``--procedure`` picks one; without it a vocabulary only another procedure has (``action``,
    ``step``) is looked up in the procedure that has it."""
    from engine.procedures import ProcedureError, get_procedure, load_procedures

    if args.procedure:
        try:
            proc = get_procedure(args.procedure)
        except ProcedureError as exc:
            raise CliError(str(exc)) from None
        return proc.ontology, proc.name
    onto = load_ontology()
    if args.vocabulary and args.vocabulary not in onto.names():
        owners = [p for p in load_procedures().values() if p.has(args.vocabulary)]
        if len(owners) == 1:
            return owners[0].ontology, owners[0].name
        if len(owners) > 1:
            names = ", ".join(p.name for p in owners)
            raise CliError(f"several procedures have a {args.vocabulary!r} vocabulary ({names}); add --procedure")
    return onto, None


def cmd_ontology(args) -> int:
    from engine.procedures import load_procedures

    onto, procedure = _ontology_for(args)
    where = f" ({procedure})" if procedure else ""
    if args.resolve is not None:
        names = [args.vocabulary] if args.vocabulary else onto.names()
        hits = [(n, _vocab(onto, n).resolve(args.resolve)) for n in names]
        hits = [(f"{n}{where}", label) for n, label in hits if label is not None]
        if not hits and procedure is None and not args.vocabulary:  # another procedure's label?
            for other in list(load_procedures().values())[1:]:
                found = ((n, other.vocabulary(n).resolve(args.resolve)) for n in other.ontology.names())
                hits += [(f"{n} ({other.name})", label) for n, label in found if label is not None]
        if not hits:
            try:
                _vocab(onto, names[0]).require(args.resolve)
            except UnknownLabelError as exc:
                raise CliError(str(exc)) from None
            raise CliError(f"{args.resolve!r} names no label")
        for n, label in hits:
            print(f"{n}: {label.name} (id {label.id}, {label.display})")
        return 0
    names = [args.vocabulary] if args.vocabulary else onto.names()
    print(f"ontology version {onto.version}{where}")
    for n in names:
        vocab = _vocab(onto, n)
        print(f"{n} ({len(vocab)}): " + ", ".join(f"{lb.id}={lb.name}" for lb in vocab))
    if not args.vocabulary and onto.triplets:
        print(f"triplets ({len(onto.triplets)}): e.g. " + "; ".join(onto.triplet_name(t.id) for t in onto.triplets[:3]))
    if not args.vocabulary and procedure is None:
        print("procedures: " + ", ".join(load_procedures()) + " (--procedure NAME lists one)")
    return 0


def cmd_probe(args) -> int:
    if Path(args.video).is_dir():
        raise CliError(f"{args.video} is a folder, not a video")
    try:
        facts = probe_video(Path(args.video))
    except VideoError as exc:
        raise CliError(str(exc)) from None
    _say(
        f"{facts.path.name}: {facts.codec} {facts.width}x{facts.height}, {float(facts.fps):.3f} fps, "
        f"{facts.frames} frames ({format_time(facts.duration_s, facts.fps)}), {facts.keyframes} keyframes"
    )
    return 0


def _load_for_serving(model: str):
    from engine.backend_factory import BackendSpec, open_backend

    return open_backend(BackendSpec(kind="transformers", model=model))


def cmd_serve(args) -> int:
    from engine.server import serve_main

    return serve_main(args, load_backend=_load_for_serving)


def _add_profile_arguments(parser) -> None:
    from engine.profiles import PROFILE_NAMES

    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        help=f"how the model is asked: surgview (one {Task.FRAME} prompt), surg-r1 (the Surg-R1 release's three "
        "questions at 840x476), qwen-vl (a general Qwen2.5-VL instruct model), qwen3-vl (a Qwen3-VL: boxes in "
        "0-1000); default: the model manifest's, else a stated default",
    )
    parser.add_argument("--task", help=f"surgview profile: the one question asked (default {Task.FRAME})")
    parser.add_argument(
        "--procedure",
        help="the operation the cases show (cholecystectomy, rarp, bypass, robotic; any spelling): its prompts and "
        "labels are used and it is remembered for each case; default: the case's remembered procedure, else "
        "cholecystectomy",
    )
    parser.add_argument("--max-tokens", type=positive(int), default=None, help="token cap (default: the profile's)")
    add_limit_arguments(parser)


def add_limit_arguments(parser) -> None:
    """Bounds of each answer: what a flooding or stalling model or server may cost."""
    parser.add_argument(
        "--max-chars", type=positive(int), default=None, help="characters kept of one answer (default 64000)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive(float),
        default=None,
        help="seconds without new text before an answer is given up (default: 60 for a server, 600 for a local model)",
    )
    parser.add_argument(
        "--total-timeout", type=positive(float), default=None, help="seconds for one whole answer (default 600)"
    )


_OUT_HELP = "a file (replaced whole when complete), a device or FIFO (written in place), or - for standard output"


def _add_analysis_commands(sub) -> None:
    from engine import cli_commands as cc
    from engine.backend_factory import add_backend_arguments
    from engine.profiles import PROFILE_NAMES
    from engine.server import add_serve_arguments

    a = sub.add_parser(
        "analyze", help="analyse whole cases: a sweep at a stride, resumable, results kept in the case store"
    )
    a.add_argument("cases", nargs="+", metavar="CASE")
    add_backend_arguments(a)
    a.add_argument("--stride", type=positive(float), default=1.0, help="seconds between analysed frames")
    a.add_argument(
        "--batch",
        type=positive(int),
        default=None,
        help="frames per batch (transformers backend; default: 1 on the CPU, what free GPU memory holds on CUDA)",
    )
    _add_profile_arguments(a)
    a.add_argument(
        "--concurrency",
        type=positive(int),
        default=16,
        help="requests in flight to the model server(s) (openai backend; a local model runs one at a time)",
    )
    a.add_argument(
        "--phases", metavar="videoNN-phase.txt", help="a Cholec80 phase file: print how much of the timeline agrees"
    )
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cc.cmd_analyze)
    q = sub.add_parser("ask", help="stream one frame's reasoning chain to the terminal")
    q.add_argument("case")
    q.add_argument("--frame", type=int, required=True)
    add_backend_arguments(q)
    _add_profile_arguments(q)
    q.add_argument("--reask", action="store_true", help="generate again even when a result is stored")
    q.add_argument("--events", action="store_true", help="report levels as they close (stderr)")
    q.set_defaults(func=cc.cmd_ask)
    e = sub.add_parser("eval", help="run a model over a Surg-R1-format JSONL set")
    e.add_argument("set", metavar="SET.jsonl")
    add_backend_arguments(e)
    e.add_argument("--out", required=True, metavar="RESULTS.jsonl", help=_OUT_HELP)
    e.add_argument(
        "--profile", choices=PROFILE_NAMES, help="system prompt, image size and sampling (default: the model's)"
    )
    e.add_argument("--max-tokens", type=positive(int), default=None, help="token cap (default: the profile's)")
    e.add_argument("--concurrency", type=positive(int), default=16, help="rows in flight to a model server")
    add_limit_arguments(e)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cc.cmd_eval)
    s = sub.add_parser("score", help="score a results file (release accuracy + per-class metrics)")
    s.add_argument("results", metavar="RESULTS.jsonl")
    s.add_argument("--json", metavar="OUT", help="also write the report as JSON (top-level 'accuracy'); " + _OUT_HELP)
    s.set_defaults(func=cc.cmd_score)
    x = sub.add_parser("export", help="per-frame results and phase segments of an analysed case")
    x.add_argument("case")
    x.add_argument("--jsonl", metavar="OUT", help=_OUT_HELP)
    x.add_argument("--csv", metavar="OUT", help=_OUT_HELP)
    x.add_argument("--model-id", help="which stored analysis (default: the most recent)")
    x.add_argument("--task")
    add_sweep_stride_argument(x)
    x.set_defaults(func=cc.cmd_export)
    v = sub.add_parser("serve", help="an OpenAI-compatible chat-completions server on a local model")
    add_serve_arguments(v)
    v.set_defaults(func=cmd_serve)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="surgview engine, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    _add_analysis_commands(sub)
    p = sub.add_parser("parse", help="parse a model's reasoning chain (file or - for stdin)")
    p.add_argument("file", nargs="?", default="-")
    p.add_argument("--json", action="store_true", help="print the chain as JSON")
    p.add_argument("--events", action="store_true", help="report levels as they close (stderr)")
    p.add_argument("--lenient", action="store_true", help="exit 0 even when the chain is malformed")
    p.set_defaults(func=cmd_parse)
    o = sub.add_parser("ontology", help="list the label vocabularies or resolve a name")
    o.add_argument("vocabulary", nargs="?", help=", ".join([*Ontology.vocabulary_names(), "action", "step"]))
    o.add_argument("--resolve", metavar="NAME", help="the canonical label a spelling resolves to")
    o.add_argument("--procedure", help="another procedure's vocabularies (rarp, bypass, robotic)")
    o.set_defaults(func=cmd_ontology)
    v = sub.add_parser("probe", help="frames, rate and keyframes of a video, counted by demuxing")
    v.add_argument("video")
    v.set_defaults(func=cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from engine.backends.base import BackendError
    from engine.outputs import OutputError
    from engine.store import StoreError

    # One-line errors by design: if one escapes a command, it is still the user's line, not an internal error.
    return run_subcommand(PROG, build_parser, argv, expected=(BackendError, StoreError, VideoError, OutputError))


if __name__ == "__main__":
    sys.exit(main())
