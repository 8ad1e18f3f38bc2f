"""``surgview labels``: a case's reviewer labels in and out, in the public datasets' formats (no window).

    surgview labels import CASE (--cholec80-phase FILE | --endoscapes-cvs FILE [--vid N] | --cholect50 FILE)
        [--reviewer NAME]
    surgview labels export CASE --format cholec80|endoscapes|cholect50 --out DIR [--name NAME]

Import writes the file's labels as the reviewer's (replacing the reviewer's earlier labels of the same
frames) in one transaction, after the whole file has been read: a malformed file is one error line naming
file and line and leaves the case store unchanged. Export writes what ``train/``'s adapters read (see
:mod:`engine.labels_io`); ``--name`` names the case there (default: the video's file name without its
extension; CholecT50 and Endoscapes name a case by its number, taken from the name's last digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.clitools import ArgumentParser, CliError
from engine.labels_io import (
    CaseFacts,
    LabelFormatError,
    export_cholec80,
    export_cholect50,
    export_endoscapes,
    import_cholec80,
    import_cholect50,
    import_endoscapes,
    video_number,
)
from engine.review_labels import ReviewError, ReviewLabels
from engine.store import CaseStore, StoreError

__all__ = ["COMMAND", "labels_main"]

COMMAND = "labels"
FORMATS = ("cholec80", "endoscapes", "cholect50")


def _parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=f"{prog} {COMMAND}", description="Reviewer labels in and out of a case.")
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="import annotations as the reviewer's labels of the case")
    imp.add_argument("case", help="the case video")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--cholec80-phase", metavar="FILE", help="a Cholec80 videoNN-phase.txt (Frame<TAB>Phase)")
    source.add_argument("--endoscapes-cvs", metavar="FILE", help="an Endoscapes-style CSV (vid, frame, C1, C2, C3)")
    source.add_argument("--cholect50", metavar="FILE", help="a CholecT50 VIDnn.json (triplets and boxes)")
    imp.add_argument("--vid", type=int, help="which video's rows of the CSV (default: its only one)")
    imp.add_argument("--reviewer", default="", help="whose labels these are")
    exp = sub.add_parser("export", help="export the reviewer's labels for training")
    exp.add_argument("case", help="the case video")
    exp.add_argument("--format", required=True, choices=FORMATS)
    exp.add_argument("--out", required=True, help="the folder to write (the dataset's layout inside)")
    exp.add_argument("--name", help="the case's name in the export (default: the video's file name)")
    return parser


def case_facts(video: Path) -> CaseFacts:
    """The video's size, rate and length (by demuxing, as the viewer counts frames)."""
    from engine.video_probe import VideoError, probe_video

    try:
        facts = probe_video(video)
    except VideoError as exc:
        raise CliError(str(exc)) from None
    return CaseFacts(video, facts.width, facts.height, float(facts.fps), facts.frames)


def labels_main(prog: str, argv: Sequence[str]) -> int:
    """``argv`` after the word ``labels``."""
    args = _parser(prog).parse_args(argv)
    video = Path(args.case)
    if not video.is_file():
        raise CliError(f"{video}: no such video file")
    case = case_facts(video)
    try:
        if args.action == "import":
            return _import(case, args)
        return _export(case, args)
    except (LabelFormatError, ReviewError, StoreError) as exc:
        raise CliError(str(exc)) from None


def _import(case: CaseFacts, args) -> int:
    with CaseStore.for_video(case.video, fps=case.fps, frame_count=case.frames) as store:
        labels = ReviewLabels(store, reviewer=args.reviewer, source="import")
        if args.cholec80_phase:
            change = import_cholec80(labels, Path(args.cholec80_phase), case)
        elif args.endoscapes_cvs:
            change = import_endoscapes(labels, Path(args.endoscapes_cvs), case, args.vid)
        else:
            change = import_cholect50(labels, Path(args.cholect50), case)
    span = change.frames
    where = f" on frames {span[0]}..{span[1] - 1}" if span else ""
    print(f"imported {len(change.added)} label rows{where} (replaced {len(change.removed)}) into {case.video.name}")
    return 0


def _export(case: CaseFacts, args) -> int:
    from engine.store import case_store_path

    path = case_store_path(case.video)
    if not path.is_file():
        raise CliError(f"{case.video.name}: no labels stored for this case")
    with CaseStore.open(path) as store:
        review = ReviewLabels(store).snapshot()
    name = args.name or case.video.stem
    out = Path(args.out)
    if args.format == "cholec80":
        written = export_cholec80(review, case, out, name)
    else:
        number = video_number(name)
        if number is None:
            raise CliError(f"{args.format} names a case by its number: give --name with one (e.g. video07)")
        if args.format == "endoscapes":
            written = export_endoscapes(review, case, out, number)
        else:
            written, between = export_cholect50(review, case, out, number)
            if between:
                print(f"note: {between} reviewed frame(s) between whole seconds left out (CholecT50 is 1 fps)")
    print(f"wrote {written[0]}")
    return 0
