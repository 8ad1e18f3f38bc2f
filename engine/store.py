"""The case store: every analysed frame of one video, with bookmarks and reviewer notes, in SQLite.

One file per video, under the user's data folder (``data_home()/cases/<fingerprint>.sqlite``),
never beside the patient's video. The fingerprint hashes the file's size and its first and last
MiB, so a renamed or moved video finds its analysis again without reading gigabytes.

Durability: WAL journal, one transaction per result, committed the moment the result completes,
``synchronous=FULL`` by default (each commit is on disk before ``put_result`` returns), so a
killed engine or app loses at most the frame in flight. Two processes may write the same store:
writes take the lock up front (``BEGIN IMMEDIATE``) and wait up to ``timeout_s`` for it.

Timelines must appear at once on reopening a case of thousands of frames, so the phase, CVS
triple and tools of each result are also written in their own columns at insert time and served
by a covering index: :meth:`CaseStore.timeline_rows` never reads the raw text or parses JSON.

Schema (``PRAGMA user_version``; ``application_id`` marks a surgview store). ``MIGRATIONS[i]``
takes a store from version ``i`` to ``i + 1``; pending steps run in order in one transaction.

1. ``case_info`` (one row: fingerprint, video path as given, fps, frame count, created);
   ``results`` (frame, model_id, prompt_version, task → raw text, chain JSON, chain status,
   first_token_s, total_s, tokens, created); ``bookmarks``; ``notes``.
2. ``results`` gains ``phase``, ``cvs1``..``cvs3`` and ``tools`` (derived from the chain JSON,
   back-filled for existing rows) and the covering index ``results_timeline``.
3. ``blank_areas``: rectangles (in pixels of the video) holding burned-in text (patient name,
   date, device) that exports paint over, drawn once per case.
4. The reviewer's labels, beside the model's results and never over them (read and written by
   :mod:`engine.review_labels`): ``review_phase`` (phase segments, frame ranges), ``review_cvs``
   (one criterion over a frame range), ``review_items`` (per-frame instrument/triplet verdicts with
   boxes), ``review_chains`` (a whole chain accepted or rejected, tied to its text's hash) and
   ``review_log`` (who did what, when). Each label row names the model output it corrects
   (model_id, prompt_version, task; its frames), who and when.
5. ``results`` gains ``action`` and ``step`` (the suturing action, the bypass step: canonical labels of
   the procedure the prompt version names) and the covering index ``results_timeline`` is rebuilt with
   them, so action and step timelines never re-parse raw text either. Rows of another procedure are read
   again in their own ontology (their phase and tools columns were derived from cholecystectomy's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.action_fields import chain_action, chain_step
from engine.chain import Chain, CvsState
from engine.chain_parser import parse_chain
from engine.ontology import Ontology
from engine.procedures import procedure_of_version
from engine.timeline import TimelineRow
from engine.userdata import data_home

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Analysis",
    "BlankArea",
    "Bookmark",
    "CaseInfo",
    "CaseStore",
    "FrameResult",
    "Note",
    "StoreError",
    "case_store_path",
    "version_ontology",
    "video_fingerprint",
]

APPLICATION_ID = 0x53555256  # "SURV": PRAGMA application_id of every surgview case store
_FINGERPRINT_CHUNK = 1 << 20
_UNSET: Any = object()


class StoreError(Exception):
    """The case store cannot be opened, read or written; the message says why in one line."""


# ------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FrameResult:
    """One analysed frame for one model, prompt version and task.

    ``chain`` is a :class:`Chain` when built by the engine and its ``to_dict()`` form when read
    back (there is no ``Chain.from_dict``: :meth:`parsed` re-parses the raw text, which gives
    the same chain because the parser is a function of the text). ``status`` defaults to the
    chain's status. Timings are the backend's ``GenerationStats`` fields.
    """

    frame: int
    model_id: str
    prompt_version: str
    task: str
    raw_text: str
    chain: Chain | dict[str, Any]
    status: str = ""
    first_token_s: float | None = None  # from the request to the first piece of text
    total_s: float | None = None
    tokens: int | None = None
    created: float | None = None  # unix time the store committed it; set by the store

    def __post_init__(self) -> None:
        if not self.status:
            status = self.chain.status if isinstance(self.chain, Chain) else self.chain.get("status", "")
            object.__setattr__(self, "status", str(status or "malformed"))

    @classmethod
    def from_text(
        cls,
        frame: int,
        model_id: str,
        prompt_version: str,
        task: str,
        raw_text: str,
        *,
        first_token_s: float | None = None,
        total_s: float | None = None,
        tokens: int | None = None,
    ) -> FrameResult:
        """Parse the model's text, in the ontology of the procedure ``prompt_version`` names, and wrap it."""
        chain = parse_chain(raw_text, version_ontology(prompt_version))
        return cls(frame, model_id, prompt_version, task, raw_text, chain, "", first_token_s, total_s, tokens)

    @property
    def chain_dict(self) -> dict[str, Any]:
        return self.chain.to_dict() if isinstance(self.chain, Chain) else self.chain

    def parsed(self) -> Chain:
        """The chain as an object again (re-parsed from the raw text in its procedure's ontology)."""
        if isinstance(self.chain, Chain):
            return self.chain
        return parse_chain(self.raw_text, version_ontology(self.prompt_version))


