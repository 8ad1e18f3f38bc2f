"""VideoCanvas: frame fitting, overlays of the displayed frame only, layers, hover, hostile text."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage

from app import palette
from app.state import LayerState
from app.widgets.video_canvas import VideoCanvas, plain_text
from engine.chain_parser import parse_chain

FRAME_GREY = QColor("#404040")

CHAIN = """<think>
Level 1 (Perception): Instruments: Grasper [10, 20, 100, 90] (0.93), Hook [150, 40, 300, 170], Zapper [210, 100, 260, 130]. Anatomy: liver, gallbladder.
Level 2 (Relation): Triplets: grasper retract gallbladder; hook dissect cystic duct.
Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable.
</think>
<answer>CalotTriangleDissection</answer>"""


def frame(width: int = 320, height: int = 180, colour: QColor = FRAME_GREY) -> QImage:
    image = QImage(width, height, QImage.Format.Format_RGB888)
    image.fill(colour)
    return image


def close_to(actual: QColor, expected: QColor | str, tol: int = 40) -> bool:
    e = QColor(expected)
    return all(abs(a - b) <= tol for a, b in zip(actual.getRgb()[:3], e.getRgb()[:3], strict=True))


def any_near(shot: QImage, xs, ys, colour) -> bool:
    return any(close_to(shot.pixelColor(x, y), colour) for x in xs for y in ys)


@pytest.fixture
def layers() -> LayerState:
    return LayerState()


@pytest.fixture
def canvas(qtbot, layers) -> VideoCanvas:
    widget = VideoCanvas(layers=layers)
    qtbot.addWidget(widget)
    widget.resize(640, 360)  # the 320x180 frame at 2x, no bars
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def chain():
    return parse_chain(CHAIN)


def shot(widget: VideoCanvas) -> QImage:
    return widget.grab().toImage()


def test_frame_is_scaled_to_fit_with_black_bars(canvas):
    canvas.resize(640, 480)
    canvas.set_frame(0, frame())
    img = shot(canvas)
    assert canvas.image_rect().getRect() == (0, 60, 640, 360)
    assert close_to(img.pixelColor(320, 30), "#000000", 5)  # bar
    assert close_to(img.pixelColor(320, 240), FRAME_GREY, 5)  # picture
    assert close_to(img.pixelColor(320, 450), "#000000", 5)
    canvas.resize(800, 360)  # pillarbox
    assert canvas.image_rect().getRect() == (80, 0, 640, 360)
    assert close_to(shot(canvas).pixelColor(40, 180), "#000000", 5)


def test_boxes_are_drawn_where_the_frame_says(canvas, chain):
    canvas.set_frame(7, frame())
    assert canvas.set_chain(7, chain)
    img = shot(canvas)
    # Grasper [10, 20, 100, 90] at 2x → widget (20, 40)–(200, 180).
    assert any_near(img, [150], range(38, 43), palette.BOX)  # top edge
    assert any_near(img, range(18, 23), [120], palette.BOX)  # left edge
    assert any_near(img, range(198, 203), [120], palette.BOX)  # right edge
    assert close_to(img.pixelColor(110, 110), FRAME_GREY, 5)  # inside: the picture
    # Hook [150, 40, 300, 170] → left edge at x=300.
    assert any_near(img, range(298, 303), [200], palette.BOX)
    # Zapper is not in the ontology: drawn flagged (dashed, its own colour).
    assert any(close_to(img.pixelColor(x, 200), palette.BOX_UNKNOWN) for x in range(420, 520))


def test_boxes_follow_letterboxing(canvas, chain):
    canvas.resize(640, 480)
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    img = shot(canvas)
    assert any_near(img, [150], range(98, 103), palette.BOX)  # top edge moved down by the 60px bar


def test_layer_toggles(canvas, chain, layers):
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    phase_at, cvs_row = (11, 20), 20
    img = shot(canvas)
    assert close_to(img.pixelColor(*phase_at), palette.PHASE_COLORS["CalotTriangleDissection"])
    assert not close_to(img.pixelColor(600, cvs_row), FRAME_GREY, 5)  # CVS badge, top right
    layers.boxes = False
    img = shot(canvas)
    assert not any_near(img, [150], range(36, 45), palette.BOX)
    assert close_to(img.pixelColor(150, 40), FRAME_GREY, 5)
    layers.phase = False
    layers.cvs = False
    img = shot(canvas)
    assert close_to(img.pixelColor(*phase_at), FRAME_GREY, 5)
    assert close_to(img.pixelColor(600, cvs_row), FRAME_GREY, 5)
    layers.update(boxes=True, phase=True, cvs=True)
    assert any_near(shot(canvas), [150], range(38, 43), palette.BOX)


def test_triplets_strip_and_its_toggle(canvas, chain, layers):
    canvas.set_osd_visible(False)
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    strip_at = (14, 330)  # bottom left, inside the strip's padding
    assert not close_to(shot(canvas).pixelColor(*strip_at), FRAME_GREY, 5)
    layers.triplets = False
    assert close_to(shot(canvas).pixelColor(*strip_at), FRAME_GREY, 5)


def test_osd_shows_and_hides(canvas):
    canvas.set_fps(25)
    canvas.set_frame(1234, frame())
    osd_at = (620, 340)
    assert not close_to(shot(canvas).pixelColor(*osd_at), FRAME_GREY, 5)
    canvas.set_osd_visible(False)
    assert not canvas.osd_visible
    assert close_to(shot(canvas).pixelColor(*osd_at), FRAME_GREY, 5)


def test_a_chain_of_another_frame_is_never_drawn(canvas, chain):
    canvas.set_frame(5, frame())
    assert not canvas.set_chain(4, chain)  # stale: ignored
    assert canvas.chain is None
    assert not any_near(shot(canvas), [150], range(36, 45), palette.BOX)
    assert canvas.set_chain(5, chain)
    canvas.set_frame(6, frame())  # the next frame arrives: its overlay is not this one
    assert canvas.chain is None
    assert not any_near(shot(canvas), [150], range(36, 45), palette.BOX)
    canvas.set_frame(6, frame())
    assert canvas.set_chain(6, chain)
    canvas.set_frame(6, frame(colour=QColor("#303030")))  # same index again: the overlay stays
    assert canvas.chain is chain
    assert canvas.set_chain(6, None) and canvas.chain is None  # the frame's analysis withdrawn


def test_no_frame_no_chain(canvas, chain):
    assert not canvas.set_chain(-1, chain)
    canvas.set_frame(1, frame())
    canvas.clear()
    assert canvas.index == -1 and canvas.chain is None
    assert close_to(shot(canvas).pixelColor(320, 180), "#000000", 5)


def test_hover_reports_the_box_label_and_highlights(canvas, chain, layers, qtbot):
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    seen: list[str | None] = []
    canvas.entityHovered.connect(seen.append)
    qtbot.mouseMove(canvas, QPoint(100, 110))  # inside Grasper
    qtbot.waitUntil(lambda: seen == ["Grasper"], timeout=10000)
    assert layers.highlighted == "Grasper"
    qtbot.mouseMove(canvas, QPoint(400, 250))  # inside Hook
    qtbot.waitUntil(lambda: seen == ["Grasper", "Hook"], timeout=10000)
    qtbot.mouseMove(canvas, QPoint(630, 10))  # nothing
    qtbot.waitUntil(lambda: seen == ["Grasper", "Hook", None], timeout=10000)
    assert layers.highlighted is None
    qtbot.mouseMove(canvas, QPoint(470, 230))  # Zapper (inside Hook too: the smaller box wins)
    qtbot.wait(50)
    assert seen[-1] is None  # an unknown tool is no entity to share
    layers.boxes = False  # hidden boxes are not hoverable
    qtbot.mouseMove(canvas, QPoint(100, 112))
    qtbot.wait(50)
    assert seen[-1] is None


def test_highlighted_entity_draws_its_box_differently(canvas, chain, layers):
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    layers.highlighted = "Grasper"  # e.g. hovered in the reasoning panel
    img = shot(canvas)
    assert any_near(img, [150], range(37, 44), palette.BOX_HIGHLIGHT)
    assert not any_near(img, [150], range(37, 44), palette.BOX)
    assert any_near(img, range(298, 303), [200], palette.BOX)  # Hook unchanged
    layers.highlighted = None
    assert any_near(shot(canvas), [150], range(38, 43), palette.BOX)


def test_hostile_model_text_is_drawn_literally(canvas, layers):
    hostile = parse_chain(
        "<think>\nLevel 1 (Perception): Instruments: <b>x</b> [40, 60, 200, 160], "
        "\x1b[31mred\x07 [0, 0, 10, 10]. Anatomy: none.\n"
        "Level 2 (Relation): Triplets: <img src=x> eat <script>.\n"
        "Level 3 (Context): Phase: <i>y</i>\u202e. CVS: C1 met.\n</think>\n<answer>x</answer>"
    )
    names = [s.name.text for s in hostile.perception.instruments if s.box is not None]
    assert "<b>x</b>" in names
    canvas.set_frame(3, frame())
    assert canvas.set_chain(3, hostile)
    layers.highlighted = "<b>x</b>"
    img = shot(canvas)  # no crash
    # The label tag above the box is as wide as the literal text, not as a bold "x".
    font = QFont(canvas.font())
    font.setPixelSize(int(min(18, max(10, 360 / 32))))
    literal = QFontMetrics(font).horizontalAdvance("<b>x</b> ?") + 8
    row = 120 - 4  # just above the box's top edge (60 * 2)
    dark = [x for x in range(80, 640) if img.pixelColor(x, row).lightness() < FRAME_GREY.lightness() - 20]
    assert dark and abs((max(dark) - min(dark) + 1) - literal) <= 3
    assert plain_text("a\x1b[31mb\u202ec\nd") == "a [31mb c d"
    assert plain_text("<b>x</b>") == "<b>x</b>"
    assert len(plain_text("y" * 500)) == 80


def test_layers_can_be_swapped(canvas, chain):
    canvas.set_frame(7, frame())
    canvas.set_chain(7, chain)
    other = LayerState(boxes=False)
    canvas.set_layers(other)
    assert canvas.layers is other
    assert not any_near(shot(canvas), [150], range(36, 45), palette.BOX)
    other.boxes = True
    assert any_near(shot(canvas), [150], range(38, 43), palette.BOX)


def test_listener_survives_widget_deletion(qtbot, layers):
    widget = VideoCanvas(layers=layers)
    widget.deleteLater()
    qtbot.wait(10)
    layers.boxes = False  # no RuntimeError from a deleted widget
    layers.boxes = True


def test_phase_colours_are_distinct_and_complete():
    from engine.ontology import load_ontology

    phases = load_ontology().vocabulary("phase").names
    assert sorted(palette.PHASE_COLORS) == sorted(phases)
    assert len(set(palette.PHASE_COLORS.values())) == len(phases)
    assert all(QColor(c).isValid() for c in palette.PHASE_COLORS.values())
    assert palette.phase_color(None) == palette.phase_color("Nope") == palette.UNKNOWN
