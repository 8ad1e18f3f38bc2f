"""The open case as a Qt-free model: what the viewer shows, parsed once, with change events.

``CaseSession`` owns the case store handle, the engine's current analysis (model id + profile:
:class:`engine.frame_record.CaseAnalysis`), the stored answers read in bulk and their merged
:class:`FrameRecord`\\ s (each computed once, invalidated when a new answer for that frame
arrives), the timelines, the bookmarks, the ground truth, and the reviewer's position
(:class:`app.state.Playhead`, clamped here and only here). Widgets subscribe to it (and to its
``case`` and ``playhead`` models) like to the models of :mod:`app.state`; the window only wires.

Nothing here runs SQL or parses a chain per displayed frame: answers are read when the analysis
becomes known (one query per question, text and status only: no chain JSON is decoded) and when the
engine says a frame's answer was committed (one query for that frame); records are merged by a
warm-up thread in bulk, or on first use of a frame the warm-up has not reached yet, and then served
from the cache. In a viewer (``hand_off`` set), the bulk read itself waits for the case's first frame
and runs on the warm-up thread, handed to the UI thread when done; until then a frame asked about is
read on its own and the analysed frames come from the timelines' statuses (a 90-minute case's 5,400
answers stay off the UI thread at reopen). Events are ``(name, value)``:
``analysis`` (profile), ``results`` (a frame index, or None for all), ``timelines``,
``bookmarks``, ``ground_truth``, ``store``, ``thumbnails`` (the keyframe preview strip, or None),
``problem`` (a line: the deferred bulk read failed); like :mod:`app.state` they are called
synchronously on the thread that changed the session (the UI thread; the warm-up and thumbnail
threads emit nothing: they hand over).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.state import CaseState, Listener, Playhead
from engine.chain import CvsState
from engine.cvs_assessment import ESTABLISHED, CvsEpisode, assess_cvs
from engine.frame_record import CaseAnalysis, FrameRecord, merge_results
from engine.phase_labels import LabelFileError, read_cholec80_phases
from engine.procedures import procedure_for_version, procedure_of_version
from engine.profiles import ModelProfile, ProfileError, get_profile, profile_for_version
from engine.store import CaseStore, FrameResult, StoreError, video_fingerprint
from engine.thumbnails import ThumbnailBuilder, ThumbnailStrip
from engine.timecode import format_time, format_timecode
from engine.timeline import Timelines, build_case_timelines, sweep_step

__all__ = ["BookmarkRow", "CaseSession", "ground_truth_path", "profile_from_info"]


def profile_from_info(info: Mapping[str, Any] | None) -> ModelProfile:
    """The engine's model profile from what it reports (``ready``'s dict: name, version, questions).

    The store keys come from the engine: its version wins over this process's, so the viewer reads
    exactly what the engine writes. Nothing reported: surgview's own profile.
    """
    if not info:
        return get_profile()
    version = str(info.get("version") or "")
    name = str(info.get("name") or "") or profile_for_version(version)
    questions = [q for q in info.get("questions") or [] if isinstance(q, Mapping)]
    task = None  # the surgview profile asks one question, the one the engine names
    if name == "surgview" and questions:
        task = str(questions[0].get("task") or "") or None
    try:
        profile = get_profile(name, task, procedure_for_version(version))  # another procedure's own questions
    except ProfileError:
        profile = get_profile()
    return replace(profile, version=version) if version and version != profile.version else profile


def ground_truth_path(video: Path) -> Path:
    """Where Cholec80 phase labels of ``video`` sit beside it."""
    return video.parent.parent / "phase_annotations" / f"{video.stem}-phase.txt"


_ORDER = ("malformed", "partial", "complete")


def _weakest(statuses: Any) -> str:
    """The weakest chain status (malformed < partial < complete), as ``FrameRecord.status`` says."""
    listed = list(statuses) or ["partial"]
    return min(listed, key=lambda s: _ORDER.index(s) if s in _ORDER else 0)


@dataclass(frozen=True)
class BookmarkRow:
    id: int
    frame: int
    title: str
    note: str = ""


class CaseSession:
    """One open case and what is known of it (see the module's docstring)."""

    def __init__(self) -> None:
        self.case = CaseState()
        self.playhead = Playhead()
        self.store: CaseStore | None = None
        self.model_id = ""
        self.profile: ModelProfile = get_profile()  # until the engine says which it asks with
        self.times: Any = None  # engine.video.FrameTimes of the open video (presentation times)
        self.timelines: Timelines | None = None
        self.statuses: list[tuple[int, str]] = []
        self.ground_truth: list[str] | None = None
        self.cvs_episodes: tuple[CvsEpisode, ...] = ()  # runs of "all three met" (engine.cvs_assessment)
        self._cvs_disagreeing: frozenset[int] = frozenset()  # frames whose analysed neighbours say otherwise
        self.bookmarks: list[BookmarkRow] = []
        self._listeners: list[Listener] = []
        self._results: dict[int, dict[str, FrameResult]] = {}
        self._records: dict[int, FrameRecord] = {}
        self._frames: list[int] = []  # the analysed frames, sorted (bisected while the video plays)
        self.stride_s = 1.0  # the sweep's seconds between analysed frames (the engine's setting)
        self._lock = threading.Lock()
        self._generation = 0  # bumped whenever the cache is dropped: a stale warm-up stops storing
        # Set by a viewer: runs a function on the UI thread (a queued Qt signal). With it, ``reload`` leaves
        # the bulk read of the answers to the warm-up thread, once the first frame is on screen; until it
        # lands, a frame asked about is read on its own (``_peeked``). Without it (engine-only use, tests),
        # ``reload`` reads them all before returning.
        self.hand_off: Callable[[Callable[[], None]], None] | None = None
        self._pending = False  # the bulk read is deferred and has not landed yet
        self._peeked: dict[int, dict[str, FrameResult]] = {}  # frames read on their own meanwhile
        self._fresh: set[int] = set()  # frames whose answers arrived meanwhile (newer than the bulk read)
        # The keyframe preview strip (engine.thumbnails) of the open video; built only when a viewer
        # asks for it by setting ``thumbnails_ready`` (called on the builder thread: hand it to the UI
        # thread, which then calls ``set_thumbnails``).
        self.thumbnails: ThumbnailStrip | None = None
        self.thumbnails_ready: Callable[[Path, ThumbnailStrip | None], None] | None = None
        self.thumbnails_progress: Callable[[Path, float], None] | None = None  # builder thread, as ``ready``
        self._thumbnail_builder: ThumbnailBuilder | None = None

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, name: str, value: Any = None) -> None:
        for listener in list(self._listeners):
            listener(name, value)

    # ------------------------------------------------------------------ position
    @property
    def prompt_version(self) -> str:
        return self.profile.version

    def clamp(self, frame: int) -> int:
        return self.playhead.clamp(int(frame), self.case.frame_count)

    def seek(self, frame: int) -> int | None:
        """Ask for ``frame`` (clamped to the case); the index to decode, None without a case."""
        if self.case.frame_count <= 0:
            return None
        frame = self.clamp(frame)
        self.playhead.requested = frame
        return frame

    @property
    def here(self) -> int:
        """The frame on screen, else the one asked for."""
        return self.playhead.displayed if self.playhead.displayed >= 0 else self.playhead.requested

    def time_of(self, frame: int) -> float:
        """Presentation time of ``frame`` in seconds (right for variable frame rates too)."""
        times = self.times
        if times is not None and 0 <= frame < len(times):
            base = getattr(times, "time_base", None)
            if base is not None:  # FrameTimes.time_of without a Fraction per call (int / int rounds as it does)
                return int(times.ticks[frame]) * base.numerator / base.denominator
            return float(times.time_of(frame))
        return frame / (self.case.fps or 25.0)

    def timecode(self, frame: int) -> str:
        if self.times is not None and 0 <= frame < len(self.times):
            return format_time(self.times.time_of(frame), self.case.fps)
        return format_timecode(frame, self.case.fps)

    # ------------------------------------------------------------------ case
    def open_store(self, path: Path, facts: Mapping[str, Any]) -> str | None:
        """The video opened (``PlaybackController.opened``'s facts): its store, ground truth, bookmarks.
        Returns a line for the status bar when something could not be read, else None."""
        self.case.update(
            fps=float(facts["fps"]),
            frame_count=int(facts["frame_count"]),
            width=int(facts["width"]),
            height=int(facts["height"]),
        )
        self.times = facts.get("times")
        self.close_store()
        problem = None
        try:
            self.store = CaseStore.for_video(path, fps=self.case.fps, frame_count=self.case.frame_count)
        except (StoreError, OSError) as exc:
            problem = f"analysis will not be kept: {exc}"
        self._emit("store", self.store)
        problem = self._load_ground_truth(path) or problem
        problem = self.load_bookmarks() or problem
        self.reload(timelines_later=True)
        self._start_thumbnails(path)
        return problem

    def close_store(self) -> None:
        self._stop_thumbnails()
        self._drop_cache()
        if self.store is not None:
            self.store.close()
            self.store = None

    # ------------------------------------------------------------------ previews
    def _start_thumbnails(self, video: Path) -> None:
        """Load or build the preview strip of ``video`` in the background (only when a viewer listens)."""
        ready = self.thumbnails_ready
        if ready is None:
            return
        video, progress = Path(video), self.thumbnails_progress
        on_progress = None if progress is None else (lambda share: progress(video, share))
        self._thumbnail_builder = ThumbnailBuilder(video, on_done=lambda s: ready(video, s), on_progress=on_progress)
        self._thumbnail_builder.start()

    def thumbnails_error(self, video: Path) -> str | None:
        """Why the preview strip of ``video`` (the open case) could not be made; None otherwise."""
        builder = self._thumbnail_builder
        return builder.error if builder is not None and builder.video == Path(video) else None

    def _stop_thumbnails(self) -> None:
        """Cancel a build in flight and forget the strip (the case closes or another opens)."""
        builder, self._thumbnail_builder = self._thumbnail_builder, None
        if builder is not None:
            builder.cancel()
        if self.thumbnails is not None:
            self.thumbnails = None
            self._emit("thumbnails", None)

    def set_thumbnails(self, video: Path, strip: ThumbnailStrip | None) -> bool:
        """The strip of ``video`` is ready (on the UI thread); ignored (False) when another case is open now."""
        builder = self._thumbnail_builder
        if builder is None or builder.video != Path(video) or strip is None:
            return False
        self.thumbnails = strip
        self._emit("thumbnails", strip)
        return True

    def preview_at(self, frame: int) -> tuple[int, Any] | None:
        """(keyframe at or before ``frame``, its small RGB picture) from the strip; None before it is ready."""
        strip = self.thumbnails
        return strip.nearest(frame) if strip is not None else None

    def fingerprint(self, video: Path) -> str | None:
        """The case's identity (the store's, else the video's): where the reviewer's place is kept."""
        info = self.store.case_info() if self.store is not None else None
        try:
            return info.fingerprint if info is not None else video_fingerprint(video)
        except OSError:
            return None

    def _load_ground_truth(self, video: Path) -> str | None:
        labels, problem = ground_truth_path(video), None
        self.ground_truth = None
        if labels.exists():
            try:
                self.ground_truth = read_cholec80_phases(labels)
            except LabelFileError as exc:
                problem = f"ground truth ignored: {exc}"
        self._emit("ground_truth", self.ground_truth)
        return problem

    # ------------------------------------------------------------------ analysis
    def set_engine(self, model_id: str | None = None, info: Mapping[str, Any] | None = None) -> None:
        """The engine's model (``ready``) and profile: which store keys to read; reloads the cache."""
        if model_id is not None:
            self.model_id = model_id
        self.profile = profile_from_info(info)
        self._emit("analysis", self.profile)
        self.reload()

    def analysis(self) -> CaseAnalysis | None:
        """The engine's analysis of the open case: its model, profile and store keys (None without either)."""
        if self.store is None or not self.model_id:
            return None
        return CaseAnalysis(self.model_id, self.profile.version, self.profile, frames=0, last_created=0.0)

    def _drop_cache(self) -> None:
        with self._lock:
            self._generation += 1
            self._results, self._records, self._frames = {}, {}, []
            self._pending, self._peeked, self._fresh = False, {}, set()

    def reload(self, timelines_later: bool = False) -> str | None:
        """Read every stored answer of the analysis in bulk (one query per question; the chain JSON is
        not decoded), then warm the records off this thread; rebuild the timelines. A line for the
        status bar if the store failed. With :attr:`hand_off` set, the bulk read waits for the first
        frame and runs on the warm-up thread (``results`` is emitted when it lands; a failure is
        emitted as ``problem``); ``timelines_later`` (a case opens) then rebuilds the timelines through
        the hand-off too, after the caller has asked for the first frame, so its decoding overlaps them."""
        self._drop_cache()
        analysis = self.analysis()
        problem = None
        hand_off = self.hand_off
        if analysis is not None and hand_off is not None and self.store is not None:
            with self._lock:
                self._pending = True
                args = (self._generation, analysis, self.store.path, hand_off)
            threading.Thread(target=self._read_later, args=args, name="answers-read", daemon=True).start()
        elif analysis is not None:
            try:
                results = self._stored_results(analysis, self.store)
            except StoreError as exc:
                results, problem = {}, str(exc)
            with self._lock:
                self._results = results
                self._frames = sorted(results)
                generation = self._generation
            threading.Thread(target=self._warm, args=(generation,), name="records-warm-up", daemon=True).start()
        self._emit("results", None)
        if timelines_later and hand_off is not None:
            self.timelines, self.statuses, self.cvs_episodes, self._cvs_disagreeing = None, [], (), frozenset()
            generation = self._generation
            hand_off(lambda: self._timelines_later(generation))
            return problem
        return self.refresh_timelines() or problem

    def _timelines_later(self, generation: int) -> None:
        if generation == self._generation and (problem := self.refresh_timelines()):
            self._emit("problem", problem)

    def _stored_results(self, analysis: CaseAnalysis, store: CaseStore | None) -> dict[int, dict[str, FrameResult]]:
        """Every stored answer of ``analysis``, by frame then task (in frame order), with its text and
        status only: records are merged from the text, so the stored chain JSON is not decoded (for a
        90-minute case, 5,400 JSON decodes took 0.8 s of the UI thread at reopen)."""
        by_frame: dict[int, dict[str, FrameResult]] = {}
        for task in analysis.tasks if store is not None else ():
            for result in store.result_texts(analysis.model_id, analysis.prompt_version, task):
                by_frame.setdefault(result.frame, {})[task] = result
        return dict(sorted(by_frame.items()))

    def _read_later(self, generation: int, analysis: CaseAnalysis, path: Path, hand_off: Callable) -> None:
        """(Warm-up thread) The deferred bulk read: once the case's first frame is on screen (at most
        3 s), on its own connection (the UI thread's reads do not wait for it); handed to the UI thread."""
        first_frame_by = time.monotonic() + 3.0
        while self._generation == generation and self.playhead.displayed < 0 and time.monotonic() < first_frame_by:
            time.sleep(0.02)
        if self._generation != generation:
            return
        try:
            with CaseStore.open(path, readonly=True) as store:
                results, problem = self._stored_results(analysis, store), None
        except Exception as exc:  # a StoreError, or the store went away: said on the UI thread
            results, problem = {}, str(exc) or type(exc).__name__
        hand_off(lambda: self._landed(generation, results, problem))

    def _landed(self, generation: int, results: dict[int, dict[str, FrameResult]], problem: str | None) -> None:
        """(UI thread) The deferred bulk read becomes the cache (answers that arrived meanwhile win);
        the records warm-up starts; ``results`` (and ``problem``) are emitted."""
        with self._lock:
            if generation != self._generation or not self._pending:
                return
            for frame in self._fresh:
                results.pop(frame, None)
            results.update(self._results)
            self._results, self._frames = results, sorted(results)
            self._pending, self._peeked, self._fresh = False, {}, set()
        threading.Thread(target=self._warm, args=(generation,), name="records-warm-up", daemon=True).start()
        self._emit("results", None)
        if problem is not None:
            self._emit("problem", problem)

    def _warm(self, generation: int) -> None:
        first_frame_by = time.monotonic() + 3.0
        with self._lock:
            todo = list(self._results.items())
        for frame, results in todo:
            # Until the case's first frame is on screen (at most 3 s), and while the video plays, records
            # are merged on demand (one per analysed frame reached): a bulk merge (pure Python) would take
            # the GIL from the UI thread for 100s of ms at a time (opening a long case, playback).
            while self._generation == generation and (
                self.playhead.playing or (self.playhead.displayed < 0 and time.monotonic() < first_frame_by)
            ):
                time.sleep(0.05)
            record = self._merge(results)
            with self._lock:
                if self._generation != generation:
                    return
                if self._results.get(frame) is results and frame not in self._records:
                    self._records[frame] = record

    def _merge(self, results: Mapping[str, FrameResult]) -> FrameRecord:
        return merge_results(self.profile, results, self.case.width, self.case.height)

    def answer_arrived(self, frame: int) -> None:
        """The engine committed an answer of ``frame``: read that frame again (one query), drop its record."""
        analysis = self.analysis()
        if analysis is None or frame < 0:
            return
        try:
            results = analysis.frame_results(self.store, frame)
        except StoreError:
            return
        with self._lock:
            self._records.pop(frame, None)
            if self._pending:
                self._fresh.add(frame)
                self._peeked.pop(frame, None)
            if results:
                if frame not in self._results:
                    bisect.insort(self._frames, frame)
                self._results[frame] = results
            elif self._results.pop(frame, None) is not None:
                self._frames.remove(frame)
        self._emit("results", frame)

    def _answers(self, frame: int) -> dict[str, FrameResult] | None:
        """The cached answers of ``frame``; until a deferred bulk read lands, a frame it may hold is
        read on its own (one query per question) and kept until it lands."""
        with self._lock:
            found = self._results.get(frame)
            if found is None:
                found = self._peeked.get(frame)
            pending, generation = self._pending, self._generation
        analysis = self.analysis() if found is None and pending and frame >= 0 else None
        if analysis is None or self.store is None:
            return found
        try:
            found = analysis.frame_results(self.store, frame)
        except StoreError:
            return None
        with self._lock:
            if generation == self._generation and self._pending and frame not in self._fresh:
                found = self._peeked.setdefault(frame, found)
        return found

    def results(self, frame: int) -> dict[str, FrameResult]:
        """Every stored answer of ``frame``, by question (from the cache)."""
        return dict(self._answers(frame) or {})

    def record(self, frame: int) -> FrameRecord | None:
        """The merged record of ``frame`` (all its questions, boxes in video pixels); None if not analysed.
        Merged once per answer set and cached."""
        with self._lock:
            record = self._records.get(frame)
        if record is not None:
            return record
        results = self._answers(frame)
        if not results:
            return None
        record = self._merge(results)
        with self._lock:
            if (self._results.get(frame) or self._peeked.get(frame)) is results:
                self._records[frame] = record
        return record

    @property
    def hold_s(self) -> float:
        """How long an analysed frame's answer may stand for the frames after it while the video
        plays: one and a half sweep strides, at least two seconds."""
        return max(2.0, 1.5 * self.stride_s)

    def latest_analysed_at(self, frame: int) -> int | None:
        """The last analysed frame at or before ``frame`` within :attr:`hold_s` (a bisect over the
        cached frames: no SQL, no parsing), else None."""
        with self._lock:
            at = bisect.bisect_right(self._frames, frame)
            source = self._frames[at - 1] if at else None
        if source is None or self.time_of(frame) - self.time_of(source) > self.hold_s + 1e-9:
            return None
        return source

    def latest_record_at(self, frame: int) -> tuple[int, FrameRecord] | None:
        """``(analysed frame, its record)`` of the last analysed frame at or before ``frame`` within
        :attr:`hold_s` (what the viewer shows while the video plays), else None."""
        source = self.latest_analysed_at(frame)
        record = self.record(source) if source is not None else None
        return (source, record) if source is not None and record is not None else None

    def age_text(self, source: int, frame: int) -> str:
        """How old ``source``'s answer is when shown over ``frame``: "from 00:01:12 · 0.4 s ago"."""
        age = max(0.0, self.time_of(frame) - self.time_of(source))
        return f"from {self.timecode(source)[:8]} · {age:.1f} s ago"

    def answered(self, frame: int) -> int:
        return len(self._answers(frame) or ())

    def needs_answer(self, frame: int) -> bool:
        """A question of ``frame`` is not answered yet."""
        return frame >= 0 and self.answered(frame) < len(self.profile.tasks)

    def nearby(self, frame: int, count: int = 9) -> list[tuple[int, str]]:
        """Analysed frames nearest ``frame`` (it excluded), in order, with their weakest status."""
        with self._lock:
            frames = list(self._results)
        near = sorted(frames, key=lambda f: abs(f - frame))[:count]
        with self._lock:
            statuses = {f: _weakest(r.status for r in (self._results.get(f) or {}).values()) for f in near}
        return [(f, statuses[f]) for f in sorted(statuses) if f != frame]

    def refresh_timelines(self) -> str | None:
        """Rebuild the timelines from the store's merged rows (throttled by the caller)."""
        analysis = self.analysis()
        problem = None
        if analysis is None or self.case.frame_count <= 0:
            self.timelines, self.statuses = None, []
            self._assess_cvs([], None)
        else:
            try:
                rows = analysis.timeline_rows(self.store)  # merged: the phase question's phase, every question's tools
                self.statuses = analysis.statuses(self.store)
                self._frames_from(self.statuses)
                self.timelines = self._build_timelines(rows) if rows else None
            except StoreError as exc:
                return str(exc)
            self._assess_cvs(rows, self.timelines.first_clip_frame() if self.timelines is not None else None)
        self._emit("timelines", self.timelines)
        return problem

    def _frames_from(self, statuses: list[tuple[int, str]]) -> None:
        """Until a deferred bulk read lands, the analysed frames (bisected while playing) are those the
        statuses list."""
        with self._lock:
            if self._pending:
                self._frames = sorted({*self._frames, *(frame for frame, _ in statuses)})

    @property
    def sweep_step(self) -> int:
        """Frames between the sweep's analysed frames (``engine.scheduler.sweep_frames``' grid)."""
        return sweep_step(self.stride_s, self.case.fps or 25.0)

    def _build_timelines(self, rows: list) -> Timelines:
        """The case's timelines smoothed on the sweep's grid, as the report builds them
        (:func:`engine.timeline.build_case_timelines`)."""
        tools = procedure_of_version(self.profile.version).vocabulary("tool")  # a robotic case's own instruments
        return build_case_timelines(rows, self.case.fps, self.case.frame_count, self.sweep_step, tools=tools)

    def _assess_cvs(self, rows: list, first_clip_frame: int | None) -> None:
        """CVS episodes (established or doubtful) and the frames whose analysed neighbours disagree
        with them, once per timelines refresh (what the canvas's CVS badge reads). Runs are cut where clipping
        begins, as the report's statement cuts them, so the badge and the statement never disagree."""
        stated = [r for r in sorted(rows, key=lambda r: r.frame) if any(c is not None for c in r.cvs)]
        fps = self.case.fps or 25.0  # all rows, as the report passes them: the phases also say where dissection began
        self.cvs_episodes = assess_cvs(rows, fps, first_clip_frame, time_of=self.time_of).episodes
        met = [all(c is CvsState.MET for c in r.cvs) for r in stated]
        disagreeing = set()
        for i, row in enumerate(stated):
            neighbours = [met[j] for j in (i - 1, i + 1) if 0 <= j < len(stated)]
            if neighbours and all(n != met[i] for n in neighbours):
                disagreeing.add(row.frame)
        self._cvs_disagreeing = frozenset(disagreeing)

    def cvs_doubt(self, frame: int, cvs: tuple[CvsState | None, ...]) -> str | None:
        """Why the CVS answer ``cvs`` of analysed ``frame`` is no green light, in a word or two:
        "doubtful" (all three met, but not within an established episode, or not assessed yet),
        "neighbours disagree" (the analysed frames just before and after answer otherwise); None
        when neither. A few comparisons on what the last timelines refresh computed."""
        words = []
        if all(c is CvsState.MET for c in cvs) and not any(
            e.status == ESTABLISHED and e.start_frame <= frame <= e.end_frame for e in self.cvs_episodes
        ):
            words.append("doubtful")
        if frame in self._cvs_disagreeing:
            words.append("neighbours disagree")
        return " · ".join(words) or None

    # ------------------------------------------------------------------ bookmarks
    def load_bookmarks(self) -> str | None:
        problem = None
        rows: list[BookmarkRow] = []
        if self.store is not None:
            try:
                notes = {n.frame: n.text for n in self.store.notes() if n.frame is not None}
                rows = [BookmarkRow(m.id, m.frame, m.title, notes.get(m.frame, "")) for m in self.store.bookmarks()]
            except StoreError as exc:
                problem, rows = str(exc), self.bookmarks
        self.bookmarks = rows
        self._emit("bookmarks", rows)
        return problem

    def add_bookmark(self, frame: int, title: str, note: str = "") -> int | None:
        """Store a bookmark (StoreError when the store refuses); the list is read again either way.
        Returns the new bookmark's id (None without a store). A note is added unless the frame has one."""
        if self.store is None:
            return None
        try:
            mark = self.store.add_bookmark(frame, title or f"frame {frame}")
            if note and not any(n.frame == frame for n in self.store.notes()):
                self.store.add_note(note, frame=frame)
            return mark.id
        finally:
            self.load_bookmarks()

    def rename_bookmark(self, bookmark_id: int, title: str) -> None:
        if self.store is not None:
            self.store.update_bookmark(bookmark_id, title=title)
            self.load_bookmarks()

    def delete_bookmark(self, bookmark_id: int) -> None:
        if self.store is not None:
            self.store.delete_bookmark(bookmark_id)
            self.load_bookmarks()

    # ------------------------------------------------------------------ jumps
    def phase_target(self, direction: int) -> int | None:
        """The next (previous) phase boundary from the frame on screen."""
        if not self.timelines or not self.timelines.phase:
            return None
        here = max(0, self.playhead.displayed)
        starts = sorted({s.start for s in self.timelines.phase} | {s.end for s in self.timelines.phase})
        targets = [s for s in starts if (s > here if direction > 0 else s < here)]
        return (targets[0] if direction > 0 else targets[-1]) if targets else None

    def bookmark_target(self, direction: int) -> int | None:
        here = max(0, self.playhead.displayed)
        frames = sorted(b.frame for b in self.bookmarks)
        targets = [f for f in frames if (f > here if direction > 0 else f < here)]
        return (targets[0] if direction > 0 else targets[-1]) if targets else None

    def default_range(self) -> tuple[int, int]:
        """The range selected on the timeline, else the phase segment under the playhead, else ten
        seconds around it (the clip dialog's default)."""
        here = max(0, self.playhead.displayed)
        last = max(0, self.case.frame_count - 1)
        if self.case.selection is not None:
            first, final = self.case.selection
            return min(first, last), min(final, last)
        if self.timelines is not None:
            for seg in self.timelines.phase:
                if seg.start <= here < seg.end:
                    return seg.start, min(last, seg.end - 1)
        half = round(5 * (self.case.fps or 25))
        return max(0, here - half), min(last, here + half)
