"""The reasoning panel: streaming, stored chains, states, entity links, hostile text, controls."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication, QTextCursor

from app.state import LayerState
from app.widgets.reasoning_panel import ENTITY_HIGHLIGHTED, ENTITY_KIND, ReasoningPanel, SectionState

CANONICAL = """<think>
Level 1 (Perception): Instruments: Grasper [412, 80, 590, 260] (0.93), Hook [120, 300, 260, 420]. Anatomy: gallbladder, liver, cystic duct.
Level 2 (Relation): Triplets: grasper retract gallbladder; hook dissect cystic duct.
Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable. Safety: do not clip yet.
</think>
<answer>Calot Triangle Dissection</answer>"""

LEVEL1 = "Instruments: Grasper [412, 80, 590, 260] (0.93), Hook [120, 300, 260, 420]. Anatomy: gallbladder, liver, cystic duct."
LEVEL2 = "Triplets: grasper retract gallbladder; hook dissect cystic duct."
LEVEL3 = "Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable. Safety: do not clip yet."


@pytest.fixture
def panel(qtbot, ontology) -> ReasoningPanel:
    widget = ReasoningPanel(ontology=ontology)
    qtbot.addWidget(widget)
    widget.resize(700, 900)
    return widget


def feed_in_pieces(panel: ReasoningPanel, frame: int, text: str, size: int = 3) -> None:
    for i in range(0, len(text), size):
        panel.feed(frame, text[i : i + size])


def char_format(panel: ReasoningPanel, section: str, position: int):
    cursor = QTextCursor(panel.text_view(section).document())
    cursor.setPosition(position + 1)  # the format of the character before the cursor
    return cursor.charFormat()


def span_centre(panel: ReasoningPanel, section: str, start: int, end: int) -> QPoint:
    view = panel.text_view(section)
    cursor = QTextCursor(view.document())
    cursor.setPosition(start)
    left = view.cursorRect(cursor)
    cursor.setPosition(end)
    right = view.cursorRect(cursor)
    assert left.top() == right.top(), "span should sit on one line for this test"
    return QPoint((left.left() + right.left()) // 2, left.center().y())


def test_streaming_shows_levels_under_headings_as_they_progress(panel, qtbot):
    panel.begin(12)
    assert panel.frame == 12
    assert [panel.section_state(f"level{n}") for n in (1, 2, 3)] == ["pending"] * 3
    cut = CANONICAL.index("Level 2") + len("Level 2 (Relation): Triplets: grasper")
    feed_in_pieces(panel, 12, CANONICAL[:cut])
    qtbot.waitUntil(lambda: panel.section_text("level2") == "Triplets: grasper", timeout=10000)
    assert panel.section_text("level1") == LEVEL1
    assert panel.section_state("level1") == SectionState.DONE
    assert panel.section_state("level2") == SectionState.STREAMING
    assert panel.section_state("level3") == SectionState.PENDING
    assert panel.section_state("answer") == SectionState.PENDING

    feed_in_pieces(panel, 12, CANONICAL[cut:])
    panel.finish(12, "stop")
    assert panel.section_text("level2") == LEVEL2
    assert panel.section_text("level3") == LEVEL3
    assert panel.section_text("answer") == "Calot Triangle Dissection"
    assert {panel.section_state(s) for s in ("level1", "level2", "level3", "answer")} == {SectionState.DONE}
    assert panel.chain.status.value == "complete"
    assert panel.raw_text == CANONICAL


def test_feed_for_another_frame_is_ignored(panel):
    panel.begin(5)
    panel.feed(6, "<think>\nLevel 1 (Perception): Instruments: Hook.")
    panel.feed(5, "<think>\nLevel 1 (Perception): Instruments: Grasper.")
    panel.finish(6)
    panel.flush()
    assert panel.section_text("level1") == "Instruments: Grasper."
    assert panel.section_state("level1") == SectionState.STREAMING  # finish(6) did not close frame 5
    assert "Hook" not in panel.raw_text


def test_show_cached_renders_all_levels_done_in_under_two_seconds(panel):
    start = time.perf_counter()
    panel.show_cached(40, CANONICAL)
    assert time.perf_counter() - start < 2.0  # guards against quadratic work; bench/ measures speed
    assert panel.frame == 40
    assert (panel.section_text("level1"), panel.section_text("level2"), panel.section_text("level3")) == (
        LEVEL1,
        LEVEL2,
        LEVEL3,
    )
    assert all(panel.section_state(s) == SectionState.DONE for s in ("level1", "level2", "level3", "answer"))
    labels = {label for _, _, label in panel.entity_spans("level1")}
    assert {"Grasper", "Hook", "gallbladder", "liver", "cystic_duct"} <= labels
    assert {label for _, _, label in panel.entity_spans("level3")} == {"CalotTriangleDissection"}


def test_entity_spans_cover_the_names_in_the_text(panel):
    panel.show_cached(1, CANONICAL)
    expected = {
        "level1": ["Grasper", "Hook", "gallbladder", "liver", "cystic duct"],
        "level2": ["grasper", "retract", "gallbladder", "hook", "dissect", "cystic duct"],
        "level3": ["Calot Triangle Dissection"],
        "answer": ["Calot Triangle Dissection"],
    }
    for section, names in expected.items():
        text = panel.section_text(section)
        assert [text[s:e] for s, e, _ in panel.entity_spans(section)] == names
    # Triplet instruments link to the Cholec80 tool names used by the video boxes.
    level2 = {label for _, _, label in panel.entity_spans("level2")}
    assert {"Grasper", "Hook", "retract", "dissect", "gallbladder", "cystic_duct"} == level2
    assert panel.entity_spans("answer")[0][2] == "CalotTriangleDissection"


def test_malformed_chain_shows_state_and_problem(panel):
    text = (
        "<think>\nLevel 2 (Relation): Triplets: grasper retract gallbladder.\n"
        "Level 1 (Perception): Instruments: Grasper.\n</think>\n<answer>x</answer>"
    )
    panel.begin(3)
    feed_in_pieces(panel, 3, text, size=5)
    panel.finish(3)
    assert panel.section_state("level1") == SectionState.MALFORMED
    assert panel.section_state("level2") == SectionState.DONE
    assert panel.section_state("level3") == SectionState.MISSING
    assert panel.chain.status.value == "malformed"
    problems = panel._problems
    assert problems.isVisibleTo(panel)
    assert problems.text().startswith("malformed: ")
    assert "Level 1 after Level 2" in problems.text()


def test_repeated_level_is_shown_as_a_second_segment(panel):
    text = "<think>\nLevel 1 (Perception): Grasper.\nLevel 1 (Perception): Hook and liver.\n</think><answer>A</answer>"
    panel.show_cached(3, text)
    assert panel.section_state("level1") == SectionState.MALFORMED
    shown = panel.section_text("level1")
    assert shown.startswith("Grasper.\n") and shown.endswith("Hook and liver.")
    spans = {shown[s:e]: label for s, e, label in panel.entity_spans("level1")}
    assert spans == {"Grasper": "Grasper", "Hook": "Hook", "liver": "liver"}


def test_surg_r1_short_form_marks_level_3_not_part_of_task(panel):
    text = (
        "This is a Level 2 task, so I reason up to relations. L1: Instruments: grasper, hook. Anatomy: liver. "
        "L2: grasper retract liver; hook dissect gallbladder."
    )
    panel.begin(9)
    feed_in_pieces(panel, 9, text, size=4)
    panel.flush()
    assert panel.section_state("level3") == SectionState.NOT_IN_TASK
    assert panel.section_state("level2") == SectionState.STREAMING
    panel.finish(9)
    assert panel.section_text("preamble") == "This is a Level 2 task, so I reason up to relations."
    assert panel.section_text("level1") == "Instruments: grasper, hook. Anatomy: liver."
    assert panel.section_text("level2") == "grasper retract liver; hook dissect gallbladder."
    assert panel.section_state("level3") == SectionState.NOT_IN_TASK
    assert not panel.text_view("level3").isVisibleTo(panel)
    # The last level closes only at the end of the stream; its entities still get styled.
    assert {label for _, _, label in panel.entity_spans("level2")} >= {"Grasper", "retract", "liver", "Hook"}


def test_stream_cut_off_inside_a_tag_prefix_keeps_the_tail(panel):
    panel.begin(2)
    panel.feed(2, "<think>\nLevel 1 (Perception): Grasper near L")  # "L" could start a header: held back
    panel.finish(2, "cancelled")
    assert panel.section_text("level1") == "Grasper near L"
    assert panel.section_state("level1") == SectionState.CUT_OFF
    assert panel._status.text() == "partial — cancelled"


def test_unknown_names_are_flagged(panel):
    panel.show_cached(4, "<think>\nLevel 1 (Perception): Instruments: Grasper, laser wand. Anatomy: liver.\n</think>")
    text = panel.section_text("level1")
    unknown = [(s, e) for s, e, label in panel.entity_spans("level1") if label is None]
    assert [text[s:e] for s, e in unknown] == ["laser wand"]
    fmt = char_format(panel, "level1", unknown[0][0])
    assert fmt.property(ENTITY_KIND) == "unknown"
    assert fmt.toolTip() == "not in the ontology"


def test_hovering_an_entity_emits_its_label(panel, qtbot):
    panel.show()
    qtbot.waitExposed(panel)
    panel.show_cached(7, CANONICAL)
    hovered: list[object] = []
    panel.entityHovered.connect(hovered.append)
    start, end, _ = next(s for s in panel.entity_spans("level1") if s[2] == "Hook")
    viewport = panel.text_view("level1").viewport()
    qtbot.mouseMove(viewport, span_centre(panel, "level1", start, end))
    qtbot.waitUntil(lambda: hovered[-1:] == ["Hook"], timeout=10000)
    # Hovering highlights every mention of the same entity (here the triplet's "hook").
    s2, _, _ = next(s for s in panel.entity_spans("level2") if s[2] == "Hook")
    assert char_format(panel, "level2", s2).property(ENTITY_HIGHLIGHTED) is True
    # Off the entity (on "Instruments:"): None.
    qtbot.mouseMove(viewport, span_centre(panel, "level1", 0, 11))
    qtbot.waitUntil(lambda: hovered[-1:] == [None], timeout=10000)


def test_set_highlight_styles_every_span_with_the_label(panel):
    panel.show_cached(8, CANONICAL)
    panel.set_highlight("gallbladder")
    for section in ("level1", "level2"):
        spans = [s for s in panel.entity_spans(section) if s[2] == "gallbladder"]
        assert spans
        fmt = char_format(panel, section, spans[0][0])
        assert fmt.property(ENTITY_HIGHLIGHTED) is True
        assert fmt.background().style() != Qt.BrushStyle.NoBrush
    other = next(s for s in panel.entity_spans("level1") if s[2] == "liver")
    assert not char_format(panel, "level1", other[0]).property(ENTITY_HIGHLIGHTED)
    panel.set_highlight(None)
    start = next(s for s in panel.entity_spans("level1") if s[2] == "gallbladder")[0]
    assert char_format(panel, "level1", start).background().style() == Qt.BrushStyle.NoBrush


def test_layer_state_links_both_ways(panel, qtbot):
    layers = LayerState()
    panel.bind_layers(layers)
    panel.show_cached(8, CANONICAL)
    layers.highlighted = "Grasper"  # the user hovers the grasper's box on the video
    start = next(s for s in panel.entity_spans("level2") if s[2] == "Grasper")[0]
    assert char_format(panel, "level2", start).property(ENTITY_HIGHLIGHTED) is True
    panel.show()
    qtbot.waitExposed(panel)
    start, end, _ = next(s for s in panel.entity_spans("level1") if s[2] == "liver")
    qtbot.mouseMove(panel.text_view("level1").viewport(), span_centre(panel, "level1", start, end))
    qtbot.waitUntil(lambda: layers.highlighted == "liver", timeout=10000)


def test_span_highlighted_before_its_level_closes_is_styled_on_close(panel):
    panel.set_highlight("Hook")
    panel.show_cached(1, CANONICAL)
    start = next(s for s in panel.entity_spans("level1") if s[2] == "Hook")[0]
    assert char_format(panel, "level1", start).property(ENTITY_HIGHLIGHTED) is True


def test_hostile_text_is_shown_literally(panel):
    hostile = "<script>alert(1)</script><b>bold</b> \x1b[31mred\x07 &amp; <img src=x onerror=alert(1)>"
    panel.begin(1)
    feed_in_pieces(panel, 1, f"<think>\nLevel 1 (Perception): {hostile}\n</think><answer>{hostile}</answer>", 7)
    panel.finish(1)
    for section in ("level1", "answer"):
        view = panel.text_view(section)
        assert view.toPlainText() == hostile.strip()
        assert "<b>" in view.toPlainText() and "\x1b" in view.toPlainText() and "\x07" in view.toPlainText()
        bold = view.toPlainText().index("bold")
        assert not char_format(panel, section, bold).font().bold()
        assert "<b>bold</b>" not in view.toHtml()  # escaped in the rich-text export too
    panel.show_cached(2, "<think><b>Level 1 (Perception): x")
    assert panel.section_text("preamble") == "<b>"


def test_hostile_text_in_preamble_and_outside(panel):
    panel.show_cached(2, "<b>hi</b><think>\nLevel 1 (Perception): Grasper.\n</think><answer>A</answer><i>after</i>")
    assert panel.section_text("preamble") == "<b>hi</b>"
    assert panel.section_text("other") == "<i>after</i>"
    assert panel.text_view("other").isVisibleTo(panel) and panel.text_view("preamble").isVisibleTo(panel)
    assert panel._problems.text().startswith("malformed: ")


def test_line_breaks_keep_spans_aligned(panel):
    panel.show_cached(
        2,
        "<think>\nLevel 1 (Perception): Seen:\r\nfirst\r\n\r\nInstruments: Grasper, Hook. Anatomy: liver.\r\n</think>",
    )
    text = panel.section_text("level1")
    spans = {label: (s, e) for s, e, label in panel.entity_spans("level1")}
    assert text[slice(*spans["Hook"])] == "Hook"
    assert text[slice(*spans["liver"])] == "liver"


def test_reask_and_nearby_frames(panel, qtbot):
    panel.show()
    qtbot.waitExposed(panel)
    panel.show_cached(100, CANONICAL)
    with qtbot.waitSignal(panel.reaskRequested) as reask:
        qtbot.mouseClick(panel._reask, Qt.MouseButton.LeftButton)
    assert reask.args == [100]
    panel.set_nearby([(75, "complete"), (100, "complete"), (125, "malformed")])
    nearby = panel._nearby
    assert nearby.count() == 3
    item = nearby.item(2)
    with qtbot.waitSignal(panel.frameRequested) as requested:
        qtbot.mouseClick(nearby.viewport(), Qt.MouseButton.LeftButton, pos=nearby.visualItemRect(item).center())
    assert requested.args == [125]


def test_clear_stats_and_copy(panel):
    panel.show_cached(5, CANONICAL)
    panel.set_stats(412, 38.24, 180.4)
    assert panel._stats.text() == "412 tokens · 38.2 tok/s · first token 180 ms"
    panel.set_stats(10, 5.0, None)
    assert panel._stats.text() == "10 tokens · 5.0 tok/s"
    panel.copy_chain()
    assert QGuiApplication.clipboard().text() == CANONICAL
    panel.clear("Not analysed yet", frame=6)
    assert panel.frame == 6 and panel._reask.isEnabled()
    assert panel._message.text() == "Not analysed yet"
    assert panel.section_text("level1") == ""
    panel.clear("engine stopped")
    assert panel.frame is None and not panel._reask.isEnabled()
    panel.feed(5, "late piece")  # a late piece for the old frame changes nothing
    assert panel.raw_text == ""


def test_begin_again_clears_the_previous_chain(panel):
    panel.show_cached(5, CANONICAL)
    panel.set_highlight("Hook")
    panel.begin(5)
    panel.flush()
    assert all(panel.section_text(s) == "" for s in ("level1", "level2", "level3", "answer"))
    assert panel.entity_spans("level1") == []
    assert panel.section_state("level1") == SectionState.PENDING


def test_five_thousand_one_character_pieces_are_shown_in_under_six_seconds(panel, qtbot):
    panel.show()
    qtbot.waitExposed(panel)
    head = "<think>\nLevel 1 (Perception): "
    body = ("grasper retract gallbladder, hook dissect cystic duct; " * 100)[: 5000 - len(head) - 1] + "."
    pieces = list(head + body)
    assert len(pieces) == 5000
    panel.begin(1)
    start = time.perf_counter()
    for piece in pieces:
        panel.feed(1, piece)
    panel.flush()
    elapsed = time.perf_counter() - start
    assert elapsed < 6.0, f"5,000 pieces took {elapsed:.2f} s"
    assert panel.section_text("level1") == body


def test_endless_output_is_capped_on_screen(panel):
    from app.widgets.reasoning_panel import MAX_SECTION_CHARS

    panel.begin(1)
    panel.feed(1, "<think>\nLevel 1 (Perception): ")
    for _ in range(30):
        panel.feed(1, "x" * 1000)
    panel.finish(1, "length")
    assert len(panel.section_text("level1")) == MAX_SECTION_CHARS
    assert "10,000 more characters" in panel._sections["level1"].note.text()
    assert len(panel.raw_text) > 30_000


def test_text_is_appended_never_rebuilt(panel, qtbot):
    panel.begin(1)
    changes: list[tuple[int, int, int]] = []
    panel.text_view("level1").document().contentsChange.connect(lambda *args: changes.append(args))
    panel.feed(1, "<think>\nLevel 1 (Perception): Gra")
    assert panel.section_text("level1") == "Gra"  # the first piece after a pause shows at once
    for piece in ("sper", ", Ho", "ok", ". Anatomy: liver."):
        panel.feed(1, piece)
        panel.flush()
    assert panel.section_text("level1") == "Grasper, Hook. Anatomy: liver."
    inserts = [(pos, removed, added) for pos, removed, added in changes if added]
    assert all(removed == 0 for _, removed, _ in inserts)
    ends = [pos + added for pos, _, added in inserts]
    assert ends == sorted(ends)  # each insertion lands at the end of what was there


def test_streaming_state_is_animated(panel):
    panel.begin(1)
    panel.feed(1, "<think>\nLevel 1 (Perception): Grasper")
    panel.flush()
    label = panel._sections["level1"].state_label
    assert label.text() == "streaming"
    assert panel._animation.isActive()
    panel._tick()
    assert label.text() == "streaming ·"
    panel.finish(1)
    assert not panel._animation.isActive()


def test_two_thousand_repeated_headers_are_shown_as_malformed_in_under_four_seconds(panel):
    start = time.perf_counter()
    panel.show_cached(1, "<think>\n" + "L1: x " * 2_000)
    assert time.perf_counter() - start < 4.0  # guards against quadratic work; bench/ measures speed
    assert panel.section_state("level1") == SectionState.MALFORMED
    assert "Level 1 repeated" in panel._problems.text()


def test_nearby_selection_follows_the_frame(panel):
    panel.set_nearby([(75, "complete"), (100, "partial")])
    panel.show_cached(100, CANONICAL)
    assert [panel._nearby.item(i).isSelected() for i in range(2)] == [False, True]
    panel.show_cached(75, CANONICAL)
    assert [panel._nearby.item(i).isSelected() for i in range(2)] == [True, False]


def test_tooltip_over_an_unknown_name(panel, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    panel.show()
    qtbot.waitExposed(panel)
    panel.show_cached(4, "<think>\nLevel 1 (Perception): Instruments: Grasper, laser wand. Anatomy: liver.\n</think>")
    start, end, _ = next(s for s in panel.entity_spans("level1") if s[2] is None)
    viewport = panel.text_view("level1").viewport()
    pos = span_centre(panel, "level1", start, end)
    QApplication.sendEvent(viewport, QHelpEvent(QEvent.Type.ToolTip, pos, viewport.mapToGlobal(pos)))
    assert QToolTip.text() == "not in the ontology"
    QToolTip.hideText()


# ------------------------------------------------------------------ several questions per frame (model profiles)
SURG_R1 = [("phase", "Phase"), ("triplet", "Action"), ("localisation", "Tools")]
PHASE_ANSWER = (
    "<think> Level 1: A grasper and a hook are visible. Level 2: The hook dissects the cystic duct. "
    "Level 3: The phase is Calot Triangle Dissection. </think><answer>Calot Triangle Dissection</answer>"
)
TOOLS_ANSWER = (
    "<think> Level 1: A grasper and a hook are visible. </think>"
    "<answer>Grasper (84,42), (252,210), Hook (420,238), (588,406)</answer>"
)


def test_each_question_is_a_titled_section_streamed_on_its_own(panel, qtbot):
    panel.set_questions(SURG_R1)
    panel.show()
    qtbot.waitExposed(panel)
    panel.begin(30, "live", "phase")
    panel.begin(30, "live", "localisation")  # answered side by side
    headings = [panel.question_heading(task) for task, _ in SURG_R1]
    assert [h.text() for h in headings] == ["Phase", "Action", "Tools"]
    assert all(h.isVisibleTo(panel) for h in headings)
    assert panel.question_state("triplet") == "not answered yet"
    assert not panel.text_view("level1", "triplet").isVisibleTo(panel)
    phase, tools = PHASE_ANSWER, TOOLS_ANSWER
    for i in range(0, max(len(phase), len(tools)), 4):  # the two streams interleave
        panel.feed(30, phase[i : i + 4], "phase")
        panel.feed(30, tools[i : i + 4], "localisation")
    panel.feed(30, "<think> Level 1: stray", "triplet")  # not asked: ignored
    panel.feed(31, "other frame", "phase")  # another frame: ignored
    panel.flush()
    assert panel.question_state("phase") == panel.question_state("localisation") == "streaming"
    assert panel.section_text("level2", "phase") == "The hook dissects the cystic duct."
    assert panel.section_text("answer", "localisation") == "Grasper (84,42), (252,210), Hook (420,238), (588,406)"
    assert panel.section_text("level2", "localisation") == ""
    panel.finish(30, "stop", task="phase")
    assert panel.question_state("phase") == "complete — stop"
    assert panel.question_state("localisation") == "streaming"
    assert panel.section_text("answer", "phase") == "Calot Triangle Dissection"
    assert panel.section_state("level3", "phase") == SectionState.DONE
    panel.finish(30, task="localisation")
    assert panel.section_state("level1", "localisation") == SectionState.DONE
    assert panel.chain_of("phase").status.value == "complete"
    assert panel._status.text().endswith("2 of 3 answered")
    assert panel.raw_text == f"Phase:\n{PHASE_ANSWER}\n\nTools:\n{TOOLS_ANSWER}"
    # Entities are linked in every question: the phase, and the same hook seen by two questions.
    assert {label for _, _, label in panel.entity_spans("level3", "phase")} == {"CalotTriangleDissection"}
    start, end, _ = next(s for s in panel.entity_spans("level1", "localisation") if s[2] == "Hook")
    hovered: list[object] = []
    panel.entityHovered.connect(hovered.append)
    qtbot.mouseMove(panel.text_view("level1", "localisation").viewport(), span_centre_of(panel, start, end))
    qtbot.waitUntil(lambda: hovered[-1:] == ["Hook"], timeout=10000)
    other = next(s for s in panel.entity_spans("level1", "phase") if s[2] == "Hook")
    cursor = QTextCursor(panel.text_view("level1", "phase").document())
    cursor.setPosition(other[0] + 1)
    assert cursor.charFormat().property(ENTITY_HIGHLIGHTED) is True


def span_centre_of(panel: ReasoningPanel, start: int, end: int, task: str = "localisation") -> QPoint:
    view = panel.text_view("level1", task)
    cursor = QTextCursor(view.document())
    cursor.setPosition(start)
    left = view.cursorRect(cursor)
    cursor.setPosition(end)
    right = view.cursorRect(cursor)
    return QPoint((left.left() + right.left()) // 2, left.center().y())


def test_stored_answers_show_by_question_and_a_live_one_joins_them(panel):
    panel.set_questions(SURG_R1)
    panel.show_cached(60, {"phase": PHASE_ANSWER, "localisation": TOOLS_ANSWER})
    assert panel.question_state("phase") == "complete"
    assert panel.question_state("triplet") == "not answered yet"
    assert panel.section_text("answer", "localisation").startswith("Grasper (84,42)")
    # The weakest answer speaks for the frame; each question's problems are named by its title.
    assert panel._status.text() == "malformed · 2 of 3 answered"
    assert panel._problems.text() == "Tools — malformed: Level 2 missing; Level 3 missing"
    # The missing question streams beside the stored ones (same frame)...
    panel.begin(60, "live", "triplet")
    panel.feed(60, "<think> Level 1: A hook. Level 2: The hook dissects the cystic duct.", "triplet")
    panel.flush()
    assert panel.question_state("triplet") == "streaming" and panel._status.text() == "streaming"
    assert panel.section_text("answer", "phase") == "Calot Triangle Dissection"
    panel.finish(60, task="triplet")
    assert panel._status.text() == "malformed"  # the weakest of the three; all answered
    assert panel.section_state("level2", "triplet") == SectionState.CUT_OFF
    # ...while another frame starts afresh.
    panel.begin(61, "live", "phase")
    assert panel.question_state("localisation") == "not answered yet"
    assert panel.section_text("answer", "localisation") == ""


def test_one_question_keeps_the_bare_layout(panel):
    panel.set_questions(SURG_R1)
    panel.set_questions([("frame_analysis", "Frame analysis")])
    panel.show_cached(5, {"frame_analysis": CANONICAL})
    assert not panel.question_heading("frame_analysis").isVisibleTo(panel)
    assert panel.section_text("level1") == LEVEL1 and panel.raw_text == CANONICAL
    panel.begin(6, "live", "frame_analysis")
    panel.feed(6, CANONICAL, "frame_analysis")
    panel.finish(6, task="frame_analysis")
    assert panel._status.text() == "complete" and panel.section_text("level3") == LEVEL3
