"""The analysis commands of ``surgview-engine``: analyze, ask, eval, score, export.

Model and server text reaches the terminal only through :func:`engine.terminal.safe_for_terminal`
(``CliError`` lines are escaped where they are printed, in :mod:`engine.clitools`). Files go out
through :mod:`engine.outputs` (``-`` is standard output; a device or FIFO is written in place).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from engine.backend_factory import answer_limits, open_backend, spec_from_args
from engine.backends.base import Backend, BackendError, StreamLimits
from engine.case_procedure import ProcedureChoiceError, case_procedure, set_case_procedure
from engine.chain_parser import ChainParser, LevelClosed
from engine.clitools import CliError
from engine.eval_set import EvalSetError, read_eval_set, run_eval
from engine.frame_record import CaseAnalysis, case_analyses, merge_results
from engine.outputs import STDOUT, OutputError, output_path, write_output
from engine.procedures import DEFAULT_PROCEDURE, ProcedureError, get_procedure
from engine.profiles import ModelProfile, ProfileError, resolve_profile
from engine.report_data import label_tracks
from engine.scheduler import (
    AnalysisScheduler,
    SchedulerConfig,
    SchedulerListener,
    VideoChanged,
    VideoIdentity,
    failure_reason,
)
from engine.store import CaseStore, FrameResult, StoreError
from engine.terminal import safe_for_terminal
from engine.timecode import format_timecode
from engine.timeline import build_case_timelines, label_at, sweep_step
from engine.video import VIDEO_SUFFIXES, VideoError, VideoReader, video_size


def _backend(args) -> Backend:
    try:
        return open_backend(spec_from_args(args))
    except BackendError as exc:
        raise CliError(str(exc)) from None


def _limits(args) -> StreamLimits:
    """The answer bounds from the command line (see :func:`answer_limits`)."""
    return answer_limits(
        spec_from_args(args).kind,
        max_chars=getattr(args, "max_chars", None),
        idle_timeout_s=getattr(args, "idle_timeout", None),
        total_timeout_s=getattr(args, "total_timeout", None),
    )


def _profile(args, procedure: str | None = None, quiet: bool = False) -> ModelProfile:
    """The profile chosen with --profile, else the model's own (its manifest) or the stated default;
    asked in ``procedure``'s prompts (default: --procedure, else cholecystectomy)."""
    spec = spec_from_args(args)
    procedure = procedure or _procedure_arg(args)
    try:
        profile, note = resolve_profile(
            getattr(args, "profile", None),
            kind=spec.kind,
            model=spec.model,
            task=getattr(args, "task", None),
            procedure=procedure,
        )
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    if not getattr(args, "profile", None) and not getattr(args, "quiet", False) and not quiet:
        print(f"[{safe_for_terminal(note)}]", file=sys.stderr)
    return profile


def _procedure_arg(args) -> str | None:
    """The canonical name of --procedure (any spelling), or None when not given."""
    name = getattr(args, "procedure", None)
    if not name:
        return None
    try:
        return get_procedure(name).name
    except ProcedureError as exc:
        raise CliError(str(exc)) from None


def _case_profile(args, case: Path, chosen: ModelProfile, cache: dict[str, ModelProfile]) -> ModelProfile:
    """The profile for one case: --procedure is recorded for the case and used; without it, the case's
    remembered procedure (or its dataset layout's) decides."""
    given = _procedure_arg(args)
    try:
        if given is not None:
            set_case_procedure(case, given)
            return chosen
        found = case_procedure(case)
    except (ProcedureChoiceError, StoreError) as exc:
        raise CliError(str(exc)) from None
    name = found.procedure.name
    if name == DEFAULT_PROCEDURE:
        return chosen
    if name not in cache:
        if not getattr(args, "quiet", False):
            print(f"[{case.name}: {safe_for_terminal(found.note)}]", file=sys.stderr)
        cache[name] = _profile(args, name, quiet=True)
    return cache[name]


def case_file(name: str) -> Path:
    """The one video a command works on (ask, export): a folder or a missing path is one clear line."""
    path = Path(name)
    if path.is_dir():
        raise CliError(f"{path} is a folder, not a video")
    if not path.is_file():
        raise CliError(f"{path}: no such video file")
    return path


def _open_case(video: Path) -> tuple[VideoReader, CaseStore]:
    try:
        reader = VideoReader(video)
    except VideoError as exc:
        raise CliError(str(exc)) from None
    try:
        store = CaseStore.for_video(video, fps=float(reader.fps), frame_count=reader.frame_count)
    except (StoreError, OSError) as exc:
        reader.close()
        raise CliError(str(exc)) from None
    return reader, store


