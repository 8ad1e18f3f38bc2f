"""The PDF report's pages, read back from the written PDF: a table longer than a page carries on with its
header row repeated at the top of the next page, and no heading is the last thing on a page (it moves to
the page of its content). Lines are rebuilt from pypdfium2's character boxes, top to bottom."""

from __future__ import annotations

import html.parser
import itertools
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from app.export.report import ReportOptions, report_for_video, write_pdf
from engine.store import CaseStore, case_store_path
from train.synth.truth_store import store_truth_chains

BOOKMARKS = 70  # far more rows than a page holds
FOOTER = re.compile(r"^\d+/\d+$")  # the page number, "3 / 76" without spaces


def squash(text: str) -> str:
    """Text without whitespace: the PDF's text layer splits lines and words where the layout did."""
    return "".join(text.split())


def page_lines(path: Path) -> list[list[str]]:
    """Each page's lines of text (whitespace removed), top to bottom, without the page number."""
    pages = []
    pdf = pdfium.PdfDocument(str(path))
    try:
        for page in pdf:
            text = page.get_textpage()
            chars = []
            for i in range(text.count_chars()):
                ch = text.get_text_range(i, 1)
                if ch.strip():
                    left, bottom, _right, top = text.get_charbox(i, loose=True)  # the line's box, descenders or not
                    chars.append((round((top + bottom) / 2, 0), left, ch))
            lines: list[tuple[float, list[tuple[float, str]]]] = []
            for middle, left, ch in sorted(chars, key=lambda c: (-c[0], c[1])):
                if lines and abs(lines[-1][0] - middle) <= 3.0:  # the same line (cells of one row too)
                    lines[-1][1].append((left, ch))
                else:
                    lines.append((middle, [(left, ch)]))
            words = ["".join(ch for _, ch in sorted(line)) for _, line in lines]
            pages.append([w for w in words if not FOOTER.match(w)])
    finally:
        pdf.close()
    return pages


class _Headings(html.parser.HTMLParser):
    """The text of every h1–h3 of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self._inside = False

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3"):
            self._inside = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._inside = False

    def handle_data(self, data):
        if self._inside:
            self.headings[-1] += data


def headings_of(html_text: str) -> set[str]:
    parser = _Headings()
    parser.feed(html_text)
    return {squash(h) for h in parser.headings if h.strip()}


def assert_no_heading_ends_a_page(pages: list[list[str]], headings: set[str]) -> None:
    for number, lines in enumerate(pages, 1):
        if lines:
            assert lines[-1] not in headings, f"page {number} ends with the heading {lines[-1]!r}"


@pytest.fixture(scope="module")
def long_report(synth_case, tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic case with every frame's answer and many bookmarks with notes, written as PDF and HTML."""
    data = tmp_path_factory.mktemp("pagination-data")
    out = tmp_path_factory.mktemp("pagination")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SURGVIEW_DATA", str(data))
        video, _ = store_truth_chains(synth_case[0])
        with CaseStore.open(case_store_path(video)) as store:
            for i in range(BOOKMARKS):
                store.add_bookmark(i * 20, f"moment {i:02d}")
                store.add_note(f"note on moment {i:02d}", frame=i * 20)
        report_for_video(video, out / "report.pdf", ReportOptions(frame_width=320))
        report_for_video(video, out / "report.html", ReportOptions(frame_width=320))
    return out / "report.pdf", out / "report.html"


def test_a_long_table_repeats_its_header_row_on_the_next_page(long_report):
    pages = page_lines(long_report[0])
    header = squash("Time Bookmark Reviewer's notes")
    row = re.compile(r"moment(\d\d)note")  # a table row: title and note side by side
    start = next(i for i, lines in enumerate(pages) if squash("Bookmarked moments") in lines)
    assert header in pages[start] and pages[start].index(header) > pages[start].index(squash("Bookmarked moments"))
    rows_by_page: list[list[int]] = []
    for lines in pages[start:]:
        found = [int(m.group(1)) for line in lines if (m := row.search(line))]
        if not found:
            break
        rows_by_page.append(found)
    assert len(rows_by_page) >= 2, "the table was meant to be longer than a page"
    assert [n for rows in rows_by_page for n in rows] == list(range(BOOKMARKS))  # every row once, in order
    for offset in range(1, len(rows_by_page)):
        lines = pages[start + offset]
        assert lines[0] == header, f"page {start + offset + 1} continues the table without its header: {lines[:2]}"
        assert lines.count(header) == 1


