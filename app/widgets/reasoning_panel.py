"""The reasoning panel: one frame's three-level chain, streamed as the model writes it.

Text arrives piece by piece on the UI thread. Each piece goes through a :class:`ChainParser`
and its text is appended at the end of its section (preamble, Level 1–3, answer, text outside
the chain); nothing already shown is rebuilt. Appends are coalesced to about 30 updates a
second, so thousands of tiny pieces cost little, while a piece after a pause is shown at once
(time to first token on screen stays within the budget). Structural events (a level closing,
a problem) apply immediately.

Model text is never markup here: it is inserted with ``QTextCursor.insertText`` into plain
documents, and every label shows plain text (DESIGN.md §7). Entity names get their styling
from the spans the parser reports, mapped onto the level's shown text, which is exactly the
level's stripped text (leading whitespace skipped, trailing whitespace held back), so
``Mention.span`` needs no translation beyond the segment's start.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QGuiApplication,
    QMouseEvent,
    QPalette,
    QTextCharFormat,
    QTextCursor,
    QTextFormat,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app import palette as shared
from app.chain_sections import (
    NOT_ANSWERED,
    SectionState,
    cut_off_section,
    heading_state,
    section_states,
    state_role,
    status_role,
)
from app.state import LayerState
from engine.chain import Answer, Chain, ChainStatus, Context, Mention, Perception, Relations
from engine.chain_parser import AnswerClosed, ChainParser, LevelClosed, LevelOpened, TextAdded
from engine.ontology import Ontology, load_ontology

__all__ = ["SECTIONS", "ReasoningPanel", "SectionState"]

SECTIONS = ("preamble", "level1", "level2", "level3", "answer", "other")
_TITLES = {
    "level1": "Level 1 — Perception",
    "level2": "Level 2 — Relations",
    "level3": "Level 3 — Context",
    "answer": "Answer",
    "other": "Outside the chain",
}

FLUSH_INTERVAL_S = 0.033  # coalesce appends to ~30 updates/s
MAX_SECTION_CHARS = 20_000  # endless output: the rest stays in the raw text (copy chain)
_ANIMATION_MS = 350

# Bidirectional overrides and isolates can reorder what is displayed (Trojan Source); show a
# visible replacement instead, one character for one, so spans keep their offsets.
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], "\ufffd")

# Char-format properties: what a span is, for tests and for restyling.
ENTITY_LABEL = QTextFormat.Property.UserProperty + 1
ENTITY_KIND = QTextFormat.Property.UserProperty + 2
ENTITY_HIGHLIGHTED = QTextFormat.Property.UserProperty + 3


# Entity and state colours on a dark base and a light one (app.palette, where the video overlay's
# and the timelines' colours are too, so the same thing looks the same everywhere).
_COLOURS = shared.SECTION_STATE_COLOURS
_KINDS = {"tool": "instrument", "instrument": "instrument", "anatomy": "anatomy", "target": "anatomy"}
_NEARBY_MARKS = {
    "complete": "✓",
    "done": "✓",
    "partial": "…",
    "malformed": "⚠",
    "failed": "✕",
    "error": "✕",
    "streaming": "●",
    "running": "●",
    "queued": "○",
    "pending": "○",
}


def _is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


@dataclass
class _Span:
    """An entity in a section's document: positions, canonical label, style kind."""

    start: int
    end: int
    label: str | None
    kind: str
    tooltip: str
    highlighted: bool = False


class _ChainText(QTextEdit):
    """Read-only plain-text view that grows with its text and reports the entity under the mouse."""

    spanHovered = Signal(object)  # _Span | None

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        self.setUndoRedoEnabled(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setBackgroundRole(QPalette.ColorRole.Window)
        self.viewport().setMouseTracking(True)
        self.document().setDocumentMargin(2)
        self.spans: list[_Span] = []
        self._hover: _Span | None = None
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self._fit_height()

    def _fit_height(self, *_: object) -> None:
        height = math.ceil(self.document().size().height()) + 2 * self.frameWidth()
        height = max(height, self.fontMetrics().height() + 4)
        if height != self.height():
            self.setFixedHeight(height)

    def char_at(self, pos: QPoint) -> int | None:
        """Index of the character under a viewport point, or None over blank space."""
        point = QPointF(pos) + QPointF(self.horizontalScrollBar().value(), self.verticalScrollBar().value())
        hit = self.document().documentLayout().hitTest(point, Qt.HitTestAccuracy.ExactHit)
        if hit < 0:
            return None
        cursor = QTextCursor(self.document())
        cursor.setPosition(hit)
        # hitTest gives the nearest boundary: the character is to its right or to its left.
        char = hit if pos.x() >= self.cursorRect(cursor).left() else hit - 1
        return char if 0 <= char < self.document().characterCount() - 1 else None

    def span_at(self, pos: QPoint) -> _Span | None:
        char = self.char_at(pos)
        if char is None:
            return None
        return next((s for s in self.spans if s.start <= char < s.end), None)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        self._set_hover(self.span_at(event.position().toPoint()))

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Leave:
            self._set_hover(None)
        elif event.type() == QEvent.Type.ToolTip:
            span = self.span_at(event.pos())
            if span is not None:
                QToolTip.showText(event.globalPos(), span.tooltip, self.viewport())
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)

    def _set_hover(self, span: _Span | None) -> None:
        if span is not self._hover:
            self._hover = span
            self.spanHovered.emit(span)


