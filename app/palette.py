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
    "PHASE_COLORS",
    "SURFACE",
    "TEXT",
    "TEXT_DIM",
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

# Endoscapes CVS criterion states, keyed like engine.chain.CvsState values ("met", ...).
CVS_COLORS: dict[str, str] = {
    "met": "#009E73",
    "not met": "#D55E00",
    "not assessable": UNKNOWN,
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