def test_no_heading_is_left_at_the_foot_of_a_page(long_report):
    pdf_path, html_path = long_report
    headings = headings_of(html_path.read_text(encoding="utf-8"))
    assert {squash("Bookmarked moments"), squash("Critical view of safety"), squash("Appendix: method")} <= headings
    pages = page_lines(pdf_path)
    assert len(pages) > BOOKMARKS  # one page per bookmarked frame, and the tables and appendix
    printed = {line for lines in pages for line in lines}
    printed |= {a + b for lines in pages for a, b in itertools.pairwise(lines)}  # a title wrapped in two
    assert headings - printed == set()  # every heading is on a page (none painted over by a table)
    assert_no_heading_ends_a_page(pages, headings)
    for number, lines in enumerate(pages, 1):  # a heading always has content after it on its page
        for i, line in enumerate(lines):
            if line in headings:
                assert any(other not in headings for other in lines[i + 1 :]), f"page {number}: {line!r} is alone"


FILLER = "<p>Line of text that fills the page a little more on every step.</p>"


SHORT_ROW = "<tr><th>" + "shortrow " * 16 + "</th><td>v</td></tr>"  # a row of several lines, each "shortrow…"


def document(lines: int) -> str:
    rows = "".join(f"<tr><td>row {i:03d}</td><td>value {i:03d}</td></tr>" for i in range(60))
    return (
        "<html><body style='font-size: 9pt'><h1>Title</h1>"
        + FILLER * lines
        + "<h2>Second section</h2><p>Its first paragraph, kept with the heading.</p>"
        + "<h2>Short section</h2><p>A statement.</p><table border='1' cellpadding='4'>"
        + SHORT_ROW * 3
        + "</table>"
        + "<h2>A table</h2><table border='1' cellpadding='4'>"
        + "<thead><tr><th>Name</th><th>Value</th></tr></thead>"
        + rows
        + "</table><h2>After the table</h2><p>The end.</p></body></html>"
    )


@pytest.mark.parametrize("start", [24, 58])  # a page holds about 34 filler lines
def test_headings_move_to_their_content_wherever_the_page_ends(tmp_path, start):
    """Sweep the headings over the foot of the page line by line (a paragraph after one, a table after
    another): none ends a page, and the table repeats its header row wherever it splits."""
    headings = {squash(h) for h in ("Title", "Second section", "Short section", "A table", "After the table")}
    for lines in range(start, start + 12):
        path = tmp_path / f"sweep-{lines}.pdf"
        write_pdf(document(lines), path)
        pages = page_lines(path)
        assert_no_heading_ends_a_page(pages, headings)
        section = [i for i, p in enumerate(pages) if any(line.startswith(("Shortsection", "shortrow")) for line in p)]
        assert len(section) == 1, f"{lines} lines: a short section (a table of wrapped rows) split over pages"
        with_rows = [p for p in pages if any(line.startswith("row") for line in p)]
        assert len(with_rows) >= 2
        for p in with_rows:
            first_row = next(i for i, line in enumerate(p) if line.startswith("row"))
            assert p[first_row - 1] == "NameValue", f"{lines} lines: a page of rows without the header row"


def test_page_one_answers_the_clinical_questions(long_report):
    """Phases with durations, the CVS statement, first clip and cut, instruments, bookmarked moments with
    their notes: all on page 1 (the rest of a long bookmark list is counted and follows in its table)."""
    page = page_lines(long_report[0])[0]
    text = "".join(page)
    # this 1-minute case's truth meets all three only 2 s before the clip, which the rule calls too short to
    # establish CVS (frames during clipping no longer make it a stable view): the verdict, and where the doubtful
    # frames are listed, so the phases still fit on the page
    assert "Criticalviewofsafety" in text and "CVSwasNOTestablishedbeforeclippingbeganat" in text
    assert "listedunderCriticalviewofsafety" in text and "Isolatedframes" not in text
    assert re.search(r"Firstclipandcut\d\d:\d\d:\d\d\(frame\d+\)", text)
    assert re.search(r"Instrumentsseen.*Grasper\(\d:\d\d\)", text)
    for name in ("Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderRetraction"):
        assert re.search(rf"■{name}\d+:\d\d\d", text), name  # the phase with its duration
    for i in range(3):
        assert re.search(rf"\(frame{i * 20}\)moment{i:02d}:noteonmoment{i:02d}", text), i
    assert f"and{BOOKMARKS - 3}more" in text