class _Section(QWidget):
    """A heading with its state, and the text streamed into it (one segment per level occurrence)."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.name = name
        self.state = SectionState.PENDING
        self._dots = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.setSpacing(1)
        head = QHBoxLayout()
        head.setSpacing(8)
        self.title = QLabel(_TITLES.get(name, ""))
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        bold = QFont(self.title.font())
        bold.setBold(True)
        self.title.setFont(bold)
        self.state_label = QLabel()
        self.state_label.setTextFormat(Qt.TextFormat.PlainText)
        self.note = QLabel()
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.hide()
        head.addWidget(self.title)
        head.addWidget(self.state_label)
        head.addStretch(1)
        head.addWidget(self.note)
        self.view = _ChainText(self)
        if name == "preamble":
            font = QFont(self.view.font())
            font.setItalic(True)
            self.view.setFont(font)
            self.title.hide()
            self.state_label.hide()
        else:
            layout.addLayout(head)
        layout.addWidget(self.view)
        self.reset()

    # ----------------------------------------------------------------- text
    def reset(self) -> None:
        self.view.clear()
        self.view.spans.clear()
        self._cursor = QTextCursor(self.view.document())
        self._plain = QTextCharFormat()
        self.segments = 0
        self.segment_start = 0
        self._segment_parts: list[str] = []
        self._started = False
        self._held = ""
        self.shown = 0
        self.dropped = 0
        self.note.hide()
        if self.name in ("preamble", "other"):
            self.hide()

    def new_segment(self) -> None:
        """A level written again (repeated or out of order): its text goes on a new paragraph."""
        if self.segments and self.shown < MAX_SECTION_CHARS:
            note = QTextCharFormat()
            note.setFontItalic(True)
            note.setForeground(self.palette().color(QPalette.ColorRole.PlaceholderText))
            self._insert("\n(again) ", note)
            self.shown += len("\n(again) ")
        self.segments += 1
        self.segment_start = self._cursor.position()
        self._segment_parts = []
        self._started = False
        self._held = ""

    def append(self, text: str) -> None:
        """Append model text so the segment shows exactly its stripped text at every moment."""
        if not self.segments:
            self.new_segment()
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
        text = self._held + text
        body = text.rstrip()
        self._held = text[len(body) :]
        if not body:
            return
        room = MAX_SECTION_CHARS - self.shown
        if room <= 0:
            self.dropped += len(body)
            return
        if len(body) > room:
            self.dropped += len(body) - room
            body = body[:room]
        self._segment_parts.append(body)
        self.shown += len(body)
        self._insert(body, self._plain)
        if self.view.isHidden():
            self.view.show()
        if self.isHidden() and self.name in ("preamble", "other"):
            self.show()

    def _insert(self, text: str, fmt: QTextCharFormat | None) -> None:
        # "\r\n" inside one insertText becomes one block separator: insert them apart so one
        # character stays one position and spans stay aligned.
        fmt = fmt if fmt is not None else self._plain
        text = text.translate(_BIDI)
        parts = text.split("\r\n")
        for i, part in enumerate(parts):
            if i:
                self._cursor.insertText("\r", fmt)
                part = "\n" + part
            if part:
                self._cursor.insertText(part, fmt)

    def segment_text(self) -> str:
        return "".join(self._segment_parts)

    def update_note(self) -> None:
        if self.dropped:
            self.note.setText(f"{self.dropped:,} more characters not shown — copy the chain to read them")
            self.note.show()

    # ----------------------------------------------------------------- entities
    def add_spans(self, spans: Iterable[_Span], highlight: str | None, dark: bool) -> None:
        for span in spans:
            span.start += self.segment_start
            span.end += self.segment_start
            if span.end > self.segment_start + len(self.segment_text()) or span.start >= span.end:
                continue  # beyond what is shown (capped)
            span.highlighted = highlight is not None and span.label == highlight
            self.view.spans.append(span)
            self._style(span, dark)

    def restyle(self, highlight: str | None, dark: bool, force: bool = False) -> None:
        for span in self.view.spans:
            wanted = highlight is not None and span.label == highlight
            if force or wanted != span.highlighted:
                span.highlighted = wanted
                self._style(span, dark)

    def _style(self, span: _Span, dark: bool) -> None:
        colours = _COLOURS[dark]
        fmt = QTextCharFormat()
        colour = colours[span.kind]
        if dark and span.kind == "phase" and span.label in shared.PHASE_COLORS:
            colour = shared.phase_color(span.label)
        fmt.setForeground(QColor(colour))
        fmt.setToolTip(span.tooltip)
        fmt.setProperty(ENTITY_KIND, span.kind)
        fmt.setProperty(ENTITY_LABEL, span.label or "")
        if span.kind == "unknown":
            fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
            fmt.setUnderlineColor(QColor(colours["unknown"]))
        if span.highlighted:  # as the hovered box on the video: dark text on its yellow
            fmt.setBackground(QColor(shared.BOX_HIGHLIGHT))
            fmt.setForeground(QColor(shared.HIGHLIGHT_TEXT))
            fmt.setProperty(ENTITY_HIGHLIGHTED, True)
        cursor = QTextCursor(self.view.document())
        cursor.setPosition(span.start)
        cursor.setPosition(span.end, QTextCursor.MoveMode.KeepAnchor)
        cursor.setCharFormat(fmt)

    # ----------------------------------------------------------------- state
    def set_state(self, state: str, dark: bool) -> None:
        if state == self.state and self.state_label.text():
            return
        self.state = state
        self._dots = 0
        self.show_state(dark)
        self.view.setVisible(bool(self.shown) or state in (SectionState.PENDING, SectionState.STREAMING))
        self.view.setPlaceholderText("waiting…" if state == SectionState.PENDING else "")

    def tick(self, dark: bool) -> None:
        self._dots = (self._dots + 1) % 4
        self.show_state(dark)

    def show_state(self, dark: bool) -> None:
        role = state_role(self.state)
        palette = self.state_label.palette()
        colour = QColor(_COLOURS[dark][role]) if role else self.palette().color(QPalette.ColorRole.PlaceholderText)
        palette.setColor(QPalette.ColorRole.WindowText, colour)
        self.state_label.setPalette(palette)
        text = self.state + (" " + "·" * self._dots if self.state == SectionState.STREAMING and self._dots else "")
        self.state_label.setText(text)
        title_palette = self.title.palette()
        title_palette.setColor(
            QPalette.ColorRole.WindowText,
            self.palette().color(
                QPalette.ColorRole.PlaceholderText
                if self.state == SectionState.NOT_IN_TASK
                else QPalette.ColorRole.WindowText
            ),
        )
        self.title.setPalette(title_palette)


_DEFAULT_QUESTIONS: tuple[tuple[str, str], ...] = (("frame_analysis", ""),)


def _plain_label(bold: bool = False, wrap: bool = False) -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)  # never rich text: some of it comes from the model
    label.setWordWrap(wrap)
    if bold:
        font = QFont(label.font())
        font.setBold(True)
        label.setFont(font)
    return label


class _ChainView:
    """One question's chain: its sections, its parser, and the text streamed so far.

    A profile that asks one question shows one of these bare, exactly as the panel always looked;
    with several questions each gets a heading (its title and state), so the reviewer sees which
    answer said what. The widgets sit directly in the panel's column (no nested layout, so the
    panel lays out in one pass as it always did).
    """

    def __init__(
        self,
        task: str,
        title: str,
        grouped: bool,
        canonical: Callable[[Mention], str | None],
        highlight: Callable[[], str | None],
    ):
        self.task, self.title, self.grouped = task, title, grouped
        self._canonical = canonical
        self._highlight = highlight
        self.header = QWidget()
        head = QHBoxLayout(self.header)
        head.setContentsMargins(0, 8, 0, 0)
        head.setSpacing(8)
        self.heading = _plain_label(bold=True)
        self.heading.setText(title)
        self.state_label = _plain_label()
        head.addWidget(self.heading)
        head.addWidget(self.state_label)
        head.addStretch(1)
        self.header.setVisible(False)
        self.sections = {name: _Section(name) for name in SECTIONS}
        if grouped:  # a question's levels sit under its heading
            for section in self.sections.values():
                section.layout().setContentsMargins(12, 4, 0, 4)
        self.reset()

    @property
    def widgets(self) -> list[QWidget]:
        """What the panel's column holds for this question, top to bottom."""
        return [self.header, *self.sections.values()]

    def setVisible(self, visible: bool) -> None:
        """The heading (grouped only); sections show themselves as text arrives."""
        self.header.setVisible(visible and self.grouped)
        if not visible:
            for section in self.sections.values():
                section.setVisible(False)

    def palette(self) -> QPalette:
        return self.sections["level1"].palette()

    # ----------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Nothing asked yet: no parser, sections empty and hidden."""
        self.parser: ChainParser | None = None
        self.chain: Chain | None = None  # final, once finished
        self.raw: list[str] = []
        self.pending: list[tuple[str, str]] = []
        self.states_dirty = False
        self.cut_off = ""  # the section a partial chain stopped in
        self.levels_seen = 0
        self.answer_started = self.answer_closed = False
        self.status_text = ""
        for section in self.sections.values():
            section.reset()
            section.state = ""
            section.setVisible(False)
        self._show_heading_state(NOT_ANSWERED, None)

    def begin(self, ontology: Ontology) -> None:
        self.reset()
        self.parser = ChainParser(ontology)
        for section in self.sections.values():
            if section.name not in ("preamble", "other"):
                section.setVisible(True)
        self.refresh_states()

    def feed(self, piece: str) -> bool:
        """Parse one piece; True when something waits to be shown."""
        assert self.parser is not None
        self.raw.append(piece)
        for event in self.parser.feed(piece):
            self._on_event(event)
        return bool(self.pending) or self.states_dirty

    def finish(self, status_text: str) -> Chain:
        assert self.parser is not None
        section = self.parser.section
        for event in self.parser.finish():
            self._on_event(event)
        self.flush_text()
        chain = self.parser.close()
        self.chain = chain
        self.cut_off = cut_off_section(chain, section)
        self.status_text = status_text
        self.refresh_states()
        return chain

    @property
    def streaming(self) -> bool:
        return self.parser is not None and self.chain is None

    @property
    def snapshot(self) -> Chain | None:
        """The final chain, else the stream so far; None when not asked."""
        if self.chain is not None:
            return self.chain
        return self.parser.chain if self.parser is not None else None

    @property
    def raw_text(self) -> str:
        return "".join(self.raw)

    # ----------------------------------------------------------------- text
    def _on_event(self, event: object) -> None:
        if isinstance(event, TextAdded):
            self._queue_text(event.section, event.text)
            return
        self.flush_text()  # spans and states refer to the text so far
        self.states_dirty = True
        if isinstance(event, LevelOpened):
            self.levels_seen += 1
            self.sections[f"level{event.level}"].new_segment()
        elif isinstance(event, LevelClosed):
            self._add_level_spans(event.level, event.fields)
        elif isinstance(event, AnswerClosed):
            self.answer_closed = True
            self._add_answer_spans(event.answer)
        # ProblemFound: shown by the state refresh

    def _queue_text(self, section: str, text: str) -> None:
        if section == "other" and not self.levels_seen and not self.answer_started:
            section = "preamble"  # Surg-R1 writes "This is a Level N task" with no <think>
        elif section == "answer" and not self.answer_started:
            self.answer_started = True
            self.states_dirty = True
        if self.pending and self.pending[-1][0] == section:
            self.pending[-1] = (section, self.pending[-1][1] + text)
        else:
            self.pending.append((section, text))

    def flush_text(self) -> None:
        pending, self.pending = self.pending, []
        for section, text in pending:
            self.sections[section].append(text)

    # ----------------------------------------------------------------- entities
    def _add_level_spans(self, level: int, fields: Perception | Relations | Context) -> None:
        mentions: list[tuple[Mention, str]] = []
        if isinstance(fields, Perception):
            mentions += [(s.name, "") for s in fields.instruments]
            mentions += [(m, "") for m in fields.anatomy]
        elif isinstance(fields, Relations):
            for t in fields.triplets:
                note = f"triplet {t.triplet_id}" if t.known else "triplet not in the CholecT50 map"
                mentions += [(t.instrument, note), (t.verb, note), (t.target, note)]
        elif isinstance(fields, Context) and fields.phase is not None:
            mentions.append((fields.phase, ""))
        self._add_spans(f"level{level}", mentions)

    def _add_answer_spans(self, answer: Answer) -> None:
        mentions: list[tuple[Mention, str]] = []
        shown = self.sections["answer"].segment_text()
        if answer.phase is not None and answer.phase.text:
            at = shown.find(answer.phase.text)
            if at >= 0:
                mentions.append(
                    (Mention("phase", answer.phase.text, answer.phase.label, (at, at + len(answer.phase.text))), "")
                )
        if answer.option is None and answer.text == shown:  # triplet spans are relative to that text
            for t in answer.triplets:
                mentions += [(t.instrument, ""), (t.verb, ""), (t.target, "")]
        self._add_spans("answer", mentions)

    def _add_spans(self, section: str, mentions: list[tuple[Mention, str]]) -> None:
        spans = []
        for mention, note in mentions:
            if mention.span is None:
                continue
            label = self._canonical(mention)
            kind = "unknown" if label is None else _KINDS.get(mention.vocabulary, mention.vocabulary)
            if kind not in _COLOURS[True]:
                kind = "phase"
            tooltip = "not in the ontology" if label is None else f"{label} ({mention.vocabulary})"
            if note:
                tooltip += f" — {note}"
            spans.append(_Span(mention.span[0], mention.span[1], label, kind, tooltip))
        self.sections[section].add_spans(spans, self._highlight(), _is_dark(self.palette()))

    def restyle(self, highlight: str | None, dark: bool, force: bool = False) -> None:
        for section in self.sections.values():
            section.restyle(highlight, dark, force)
            if force:
                section.show_state(dark)
        if force:
            self._show_heading_state(self.state_label.text(), self._heading_colour())

    # ----------------------------------------------------------------- states
    def refresh_states(self) -> None:
        self.states_dirty = False
        if self.parser is None:
            return
        dark = _is_dark(self.palette())
        chain = self.snapshot
        assert chain is not None
        final = self.chain is not None
        states = section_states(
            chain, final, cut_off=self.cut_off, answer_started=self.answer_started, answer_closed=self.answer_closed
        )
        for name, state in states.items():
            self.sections[name].set_state(state, dark)
        self._show_heading_state(*heading_state(chain, final, self.status_text))

    def problems(self) -> str:
        chain = self.snapshot
        if chain is None or not chain.problems:
            return ""
        return f"{chain.status.value}: " + "; ".join(chain.problems)

    def tick(self) -> None:
        dark = _is_dark(self.palette())
        for section in self.sections.values():
            if section.state == SectionState.STREAMING:
                section.tick(dark)

    def any_section_streaming(self) -> bool:
        return any(s.state == SectionState.STREAMING for s in self.sections.values())

    def _heading_colour(self) -> str | None:
        if self.parser is None:
            return None
        if self.chain is None:
            return "streaming"
        return status_role(self.chain.status.value)

    def _show_heading_state(self, text: str, role: str | None) -> None:
        colours = _COLOURS[_is_dark(self.palette())]
        palette = self.state_label.palette()
        colour = QColor(colours[role]) if role else self.palette().color(QPalette.ColorRole.PlaceholderText)
        palette.setColor(QPalette.ColorRole.WindowText, colour)
        self.state_label.setPalette(palette)
        self.state_label.setText(text)


