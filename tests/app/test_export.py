"""Reports and clips from an analysed synthetic case: the PDF rendered page by page, the HTML
parsed, the clip decoded; hostile model output stays literal text; nothing half-written remains;
no metadata of the source travels with a clip."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pypdfium2 as pdfium
import pytest

from app.export.clip import ClipCancelled, ClipOptions, clip_for_video
from app.export.report import ReportOptions, report_for_video
from app.main import main
from engine.report_data import ReportError
from engine.store import BlankArea, CaseStore, FrameResult, case_store_path
from engine.timecode import parse_position
from engine.video import VideoReader
from engine.video_probe import probe_video
from tests.engine.test_video_rotation_vfr import UH, UW, close, phone_recording, upright, vfr_ident, write_vfr
from train.synth.truth_store import TRUTH_MODEL_ID, store_truth_chains

HOSTILE = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper [10, 10, 120, 90]. <script>alert(1)</script> "
    "<b>bold</b> \x00\x07\x1b[31m\u202e.\n"
    "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
    "Level 3 (Context): Phase: Preparation. CVS: C1 met, C2 not met, C3 not met. Safety: <img src=x onerror=alert(2)>.\n"
    "</think>\n<answer>Preparation</answer>"
)
HOSTILE_FRAME = 110  # between the truth chains (one per second = 25 frames)


@pytest.fixture(scope="module")
def case(synth_case, tmp_path_factory):
    """The synthetic case with ground-truth chains, a hostile chain, bookmarks, notes, a blank area."""
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SURGVIEW_DATA", str(data))
        video, _ = store_truth_chains(synth_case[0])
        with CaseStore.open(case_store_path(video)) as store:
            store.put_result(FrameResult.from_text(HOSTILE_FRAME, TRUTH_MODEL_ID, "truth", "frame_analysis", HOSTILE))
            store.add_bookmark(HOSTILE_FRAME, "hostile <i>title</i>")
            store.add_note("note <script>x()</script> \x1b end", frame=HOSTILE_FRAME)
            store.add_bookmark(500, "clipping starts")
            store.add_note("whole case: good exposure", frame=None)
            store.set_blank_areas([BlankArea(240, 40, 60, 30)])  # clear of the badges
        yield video


def pdf_pages(path: Path) -> list[tuple[str, np.ndarray]]:
    pdf = pdfium.PdfDocument(str(path))
    out = [(page.get_textpage().get_text_range(), np.asarray(page.render(scale=1.0).to_pil())) for page in pdf]
    pdf.close()
    return out


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained_and_model_text_is_literal(case, tmp_path):
    out = tmp_path / "report.html"
    data = report_for_video(case, out, ReportOptions(title="M&M <review>"))
    text = out.read_text(encoding="utf-8")
    parsed = _Tags()
    parsed.feed(text)
    tags = {t for t, _ in parsed.tags}
    assert "script" not in tags and "i" not in tags and "b" in tags  # <b> only from the template
    assert all("onerror" not in attrs for _, attrs in parsed.tags)
    images = [attrs["src"] for t, attrs in parsed.tags if t == "img"]
    assert len(images) == 1 + len(data.bookmarks) and all(src.startswith("data:image/") for src in images)
    visible = "".join(parsed.text)
    assert "<script>alert(1)</script>" in visible and "<img src=x onerror=alert(2)>" in visible
    assert "hostile <i>title</i>" in visible and "note <script>x()</script> \\x1b end" in visible
    assert "\\x00\\x07\\x1b[31m\\u202e" in visible and "\x1b" not in text and "\x00" not in text
    assert "M&M <review>" in visible
    assert str(case) not in text and case.name not in text  # no path, no file name
    # the summary: coverage, phases, CVS and instruments from the ground truth
    assert data.summary.analysed_frames == 61 and data.summary.coverage == pytest.approx(1.0)
    assert [p.phase for p in data.phases][:3] == ["Preparation", "CalotTriangleDissection", "ClippingCutting"]
    assert sum(p.seconds for p in data.phases) == pytest.approx(60.0)
    assert "Calot Triangle Dissection" in visible and "Instrument usage" in visible
    assert data.cvs.statement in visible.replace("\n", " ")
    assert "1 rectangle of the picture, painted black" in visible


def test_pdf_report_pages_render_with_pictures_and_literal_text(case, tmp_path):
    out = tmp_path / "report.pdf"
    data = report_for_video(case, out)
    pages = pdf_pages(out)
    assert len(pages) >= 4
    text = "\n".join(t for t, _ in pages)
    assert "Critical view of safety" in text and "Appendix: method" in text
    flat = text.replace("\r\n", "")  # lines wrapped by the layout, joined again
    assert "<script>alert(1)</script>" in flat and "<b>bold</b>" in flat and "hostile <i>title</i>" in flat
    assert "\\x00\\x07\\x1b[31m\\u202e" in flat and "\x1b" not in text
    first = pages[0][1]
    # the timeline picture: each phase's colour is painted on the first page
    for colour in ((0x56, 0xB4, 0xE9), (0xE6, 0x9F, 0x00), (0x00, 0x9E, 0x73)):
        assert (np.abs(first[..., :3].astype(int) - colour).sum(axis=-1) < 30).sum() > 100, colour
    # a bookmark page holds the frame: a large non-white region of reddish tissue
    bookmark_page = next(img for t, img in pages if "hostile <i>title</i> —" in t)  # its own page, not page 1's list
    rgb = bookmark_page[..., :3].astype(int)
    tissue = (rgb[..., 0] > rgb[..., 2] + 30).sum()
    assert tissue > 0.05 * rgb.shape[0] * rgb.shape[1]
    assert data.blanked and len(data.blank_areas) == 1


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(case, tmp_path, monkeypatch):
    out = tmp_path / "report.pdf"
    out.write_bytes(b"%PDF- the good one")

    def broken(html, path):
        Path(path).write_bytes(b"%PDF-half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("app.export.report.write_pdf", broken)
    with pytest.raises(ReportError, match="No space left"):
        report_for_video(case, out)
    assert out.read_bytes() == b"%PDF- the good one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]
    with pytest.raises(ReportError, match="does not exist"):
        report_for_video(case, tmp_path / "missing" / "r.html")


def decode(path: Path) -> tuple[list[np.ndarray], av.container.InputContainer]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        info = {
            "fps": stream.average_rate,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "container_meta": dict(container.metadata),
            "stream_meta": dict(stream.metadata),
        }
    return frames, info


def test_clip_has_the_range_at_the_source_rate_with_overlays_and_panel(case, tmp_path):
    out = tmp_path / "clip.mp4"
    seen = []
    stats = clip_for_video(case, out, ClipOptions(100, 149), progress=lambda d, t: seen.append((d, t)))
    frames, info = decode(out)
    assert len(frames) == 50 and stats.frames == 50 and seen[-1] == (50, 50)
    assert info["fps"] == Fraction(25) and info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    with VideoReader(case) as reader:
        w, h = reader.width, reader.height
        source = {i: reader.frame(i) for i in (HOSTILE_FRAME, 140)}
    assert frames[0].shape == (h, w + round(0.6 * h) + (w + round(0.6 * h)) % 2, 3)
    analysed = frames[HOSTILE_FRAME - 100].astype(int)
    # the hostile chain's box [10,10,120,90] is drawn on its own frame (blue outline)
    diff = np.abs(analysed[:h, :w] - source[HOSTILE_FRAME].astype(int)).sum(axis=-1)
    assert (diff[10:92, 8:14] > 60).mean() > 0.5
    # the blank area is black, the panel holds text once the chain is revealed
    assert analysed[80:120, 240:300].mean() > 40 and frames[5][41:69, 241:299].max() < 40
    panel_early, panel_late = frames[HOSTILE_FRAME - 100][:, w:], frames[139 - 100][:, w:]
    assert panel_late.std() > panel_early.std() > 0  # more text revealed later
    # boxes are held, marked as held, on every frame until the next analysed frame: they never blink
    with VideoReader(case) as reader:
        between = {i: reader.frame(i).astype(int) for i in range(HOSTILE_FRAME + 1, 125)}
    for i, src in between.items():
        held = np.abs(frames[i - 100][:h, :w].astype(int) - src).sum(axis=-1)
        assert (held[10:92, 8:14] > 40).mean() > 0.5, i  # the hostile chain's box, fainter


def test_a_clip_of_a_rotated_recording_is_upright_and_carries_no_rotation(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    source = phone_recording(tmp_path / "phone.mp4")
    out = tmp_path / "clip.mp4"
    clip_for_video(source, out, ClipOptions(0, 9, panel=False))
    with av.open(str(out)) as clip:  # decoded as stored: no player rotation to help
        frames = list(clip.decode(video=0))
    assert len(frames) == 10
    assert all(f.side_data.get("DISPLAYMATRIX") is None and f.rotation == 0 for f in frames)
    rgb = frames[3].to_ndarray(format="rgb24")
    assert rgb.shape == (UH, UW, 3)
    assert close(rgb[: UH // 2], upright()[: UH // 2])  # the bright block top-left (the OSD sits bottom right)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by ./dev.sh")
def test_a_clip_starts_at_the_timecode_and_keeps_variable_frame_rate_timing(tmp_path, monkeypatch):
    """10 fps for 10 s, then 30 fps: 00:00:06.00 is frame 60, not 6 s × the average rate."""
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    source = write_vfr(tmp_path / "vfr.mp4")
    facts = probe_video(source)
    start, stop = (parse_position(t, facts.fps, facts.index_at) for t in ("00:00:06.00", "00:00:12.00"))
    assert (start, stop) == (60, 160) and round(6 * facts.fps) != 60
    out = tmp_path / "clip.mp4"
    stats = clip_for_video(source, out, ClipOptions(start, stop, panel=False))
    with VideoReader(out) as clip, VideoReader(source) as src:
        assert clip.frame_count == stats.frames == stop - start + 1
        assert [vfr_ident(clip.frame(k)) for k in (0, 39, 40, 100)] == [60, 99, 100, 160]
        for k in (0, 1, 39, 40, 41, 100):  # 0.1 s apart, then 1/30 s: as recorded, not re-timed
            assert clip.time_of(k) == pytest.approx(src.time_of(start + k) - 6.0, abs=1e-3), k
        assert clip.duration_s == pytest.approx(src.time_of(stop + 1) - 6.0, abs=1e-3)


def _write_room_sound(audio: av.audio.stream.AudioStream, seconds: float) -> None:
    """Fill an AAC track with a 440 Hz tone standing in for voices in the room."""
    rate = audio.codec_context.sample_rate
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(tone), 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        audio.container.mux(audio.encode(frame))
    audio.container.mux(audio.encode(None))


def test_clip_carries_no_source_metadata_or_sound_and_cancel_leaves_nothing(case, tmp_path):
    tagged = tmp_path / "tagged.mp4"
    secrets = {"title": "DOE^JANE 1961-02-03", "comment": "OR 4 device SN-12345", "location": "+48.8577+002.295/"}
    with av.open(str(case)) as src, av.open(str(tagged), "w", options={"movflags": "use_metadata_tags"}) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        dst.metadata.update({**secrets, "creation_time": "2021-05-06T07:08:09Z"})
        s_out.metadata.update({"handler_name": "PatientCam", "creation_time": "2021-05-06T07:08:09Z"})
        sound = dst.add_stream("aac", rate=48000, layout="mono")
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                dst.mux(packet)
        _write_room_sound(sound, 2.0)
    with av.open(str(tagged)) as probe:
        assert probe.metadata.get("title") == secrets["title"]  # the source really carries them
        assert len(probe.streams.audio) == 1  # and a sound track
    out = tmp_path / "clean.mp4"
    clip_for_video(tagged, out, ClipOptions(0, 9))
    _, info = decode(out)
    with av.open(str(out)) as clip:
        assert [s.type for s in clip.streams] == ["video"]  # picture only: room sound can carry names
    found = " ".join(f"{k}={v}" for k, v in {**info["container_meta"], **info["stream_meta"]}.items())
    for value in [*secrets.values(), "2021", "PatientCam", str(tmp_path), "tagged"]:
        assert value not in found
    assert "creation_time" not in info["container_meta"] and "creation_time" not in info["stream_meta"]

    cancel = threading.Event()
    target = tmp_path / "cancelled.mp4"

    def progress(done, total):
        if done == 5:
            cancel.set()

    with pytest.raises(ClipCancelled):
        clip_for_video(case, target, ClipOptions(0, 200), progress=progress, cancel=cancel)
    assert not target.exists() and not list(tmp_path.glob(".cancelled*"))


def test_cli_report_and_clip_and_the_viewer_flags_still_work(case, tmp_path, capsys):
    args = ["--title", "Teaching", "--reviewer", "Dr Reviewer"]
    assert main(["report", str(case), "--out", str(tmp_path / "r.html"), *args]) == 0
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Teaching" in report and "Dr Reviewer" in report
    assert re.search(r"\d\d:\d\d:\d\d\.\d\d", report) is None  # hh:mm:ss and the frame, never hundredths
    assert "[10, 10, 120, 90]" not in report  # boxes are in the pictures, not the text
    assert report.index("Critical view of safety") < report.index("Review and sign-off") < report.index("Appendix")
    assert report.index("Appendix: method") < report.index(TRUTH_MODEL_ID)  # the model's identity: in the appendix
    assert main(["clip", str(case), "--from", "00:00:02.00", "--to", "60", "--out", str(tmp_path / "c.mp4")]) == 0
    assert len(decode(tmp_path / "c.mp4")[0]) == 11
    assert main(["clip", str(case), "--from", "20", "--to", "10", "--out", str(tmp_path / "x.mp4")]) == 1
    assert main(["report", str(case), "--out", str(tmp_path / "r.docx")]) == 1
    err = capsys.readouterr().err
    assert "from <= to" in err and ".html or .pdf" in err and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()
    assert main(["--info", str(case)]) == 0
    assert "1500 frames" in capsys.readouterr().out


def test_report_of_a_case_never_analysed_says_so(synth_case, tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "empty"))
    video = tmp_path / "copy.mp4"
    shutil.copy(synth_case[0] / "cholec80" / "videos" / "video01.mp4", video)
    with pytest.raises(ReportError, match="no analysis stored"):
        report_for_video(video, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report_json_gives_the_cvs_episodes(case, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["report", str(case), "--out", str(tmp_path / "r.html"), "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    cvs = data["cvs"]
    assert set(cvs) >= {"established", "established_at_s", "held_until_clip", "episodes", "first_clip_s"}
    assert isinstance(cvs["established"], bool) and cvs["statement"].startswith("CVS was")
    for episode in cvs["episodes"]:
        assert set(episode) >= {"start_s", "end_s", "status"} and episode["status"] in ("established", "doubtful")
        assert episode["start_s"] <= episode["end_s"]
    if cvs["established"]:  # established means on a stable run, before the first clip
        assert any(e["status"] == "established" for e in cvs["episodes"])
        assert cvs["first_clip_s"] is None or cvs["established_at_s"] < cvs["first_clip_s"]
    assert data["phases"] and data["case"]["profile"]
    capsys.readouterr()
    assert main(["report", str(case), "--out", str(tmp_path / "r2.html"), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["cvs"] == cvs and "wrote" in captured.err
