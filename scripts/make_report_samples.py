"""Regenerate docs/report-page-*.png: the PDF case report of the demo case, page by page.

    .venv/bin/python scripts/make_report_samples.py [--case VIDEO] [--out docs] [--scale 1.4]

Without --case it writes the demo case (the 2-minute synthetic case of ``surgview-train demo``)
in a temporary data folder, analyses it with the bundled demo model at one frame a second,
bookmarks moments of the model's own timeline with reviewer notes, and marks one burned-in-text
area. With --case,
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


def demo_case(folder: Path) -> tuple[Path, Path]:
    """The demo case (as ``surgview-train demo`` makes it), analysed by the bundled demo model at
    one frame a second, with a reviewer's bookmarks and notes at the moments a report is read for."""
    from engine import cli as engine_cli
    from engine.report_data import gather_report
    from engine.resources import resource_path
    from engine.store import BlankArea, CaseStore, case_store_path
    from train.synth.generate import SynthConfig, generate

    generate(folder, SynthConfig(cases=1, minutes=2.0, seed=7))  # the demo case
    video = folder / "cholec80" / "videos" / "video01.mp4"
    model = resource_path("demo_model")
    code = engine_cli.main(["analyze", str(video), "--model", str(model), "--stride", "1", "--batch", "8", "--quiet"])
    if code != 0:
        raise SystemExit(f"analysis failed ({code})")
    with CaseStore.open(case_store_path(video)) as store:
        data = gather_report(store)
        second = 25  # analysed once per second: bookmark analysed frames
        moments = []
        calot = next((s for s in data.timelines.phase if s.label == "CalotTriangleDissection"), None)
        if calot is not None:
            middle = (calot.start + calot.end) // 2 // second * second
            moments.append((middle, "Calot triangle dissection", "check the hook stays on the gallbladder side"))
        if data.cvs.first_all_met is not None:
            first = -(-data.cvs.first_all_met // second) * second
            moments.append((first, "Critical view of safety (model)", "model says all three criteria met: verify"))
        later = next((s for s in data.timelines.phase if s.label == "GallbladderDissection"), None)
        if later is not None:
            moments.append((later.start // second * second + second, "Gallbladder dissection", "start of the phase"))
        for frame, title, note in moments:
            store.add_bookmark(frame, title)
            store.add_note(note, frame=frame, author="reviewer")
        store.add_note("Demo case: synthetic video, analysed by the bundled 2.2 M-parameter demo model.", frame=None)
        store.set_blank_areas([BlankArea(8, 8, 150, 22)])
    return video, model


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
        model = None
        if args.case is None:
            os.environ["SURGVIEW_DATA"] = str(tmp_path / "data")
            video, model = demo_case(tmp_path / "case")
            title = None  # the default: "Laparoscopic cholecystectomy review, <date>"
        else:
            video, title = args.case, None
        pdf_path = tmp_path / "report.pdf"
        report_for_video(video, pdf_path, ReportOptions(title=title, model_dir=model))
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
