"""The viewer's colours, in one place so the video overlay, timelines and badges agree.

Phases use the Okabe–Ito palette (Okabe & Ito 2008): seven hues that stay distinct under the
common colour-vision deficiencies, which is exactly one per Cholec80 phase. The surfaces are a
dark theme for a dimmed operating room. Values are hex strings (``QColor(hex)`` or pyqtgraph
accept them), so this module imports nothing and any part of the app can use it.
"""

from __future__ import annotations

__all__ = [
    "ACCENT",
    "BACKGROUND",
    "BOX",
    "BOX_HIGHLIGHT",
    "BOX_UNKNOWN",
    "CVS_COLORS",
    "CVS_DOUBT",
    "CVS_DOUBTFUL",
    "CVS_MET",
    "CVS_NOT_ASSESSABLE",
    "CVS_NOT_MET",
    "HELD_AGE",
    "HIGHLIGHT_TEXT",
    "PHASE_COLORS",
    "REPORT_FOOTER",
    "REPORT_GRID",
    "REPORT_INK",
    "REPORT_LANE",
    "REPORT_PAPER",
    "REPORT_TOOL",
    "REVIEWER",
    "REVIEW_CVS_COLORS",
    "REVIEW_REJECTED",
    "SECTION_STATE_COLOURS",
    "SURFACE",
    "TEXT",
    "TEXT_DIM",
    "THEME_ACCENT",
    "THEME_BACKGROUND",
    "THEME_BORDER",
    "THEME_BORDER_FIELD",
    "THEME_CHECKED",
    "THEME_ERROR",
    "THEME_MUTED",
    "THEME_PANEL",
    "THEME_PROGRESS",
    "THEME_RAISED",
    "THEME_SELECTED_TEXT",
    "THEME_SELECTION",
    "THEME_TEXT",
    "THEME_WARNING",
    "UNKNOWN",
    "WHITE",
    "phase_color",
]

# Okabe–Ito, in the clinical order of the phases.
PHASE_COLORS: dict[str, str] = {
    "Preparation": "#56B4E9",  # sky blue
    "CalotTriangleDissection": "#E69F00",  # orange
    "ClippingCutting": "#D55E00",  # vermillion
    "GallbladderDissection": "#009E73",  # bluish green
    "GallbladderPackaging": "#CC79A7",  # reddish purple
    "CleaningCoagulation": "#0072B2",  # blue
    "GallbladderRetraction": "#F0E442",  # yellow
}

UNKNOWN = "#999999"  # a label the ontology does not know, or no value

# Endoscapes CVS criterion states. Paul Tol's "muted" scheme, chosen apart from the seven Okabe–Ito
# phase hues and told apart by lightness as well as hue (dark green, rose, mid grey, sand), so they
# stay distinct under the common colour-vision deficiencies and never read as a phase.
CVS_MET = "#117733"  # dark green
CVS_NOT_MET = "#CC6677"  # rose
CVS_NOT_ASSESSABLE = "#6E6E6E"  # mid grey (darker than UNKNOWN)
CVS_DOUBTFUL = "#DDCC77"  # sand: "all met" outside an established episode, or neighbours disagree
# Keyed like engine.chain.CvsState values ("met", ...): timelines, overlay badges and reports share it.
CVS_COLORS: dict[str, str] = {
    "met": CVS_MET,
    "not met": CVS_NOT_MET,
    "not assessable": CVS_NOT_ASSESSABLE,
}

# Dark surfaces and text.
BACKGROUND = "#000000"  # around the video (letterbox bars)
SURFACE = "#1E1F22"  # panels
TEXT = "#E8E8E8"
WHITE = "#FFFFFF"  # text on a dark badge
TEXT_DIM = "#A0A4AA"
ACCENT = "#56B4E9"

# Instrument boxes over the (red-dominated) laparoscopic image: blue reads best on tissue.
BOX = "#56B4E9"
BOX_HIGHLIGHT = "#F0E442"  # the entity under the mouse, here or in the reasoning panel
BOX_UNKNOWN = "#CC79A7"  # a tool name the ontology does not know (drawn dashed, flagged)


def phase_color(label: str | None) -> str:
    """Colour of a canonical phase name (``Mention.label``); grey for None or an unknown name."""
    return PHASE_COLORS.get(label or "", UNKNOWN)


# Timelines (app.widgets.timeline_view): lanes, tools, coverage, bookmarks, playhead, selection.
TIMELINE_BACKGROUND = "#1b1d21"
TIMELINE_LANE = "#272a30"
TIMELINE_TEXT = "#c8ccd2"
TOOL_COLORS: dict[str, str] = {
    "Grasper": "#a0cbe8",
    "Bipolar": "#ffbe7d",
    "Hook": "#ff9d9a",
    "Scissors": "#8cd17d",
    "Clipper": "#f1ce63",
    "Irrigator": "#86bcb6",
    "SpecimenBag": "#d4a6c8",
}
COVERAGE = "#8aa1b1"
BOOKMARK = "#f5f5f5"
PLAYHEAD = "#ffffff"
SELECTION_FILL = (120, 170, 255, 60)  # translucent: the tracks stay readable under it
SELECTION_EDGE = "#78aaff"
CONFIDENCE_RAMP = ((225, 87, 89), (237, 201, 72), (89, 161, 79))  # red (0) → amber (0.5) → green (1), RGB

