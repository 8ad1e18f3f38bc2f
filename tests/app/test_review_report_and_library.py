"""The agreement of the model with the reviewer outside the viewer's window: a short Review section in the
HTML and PDF reports (absent when the case was never reviewed) and a line in the library of cases."""

from __future__ import annotations

import pypdfium2 as pdfium
import pytest

from app.case_library import CaseLibrary
from app.export.report import report_for_video
from engine.review_agreement import case_agreement
from engine.review_labels import ReviewLabels
from engine.store import CaseStore, case_store_path
from train.synth.truth_store import store_truth_chains


@pytest.fixture
def case(synth_case, data_home):
    video, _ = store_truth_chains(synth_case[0])
    return video


def review(video) -> None:
    """A reviewer who agrees with the model on some frames and not on others."""
    with CaseStore.open(case_store_path(video)) as store:
        labels = ReviewLabels(store, reviewer="Dr <Grey>")
        labels.set_phase(0, 300, "Preparation")
        labels.set_phase(300, 600, "CalotTriangleDissection")
        labels.set_cvs(1, 0, 600, "not met")


def test_the_report_has_a_review_section_only_once_the_case_is_reviewed(case, tmp_path):
    html = report_for_video(case, tmp_path / "before.html") and (tmp_path / "before.html").read_text()
    assert "<h2>Review</h2>" not in html and "Labelled by" not in html

    review(case)
    data = report_for_video(case, tmp_path / "after.html")
    html = (tmp_path / "after.html").read_text()
    with CaseStore.open(case_store_path(case), readonly=True) as store:
        expected = case_agreement(store)
    assert expected is not None and expected.frames_reviewed > 0 and data.review == expected
    assert data.reviewers == ("Dr <Grey>",)
    section = html[html.index("<h2>Review</h2>") : html.index("<h2>Review and sign-off</h2>")]
    assert f"<td>{expected.frames_reviewed}</td>" in section
    assert f"{100 * expected.phase_accuracy:.0f}%" in section and f"on {expected.phase_frames} frames" in section
    c1 = expected.cvs_agreement[0]
    assert c1 is not None and f"C1 {100 * c1:.0f}%" in section and "C2 –" in section and "C3 –" in section
    assert "Dr &lt;Grey&gt;" in section  # the reviewer's name, escaped

    report_for_video(case, tmp_path / "after.pdf")
    pdf = pdfium.PdfDocument(str(tmp_path / "after.pdf"))
    text = " ".join(page.get_textpage().get_text_range() for page in pdf)
    pdf.close()
    assert "Frames reviewed" in text and "Phase accuracy" in text and "Dr <Grey>" in text


def test_the_library_shows_a_reviewed_cases_agreement(qtbot, case, settings):
    library = CaseLibrary(settings, lambda path: None)
    qtbot.addWidget(library)
    library.remember(case)
    assert "reviewed" not in library.item(0).text()
    review(case)
    library.refresh()
    with CaseStore.open(case_store_path(case), readonly=True) as store:
        line = case_agreement(store).text()
    assert library.item(0).text().splitlines() == [case.name, line]
    assert line in library.item(0).toolTip()