class _CaseListener(SchedulerListener):
    """One case's progress into the shared progress bar (frames settled: stored or failed)."""

    def __init__(self, bar: tqdm, lock: threading.Lock):
        self.bar = bar
        self.lock = lock
        self.done = 0
        self.total = 0

    def progress(self, done: int, total: int) -> None:
        with self.lock:
            self.bar.total = (self.bar.total or 0) + total - self.total
            self.bar.update(done - self.done)
            self.done, self.total = done, total


def _server_state_printer(up: bool, url: str, message: str) -> None:
    print(f"[{safe_for_terminal(message, keep_newlines=False)}]", file=sys.stderr)


def _case_parts(case: Path) -> tuple[CaseStore, int, int]:
    reader, store = _open_case(case)
    try:
        return store, reader.width, reader.height
    finally:
        reader.close()  # the scheduler's worker opens its own reader


def cmd_analyze(args) -> int:
    profile = _profile(args)  # an unknown task or profile fails before the model loads
    cases = _case_paths(args.cases)
    backend = _backend(args)
    if hasattr(backend, "on_server_state"):
        backend.on_server_state = lambda url, up, message: _server_state_printer(up, url, message)
    concurrency = args.concurrency if getattr(backend, "supports_concurrency", False) else 1
    batch = args.batch
    if batch is None:
        suggest = getattr(backend, "suggested_batch_size", None)
        batch = suggest(args.max_tokens or profile.sampling.max_tokens) if suggest is not None else 1
    slots = threading.BoundedSemaphore(concurrency)
    bar_lock = threading.Lock()
    running: list[tuple[Path, AnalysisScheduler, CaseStore, _CaseListener]] = []
    problems: list[str] = []  # cases not fully analysed, each in a few words
    profiles: dict[str, ModelProfile] = {}  # per procedure of the cases without --procedure
    try:
        with tqdm(
            desc="analyse", unit="frame", file=sys.stderr, disable=args.quiet or None, total=0, smoothing=0.1
        ) as bar:
            queue = list(cases)
            while queue or running:
                # Start the next case once the running ones have nothing left to hand out: the last
                # frames of one case and the first of the next keep every stream busy.
                if queue and all(s.queued() == 0 or s.error for _, s, _, _ in running) and len(running) < 2:
                    case = queue.pop(0)
                    store, _, _ = _case_parts(case)
                    listener = _CaseListener(bar, bar_lock)
                    config = SchedulerConfig(
                        stride_s=args.stride,
                        batch_size=batch,
                        max_new_tokens=args.max_tokens,
                        concurrency=concurrency,
                        slots=slots,
                        limits=_limits(args),
                    )
                    case_profile = _case_profile(args, case, profile, profiles)
                    scheduler = AnalysisScheduler(case, backend, store, case_profile, config, listener)
                    scheduler.start()
                    running.append((case, scheduler, store, listener))
                    continue
                for item in list(running):
                    case, scheduler, store, listener = item
                    if scheduler.wait_idle(0.05):
                        scheduler.stop()
                        running.remove(item)
                        with store:
                            problem = _report_case(args, case, scheduler, store, backend.model_id, scheduler.profile)
                        if problem:
                            problems.append(problem)
                        if scheduler.error and not isinstance(scheduler.failure, VideoError):
                            raise CliError(f"{case.name}: {scheduler.error}")  # the model or the store: stop all
    except BaseException:
        for _, scheduler, store, _ in running:
            scheduler.stop()
            store.close()
        raise
    finally:
        backend.close()
    if problems:
        raise CliError("; ".join(problems))
    return 0


def _case_paths(names: list[str]) -> list[Path]:
    """The videos named, a folder standing for the videos in it; a bad path fails before the model loads."""
    cases: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise CliError(f"{path}: no video files in this folder")
            cases += found
        elif path.is_file():
            cases.append(path)
        else:
            raise CliError(f"{path}: no such video file")
    return cases


