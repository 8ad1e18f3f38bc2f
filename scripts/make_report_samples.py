"""Regenerate docs/report-page-*.png: the PDF case report of a synthetic case, page by page.

    .venv/bin/python scripts/make_report_samples.py [--case VIDEO] [--out docs] [--scale 1.4]

Without --case it writes a 1-minute 640x360 synthetic case in a temporary data folder and fills
its case store with ground-truth chains (one per second, from the generator's exact labels:
the "perfect model"), bookmarks three moments (Calot-triangle dissection, the critical view
reached, the first clip) with reviewer notes, and marks one burned-in-text area. With --case,
the case's own stored analysis, bookmarks and notes are used as they are. The report is written
as PDF through the same code as ``surgview report`` and its pages are rendered with pypdfium2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def synthetic_case(folder: Path) -> Path:
    from engine.report_data import gather_report
    from engine.store import BlankArea, CaseStore, case_store_path
    from train.synth.generate import SynthConfig, generate
    from train.synth.truth_store import store_truth_chains

    generate(folder, SynthConfig(cases=1, minutes=1.0, seed=3, width=640, height=360, fps=25, gop=50))
    video, _ = store_truth_chains(folder)
    with CaseStore.open(case_store_path(video)) as store:
        data = gather_report(store)
        calot = next(s for s in data.timelines.phase if s.label == "CalotTriangleDissection")
        second = 25  # chains are stored once per second: bookmark analysed frames
        middle = (calot.start + calot.end) // 2 // second * second
        moments = [(middle, "Calot triangle dissection", "fat cleared from the triangle")]
        if data.cvs.first_all_met is not None:
            first = -(-data.cvs.first_all_met // second) * second
            moments.append((first, "Critical view of safety reached", "two structures, window, lower third: seen"))
        if data.cvs.clipping_start is not None:
            clip = -(-data.cvs.clipping_start // second) * second + 2 * second
            moments.append((clip, "First clip", "clip placed on the cystic duct"))
        for frame, title, note in moments:
            store.add_bookmark(frame, title)
            store.add_note(note, frame=frame, author="reviewer")
        store.add_note("Teaching case: the critical view was documented before clipping.", frame=None)
        store.set_blank_areas([BlankArea(8, 8, 150, 22)])
    return video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, help="an analysed case (default: a synthetic one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--scale", type=float, default=1.4, help="pixels per PDF point")
    parser.add_argument("--pages", type=int, default=4, help="how many pages to keep")
    args = parser.parse_args()
    import pypdfium2 as pdfium

    from app.export.report import ReportOptions, report_for_video

    with tempfile.TemporaryDirectory(prefix="surgview-report-") as tmp:
        tmp_path = Path(tmp)
        if args.case is None:
            os.environ["SURGVIEW_DATA"] = str(tmp_path / "data")
            video = synthetic_case(tmp_path / "case")
            title = "Synthetic cholecystectomy — ground-truth chains"
        else:
            video, title = args.case, None
        pdf_path = tmp_path / "report.pdf"
        report_for_video(video, pdf_path, ReportOptions(title=title))
        args.out.mkdir(parents=True, exist_ok=True)
        pdf = pdfium.PdfDocument(str(pdf_path))
        for old in args.out.glob("report-page-*.png"):
            old.unlink()
        for i in range(min(args.pages, len(pdf))):
            path = args.out / f"report-page-{i + 1}.png"
            pdf[i].render(scale=args.scale).to_pil().save(path, optimize=True)
            print(path)
        pdf.close()


if __name__ == "__main__":
    main()
