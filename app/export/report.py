"""The case report as a self-contained HTML file or a PDF.

HTML comes from the jinja2 template ``resources/report/report.html.j2`` with autoescape on and
every model or reviewer text passed through :func:`engine.report_data.visible_text`, so markup
and control characters show as typed. Pictures are embedded as data URIs. The PDF is the same
HTML laid out by Qt's QTextDocument onto a QPdfWriter (PySide6-Essentials has no web engine).

Files are written atomically: a temporary file in the target folder, renamed over the target
only when complete, so a failed export never leaves half a file over a good one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import jinja2
from PySide6.QtCore import QMarginsF, QRectF, QSizeF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QPageLayout,
    QPageSize,
    QPainter,
    QPdfWriter,
    QTextBlock,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)

from app import palette
from app.export.files import atomic_write
from app.export.pictures import blank_areas, data_uri, ensure_gui_app, format_seconds, frame_picture, timeline_picture
from app.procedure_view import label_colours
from engine.modeldir import Manifest, ModelDirError, inspect_model_dir
from engine.report_data import (
    ROLE_TITLES,
    BookmarkEntry,
    ReportData,
    ReportError,
    choose_analysis,
    gather_report,
    visible_text,
    without_boxes,
)
from engine.resources import resource_path
from engine.store import CaseStore, StoreError, case_store_path
from engine.video import VideoError, VideoReader
from engine.video_probe import probe_video

__all__ = ["ReportOptions", "atomic_write", "export_report", "render_html", "report_for_video", "write_pdf"]

FORMATS = (".html", ".htm", ".pdf")


@dataclass(frozen=True)
class ReportOptions:
    title: str | None = None  # default: "<procedure> review, <date>", never the file name
    reviewer: str | None = None  # the name on the sign-off lines (default: blank lines)
    model_id: str | None = None  # default: the most recent analysis
    task: str | None = None
    model_dir: Path | None = None  # its manifest goes in the summary when it made the analysis
    blank: bool = True  # paint the case's blank areas over every picture
    frame_width: int = 800  # pixels of the bookmarked-frame pictures
    stride_s: float = 1.0  # the sweep's stride: its frames are smoothed, as the viewer smooths them


@dataclass(frozen=True)
class _Picture:
    entry: BookmarkEntry
    uri: str


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_path("report"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["vis"] = lambda text: visible_text("" if text is None else str(text))
    env.filters["noboxes"] = without_boxes  # pixel boxes: the pictures show them
    env.filters["duration"] = format_seconds
    env.filters["metric"] = lambda v: f"{v:.3g}" if isinstance(v, float) else visible_text(str(v))
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # an agreement with no frame behind it
    return env


def render_html(data: ReportData, pictures: dict[int, str], timeline_uri: str, *, pdf: bool = False) -> str:
    """The report's HTML; ``pictures`` maps a bookmark's index to its image URI."""
    s = data.summary
    template = _environment().get_template("report.html.j2")
    return template.render(
        s=s,
        pdf=pdf,
        generated=datetime.datetime.fromtimestamp(data.created).strftime("%Y-%m-%d %H:%M"),
        timeline_uri=timeline_uri,
        phases=data.phases,
        phase_colors=label_colours(data.procedure, "phase") or palette.PHASE_COLORS,
        durations=data.durations,  # the procedure's timelines (phase, step, action) in its order
        colours={role: label_colours(data.procedure, role) for role in data.durations},
        role_titles=ROLE_TITLES,
        procedure=data.procedure,
        cvs=data.cvs,
        tools=data.tools,
        bookmarks=[_Picture(entry, pictures.get(i, "")) for i, entry in enumerate(data.bookmarks)],
        case_notes=data.case_notes,
        removed=data.removed,
        blank_areas=data.blank_areas,
        blanked=data.blanked,
        config=data.timelines.config,
        review=data.review,
        reviewers=data.reviewers,
        tc=lambda frame: _clock(frame, s.fps),
        tcf=lambda frame: "–" if frame is None else f"{_clock(frame, s.fps)} (frame {frame})",
    )


def _clock(frame: int | None, fps: float) -> str:
    """``hh:mm:ss`` of a frame: a report never shows frames as hundredths (the frame number says the rest)."""
    if frame is None:
        return "–"
    if fps <= 0:
        return "--:--:--"
    whole = int(frame // fps)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


_MARGIN_CM = 2.0
_KEEP_WITH_NEXT_PT = 60.0  # a heading needs this much room below it on its page, else it starts the next


def write_pdf(html: str, path: Path) -> None:
    """Lay ``html`` out on A4 pages with Qt and write the PDF to ``path`` (not atomic by itself).

    The document is paginated here (as ``QTextDocument.print_`` would: laid out for the writer,
    2 cm margins) so that no heading is left at a page's foot: a heading without room for its
    content below starts the next page. Table header rows (``<thead>``) repeat on every page.
    """
    ensure_gui_app()
    writer = QPdfWriter(str(path))
    writer.setTitle("surgview case report")
    writer.setCreator("surgview")
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(0, 0, 0, 0), QPageLayout.Unit.Millimeter)
    writer.setResolution(144)
    dpi = writer.resolution()
    page = writer.pageLayout().fullRectPixels(dpi)
    margin = _MARGIN_CM / 2.54 * dpi
    doc = QTextDocument()
    doc.documentLayout().setPaintDevice(writer)
    doc.setDocumentMargin(0)
    doc.setHtml(html)
    frame = doc.rootFrame().frameFormat()
    frame.setMargin(0)
    frame.setTopMargin(margin)
    frame.setBottomMargin(margin)
    frame.setLeftMargin(margin)
    frame.setRightMargin(margin)
    doc.rootFrame().setFrameFormat(frame)
    height = float(page.height())
    doc.setTextWidth(page.width())  # no page height: laid out without page breaks
    natural = _block_extents(doc)  # where every block lies on one endless page: sections' own heights
    doc.setPageSize(QSizeF(page.width(), height))
    _keep_headings_with_content(doc, height, margin, _KEEP_WITH_NEXT_PT / 72 * dpi, natural)
    painter = QPainter(writer)
    try:
        pages = doc.pageCount()
        font = QFont(doc.defaultFont())
        font.setPointSizeF(9)
        for i in range(pages):
            if i:
                writer.newPage()
            painter.save()
            painter.translate(0, -i * height)
            doc.drawContents(painter, QRectF(0, i * height, page.width(), height))
            painter.restore()
            painter.setFont(font)
            painter.setPen(QColor(palette.REPORT_FOOTER))
            foot = QRectF(margin, height - margin + 0.2 * margin, page.width() - 2 * margin, 0.5 * margin)
            painter.drawText(foot, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop), f"{i + 1} / {pages}")
    finally:
        painter.end()
    del writer  # the file is finished when the writer is destroyed


def _keep_headings_with_content(
    doc: QTextDocument, page_height: float, margin: float, room: float, natural: list[tuple[float, float]]
) -> None:
    """Move every top-level heading that would end a page to the next page: it needs ``room`` below it,
    or the whole first block of its content when that is taller (a picture), with any headings between;
    its whole section when that is short (a table row is never split under its heading: Qt splits rows
    at a page's foot and ignores ``page-break-inside``); and a heading whose content was laid out on a
    later page (a table whose header and first row do not fit below it) follows its content there.
    ``natural``: each block's (top, bottom) laid out unpaginated, by block number."""
    layout = doc.documentLayout()
    body = page_height - 2 * margin
    block = doc.begin()
    while block.isValid():
        fmt = block.blockFormat()
        if fmt.headingLevel() > 0 and _top_level(doc, block):
            rect = layout.blockBoundingRect(block)
            content, nxt = None, block.next()
            while nxt.isValid():  # the headings below it and the first block of content
                if nxt.blockFormat().headingLevel() == 0:
                    content = layout.blockBoundingRect(nxt)
                    break
                nxt = nxt.next()
            index = int(rect.top() // page_height)
            foot = (index + 1) * page_height - margin
            follow = content.bottom() - rect.bottom() if content is not None else 0.0
            section = _section_height(doc, block, nxt, natural)
            if section <= _KEEP_SECTION_SHARE * body:
                follow = max(follow, section + room / 2)  # Qt breaks a cell a few lines above the foot
            pushed = content is not None and int(content.top() // page_height) > index
            need = min(max(room, follow), body - rect.height())
            if (pushed or rect.bottom() + need > foot) and rect.top() > index * page_height + margin + 1:
                fmt.setPageBreakPolicy(QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore)
                QTextCursor(block).setBlockFormat(fmt)
                # Qt relays out only the changed block: tables further down kept their old places and a
                # later heading was painted under one (lost from the page). Lay out the rest again.
                doc.markContentsDirty(block.position(), doc.characterCount() - block.position())
        block = block.next()


_KEEP_SECTION_SHARE = 0.4  # a section up to this share of a page's body moves to the next page whole


def _top_level(doc: QTextDocument, block: QTextBlock) -> bool:
    return doc.rootFrame() == doc.frameAt(block.position())


def _block_extents(doc: QTextDocument) -> list[tuple[float, float]]:
    """(top, bottom) of every block, table cells included, by block number, as laid out now."""
    layout = doc.documentLayout()
    out: list[tuple[float, float]] = []
    block = doc.begin()
    while block.isValid():
        rect = layout.blockBoundingRect(block)
        out.append((rect.top(), rect.bottom()))
        block = block.next()
    return out


def _section_height(
    doc: QTextDocument, heading: QTextBlock, first: QTextBlock, natural: list[tuple[float, float]]
) -> float:
    """How tall the section under ``heading`` is (from its first block of content ``first`` up to the next
    top-level heading), unpaginated: what it needs below the heading to stay on one page."""
    if not first.isValid():
        return 0.0
    end, block = natural[heading.blockNumber()][1], first
    while block.isValid() and not (block.blockFormat().headingLevel() > 0 and _top_level(doc, block)):
        end = max(end, natural[block.blockNumber()][1])
        block = block.next()
    return end - natural[heading.blockNumber()][1]


def pictures_for(data: ReportData, video: Path, width: int) -> dict[int, str]:
    """JPEG data URIs of the bookmarked frames with their overlays (blank areas painted over)."""
    out: dict[int, str] = {}
    if not data.bookmarks:
        return out
    try:
        with VideoReader(video) as reader:
            for i, entry in enumerate(data.bookmarks):
                frame = min(max(entry.shown_frame, 0), reader.frame_count - 1)
                rgb = reader.frame(frame)
                if data.blanked:
                    blank_areas(rgb, data.blank_areas)
                record = entry.record(rgb.shape[1], rgb.shape[0]) if entry.shown_frame == frame else None
                chain = record.to_chain() if record is not None else None  # every question's boxes, in video pixels
                assessment = data.cvs.assessment if data.cvs is not None else None
                doubt = (
                    assessment.doubt(frame, chain.context.cvs)
                    if assessment is not None and chain is not None and chain.context is not None
                    else None
                )  # an isolated "all met" frame is shown as doubtful in the report too, never as a green light
                image = frame_picture(rgb, chain, frame, data.summary.fps, width=width, cvs_doubt=doubt)
                out[i] = data_uri(image, "JPEG", 88)
    except VideoError as exc:
        raise ReportError(f"cannot read the case's frames: {exc}") from None
    return out


def _manifest(options: ReportOptions, model_id: str) -> Manifest | None:
    if options.model_dir is None:
        return None
    try:
        info = inspect_model_dir(options.model_dir)
    except ModelDirError:
        return None
    return info.manifest if info.model_id == model_id else None


def export_report(data: ReportData, video: Path, out: Path, *, frame_width: int = 800) -> Path:
    """Render ``data`` with pictures from ``video`` to ``out`` (.html or .pdf), atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ReportError(f"{out.name}: a report is .html or .pdf")
    ensure_gui_app()
    pictures = pictures_for(data, video, frame_width)
    timeline_uri = data_uri(timeline_picture(data))
    pdf = suffix == ".pdf"
    html = render_html(data, pictures, timeline_uri, pdf=pdf)
    if pdf:
        atomic_write(out, lambda tmp: write_pdf(html, tmp))
    else:
        atomic_write(out, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return out


def report_for_video(video: Path, out: Path, options: ReportOptions | None = None) -> ReportData:
    """Gather and write the report of ``video``'s stored analysis (the CLI and the viewer's path)."""
    options = options or ReportOptions()
    store_path = case_store_path(video)
    if not store_path.is_file():
        raise ReportError(f"{video.name}: no analysis stored for this case (analyse it first)")
    try:
        facts = probe_video(video)
        with CaseStore.open(store_path) as store:
            data = _gather(store, options, float(facts.fps), facts.frames)
    except VideoError as exc:
        raise ReportError(str(exc)) from None
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    export_report(data, video, out, frame_width=options.frame_width)
    return data


def _gather(store: CaseStore, options: ReportOptions, fps: float, frame_count: int) -> ReportData:
    analysis = choose_analysis(store, options.model_id, options.task)
    return gather_report(
        store,
        analysis=analysis,
        manifest=_manifest(options, analysis.model_id),
        title=options.title,
        reviewer=options.reviewer,
        blank=options.blank,
        fps=fps,
        frame_count=frame_count,
        stride_s=options.stride_s,
    )
