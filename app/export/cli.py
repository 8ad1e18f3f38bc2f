"""``surgview report`` and ``surgview clip``: exports from the command line, no window.

    surgview report CASE --out FILE.html|FILE.pdf [--title T] [--reviewer NAME]
        [--model DIR] [--model-id ID] [--no-blank] [--stride S]
    surgview clip CASE --from T --to T --out FILE.mp4 [--no-panel] [--no-blank] [--crf N] [--preset P]

T is a frame number or a timecode (``hh:mm:ss.ff``, ``mm:ss``). Both read the case's stored
analysis (the most recent, or ``--model-id``) and never write beside the video. ``--out`` is
written as :mod:`engine.outputs` says: a file is replaced whole when the export is complete; a
symlink's target is written; an existing device or FIFO (a name ending .html/.pdf/.mp4) is written
in place once the export is complete, never replaced; a folder or socket is refused. Standard
output (``-``) is refused: the format is chosen by the name's suffix, and a PDF or MP4 is no text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.clitools import ArgumentParser, CliError, add_sweep_stride_argument
from engine.report_data import ReportError
from engine.timecode import parse_position
from engine.video import VideoError
from engine.video_probe import probe_video

__all__ = ["COMMANDS", "export_main"]

COMMANDS = ("report", "clip")


def _parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Export a reviewed case.")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="write the case report (HTML or PDF)")
    report.add_argument("case", help="the case video")
    report.add_argument("--out", required=True, help="FILE.html or FILE.pdf")
    report.add_argument(
        "--title", help="the report's title (default: 'Laparoscopic cholecystectomy review' and the date)"
    )
    report.add_argument("--reviewer", help="the reviewer's name on the sign-off lines")
    report.add_argument("--model", help="the model folder that analysed the case (its manifest goes in the report)")
    report.add_argument("--model-id", help="which stored analysis (default: the most recent)")
    report.add_argument("--no-blank", action="store_true", help="do not blank the case's burned-in text areas")
    add_sweep_stride_argument(report)
    report.add_argument("--json", metavar="OUT", help="also write the report's data as JSON (- for standard output)")
    clip = sub.add_parser("clip", help="write an annotated MP4 clip")
    clip.add_argument("case", help="the case video")
    clip.add_argument("--from", dest="start", required=True, help="first frame: number or hh:mm:ss.ff")
    clip.add_argument("--to", dest="stop", required=True, help="last frame: number or hh:mm:ss.ff")
    clip.add_argument("--out", required=True, help="FILE.mp4")
    clip.add_argument("--model-id", help="which stored analysis (default: the most recent)")
    clip.add_argument("--no-panel", action="store_true", help="no reasoning panel beside the picture")
    clip.add_argument("--no-blank", action="store_true", help="do not blank the case's burned-in text areas")
    clip.add_argument("--crf", type=int, default=20, help="x264 quality (lower: better, larger; default 20)")
    clip.add_argument("--preset", default="veryfast", help="x264 speed preset (default veryfast)")
    clip.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def export_main(prog: str, argv: Sequence[str]) -> int:
    args = _parser(prog).parse_args(argv)
    case = Path(args.case)
    if case.is_dir():
        raise CliError(f"{case} is a folder, not a video")
    if not case.is_file():
        raise CliError(f"{case}: no such video file")
    if args.out == "-":
        raise CliError(f"{args.command}: --out - (standard output) is not supported; give a file name")
    out = Path(args.out)
    try:
        if args.command == "report":
            return _report(case, out, args)
        return _clip(case, out, args)
    except (ReportError, VideoError) as exc:
        raise CliError(str(exc)) from None


def _report(case: Path, out: Path, args) -> int:
    from app.export.report import FORMATS, ReportOptions, report_for_video

    if out.suffix.lower() not in FORMATS:
        raise CliError(f"{out.name}: the report is written as .html or .pdf")
    options = ReportOptions(
        title=args.title,
        reviewer=args.reviewer,
        model_id=args.model_id,
        model_dir=Path(args.model) if args.model else None,
        blank=not args.no_blank,
        stride_s=args.stride,
    )
    data = report_for_video(case, out, options)
    if args.json:
        from engine.outputs import OutputError, write_output
        from engine.report_data import report_json

        try:
            write_output(args.json, json.dumps(report_json(data), indent=2, ensure_ascii=False) + "\n")
        except OutputError as exc:
            raise CliError(str(exc)) from None
    s = data.summary
    print(
        f"wrote {out}: {s.analysed_frames} analysed frames ({100 * s.coverage:.0f}% covered), "
        f"{len(data.bookmarks)} bookmarks, {s.model_id}",
        file=sys.stderr if args.json == "-" else sys.stdout,  # stdout holds the JSON then
    )
    return 0


def _clip(case: Path, out: Path, args) -> int:
    from app.export.clip import ClipOptions, clip_for_video

    if out.suffix.lower() not in (".mp4", ".m4v"):
        raise CliError(f"{out.name}: clips are written as .mp4")
    facts = probe_video(case)
    try:
        start, stop = (parse_position(t, facts.fps, facts.index_at) for t in (args.start, args.stop))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not 0 <= start <= stop < facts.frames:
        raise CliError(f"--from/--to must satisfy 0 <= from <= to <= {facts.frames - 1}, got {start}..{stop}")
    options = ClipOptions(
        start, stop, panel=not args.no_panel, blank=not args.no_blank, crf=args.crf, preset=args.preset
    )
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=stop - start + 1, unit="frame", desc=out.name, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:  # Ctrl+C stops the export; the temporary file goes with it, nothing is left at --out
        stats = clip_for_video(case, out, options, model_id=args.model_id, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(
        f"wrote {out}: {stats.frames} frames {stats.width}x{stats.height} at {stats.fps:g} fps "
        f"in {stats.seconds:.1f} s ({stats.frames / max(stats.seconds, 1e-9) / stats.fps:.1f}x real time)"
    )
    return 0