def _report_case(
    args, case: Path, scheduler: AnalysisScheduler, store: CaseStore, model_id: str, profile: ModelProfile
) -> str | None:
    """Print what was stored for ``case`` (stdout, in this order: counts, frames not analysed, phase
    segments); return the problem in a few words when not every frame asked for was stored."""
    stored, total = scheduler.stored(), scheduler.progress[1]
    failures = {f: failure_reason(m, case) for f, m in scheduler.failures().items()}
    unreached = total - stored - len(failures)
    _say(
        f"{case}: {stored} of {total} frames analysed and stored with {model_id}, {profile_label(profile)} "
        f"(store {store.path})"
    )
    if failures:
        for line in _failure_lines(failures, scheduler.fps, args.stride):
            _say(f"  {line}")
    if scheduler.error:
        reason = "the analysis stopped" if isinstance(scheduler.failure, VideoChanged) else scheduler.error
        if unreached > 0:
            _say(f"  {unreached} not analysed: {reason}")
    analysis = CaseAnalysis(model_id, profile.version, profile, stored, 0.0)
    step = sweep_step(args.stride, scheduler.fps)
    timelines = build_case_timelines(analysis.timeline_rows(store), scheduler.fps, scheduler.frame_count, step)
    for seg in timelines.phase:
        span = f"{format_timecode(seg.start, scheduler.fps)} – {format_timecode(seg.end, scheduler.fps)}"
        _say(f"  {span}  {seg.label}")
    if args.phases:
        _print_agreement(timelines, Path(args.phases))
    sys.stdout.flush()
    if scheduler.error and isinstance(scheduler.failure, VideoError):
        return scheduler.error if str(case) in scheduler.error else f"{case.name}: {scheduler.error}"
    if failures:
        return f"{case.name}: {len(failures)} of {total} frames could not be analysed"
    return None


def _say(line: str) -> None:
    """One summary line on stdout, above the progress bar (model and file names escaped)."""
    tqdm.write(safe_for_terminal(line, keep_newlines=False), file=sys.stdout)


def _failure_lines(failures: dict[int, str], fps: float, stride_s: float) -> list[str]:
    """The lines saying K frames could not be analysed: which (runs of the sweep as ranges) and why."""
    by_reason: dict[str, list[int]] = {}
    for frame, reason in failures.items():
        by_reason.setdefault(reason, []).append(frame)
    step = sweep_step(stride_s, fps) if fps else 1
    count = f"{len(failures)} could not be analysed"
    if len(by_reason) == 1:
        ((reason, frames),) = by_reason.items()
        return [f"{count} ({frame_ranges(frames, step)}): {reason}"]
    return [count + ":"] + [f"  {frame_ranges(frames, step)}: {reason}" for reason, frames in by_reason.items()]


def frame_ranges(frames: list[int], step: int = 1) -> str:
    """Sorted frames as ``frames 0, 250–1000, 1475``: a range is a run of frames ``step`` apart."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame - runs[-1][-1] == step:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    parts = [f"{run[0]}–{run[-1]}" if len(run) > 2 else ", ".join(str(f) for f in run) for run in runs]
    every = f", every {step} frames" if step > 1 and any(len(run) > 2 for run in runs) else ""
    noun = "frame" if len(frames) == 1 else "frames"
    return f"{noun} {', '.join(parts)}{every}"


def profile_label(profile: ModelProfile) -> str:
    questions = ", ".join(profile.tasks)
    return f"profile {profile.name} ({questions})"


def _print_agreement(timelines, phase_file: Path) -> None:
    """How much of the case the phase timeline gets right, against a Cholec80 phase file."""
    from engine.phase_labels import LabelFileError, read_cholec80_phases

    try:
        truth = read_cholec80_phases(phase_file)
    except (OSError, LabelFileError) as exc:
        raise CliError(f"{phase_file}: {exc}") from None
    smoothed = [timelines.phase_at(frame) for frame in range(len(truth))]
    agree = sum(p == t for p, t in zip(smoothed, truth, strict=True)) / max(1, len(truth))
    raw = [(row.phase, truth[row.frame]) for row in timelines.rows if row.frame < len(truth)]
    raw_agree = sum(p == t for p, t in raw) / max(1, len(raw))
    print(f"  phase timeline agrees with {phase_file.name} on {agree:.1%} of the case's {len(truth)} frames")
    print(f"  (the model's own answers, unsmoothed: {raw_agree:.1%} of {len(raw)} analysed frames)")


def cmd_ask(args) -> int:
    profile = _profile(args)
    video = case_file(args.case)
    profile = _case_profile(args, video, profile, {})  # the case's remembered procedure, or --procedure recorded
    reader, store = _open_case(video)
    with reader, store:
        try:
            image = profile.prepare_image(reader.frame(args.frame))
            info = store.case_info()
            identity = VideoIdentity(video, info.fingerprint if info is not None else None)
        except (IndexError, VideoError) as exc:
            raise CliError(str(exc)) from None
        width, height = reader.width, reader.height
        backend = _backend(args)
        try:
            for question in profile.questions:
                if len(profile.questions) > 1:
                    print(f"── {safe_for_terminal(question.title)} ──", flush=True)
                _ask_one(args, backend, store, profile, question.task, image, (width, height), identity)
        except VideoError as exc:
            raise CliError(str(exc)) from None
        finally:
            backend.close()
    return 0


def _ask_one(
    args,
    backend: Backend,
    store: CaseStore,
    profile: ModelProfile,
    task: str,
    image,
    size: tuple[int, int],
    identity: VideoIdentity,
) -> None:
    """Stream one question's answer to stdout, escaped piece by piece, and store it."""
    key = (backend.model_id, profile.version, task)
    cached = None if args.reask else store.get_result(args.frame, *key)
    if cached is not None:
        print(safe_for_terminal(cached.raw_text))
        print(f"[cached result for frame {args.frame}; --reask generates it again]", file=sys.stderr)
        return
    parser = ChainParser()
    pieces = []
    stream = None
    try:
        stream = backend.stream(profile.request(task, image, *size, max_tokens=args.max_tokens, limits=_limits(args)))
        for piece in stream:
            pieces.append(piece)
            sys.stdout.write(safe_for_terminal(piece))  # char by char: a sequence split across pieces stays escaped
            sys.stdout.flush()
            _report_events(parser.feed(piece), args.events)
    except KeyboardInterrupt:
        if stream is not None:
            stream.cancel()
        raise
    except BackendError as exc:
        print(file=sys.stdout, flush=True)  # end the half-written line before the error
        raise CliError(str(exc)) from None
    print()
    _report_events(parser.finish(), args.events)
    chain = parser.close()
    stats = stream.stats
    if getattr(stats, "cut_off", None):
        print(f"[cut off: {safe_for_terminal(stats.cut_off)}]", file=sys.stderr)
    identity.check()  # never file an answer about another file under this video's fingerprint
    store.put_result(
        FrameResult(
            frame=args.frame,
            model_id=key[0],
            prompt_version=key[1],
            task=task,
            raw_text="".join(pieces),
            chain=chain,
            first_token_s=stats.first_token_s,
            total_s=stats.total_s,
            tokens=stats.tokens,
        )
    )
    print(
        f"[{chain.status.value}; {stats.tokens} tokens, "
        f"first token {1000 * (stats.first_token_s or 0):.0f} ms, "
        f"{stats.tokens_per_s:.0f} tokens/s; {safe_for_terminal(str(stats.finish_reason))}]",
        file=sys.stderr,
    )