# The reasoning panel (app.widgets.reasoning_panel): entity kinds and section states, on a dark
# base (operating-room review: muted, no glare) and on a light one, keyed by "is the base dark".
# On the dark base, instruments and flagged names take the video overlay's colours (phases take
# PHASE_COLORS there), so the same thing looks the same everywhere.
SECTION_STATE_COLOURS: dict[bool, dict[str, str]] = {
    True: {
        "instrument": BOX,
        "anatomy": "#eea58a",
        "verb": "#a3d69a",
        "phase": "#c6a7f5",
        "unknown": BOX_UNKNOWN,
        "done": "#8fcf9c",
        "streaming": "#7cc0f5",
        "warning": "#ff9e7a",
    },
    False: {
        "instrument": "#0b5cad",
        "anatomy": "#a4401b",
        "verb": "#2d7a29",
        "phase": "#6a3db0",
        "unknown": "#a85600",
        "done": "#2d7a29",
        "streaming": "#0b5cad",
        "warning": "#b3361f",
    },
}
HIGHLIGHT_TEXT = "#1b1d21"  # dark text on BOX_HIGHLIGHT (the hovered entity)

# The dark theme (app.theme): window, panels, raised controls, text, and the stylesheet's edges.
THEME_BACKGROUND = "#1b1d21"
THEME_PANEL = "#23262b"
THEME_RAISED = "#2c3036"
THEME_TEXT = "#d7dae0"
THEME_MUTED = "#8b919b"
THEME_ACCENT = "#4aa3df"
THEME_WARNING = "#e0a84a"
THEME_ERROR = "#e06c6c"
THEME_BORDER = "#3a3f46"  # buttons, tooltips
THEME_BORDER_FIELD = "#33373d"  # lists, text fields, progress bars
THEME_CHECKED = "#33475a"  # a checked button
THEME_SELECTION = "#2f4a61"  # selected text and items
THEME_SELECTED_TEXT = "#ffffff"
THEME_PROGRESS = "#2f6f9f"  # a progress bar's chunk

# Report pictures (app.export.pictures): printed on white paper.
REPORT_PAPER = "#FFFFFF"
REPORT_INK = "#202124"  # labels and axis text
REPORT_GRID = "#D0D3D8"  # axis ticks
REPORT_LANE = "#F1F3F4"  # a timeline row's background
REPORT_TOOL = "#4C72B0"  # a tool's presence runs
REPORT_FOOTER = "#5F6368"  # page numbers of the PDF

# The viewer's marks for what is not the frame on screen or not a green light (amber, as warnings are).
HELD_AGE = THEME_WARNING
CVS_DOUBT = THEME_WARNING

# The reviewer's word, told apart from the model's everywhere: a violet that is none of the phase hues and
# reads on tissue beside the model's blue boxes (reviewer boxes, the band over the reviewed phase track, the
# chain verdicts), and the reviewer's CVS states in the other half of Paul Tol's muted scheme (teal, wine,
# light grey), so a reviewer's "met" never looks like the model's.
REVIEWER = "#E040FB"
REVIEW_REJECTED = "#FF5252"  # a model box or item the reviewer rejected (crossed out)
REVIEW_CVS_COLORS: dict[str, str] = {
    "met": "#44AA99",  # teal
    "not met": "#882255",  # wine
    "not assessable": "#BBBBBB",  # light grey
}


# Procedure palettes (engine.procedures names a palette and a slot per label; the hex values live here).
# okabe_ito: Okabe & Ito (2008), slot 7 a mid grey for "Other" (their black is lost on a dark timeline);
# tol_muted: Paul Tol's muted scheme; tol_light12: Paul Tol's light scheme (9) and three of his muted hues
# (purple, rose, olive), so the 12 MultiBypass140 phases stay light on the dark lanes; glasbey: colorcet's
# glasbey (Glasbey et al. 2007, maximally distinct), its first 46 for MultiBypass140's steps; cholec80_*:
# the viewer's phase and tool colours above, in the ontology's order.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
TOL_MUTED = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499")
TOL_LIGHT12 = (
    "#77AADD", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#EEDD88",
    "#EE8866", "#FFAABB", "#DDDDDD", "#AA4499", "#CC6677", "#999933",
)  # fmt: skip
GLASBEY = (
    "#d60000", "#8c3bff", "#018700", "#00acc6", "#97ff00", "#ff7ed1", "#6b004f", "#ffa52f", "#573b00", "#005659",
    "#0000dd", "#00fdcf", "#a17569", "#bcb6ff", "#95b577", "#bf03b8", "#645474", "#790000", "#0774d8", "#fdf490",
    "#004b00", "#8e7900", "#ff7266", "#edb8b8", "#5d7e66", "#9ae4ff", "#eb0077", "#a57bb8", "#5900a3", "#03c600",
    "#9e4b00", "#9c3b4f", "#cac300", "#708297", "#00af89", "#8287ff", "#5d363b", "#380000", "#fdbfff", "#bde6bf",
    "#db6d01", "#93b8b5", "#e452ff", "#2f5282", "#c36690", "#54621f",
)  # fmt: skip
PROCEDURE_PALETTES: dict[str, tuple[str, ...]] = {
    "okabe_ito": OKABE_ITO,
    "tol_muted": TOL_MUTED,
    "tol_light12": TOL_LIGHT12,
    "glasbey": GLASBEY,
    "cholec80_phase": tuple(PHASE_COLORS.values()),
    "cholec80_tool": tuple(TOOL_COLORS.values()),
}


def key_colour(palette: str, slot: int) -> str:
    """The colour of slot ``slot`` of procedure palette ``palette`` (an engine ``ColourKey``); grey when unknown."""
    colours = PROCEDURE_PALETTES.get(palette, ())
    return colours[slot] if 0 <= slot < len(colours) else UNKNOWN
