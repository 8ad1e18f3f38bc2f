"""``surgview``: open a recorded case in the viewer.

    surgview [CASE] [--model DIR | --url URL [--url URL2] [--served-model NAME]] [--profile P] [--demo]
             [--procedure NAME] [--info | --smoke]
    surgview report CASE --out FILE.html|FILE.pdf        (see app/export/cli.py)
    surgview clip CASE --from T --to T --out FILE.mp4
    surgview labels import|export CASE ...               (see engine/labels_cli.py)

``--procedure`` (``rarp``, ``bypass``, ``robotic``, ``cholecystectomy``; any spelling) says which
operation the case shows and is remembered for it (Case ▸ Procedure changes it later); ``--demo``
opens the demo case with the demo model (``./dev.sh run`` builds both); ``--info`` prints what the
engine finds in the case (frames counted by demuxing, phase labels beside it) instead of opening a
window; ``--smoke`` analyses one frame offscreen and exits (install check).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.export.cli import COMMANDS as EXPORT_COMMANDS
from app.export.cli import export_main
from engine.backend_factory import default_kind
from engine.case_procedure import ProcedureChoiceError, set_case_procedure
from engine.clitools import ArgumentParser, CliError, run
from engine.labels_cli import COMMAND as LABELS_COMMAND
from engine.labels_cli import labels_main
from engine.phase_labels import LabelFileError, read_cholec80_phases, segments
from engine.procedures import ProcedureError, procedure_names
from engine.profiles import PROFILE_NAMES
from engine.timecode import format_time, format_timecode
from engine.userdata import demo_dir, demo_video
from engine.video_probe import VideoError, probe_video

PROG = "surgview"


def phase_file_for(video: Path) -> Path:
    """Cholec80 layout: ``videos/videoNN.mp4`` ↔ ``phase_annotations/videoNN-phase.txt``."""
    return video.parent.parent / "phase_annotations" / f"{video.stem}-phase.txt"


def describe_case(video: Path) -> list[str]:
    try:
        facts = probe_video(video)
    except VideoError as exc:
        raise CliError(str(exc)) from None
    lines = [
        f"case {video.name}: {facts.width}x{facts.height} {facts.codec}, {float(facts.fps):g} fps, "
        f"{facts.frames} frames ({format_time(facts.duration_s, facts.fps)}), {facts.keyframes} keyframes"
    ]
    labels = phase_file_for(video)
    if labels.exists():
        try:
            phases = read_cholec80_phases(labels)
        except LabelFileError as exc:
            lines.append(f"phase labels unreadable: {exc}")
            return lines
        if len(phases) != facts.frames:
            lines.append(f"warning: {labels.name} labels {len(phases)} frames, the video holds {facts.frames}")
        lines.append("phase timeline (ground truth):")
        for seg in segments(phases):
            lines.append(
                f"  {format_timecode(seg.start, facts.fps)} – {format_timecode(seg.end, facts.fps)}  {seg.label}"
            )
    return lines


def remember_procedure(video: Path, name: str) -> str:
    """Record ``name`` (any spelling) as ``video``'s procedure, before the engine or the window reads it;
    returns the canonical name."""
    try:
        return set_case_procedure(video, name).name
    except (ProcedureError, ProcedureChoiceError) as exc:
        raise CliError(str(exc)) from None


def engine_spec(args) -> dict:
    """What the engine child process should load: a model directory or one or more server URLs."""
    profile = {"profile": args.profile} if getattr(args, "profile", None) else {}
    if args.url:
        urls = list(args.url)
        return {
            "kind": "openai",
            "url": urls[0],
            "urls": urls,
            "model": args.served_model or "default",
            "api_key": os.environ.get("SURGVIEW_API_KEY"),
            "stride_s": args.stride,
            "concurrency": args.concurrency,
            **profile,
        }
    if args.model:
        return {
            "kind": default_kind(args.model),  # onnx in the torch-free bundle, when the folder has an export
            "model": str(args.model),
            "threads": 1,
            "stride_s": args.stride,
            **profile,
        }
    return {}


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXPORT_COMMANDS:  # `surgview report|clip CASE ...` (a video named so: ./report)
        return export_main(PROG, argv)
    if argv and argv[0] == LABELS_COMMAND:  # `surgview labels import|export CASE ...`
        return labels_main(PROG, argv[1:])
    parser = ArgumentParser(prog=PROG, description="Review a recorded laparoscopic case.")
    parser.add_argument("case", nargs="?", help="a case video")
    parser.add_argument("--demo", action="store_true", help="open the demo case with the demo model")
    parser.add_argument("--model", help="model directory (default: the one chosen in Preferences)")
    parser.add_argument(
        "--url", action="append", help="an OpenAI-compatible server instead of a local model (repeat for replicas)"
    )
    parser.add_argument("--served-model", help="the server's model name (with --url)")
    parser.add_argument(
        "--profile", choices=PROFILE_NAMES, help="how the model is asked (default: its manifest's, else stated)"
    )
    parser.add_argument(
        "--procedure",
        metavar="NAME",
        help=f"the case's procedure, remembered for it ({', '.join(procedure_names())}; default: as chosen before)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight to the server(s) (with --url)")
    parser.add_argument("--stride", type=float, default=1.0, help="seconds between background-analysed frames")
    parser.add_argument("--info", action="store_true", help="print what is in the case; open no window")
    parser.add_argument(
        "--smoke", action="store_true", help="check the install: stream one frame's chain offscreen, print, exit"
    )
    args = parser.parse_args(argv)
    video = Path(args.case) if args.case else None
    if args.demo:
        video = demo_video()
        if not video.exists():
            raise CliError(f"no demo case at {video}; `./dev.sh run` builds it")
        if not args.model and not args.url and (demo_dir() / "model").is_dir():
            args.model = str(demo_dir() / "model")
    if args.procedure:
        if video is None or not video.exists():
            parser.error("--procedure needs a case (a video file)")
        remember_procedure(video, args.procedure)
    if args.info:
        if video is None:
            parser.error("--info needs a case")
        print("\n".join(describe_case(video)))
        return 0
    if video is not None and not video.exists():
        raise CliError(f"{video}: no such video file")
    if args.smoke:
        if video is None:
            parser.error("--smoke needs a case (or --demo)")
        from app.smoke import run_smoke

        return run_smoke(video, engine_spec(args))
    from app.viewer import run_viewer  # Qt is imported only when a window opens

    return run_viewer(video, engine_spec(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