class ReasoningPanel(QWidget):
    """One frame's reasoning: each question's chain, streamed or stored, entities linked to the video.

    A model profile may ask several questions of a frame (:meth:`set_questions`); each question's
    chain is then a titled section of its own, streamed independently (several questions of the
    frame at the playhead are answered at once by a model server). With one question the panel
    shows that chain alone.

    Signals: ``entityHovered(label | None)`` as the mouse moves over entity names;
    ``reaskRequested(frame)`` from the Re-ask button; ``frameRequested(frame)`` from the
    strip of nearby analysed frames.
    """

    entityHovered = Signal(object)  # str | None
    reaskRequested = Signal(int)
    frameRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None, ontology: Ontology | None = None):
        super().__init__(parent)
        self._ontology = ontology or load_ontology()
        self._frame: int | None = None
        self._source = ""
        self._cleared = True  # a message is shown instead of chains
        self._last_flush = 0.0
        self._highlight: str | None = None
        self._hovered: str | None = None
        self._label_cache: dict[tuple[str, str], str] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._layers: LayerState | None = None
        self._format_frame: Callable[[int], str] = lambda frame: f"Frame {frame}"
        self._questions: tuple[tuple[str, str], ...] = ()
        self._views: list[_ChainView] = []
        self._build()
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self.flush)
        self._animation = QTimer(self)
        self._animation.setInterval(_ANIMATION_MS)
        self._animation.timeout.connect(self._tick)
        self.set_questions(_DEFAULT_QUESTIONS)

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        head = QHBoxLayout()
        self._title = _plain_label(bold=True)
        self._status = _plain_label()
        self._reask = QPushButton("Re-ask")
        self._reask.setToolTip("Ask the model again for this frame")
        self._reask.clicked.connect(self._on_reask)
        self._copy = QPushButton("Copy chain")
        self._copy.setToolTip("Copy the model's raw text to the clipboard")
        self._copy.clicked.connect(self.copy_chain)
        head.addWidget(self._title)
        head.addWidget(self._status)
        head.addStretch(1)
        head.addWidget(self._reask)
        head.addWidget(self._copy)
        layout.addLayout(head)
        self._problems = _plain_label(wrap=True)
        layout.addWidget(self._problems)
        self._message = _plain_label(wrap=True)
        self._message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self._message)

        body = QWidget()
        body.setBackgroundRole(QPalette.ColorRole.Window)
        self._column = QVBoxLayout(body)
        self._column.setContentsMargins(0, 0, 0, 0)
        self._column.setSpacing(2)
        self._column.addStretch(1)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.setWidget(body)
        layout.addWidget(self._scroll, 1)

        self._stats = _plain_label()
        layout.addWidget(self._stats)
        nearby_title = _plain_label()
        nearby_title.setText("Nearby analysed frames")
        layout.addWidget(nearby_title)
        self._nearby = QListWidget()
        self._nearby.setFlow(QListWidget.Flow.LeftToRight)
        self._nearby.setWrapping(False)
        self._nearby.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self._nearby.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._nearby.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._nearby.setFixedHeight(self.fontMetrics().height() * 2 + 12)
        self._nearby.setSpacing(2)
        self._nearby.itemClicked.connect(self._on_nearby_clicked)
        layout.addWidget(self._nearby)

    # ----------------------------------------------------------------- public API
    def add_review_widget(self, widget: QWidget) -> None:
        """Place the reviewer's controls (``app.widgets.chain_verdict``) right under the chains."""
        layout = self.layout()
        assert isinstance(layout, QVBoxLayout)
        layout.insertWidget(layout.indexOf(self._scroll) + 1, widget)

    def set_ontology(self, ontology: Ontology) -> None:
        """The vocabularies chains are read in: the case's procedure's (a suturing case's instruments and
        actions are not a cholecystectomy's); applies from the next chain shown."""
        self._ontology = ontology
        self._label_cache.clear()

    def set_questions(self, questions: Iterable[tuple[str, str]]) -> None:
        """The questions the model profile asks of each frame, as ``(task, title)`` in its order.

        One question: its chain alone, as the panel always showed it. Several: one titled section
        per question. Changing them clears the panel.
        """
        wanted = tuple((str(task), str(title)) for task, title in questions) or _DEFAULT_QUESTIONS
        if wanted == self._questions:
            return
        for view in self._views:
            for widget in view.widgets:
                self._column.removeWidget(widget)
                widget.deleteLater()
        self._questions = wanted
        grouped = len(wanted) > 1
        self._views = [
            _ChainView(task, title, grouped, self._canonical, lambda: self._highlight) for task, title in wanted
        ]
        at = 0
        for view in self._views:
            for widget in view.widgets:
                self._column.insertWidget(at, widget)
                at += 1
            for section in view.sections.values():
                section.view.spanHovered.connect(self._on_span_hovered)
        self.clear("")

    @property
    def questions(self) -> tuple[tuple[str, str], ...]:
        return self._questions

    @property
    def frame(self) -> int | None:
        """The frame whose chain is shown (or being streamed); None when cleared."""
        return self._frame

    @property
    def chain(self) -> Chain | None:
        """The (first) question's chain: final once finished, otherwise a snapshot of the stream so far."""
        return self._views[0].snapshot

    def chain_of(self, task: str) -> Chain | None:
        view = self._view(task)
        return view.snapshot if view is not None else None

    @property
    def raw_text(self) -> str:
        """The model's text as received; with several questions, each under its title."""
        if not self._grouped:
            return self._views[0].raw_text
        return "\n\n".join(f"{v.title}:\n{v.raw_text}" for v in self._views if v.parser is not None)

    def set_frame_formatter(self, formatter: Callable[[int], str]) -> None:
        """How frames are named (the main window may give timecodes)."""
        self._format_frame = formatter
        self._update_title()

    def begin(self, frame: int, source: str = "live", task: str | None = None) -> None:
        """Start a new chain for ``frame``: every question's (``task`` None) or one question's.

        A new frame clears the panel first, and pieces for other frames are ignored from now on;
        another question of the frame already shown keeps the answers beside it.
        """
        view = self._view(task)
        if view is None:
            return
        if not self._grouped or task is None or frame != self._frame or self._cleared:
            self._reset(frame, source)
        elif source != self._source:
            self._source = source
            self._update_title()
        for v in self._views if (self._grouped and task is None) else [view]:
            v.begin(self._ontology)
        if self._grouped:
            self._update_overall_status()
        else:
            self._set_status("streaming")
        self._refresh_states()

    def feed(self, frame: int, piece: str, task: str | None = None) -> None:
        """Append one streamed piece of model text for ``frame`` (ignored for any other frame)."""
        view = self._view(task)
        if frame != self._frame or view is None or not view.streaming or not isinstance(piece, str):
            return
        if not view.feed(piece):
            return
        wait = FLUSH_INTERVAL_S - (time.perf_counter() - self._last_flush)
        if wait <= 0:
            self.flush()
        elif not self._flush_timer.isActive():
            self._flush_timer.start(max(1, int(wait * 1000)))

    def finish(self, frame: int, status_text: str = "", task: str | None = None) -> None:
        """End of the stream for ``frame`` (one question's): close the parser, show final states and problems."""
        view = self._view(task)
        if frame != self._frame or view is None or not view.streaming:
            return
        chain = view.finish(status_text)
        if self._grouped:
            self._update_overall_status()
        else:
            self._set_status(chain.status.value + (f" — {status_text}" if status_text else ""))
        self._refresh_states()
        self.flush()

    def show_cached(self, frame: int, raw_texts: str | Mapping[str, str], source: str = "stored") -> None:
        """Show stored chains at once, each parsed whole and rendered once: ``raw_texts`` is the one
        question's text, or the texts by task (a question without one says it is not answered yet)."""
        if isinstance(raw_texts, Mapping):
            texts = {str(k): v if isinstance(v, str) else "" for k, v in raw_texts.items()}
        else:
            texts = {self._views[0].task: raw_texts if isinstance(raw_texts, str) else ""}
        self._reset(frame, source)
        for view in self._views:
            text = texts.get(view.task)
            if text is None and not self._grouped and texts:
                text = next(iter(texts.values()))  # one question: whatever its task is called
            if text is None:
                continue
            view.begin(self._ontology)
            view.feed(text)
            view.finish("")
        if self._grouped:
            self._update_overall_status()
        else:
            chain = self._views[0].chain
            self._set_status(chain.status.value if chain is not None else "")
        self._refresh_states()
        self.flush()

    def clear(self, message: str = "", frame: int | None = None) -> None:
        """Show ``message`` (e.g. "Not analysed yet", an error) instead of a chain.

        With ``frame``, Re-ask still asks for that frame.
        """
        self._reset(frame, "")
        self._cleared = True
        self._message.setText(message)
        self._message.setVisible(bool(message))
        for view in self._views:
            view.setVisible(False)
        self._set_status("")
        self._update_title()

    def flush(self) -> None:
        """Bring the display up to date now (normally done on a ~30 Hz timer while streaming)."""
        self._flush_timer.stop()
        dirty = False
        for view in self._views:
            view.flush_text()
            dirty = dirty or view.states_dirty
        if dirty:
            self._refresh_states()
        for view in self._views:
            for section in view.sections.values():
                section.update_note()
        self._last_flush = time.perf_counter()

    def set_highlight(self, label: str | None) -> None:
        """Highlight every span naming ``label`` (e.g. the box under the mouse on the video)."""
        if label == self._highlight:
            return
        self._highlight = label
        dark = _is_dark(self.palette())
        for view in self._views:
            view.restyle(label, dark)

    def bind_layers(self, layers: LayerState | None) -> None:
        """Share the hovered entity with the video: follow ``layers.highlighted`` and set it on hover."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._layers = layers
        if layers is None:
            return

        def on_change(name: str, value: object) -> None:
            if name == "highlighted":
                self.set_highlight(value if isinstance(value, str) else None)

        unsubscribe = layers.subscribe(on_change)
        self._unsubscribe = unsubscribe
        self.destroyed.connect(lambda *_: unsubscribe())
        self.set_highlight(layers.highlighted)

    def set_nearby(self, frames: list[tuple[int, str]]) -> None:
        """Nearby analysed frames and their status; clicking one emits ``frameRequested``."""
        self._nearby.clear()
        for frame, status in frames:
            mark = _NEARBY_MARKS.get(str(status).lower(), "·")
            item = QListWidgetItem(f"{mark} {self._format_frame(int(frame))}")
            item.setData(Qt.ItemDataRole.UserRole, int(frame))
            item.setToolTip(f"{self._format_frame(int(frame))}: {status}")
            self._nearby.addItem(item)
        self._select_nearby()

    def _select_nearby(self) -> None:
        for row in range(self._nearby.count()):
            item = self._nearby.item(row)
            current = item.data(Qt.ItemDataRole.UserRole) == self._frame
            item.setSelected(current)
            if current:
                self._nearby.scrollToItem(item)

    def set_stats(self, tokens: int, tokens_per_s: float, first_token_ms: float | None = None) -> None:
        """Generation figures for the chain shown."""
        parts = [f"{tokens:,} tokens", f"{tokens_per_s:.1f} tok/s"]
        if first_token_ms is not None:
            parts.append(f"first token {first_token_ms:.0f} ms")
        self._stats.setText(" · ".join(parts))

    def copy_chain(self) -> None:
        """Copy the model's raw text (exactly as received) to the clipboard."""
        QGuiApplication.clipboard().setText(self.raw_text)

    # Read-outs for the main window and tests; ``task`` picks a question (default: the first).
    def section_state(self, section: str, task: str | None = None) -> str:
        return self._sections_of(task)[section].state

    def section_text(self, section: str, task: str | None = None) -> str:
        return self._sections_of(task)[section].view.toPlainText()

    def text_view(self, section: str, task: str | None = None) -> QTextEdit:
        return self._sections_of(task)[section].view

    def entity_spans(self, section: str, task: str | None = None) -> list[tuple[int, int, str | None]]:
        """``(start, end, label)`` of each entity in a section's document."""
        return [(s.start, s.end, s.label) for s in self._sections_of(task)[section].view.spans]

    def question_state(self, task: str) -> str:
        """What a question's heading says: "not answered yet", "streaming", or its chain's status."""
        view = self._view(task)
        return view.state_label.text() if view is not None else ""

    def question_heading(self, task: str) -> QLabel | None:
        """A question's heading (its title), shown when the profile asks several questions."""
        view = self._view(task)
        return view.heading if view is not None else None

    # ----------------------------------------------------------------- internals
    @property
    def _grouped(self) -> bool:
        return len(self._views) > 1

    @property
    def _sections(self) -> dict[str, _Section]:
        """The first question's sections (the one chain of a one-question profile)."""
        return self._views[0].sections

    def _view(self, task: str | None) -> _ChainView | None:
        """The question ``task`` (None: the first); with one question, any task names it."""
        if task is None or not self._grouped:
            return self._views[0]
        return next((v for v in self._views if v.task == task), None)

    def _sections_of(self, task: str | None) -> dict[str, _Section]:
        view = self._view(task)
        if view is None:
            raise KeyError(f"no question {task!r} in this panel")
        return view.sections

    def _reset(self, frame: int | None, source: str) -> None:
        self._flush_timer.stop()
        self._animation.stop()
        self._frame = frame
        self._source = source
        self._cleared = False
        self._last_flush = 0.0
        self._message.hide()
        self._problems.hide()
        self._stats.clear()
        for view in self._views:
            view.reset()
            view.setVisible(True)
        self._set_hover(None)
        self._reask.setEnabled(frame is not None)
        self._update_title()
        self._select_nearby()

    def _canonical(self, mention: Mention) -> str | None:
        """The label shared with the video: triplet instruments become Cholec80 tool names."""
        if mention.label is None or mention.vocabulary != "instrument":
            return mention.label
        key = (mention.vocabulary, mention.label)
        if key not in self._label_cache:
            label = mention.label
            found = self._ontology.instrument.resolve(mention.label)
            if found is not None:
                with contextlib.suppress(KeyError, LookupError, ValueError):  # an instrument without a tool
                    label = self._ontology.tool_for_instrument(found).name
            self._label_cache[key] = label
        return self._label_cache[key]

    def _on_span_hovered(self, span: _Span | None) -> None:
        self._set_hover(span.label if span is not None else None)

    def _set_hover(self, label: str | None) -> None:
        if label == self._hovered:
            return
        self._hovered = label
        self.entityHovered.emit(label)
        if self._layers is not None:
            self._layers.highlighted = label  # the subscription highlights here too
        else:
            self.set_highlight(label)

    def _refresh_states(self) -> None:
        for view in self._views:
            view.refresh_states()
        if self._grouped:  # each question's problems under its title
            text = "\n".join(f"{v.title} — {p}" for v in self._views if (p := v.problems()))
        else:
            text = self._views[0].problems()
        if text:
            self._problems.setText(text)
            self._show_problems(_is_dark(self.palette()))
        else:
            self._problems.hide()
        streaming = any(v.any_section_streaming() for v in self._views)
        if streaming and not self._animation.isActive():
            self._animation.start()
        elif not streaming:
            self._animation.stop()

    def _update_overall_status(self) -> None:
        """Several questions: streaming while any streams, else the weakest status and how many answered."""
        asked = [v for v in self._views if v.parser is not None]
        if any(v.streaming for v in asked):
            text = "streaming"
        elif asked:
            order = [ChainStatus.MALFORMED, ChainStatus.PARTIAL, ChainStatus.COMPLETE]
            text = min((v.chain.status for v in asked if v.chain is not None), key=order.index).value
        else:
            text = ""
        if text and len(asked) < len(self._views):
            text += f" · {len(asked)} of {len(self._views)} answered"
        self._set_status(text)

    def _show_problems(self, dark: bool) -> None:
        palette = self._problems.palette()
        palette.setColor(QPalette.ColorRole.WindowText, QColor(_COLOURS[dark]["warning"]))
        self._problems.setPalette(palette)
        self._problems.show()

    def _tick(self) -> None:
        for view in self._views:
            view.tick()

    def _set_status(self, text: str) -> None:
        self._status.setText(text)
        self._status.setVisible(bool(text))

    def _update_title(self) -> None:
        if self._frame is None:
            self._title.setText("No frame")
            return
        self._title.setText(self._format_frame(self._frame) + (f" · {self._source}" if self._source else ""))

    def _on_reask(self) -> None:
        if self._frame is not None:
            self.reaskRequested.emit(self._frame)

    def _on_nearby_clicked(self, item: QListWidgetItem) -> None:
        frame = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(frame, int):
            self.frameRequested.emit(frame)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange):
            dark = _is_dark(self.palette())
            for view in getattr(self, "_views", []):
                view.restyle(self._highlight, dark, force=True)
