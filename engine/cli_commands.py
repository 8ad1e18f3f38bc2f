"""The analysis commands of ``surgview-engine``: analyze, ask, eval, score, export."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from engine.backend_factory import open_backend, spec_from_args
from engine.backends.base import Backend, BackendError, GenerationRequest
from engine.chain_parser import ChainParser, LevelClosed
from engine.clitools import CliError
from engine.eval_set import EvalSetError, read_eval_set, run_eval
from engine.prompts import PromptError, TaskPrompt, frame_prompt
from engine.scheduler import AnalysisScheduler, SchedulerConfig, SchedulerListener
from engine.store import CaseStore, FrameResult, StoreError
from engine.timecode import format_timecode
from engine.timeline import build_timelines
from engine.video import VideoError, VideoReader


def _backend(args) -> Backend:
    try:
        return open_backend(spec_from_args(args))
    except BackendError as exc:
        raise CliError(str(exc)) from None


def _prompt(task: str, width: int, height: int) -> TaskPrompt:
    try:
        return frame_prompt(task, width, height)
    except PromptError as exc:
        raise CliError(str(exc)) from None


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


class _ProgressListener(SchedulerListener):
    def __init__(self, bar: tqdm):
        self.bar = bar
        self.failures: list[str] = []

    def progress(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def frame_failed(self, frame: int, message: str) -> None:
        self.failures.append(f"frame {frame}: {message}")


def cmd_analyze(args) -> int:
    _prompt(args.task, 1, 1)  # an unknown task fails before the model loads
    cases = [Path(c) for c in args.cases]
    for case in cases:  # fail on a bad path before loading a model
        if not case.is_file():
            raise CliError(f"{case}: no such video file")
    backend = _backend(args)
    try:
        for case in cases:
            reader, store = _open_case(case)
            prompt = _prompt(args.task, reader.width, reader.height)
            reader.close()  # the scheduler's worker opens its own reader
            with store, tqdm(desc=case.name, unit="frame", file=sys.stderr, disable=args.quiet or None) as bar:
                listener = _ProgressListener(bar)
                config = SchedulerConfig(stride_s=args.stride, batch_size=args.batch, max_new_tokens=args.max_tokens)
                scheduler = AnalysisScheduler(case, backend, store, prompt, config, listener)
                scheduler.start()
                try:
                    scheduler.wait_idle()
                finally:
                    scheduler.stop()
                if scheduler.error:
                    raise CliError(f"{case.name}: {scheduler.error}")
                done, total = scheduler.progress
                rows = store.timeline_rows(backend.model_id, prompt.version, prompt.task)
            timelines = build_timelines(rows, scheduler.fps, scheduler.frame_count)
            print(f"{case}: {done}/{total} frames analysed with {backend.model_id} (store {store.path})")
            for seg in timelines.phase:
                print(
                    f"  {format_timecode(seg.start, scheduler.fps)} – {format_timecode(seg.end, scheduler.fps)}  "
                    f"{seg.label}"
                )
            for failure in listener.failures:
                print(f"  skipped {failure}", file=sys.stderr)
            if args.phases:
                _print_agreement(timelines, Path(args.phases))
    finally:
        backend.close()
    return 0


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
    reader, store = _open_case(Path(args.case))
    with reader, store:
        prompt = _prompt(args.task, reader.width, reader.height)
        try:
            image = reader.frame(args.frame)
        except IndexError as exc:
            raise CliError(str(exc)) from None
        except VideoError as exc:
            raise CliError(str(exc)) from None
        backend = _backend(args)
        try:
            cached = None if args.reask else store.get_result(args.frame, backend.model_id, prompt.version, prompt.task)
            if cached is not None:
                print(cached.raw_text)
                print(f"[cached result for frame {args.frame}; --reask generates it again]", file=sys.stderr)
                return 0
            parser = ChainParser()
            stream = backend.stream(GenerationRequest(prompt.text, image, prompt.system, args.max_tokens))
            pieces = []
            try:
                for piece in stream:
                    pieces.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    _report_events(parser.feed(piece), args.events)
            except KeyboardInterrupt:
                stream.cancel()
                raise
            print()
            _report_events(parser.finish(), args.events)
            chain = parser.close()
            text = "".join(pieces)
            store.put_result(
                FrameResult(
                    frame=args.frame,
                    model_id=backend.model_id,
                    prompt_version=prompt.version,
                    task=prompt.task,
                    raw_text=text,
                    chain=chain,
                    first_token_s=stream.stats.first_token_s,
                    total_s=stream.stats.total_s,
                    tokens=stream.stats.tokens,
                )
            )
            stats = stream.stats
            print(
                f"[{chain.status.value}; {stats.tokens} tokens, "
                f"first token {1000 * (stats.first_token_s or 0):.0f} ms, "
                f"{stats.tokens_per_s:.0f} tokens/s; {stats.finish_reason}]",
                file=sys.stderr,
            )
        finally:
            backend.close()
    return 0


def cmd_eval(args) -> int:
    try:
        rows = read_eval_set(Path(args.set))
    except EvalSetError as exc:
        raise CliError(str(exc)) from None
    backend = _backend(args)
    try:
        with tqdm(total=len(rows), desc="eval", unit="row", file=sys.stderr, disable=args.quiet or None) as bar:
            run_eval(rows, backend, Path(args.out), args.max_tokens, bar.update)
    except (EvalSetError, BackendError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        backend.close()
    print(f"{args.out}: {len(rows)} rows (score it with: surgview-engine score {args.out})")
    return 0


def cmd_score(args) -> int:
    from engine.scoring import ResultsFileError, read_results, score_rows  # scikit-learn: slow to import

    try:
        report = score_rows(read_results(Path(args.results)))
    except ResultsFileError as exc:
        raise CliError(str(exc)) from None
    print("\n".join(report.lines()))
    if args.json:
        _atomic_write(Path(args.json), json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_export(args) -> int:
    case = Path(args.case)
    if not case.is_file():
        raise CliError(f"{case}: no such video file")
    try:
        store = CaseStore.for_video(case, readonly=True)
    except StoreError as exc:
        raise CliError(f"{case.name}: no analysis stored ({exc})") from None
    with store:
        analyses = store.analyses()
        if args.model_id:
            analyses = [a for a in analyses if a.model_id == args.model_id]
        if args.task:
            analyses = [a for a in analyses if a.task == args.task]
        if not analyses:
            raise CliError(f"{case.name}: no stored analysis matches (run surgview-engine analyze first)")
        chosen = max(analyses, key=lambda a: a.last_created or 0)
        results = store.results(chosen.model_id, chosen.prompt_version, chosen.task)
        rows = store.timeline_rows(chosen.model_id, chosen.prompt_version, chosen.task)
        info = store.case_info()
    fps = (info.fps if info and info.fps else None) or 25.0
    timelines = build_timelines(rows, fps, info.frame_count if info else None)
    if args.jsonl:
        lines = [
            json.dumps(
                {
                    "type": "segment",
                    "phase": s.label,
                    "start": s.start,
                    "end": s.end,
                    "start_time": format_timecode(s.start, fps),
                    "end_time": format_timecode(s.end, fps),
                }
            )
            for s in timelines.phase
        ]
        lines += [
            json.dumps(
                {
                    "type": "frame",
                    "frame": r.frame,
                    "time": format_timecode(r.frame, fps),
                    "model": r.model_id,
                    "prompt_version": r.prompt_version,
                    "task": r.task,
                    "status": r.status,
                    "raw_text": r.raw_text,
                    "chain": r.chain_dict,
                },
                ensure_ascii=False,
            )
            for r in results
        ]
        _atomic_write(Path(args.jsonl), "\n".join(lines) + "\n")
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["frame", "time", "status", "phase", "phase_smoothed", "cvs_c1", "cvs_c2", "cvs_c3", "tools"])
        statuses = {r.frame: r.status for r in results}
        for row in rows:
            cvs = [c.value if c is not None else "" for c in row.cvs]
            writer.writerow(
                [
                    row.frame,
                    format_timecode(row.frame, fps),
                    statuses.get(row.frame, ""),
                    row.phase or "",
                    timelines.phase_at(row.frame) or "",
                    *cvs,
                    ";".join(row.tools or ()),
                ]
            )
        _atomic_write(Path(args.csv), out.getvalue())
    print(
        f"exported {len(results)} frames and {len(timelines.phase)} phase segments of {case.name} "
        f"({chosen.model_id}, prompts {chosen.prompt_version}, {chosen.task})"
    )
    return 0


def _report_events(events: list, wanted: bool) -> None:
    """With ``--events``, say on stderr when each level closes."""
    for event in events:
        if wanted and isinstance(event, LevelClosed):
            print(f"\n[level {event.level} closed]", file=sys.stderr)
