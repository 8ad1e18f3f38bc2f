"""The HTML/PDF report and its chart follow the case's procedure: a suturing case's actions with their
display names and palette colours, and nothing of CVS."""

from __future__ import annotations

import pytest

from app import palette
from app.export.pictures import chart_legend, chart_rows, timeline_picture
from app.export.report import render_html
from app.procedure_view import label_colours
from engine.procedures import get_procedure
from engine.report_data import gather_report
from tests.engine.test_procedure_results import ACTIONS, rarp_store


@pytest.fixture
def suturing_report(tmp_path):
    pattern = [ACTIONS[1]] * 3 + [ACTIONS[2]] * 6 + [ACTIONS[3]] * 3
    with rarp_store(tmp_path / "c.sqlite", pattern) as store:
        return gather_report(store)


def test_the_chart_draws_the_action_track_and_instruments_without_cvs_rows(qapp, suturing_report):
    rows = chart_rows(suturing_report)
    assert [name for name, _ in rows] == ["Action", "Prograsp Forceps", "Large Needle Driver"]
    okabe = label_colours(get_procedure("rarp"), "action")
    assert [colour for *_, colour in rows[0][1]] == [
        okabe["positioning_the_needle_tip"],
        okabe["pushing_the_needle_through_the_tissue"],
        okabe["pulling_the_needle_out_of_the_tissue"],
    ]
    assert okabe["pushing_the_needle_through_the_tissue"] == palette.OKABE_ITO[2]
    assert okabe["other"] == palette.OKABE_ITO[7]
    legend = dict(chart_legend(suturing_report))
    assert list(legend) == ["Action", "Instruments"]
    assert [name for _, name in legend["Action"]] == [
        "Positioning the needle tip",
        "Pushing the needle through the tissue",
        "Pulling the needle out of the tissue",
    ]
    assert timeline_picture(suturing_report, width=800).height() > 0


def test_the_html_report_has_action_durations_and_no_cvs_section(qapp, suturing_report):
    html = render_html(suturing_report, {}, "data:image/png;base64,")
    assert "Critical view of safety" not in html and "CVS" not in html.split("<h2>De-identification")[0]
    assert "<h3>Actions</h3>" in html and "Pushing the needle through the tissue" in html
    assert "Robot-assisted radical prostatectomy (suturing)" in html
    assert html.index("Positioning the needle tip") < html.index("Pulling the needle out of the tissue")
    assert palette.OKABE_ITO[2] in html  # the action's colour square


def test_every_procedure_palette_slot_in_use_has_a_colour():
    from engine.procedures import load_procedures

    for proc in load_procedures().values():
        for role in {*proc.palettes, *proc.timelines}:
            if proc.has(role):
                for key in proc.colour_keys(role).values():
                    assert key.slot < len(palette.PROCEDURE_PALETTES[key.palette]), (proc.name, role, key)


def test_the_report_dialog_titles_a_suturing_case_as_one(qtbot):
    from app.export.ui import ReportDialog

    dialog = ReportDialog("Dr A", procedure="rarp")
    qtbot.addWidget(dialog)
    assert dialog.title_edit.text().startswith("Robot-assisted radical prostatectomy (suturing) review, ")
    dialog.title_edit.clear()
    assert dialog.values()[0].startswith("Robot-assisted radical prostatectomy (suturing) review, ")
    assert ReportDialog().title_edit.text().startswith("Laparoscopic cholecystectomy review, ")


def test_an_instruments_only_case_reports_its_instruments_and_no_cvs(qapp, tmp_path):
    from engine.store import CaseInfo, CaseStore, FrameResult
    from tests.engine.test_procedure_results import rarp_answer

    with CaseStore.open(tmp_path / "r.sqlite") as store:
        store.set_case_info(CaseInfo("e" * 32, "seq_1.mp4", 1.0, 10))
        text = rarp_answer("Tying a knot", tools="Vessel Sealer [1, 1, 9, 9]").replace("Level 2 task", "Level 1 task")
        for frame in range(10):
            store.put_result(FrameResult.from_text(frame, "m", "1.0+robotic", "tools", text))
        data = gather_report(store)
    assert data.cvs is None and data.tracks == {} and [t.tool for t in data.tools if t.runs] == ["Vessel_Sealer"]
    html = render_html(data, {}, "data:image/png;base64,")
    assert "Tracks: instruments in view;" in html and "vocabulary (instruments)" in html
    assert [name for name, _ in chart_rows(data)] == ["Vessel Sealer"]