@dataclass(frozen=True)
class CaseInfo:
    fingerprint: str
    video_path: str  # as given when last recorded (a moved video updates it)
    fps: float | None = None
    frame_count: int | None = None
    created: float | None = None


@dataclass(frozen=True)
class Bookmark:
    id: int
    frame: int
    title: str
    created: float
    updated: float


@dataclass(frozen=True)
class Note:
    id: int
    frame: int | None  # None: a note on the whole case
    text: str
    author: str
    created: float
    updated: float


@dataclass(frozen=True)
class BlankArea:
    """A rectangle of the video, in source pixels, blanked in exports (burned-in identifying text)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"a blank area needs x, y >= 0 and a positive size, got {self}")


@dataclass(frozen=True)
class Analysis:
    """One model / prompt version / task present in a store, for choosing what to show."""

    model_id: str
    prompt_version: str
    task: str
    frames: int
    last_created: float


# ------------------------------------------------------------------------------------- locations
def video_fingerprint(video: Path) -> str:
    """Content fingerprint of a video: size plus SHA-256 of its first and last MiB (32 hex digits)."""
    video = Path(video)
    try:
        with video.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            digest = hashlib.sha256(b"surgview-video-v1\0" + size.to_bytes(8, "little"))
            digest.update(fh.read(_FINGERPRINT_CHUNK))
            if size > _FINGERPRINT_CHUNK:
                fh.seek(max(_FINGERPRINT_CHUNK, size - _FINGERPRINT_CHUNK))
                digest.update(fh.read(_FINGERPRINT_CHUNK))
    except OSError as exc:
        raise StoreError(f"cannot read video {video.name}: {exc.strerror or exc}") from exc
    return digest.hexdigest()[:32]


def case_store_path(video: Path) -> Path:
    """Where the case store of ``video`` lives: ``data_home()/cases/<fingerprint>.sqlite``."""
    return _path_for(video_fingerprint(video))


def _path_for(fingerprint: str) -> Path:
    return data_home() / "cases" / f"{fingerprint}.sqlite"


# ------------------------------------------------------------------------------------- schema
def _summary(chain: dict[str, Any]) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """Phase, CVS C1..C3 and tools of a chain dict, for the timeline columns.

    Level 3 is read first, the answer second (a phase task answers with the phase only). Tools
    are None when the chain has no Level 1 (it did not say), '' when it saw none.
    """

    def label(mention: Any) -> str | None:
        return mention.get("label") if isinstance(mention, dict) else None

    context = chain.get("context") or {}
    answer = chain.get("answer") or {}
    phase = label(context.get("phase")) or label(answer.get("phase"))
    cvs = list(context.get("cvs") or [None] * 3)
    if not any(cvs):
        cvs = list(answer.get("cvs") or [None] * 3)
    cvs = [c if c in _CVS_VALUES else None for c in (cvs + [None] * 3)[:3]]
    perception = chain.get("perception")
    tools = None
    if isinstance(perception, dict):
        names = [label(s.get("name")) for s in perception.get("instruments") or [] if isinstance(s, dict)]
        tools = ",".join(dict.fromkeys(n for n in names if n))
    return phase, cvs[0], cvs[1], cvs[2], tools


_CVS_VALUES = {s.value for s in CvsState}


def version_ontology(prompt_version: str) -> Ontology:
    """The ontology answers of ``prompt_version`` are read in: its procedure's (a suturing case's tools are
    EndoVis17's, a bypass's phases MultiBypass140's), cholecystectomy's when the version names none."""
    return procedure_of_version(prompt_version).ontology


def _labels(prompt_version: str, chain: Chain) -> tuple[str | None, str | None]:
    """The action and step a parsed chain states, for the ``action``/``step`` columns (None: the
    procedure has no such labels, or the answer names none it knows)."""
    proc = procedure_of_version(prompt_version)
    action = chain_action(chain, proc.vocabulary("action")) if proc.has("action") else None
    step = chain_step(chain, proc.vocabulary("step")) if proc.has("step") else None
    return (action.label if action is not None else None), (step.label if step is not None else None)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    for sql in _statements(
        f"""
        PRAGMA application_id = {APPLICATION_ID};
        CREATE TABLE case_info (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            fingerprint TEXT NOT NULL,
            video_path TEXT NOT NULL,
            fps REAL,
            frame_count INTEGER,
            created REAL NOT NULL
        );
        CREATE TABLE results (
            frame INTEGER NOT NULL CHECK (frame >= 0),
            model_id TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            task TEXT NOT NULL,
            raw_text TEXT NOT NULL,
            chain_json TEXT NOT NULL,
            status TEXT NOT NULL,
            first_token_s REAL,
            total_s REAL,
            tokens INTEGER,
            created REAL NOT NULL,
            PRIMARY KEY (model_id, prompt_version, task, frame)
        );
        CREATE TABLE bookmarks (
            id INTEGER PRIMARY KEY,
            frame INTEGER NOT NULL,
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE INDEX bookmarks_frame ON bookmarks (frame);
        CREATE TABLE notes (
            id INTEGER PRIMARY KEY,
            frame INTEGER,
            text TEXT NOT NULL,
            author TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE INDEX notes_frame ON notes (frame)
        """
    ):
        conn.execute(sql)


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    for column in ("phase", "cvs1", "cvs2", "cvs3", "tools"):
        conn.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")
    rows = conn.execute("SELECT rowid, chain_json FROM results").fetchall()
    for rowid, chain_json in rows:
        try:
            chain = json.loads(chain_json)
        except ValueError:
            chain = {}
        summary = _summary(chain if isinstance(chain, dict) else {})
        conn.execute(
            "UPDATE results SET phase = ?, cvs1 = ?, cvs2 = ?, cvs3 = ?, tools = ? WHERE rowid = ?", (*summary, rowid)
        )
    conn.execute(
        "CREATE INDEX results_timeline ON results "
        "(model_id, prompt_version, task, frame, phase, cvs1, cvs2, cvs3, tools)"
    )


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE blank_areas (id INTEGER PRIMARY KEY, x INTEGER NOT NULL, y INTEGER NOT NULL, "
        "width INTEGER NOT NULL, height INTEGER NOT NULL)"
    )


_REVIEW_REF = (
    "reviewer TEXT NOT NULL DEFAULT '', created REAL NOT NULL, model_id TEXT, prompt_version TEXT, task TEXT, "
    "source TEXT NOT NULL DEFAULT ''"
)


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS: a store whose user_version was set back by hand (tests, a downgrade) keeps its labels.
    for sql in _statements(
        f"""
        CREATE TABLE IF NOT EXISTS review_phase (
            id INTEGER PRIMARY KEY,
            start_frame INTEGER NOT NULL CHECK (start_frame >= 0),
            end_frame INTEGER NOT NULL CHECK (end_frame > start_frame),
            phase TEXT NOT NULL,
            {_REVIEW_REF}
        );
        CREATE INDEX IF NOT EXISTS review_phase_start ON review_phase (start_frame);
        CREATE TABLE IF NOT EXISTS review_cvs (
            id INTEGER PRIMARY KEY,
            criterion INTEGER NOT NULL CHECK (criterion IN (1, 2, 3)),
            start_frame INTEGER NOT NULL CHECK (start_frame >= 0),
            end_frame INTEGER NOT NULL CHECK (end_frame > start_frame),
            state TEXT NOT NULL CHECK (state IN ('met', 'not met', 'not assessable')),
            value REAL,
            {_REVIEW_REF}
        );
        CREATE INDEX IF NOT EXISTS review_cvs_start ON review_cvs (criterion, start_frame);
        CREATE TABLE IF NOT EXISTS review_items (
            id INTEGER PRIMARY KEY,
            frame INTEGER NOT NULL CHECK (frame >= 0),
            kind TEXT NOT NULL CHECK (kind IN ('instrument', 'triplet')),
            verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'rejected', 'edited', 'added', 'none')),
            label TEXT NOT NULL,
            box TEXT,
            target_box TEXT,
            model_label TEXT,
            model_box TEXT,
            {_REVIEW_REF}
        );
        CREATE INDEX IF NOT EXISTS review_items_frame ON review_items (frame, kind);
        CREATE TABLE IF NOT EXISTS review_chains (
            id INTEGER PRIMARY KEY,
            frame INTEGER NOT NULL CHECK (frame >= 0),
            model_id TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            task TEXT NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'rejected')),
            text_sha TEXT NOT NULL,
            reviewer TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            UNIQUE (model_id, prompt_version, task, frame)
        );
        CREATE TABLE IF NOT EXISTS review_log (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            reviewer TEXT NOT NULL DEFAULT '',
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{{}}'
        )
        """
    ):
        conn.execute(sql)


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    for column in ("action", "step"):
        if column not in columns:  # a store whose user_version was set back by hand keeps its columns
            conn.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")
    # Only another procedure's rows ("<version>+<procedure>") have actions or steps, and only they were
    # summarised in the wrong ontology: read those again; cholecystectomy's rows are left as they are.
    rows = conn.execute("SELECT rowid, prompt_version, raw_text FROM results WHERE prompt_version LIKE '%+%'")
    for rowid, version, raw_text in rows.fetchall():
        chain = parse_chain(raw_text or "", version_ontology(version))
        summary = _summary(chain.to_dict())
        conn.execute(
            "UPDATE results SET phase = ?, cvs1 = ?, cvs2 = ?, cvs3 = ?, tools = ?, action = ?, step = ? "
            "WHERE rowid = ?",
            (*summary, *_labels(version, chain), rowid),
        )
    conn.execute("DROP INDEX IF EXISTS results_timeline")
    conn.execute(f"CREATE INDEX results_timeline ON results ({_TIMELINE_INDEX})")


_TIMELINE_INDEX = "model_id, prompt_version, task, frame, phase, cvs1, cvs2, cvs3, tools, action, step"

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_0_to_1,
    _migrate_1_to_2,
    _migrate_2_to_3,
    _migrate_3_to_4,
    _migrate_4_to_5,
]
SCHEMA_VERSION = len(MIGRATIONS)

_RESULT_COLUMNS = (
    "frame, model_id, prompt_version, task, raw_text, chain_json, status, first_token_s, total_s, tokens, created"
)


# ------------------------------------------------------------------------------------- the store
class CaseStore:
    """An open case store. Use as a context manager; safe to share between threads (calls are
    serialised); open one per process, or several, as WAL lets readers and a writer overlap."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool):
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, durable: bool = True, timeout_s: float = 10.0) -> CaseStore:
        """Open (creating or upgrading it when writable) the case store at ``path``.

        ``durable=False`` skips the fsync of each commit: still safe against a killed process,
        not against power loss. ``timeout_s``: how long to wait for another writer's lock.
        """
        path = Path(path)
        name = path.name
        if readonly:
            if not path.is_file():
                raise StoreError(f"no case store at {path}")
            conn = _connect_readonly(path, timeout_s)
        else:
            _check_writable(path)
            try:
                conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise _store_error(exc, name, "open") from exc
        try:
            store = cls(conn, path, readonly)
            store._prepare(durable)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def for_video(
        cls, video: Path, *, fps: float | None = None, frame_count: int | None = None, readonly: bool = False
    ) -> CaseStore:
        """Open the case store of ``video`` (see :func:`case_store_path`); when writable, record
        the video's fingerprint, path as given, fps and frame count in it."""
        fingerprint = video_fingerprint(video)
        store = cls.open(_path_for(fingerprint), readonly=readonly)
        if not readonly:
            try:
                known = store.case_info()
                if known is None or (known.video_path, known.fps, known.frame_count) != (str(video), fps, frame_count):
                    store.set_case_info(CaseInfo(fingerprint, str(video), fps, frame_count))
            except BaseException:
                store.close()
                raise
        return store

    def _prepare(self, durable: bool) -> None:
        name = self.path.name
        try:
            app_id, version, objects = self._identify()
            if app_id != APPLICATION_ID and not (app_id == 0 and version == 0 and objects == 0):
                raise StoreError(f"{name} is not a surgview case store")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{name} was written by a newer surgview (store schema {version}; this version reads up "
                    f"to {SCHEMA_VERSION}): update surgview to open it"
                )
            if self.readonly:
                if objects == 0:
                    raise StoreError(f"{name} is empty: not a surgview case store")
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"{name} uses an older store schema ({version}); open it once for writing to upgrade it"
                    )
                return
            self._enable_wal()
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            if version < SCHEMA_VERSION:
                self._migrate()
        except sqlite3.Error as exc:
            raise _store_error(exc, name, "open") from exc

    def _enable_wal(self, timeout_s: float = 10.0) -> None:
        """Switch to WAL. The switch needs an exclusive lock and SQLite does not always wait for it
        (no busy handler): when another process is creating the same store, retry until it is done."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _identify(self) -> tuple[int, int, int]:
        # One statement, so one snapshot: read one by one, a store another process is creating
        # could show its tables but not yet its application_id, and look like someone else's file.
        row = self._conn.execute(
            "SELECT a.application_id, u.user_version, (SELECT count(*) FROM sqlite_master) "
            "FROM pragma_application_id AS a, pragma_user_version AS u"
        ).fetchone()
        return row[0], row[1], row[2]

    def _migrate(self) -> None:
        with self._write("upgrade"):
            # Re-read inside the lock: another process may have upgraded it meanwhile.
            app_id, version, objects = self._identify()
            if app_id != APPLICATION_ID and not (app_id == 0 and version == 0 and objects == 0):
                raise StoreError(f"{self.path.name} is not a surgview case store")
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self._conn)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        with self._read("read"):
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transactions
    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"cannot {action}: {self.path.name} is open read-only")
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise _store_error(exc, self.path.name, action) from exc
            except BaseException:
                _rollback(conn)
                raise

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _store_error(exc, self.path.name, action) from exc

    def transaction(self, action: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error) for modules
        that keep their own tables in the store (:mod:`engine.review_labels`); ``action`` names it in errors."""
        return self._write(action)

    def reading(self, action: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """The connection for reads, serialised with every other call; ``action`` names it in errors."""
        return self._read(action)

    # ----------------------------------------------------------------- case
    def case_info(self) -> CaseInfo | None:
        with self._read("read the case") as conn:
            row = conn.execute("SELECT fingerprint, video_path, fps, frame_count, created FROM case_info").fetchone()
        return CaseInfo(*row) if row else None

    def set_case_info(self, info: CaseInfo) -> None:
        """Record the video this store belongs to (keeps the first ``created``)."""
        with self._write("record the case") as conn:
            conn.execute(
                "INSERT INTO case_info (id, fingerprint, video_path, fps, frame_count, created) "
                "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "video_path = excluded.video_path, fps = excluded.fps, frame_count = excluded.frame_count",
                (info.fingerprint, _text(info.video_path), info.fps, info.frame_count, info.created or time.time()),
            )

    # ----------------------------------------------------------------- results
    def put_result(self, result: FrameResult) -> FrameResult:
        """Store one result in its own transaction (replacing an earlier one for the same key);
        it is committed when this returns. Returns the result with ``created`` set."""
        if result.frame < 0:
            raise ValueError(f"frame must not be negative, got {result.frame}")
        chain = result.chain_dict
        labels = _labels(result.prompt_version, result.parsed())
        created = time.time()
        values = (
            int(result.frame),
            _text(result.model_id),
            _text(result.prompt_version),
            _text(result.task),
            _text(result.raw_text),
            json.dumps(chain, separators=(",", ":")),
            _text(result.status),
            result.first_token_s,
            result.total_s,
            result.tokens,
            created,
            *(_text(v) if v is not None else None for v in (*_summary(chain), *labels)),
        )
        with self._write(f"store frame {result.frame}") as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO results ({_RESULT_COLUMNS}, phase, cvs1, cvs2, cvs3, tools, action, step) "
                f"VALUES ({', '.join('?' * len(values))})",
                values,
            )
        return dataclasses.replace(result, created=created)

    def get_result(self, frame: int, model_id: str, prompt_version: str, task: str) -> FrameResult | None:
        with self._read("read a result") as conn:
            row = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM results "
                "WHERE model_id = ? AND prompt_version = ? AND task = ? AND frame = ?",
                (model_id, prompt_version, task, frame),
            ).fetchone()
        return _result(row) if row else None

    def results(
        self, model_id: str, prompt_version: str, task: str, *, start: int = 0, stop: int | None = None
    ) -> list[FrameResult]:
        """Results with ``start <= frame < stop``, ordered by frame."""
        with self._read("read results") as conn:
            rows = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM results WHERE model_id = ? AND prompt_version = ? AND task = ? "
                "AND frame >= ? AND frame < ? ORDER BY frame",
                (model_id, prompt_version, task, start, stop if stop is not None else 2**62),
            ).fetchall()
        return [_result(row) for row in rows]

    def result_texts(self, model_id: str, prompt_version: str, task: str) -> list[FrameResult]:
        """Every result ordered by frame, with its raw text and status but *without* the stored chain
        (``chain`` is ``{}``; :meth:`FrameResult.parsed` re-parses the text): the bulk read of what
        merges records from the text (the viewer). Decoding 5,400 chain JSONs took ~0.8 s; this takes
        ~50 ms. Not for writing back (``put_result`` would store an empty chain)."""
        with self._read("read results") as conn:
            rows = conn.execute(
                "SELECT frame, raw_text, status, first_token_s, total_s, tokens, created FROM results "
                "WHERE model_id = ? AND prompt_version = ? AND task = ? ORDER BY frame",
                (model_id, prompt_version, task),
            ).fetchall()
        return [
            FrameResult(frame, model_id, prompt_version, task, raw, {}, status or "malformed", first, total, tokens, at)
            for frame, raw, status, first, total, tokens, at in rows
        ]

    def analysed_frames(self, model_id: str, prompt_version: str, task: str) -> set[int]:
        """Frames already analysed (the scheduler skips them: nothing is computed twice)."""
        with self._read("read results") as conn:
            rows = conn.execute(
                "SELECT frame FROM results WHERE model_id = ? AND prompt_version = ? AND task = ?",
                (model_id, prompt_version, task),
            ).fetchall()
        return {row[0] for row in rows}

    def statuses(self, model_id: str, prompt_version: str, task: str) -> list[tuple[int, str]]:
        """(frame, chain status) per analysed frame in order: the viewer's confidence track."""
        with self._read("read statuses") as conn:
            return conn.execute(
                "SELECT frame, status FROM results WHERE model_id = ? AND prompt_version = ? AND task = ? "
                "ORDER BY frame",
                (model_id, prompt_version, task),
            ).fetchall()

    def timeline_rows(self, model_id: str, prompt_version: str, task: str) -> list[TimelineRow]:
        """What timelines need (phase, CVS, tools, action, step), per analysed frame in order, from the
        covering index alone."""
        with self._read("read timelines") as conn:
            rows = conn.execute(
                "SELECT frame, phase, cvs1, cvs2, cvs3, tools, action, step FROM results INDEXED BY results_timeline "
                "WHERE model_id = ? AND prompt_version = ? AND task = ? ORDER BY frame",
                (model_id, prompt_version, task),
            ).fetchall()
        cvs = _CVS_LOOKUP
        tools: dict[str | None, tuple[str, ...] | None] = {None: None}  # few distinct tool sets: split each once
        out = []
        for frame, phase, c1, c2, c3, tool_text, action, step in rows:
            tool_tuple = tools.get(tool_text, ())
            if tool_tuple == ():
                tool_tuple = tools[tool_text] = tuple(t for t in tool_text.split(",") if t)
            row = TimelineRow(frame, phase, (cvs.get(c1), cvs.get(c2), cvs.get(c3)), tool_tuple, None, action, step)
            out.append(row)
        return out

    def analyses(self) -> list[Analysis]:
        """Every model / prompt version / task with results, most recent first."""
        with self._read("list analyses") as conn:
            rows = conn.execute(
                "SELECT model_id, prompt_version, task, count(*), max(created) FROM results "
                "GROUP BY model_id, prompt_version, task ORDER BY max(created) DESC"
            ).fetchall()
        return [Analysis(*row) for row in rows]

    # ----------------------------------------------------------------- bookmarks
    def add_bookmark(self, frame: int, title: str) -> Bookmark:
        now = time.time()
        with self._write("add a bookmark") as conn:
            cur = conn.execute(
                "INSERT INTO bookmarks (frame, title, created, updated) VALUES (?, ?, ?, ?)",
                (int(frame), _text(title), now, now),
            )
        return Bookmark(int(cur.lastrowid or 0), int(frame), _text(title), now, now)

    def bookmarks(self) -> list[Bookmark]:
        with self._read("read bookmarks") as conn:
            rows = conn.execute(
                "SELECT id, frame, title, created, updated FROM bookmarks ORDER BY frame, id"
            ).fetchall()
        return [Bookmark(*row) for row in rows]

    def update_bookmark(
        self, bookmark_id: int, *, frame: int | None = None, title: str | None = None
    ) -> Bookmark | None:
        """Change a bookmark; None if it no longer exists (e.g. deleted by another instance)."""
        with self._write("update a bookmark") as conn:
            row = conn.execute(
                "UPDATE bookmarks SET frame = coalesce(?, frame), title = coalesce(?, title), updated = ? "
                "WHERE id = ? RETURNING id, frame, title, created, updated",
                (frame, _text(title) if title is not None else None, time.time(), bookmark_id),
            ).fetchone()
        return Bookmark(*row) if row else None

    def delete_bookmark(self, bookmark_id: int) -> bool:
        with self._write("delete a bookmark") as conn:
            return conn.execute("DELETE FROM bookmarks WHERE id = ?", (bookmark_id,)).rowcount > 0

    # ----------------------------------------------------------------- notes
    def add_note(self, text: str, *, frame: int | None = None, author: str = "") -> Note:
        now = time.time()
        with self._write("add a note") as conn:
            cur = conn.execute(
                "INSERT INTO notes (frame, text, author, created, updated) VALUES (?, ?, ?, ?, ?)",
                (frame, _text(text), _text(author), now, now),
            )
        return Note(int(cur.lastrowid or 0), frame, _text(text), _text(author), now, now)

    def notes(self) -> list[Note]:
        """Case notes first (no frame), then by frame; in order of writing within each."""
        with self._read("read notes") as conn:
            rows = conn.execute(
                "SELECT id, frame, text, author, created, updated FROM notes ORDER BY frame IS NOT NULL, frame, id"
            ).fetchall()
        return [Note(*row) for row in rows]

    def update_note(
        self, note_id: int, *, text: str | None = None, frame: int | None = _UNSET, author: str | None = None
    ) -> Note | None:
        """Change a note (``frame=None`` makes it a case note); None if it no longer exists."""
        sets, values = ["updated = ?"], [time.time()]
        if text is not None:
            sets.append("text = ?")
            values.append(_text(text))
        if frame is not _UNSET:
            sets.append("frame = ?")
            values.append(frame)
        if author is not None:
            sets.append("author = ?")
            values.append(_text(author))
        with self._write("update a note") as conn:
            row = conn.execute(
                f"UPDATE notes SET {', '.join(sets)} WHERE id = ? RETURNING id, frame, text, author, created, updated",
                (*values, note_id),
            ).fetchone()
        return Note(*row) if row else None

    def delete_note(self, note_id: int) -> bool:
        with self._write("delete a note") as conn:
            return conn.execute("DELETE FROM notes WHERE id = ?", (note_id,)).rowcount > 0

    # ----------------------------------------------------------------- blank areas
    def blank_areas(self) -> list[BlankArea]:
        """The case's rectangles of burned-in text, in the order they were drawn."""
        with self._read("read blank areas") as conn:
            rows = conn.execute("SELECT x, y, width, height FROM blank_areas ORDER BY id").fetchall()
        return [BlankArea(*row) for row in rows]

    def set_blank_areas(self, areas: list[BlankArea]) -> None:
        """Replace the case's blank areas (one transaction: the old set or the new, never a mix)."""
        with self._write("store blank areas") as conn:
            conn.execute("DELETE FROM blank_areas")
            conn.executemany(
                "INSERT INTO blank_areas (x, y, width, height) VALUES (?, ?, ?, ?)",
                [(int(a.x), int(a.y), int(a.width), int(a.height)) for a in areas],
            )

    # ----------------------------------------------------------------- maintenance
    def integrity_problems(self) -> list[str]:
        """SQLite's integrity check; an empty list when the store is sound."""
        with self._read("check the store") as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        return [] if rows == ["ok"] else rows


