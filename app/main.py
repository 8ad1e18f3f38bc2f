"""``surgview``: open a recorded case.

The interactive window (video canvas, reasoning panel, timelines) is built on top of the
engine in the viewer work; until it lands, this entry point opens the case through the same
engine calls the window will use and prints what it found: the video as actually decoded
(frames counted, keyframes) and, when Cholec80-style labels sit beside it, its phase timeline.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from engine.clitools import ArgumentParser, CliError, run
from engine.phase_labels import LabelFileError, read_cholec80_phases, segments
from engine.timecode import format_timecode
from engine.userdata import demo_video
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
        f"{facts.frames} frames ({format_timecode(facts.frames, facts.fps)}), {facts.keyframes} keyframes"
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


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog=PROG, description="Review a recorded laparoscopic case.")
    parser.add_argument("case", nargs="?", help="a case video")
    parser.add_argument("--demo", action="store_true", help="open the demo case")
    args = parser.parse_args(argv)
    if args.demo:
        video = demo_video()
        if not video.exists():
            raise CliError(
                f"no demo case at {video}; `./dev.sh run` builds it "
                f"(surgview-train synth --out {video.parent.parent.parent} --cases 1)"
            )
    elif args.case:
        video = Path(args.case)
    else:
        parser.error("give a case video or --demo")
    print("\n".join(describe_case(video)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
