"""The report's timeline chart colours CVS as the viewer's timeline does: all three criteria met outside an
established episode is drawn in its own doubtful colour (never the met green) and named in the chart's
legend; the thick green line stands where CVS was established, not on a first isolated "met" frame."""

from __future__ import annotations

import numpy as np
import pytest

from app import palette
from app.export.pictures import chart_legend, chart_rows, ensure_gui_app, established_frame, timeline_picture
from app.timeline_model import legend
from engine.report_data import gather_report
from engine.store import CaseStore
from tests.engine.test_report_data import FPS, fill

MET, NEVER = ("met", "met", "met"), ("not met", "not met", "not met")


def report(tmp_path, runs, frame_count=1000):
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        fill(store, runs)
        store.add_bookmark(300, "a moment")
        return gather_report(store, fps=FPS, frame_count=frame_count)


def colour_pixels(image, colour: str) -> int:
    ensure_gui_app()
    width, height = image.width(), image.height()
    rgb = np.frombuffer(image.constBits(), np.uint8).reshape(height, image.bytesPerLine())[:, : width * 4]
    bgr = rgb.reshape(height, width, 4)[..., :3].astype(int)
    want = np.array([int(colour[5:7], 16), int(colour[3:5], 16), int(colour[1:3], 16)])
    return int((np.abs(bgr - want).sum(axis=-1) <= 6).sum())


def test_an_isolated_met_run_is_doubtful_and_a_stable_one_is_met(tmp_path):
    # met on two frames at the start (too short), not met, met on two frames again, then a stable run to the clip
    data = report(
        tmp_path,
        [
            (0, 50, "Preparation", MET),
            (50, 400, "Calot Triangle Dissection", NEVER),
            (400, 450, "Calot Triangle Dissection", MET),
            (450, 500, "Calot Triangle Dissection", NEVER),
            (500, 750, "Calot Triangle Dissection", MET),
            (750, 1000, "Clipping Cutting", NEVER),
        ],
    )
    assert data.cvs.assessment.established and data.cvs.assessment.established_frame == 500
    rows = dict(chart_rows(data))
    for criterion in ("CVS C1", "CVS C2", "CVS C3"):
        colours = [(a, b, c) for a, b, c in rows[criterion]]
        doubtful = [(a, b) for a, b, c in colours if c == palette.CVS_DOUBTFUL]
        met = [(a, b) for a, b, c in colours if c == palette.CVS_MET]
        assert doubtful and doubtful[0][0] == 0 and any(a <= 425 < b for a, b in doubtful), colours
        assert all(b <= 500 for _, b in doubtful)  # the established run is never doubtful
        assert any(a <= 600 < b for a, b in met) and not any(a <= 25 < b for a, b in met)
    assert established_frame(data) == 500  # the thick line: where it was established, not frame 0
    image = timeline_picture(data)
    assert colour_pixels(image, palette.CVS_DOUBTFUL) > 3 * 500  # three rows of doubtful runs, and the legend's
    assert colour_pixels(image, palette.CVS_MET) > 0


def test_the_legend_names_doubtful_in_the_viewers_colour(tmp_path):
    data = report(tmp_path, [(0, 50, "Preparation", MET), (50, 1000, "Calot Triangle Dissection", NEVER)])
    groups = dict(chart_legend(data))
    assert (palette.CVS_DOUBTFUL, "doubtful (all three met, not on a stable run)") in groups["CVS"]
    viewer = dict((group, [(c, n) for c, n, _ in rows]) for group, rows in legend())
    assert {c for c, _ in groups["CVS"]} == {c for c, _ in viewer["CVS"]}  # the same four colours as the viewer
    assert len({c for c, _ in groups["CVS"]} | set(palette.PHASE_COLORS.values())) == 4 + 7  # CVS apart from phases
    assert established_frame(data) is None  # never established: no green line
    image = timeline_picture(data)
    doubtful_in_rows = sum(b - a for _, runs in chart_rows(data)[1:4] for a, b, c in runs if c == palette.CVS_DOUBTFUL)
    assert doubtful_in_rows > 0
    bare = timeline_picture(report(tmp_path / "other", [(0, 1000, "Preparation", NEVER)]))
    assert colour_pixels(bare, palette.CVS_DOUBTFUL) > 0  # the legend's swatch, even with nothing doubtful
    assert colour_pixels(image, palette.CVS_DOUBTFUL) > colour_pixels(bare, palette.CVS_DOUBTFUL)


@pytest.fixture(autouse=True)
def _gui():
    ensure_gui_app()