# ------------------------------------------------------------------------------------- helpers
_CVS_LOOKUP: dict[str | None, CvsState] = {s.value: s for s in CvsState}


def _result(row: tuple[Any, ...]) -> FrameResult:
    frame, model_id, prompt_version, task, raw_text, chain_json, status, first, total, tokens, created = row
    try:
        chain = json.loads(chain_json)
    except ValueError:
        chain = {}
    return FrameResult(
        frame,
        model_id,
        prompt_version,
        task,
        raw_text,
        chain if isinstance(chain, dict) else {},
        status,
        first,
        total,
        tokens,
        created,
    )


def _text(value: str) -> str:
    """Text SQLite can store: lone surrogates (from a broken decoder) become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _rollback(conn: sqlite3.Connection) -> None:
    # A closed connection (a write after close) raises ProgrammingError even here: the caller's StoreError,
    # not this, is what the user must see.
    with suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _check_writable(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the case folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write case store {path.name}: the folder {folder} is read-only")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"cannot write case store {path.name}: the file is read-only")


def _connect_readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    """Read-only connection. In a folder we cannot write, WAL's shared-memory file cannot be
    created, so the store is opened as immutable (nobody else can be writing it there either)."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    shm = path.with_name(path.name + "-shm")
    if not os.access(path.parent, os.W_OK) and not shm.exists():
        uri += "&immutable=1"
    try:
        return sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _store_error(exc, path.name, "open") from exc


def _store_error(exc: sqlite3.Error, name: str, action: str) -> StoreError:
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code == "SQLITE_NOTADB":
        return StoreError(f"{name} is not a surgview case store (the file is not an SQLite database)")
    if code.startswith("SQLITE_CORRUPT"):
        return StoreError(f"case store {name} is damaged ({exc}); it was left as it is")
    if code == "SQLITE_FULL" or "disk is full" in str(exc):
        return StoreError(f"cannot {action} in {name}: the disk is full; earlier results are kept")
    if code.startswith("SQLITE_READONLY"):
        return StoreError(f"cannot {action} in {name}: the case store or its folder is read-only")
    if code.startswith("SQLITE_CANTOPEN"):
        return StoreError(f"cannot open case store {name}: its folder is missing or not writable")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(f"cannot {action} in {name}: another process kept the case store locked too long")
    if code.startswith("SQLITE_IOERR"):
        return StoreError(f"cannot {action} in {name}: disk I/O error ({exc})")
    return StoreError(f"cannot {action} in {name}: {exc}")