def cmd_eval(args) -> int:
    try:
        rows = read_eval_set(Path(args.set))
    except EvalSetError as exc:
        raise CliError(str(exc)) from None
    profile = _profile(args)
    _check_output(args.out)
    backend = _backend(args)
    try:
        with (
            tqdm(total=len(rows), desc="eval", unit="row", file=sys.stderr, disable=args.quiet or None) as bar,
            output_path(args.out, make_parents=True) as tmp,
        ):
            run_eval(rows, backend, tmp, args.max_tokens, bar.update, profile, args.concurrency, _limits(args))
    except (EvalSetError, BackendError, OutputError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        backend.close()
    if args.out == STDOUT:
        print(f"standard output: {len(rows)} rows", file=sys.stderr)
    else:
        print(f"{args.out}: {len(rows)} rows (score it with: surgview-engine score {args.out})")
    return 0


def cmd_score(args) -> int:
    from engine.scoring import ResultsFileError, read_results, score_rows  # scikit-learn: slow to import

    try:
        report = score_rows(read_results(Path(args.results)))
    except ResultsFileError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _check_output(args.json)
    print(safe_for_terminal("\n".join(report.lines())), file=_notes_to(args.json))
    if args.json:
        _write(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _write(target: str, text: str) -> None:
    """``text`` to a file (atomically), a device or FIFO (in place) or ``-`` (stdout): engine.outputs."""
    try:
        write_output(target, text)
    except OutputError as exc:
        raise CliError(str(exc)) from None


def _check_output(target: str) -> None:
    """Refuse a folder or socket as an output before any work is done (the rest is found on writing)."""
    if target == STDOUT:
        return
    path = Path(target)
    if path.is_dir():
        raise CliError(f"cannot write {target}: it is a folder")
    if path.is_socket():
        raise CliError(f"cannot write {target}: it is a socket (give a file, a device, a FIFO or -)")


def _notes_to(*targets: str | None):
    """Where a command's own lines go: stderr when its output is standard output, else stdout."""
    return sys.stderr if STDOUT in targets else sys.stdout


def cmd_export(args) -> int:
    case = case_file(args.case)
    if args.jsonl == STDOUT and args.csv == STDOUT:
        raise CliError("--jsonl and --csv cannot both be standard output (-)")
    for target in (args.jsonl, args.csv):
        if target:
            _check_output(target)
    try:
        store = CaseStore.for_video(case, readonly=True)
    except StoreError as exc:
        raise CliError(f"{case.name}: no analysis stored ({exc})") from None
    with store:
        analyses = case_analyses(store)
        if args.model_id:
            analyses = [a for a in analyses if a.model_id == args.model_id]
        if args.task:
            analyses = [a for a in analyses if args.task in a.tasks]
        if not analyses:
            raise CliError(f"{case.name}: no stored analysis matches (run surgview-engine analyze first)")
        chosen = analyses[0]  # the most recent
        by_frame = chosen.results(store)
        rows = chosen.timeline_rows(store)
        info = store.case_info()
    fps = (info.fps if info and info.fps else None) or 25.0
    proc = chosen.procedure
    frame_count = info.frame_count if info else None
    timelines = build_case_timelines(
        rows, fps, frame_count, sweep_step(args.stride, fps), tools=proc.vocabulary("tool")
    )
    # The procedure's timelines (a cholecystectomy's phase; a suturing case's action; a bypass's phase, step).
    tracks = label_tracks(proc, timelines, rows, fps, frame_count)
    extra = [role for role in tracks if role != "phase"]
    try:
        width, height = video_size(case)
    except VideoError as exc:
        raise CliError(str(exc)) from None
    records = {frame: merge_results(chosen.profile, found, width, height) for frame, found in by_frame.items()}
    if args.jsonl:
        lines = [
            json.dumps(
                {
                    "type": "segment",
                    role: s.label,
                    "start": s.start,
                    "end": s.end,
                    "start_time": format_timecode(s.start, fps),
                    "end_time": format_timecode(s.end, fps),
                }
            )
            for role, segments in tracks.items()
            for s in segments
        ]
        lines += [json.dumps(_frame_row(chosen, record, fps), ensure_ascii=False) for record in records.values()]
        _write(args.jsonl, "\n".join(lines) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        head = ["frame", "time", "status", "phase", "phase_smoothed", "cvs_c1", "cvs_c2", "cvs_c3", "tools"]
        writer.writerow(head + [name for role in extra for name in (role, f"{role}_smoothed")])
        for row in rows:
            cvs = [c.value if c is not None else "" for c in row.cvs]
            record = records.get(row.frame)
            writer.writerow(
                [
                    row.frame,
                    format_timecode(row.frame, fps),
                    record.status if record is not None else "",
                    row.phase or "",
                    timelines.phase_at(row.frame) or "",
                    *cvs,
                    ";".join(row.tools or ()),
                    *(value for role in extra for value in _role_cells(row, role, tracks[role])),
                ]
            )
        _write(args.csv, out.getvalue())
    counts = " and ".join(f"{len(segs)} {role} segments" for role, segs in tracks.items()) or "no segments"
    line = (
        f"exported {len(records)} frames and {counts} of {case.name} "
        f"({chosen.model_id}, prompts {chosen.prompt_version}, {', '.join(chosen.tasks)})"
    )
    print(safe_for_terminal(line, keep_newlines=False), file=_notes_to(args.jsonl, args.csv))
    return 0


def _role_cells(row, role: str, segments: list) -> tuple[str, str]:
    """A CSV row's answer and smoothed label for another procedure's timeline (``action``, ``step``)."""
    return getattr(row, role) or "", label_at(segments, row.frame) or ""


def _frame_row(analysis: CaseAnalysis, record, fps: float) -> dict:
    """One frame of an export: the merged fields on top, each question's raw text and chain beside them."""
    row = {
        "type": "frame",
        "frame": record.frame,
        "time": format_timecode(record.frame, fps),
        "model": analysis.model_id,
        "profile": analysis.profile.name,
        "prompt_version": analysis.prompt_version,
        "status": record.status,
        **record.to_json(),
        "tasks": {
            task: {"status": r.status, "raw_text": r.raw_text, "chain": r.chain_dict}
            for task, r in record.results.items()
        },
    }
    if len(analysis.tasks) == 1:  # one question: its text and chain on top too, as before profiles
        ((task, result),) = record.results.items()
        row.update(task=task, raw_text=result.raw_text, chain=result.chain_dict)
    return row


def _report_events(events: list, wanted: bool) -> None:
    """With ``--events``, say on stderr when each level closes."""
    for event in events:
        if wanted and isinstance(event, LevelClosed):
            print(f"\n[level {event.level} closed]", file=sys.stderr)
