"""
The run's canonical event log: `<run_dir>/events.jsonl` (one JSON object per line) and, beside it,
`<run_dir>/events.log` (the same events as human-readable lines, derived with `render_line`).

    events = EventLog(run_dir)
    events.log("trained 8 adapters", db_phase="ttt", method="seal")
    events.log("task 007bbfb7 failed", db_phase="eval", error=exc)        # an exception becomes "Type: message"
    logging.getLogger("nanoseal").addHandler(EventLogHandler(events))   # forward Python logging records
    rows = read_events(run_dir)                                         # skips (and counts) a truncated line

Every event has exactly the ten CANONICAL_FIELDS, null where not applicable:
    filename        the caller's source file, relative to the project root when inside it ("nanoseal/seal/ttt.py")
    timestamp       ISO-8601 UTC with milliseconds ("2026-11-24T08:25:05.123Z")
    classname       the caller's class when called from a method (from the code's qualified name, else from
                    its `self` / `cls`), else null
    function        the caller's function ("<module>" at module level)
    system_section  a free-form subsystem name (the logger name for forwarded logging records)
    line_num        the line of the call
    error           "Type: message" for an exception, or a string
    db_phase        the loop phase: one of DB_PHASES (sample / ttt / eval / restem / report) or null
    method          the method being run (seal, icl, ttt_default, oracle, ...) or null
    message         a string; a non-string message (e.g. a dict of numbers) is stored as its compact JSON text
Nothing else appears at the top level: structured details go into the message.

Durability: each line is written with a single os.write on an O_APPEND descriptor and then fsynced, so lines
from several processes never interleave and a crash leaves at most one truncated last line (which
read_events skips). events.jsonl is written before events.log; `rebuild_human_log` re-derives the latter.
"""

import datetime
import json
import logging
import os
import sys
import threading

from nanoseal.common import atomic_write_text
from nanoseal.common import read_jsonl as common_read_jsonl

CANONICAL_FIELDS = ("filename", "timestamp", "classname", "function", "system_section", "line_num", "error",
                    "db_phase", "method", "message")
DB_PHASES = ("sample", "ttt", "eval", "restem", "report")
JSONL_NAME = "events.jsonl"
HUMAN_NAME = "events.log"

# files under this folder are named relative to it: the project root (the folder holding the nanoseal package)
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

log = logging.getLogger(__name__)


def _relative_filename(path: str) -> str:
    """A source path relative to the project root when inside it, else the absolute path."""
    path = os.path.abspath(path)
    if path.startswith(PROJECT_ROOT + os.sep):
        return os.path.relpath(path, PROJECT_ROOT)
    return path


def _timestamp() -> str:
    """Now, as ISO-8601 UTC with milliseconds and a Z suffix."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_text(error) -> str | None:
    """An error as one string: exceptions become 'Type: message'."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        text = str(error).strip()
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return str(error)


def _message_text(message) -> str:
    """A message as a string: strings pass through, anything else becomes compact sorted JSON."""
    if isinstance(message, str):
        return message
    return json.dumps(message, sort_keys=True, separators=(",", ":"), default=str)


def _classname(frame) -> str | None:
    """The class a frame's code belongs to: from its qualified name, else from its `self` / `cls` argument."""
    qualname = getattr(frame.f_code, "co_qualname", None)
    if qualname and "." in qualname:
        owner = qualname.rsplit(".", 1)[0]
        if not owner.endswith("<locals>"):
            return owner.rsplit(".", 1)[-1]
        return None  # a nested function: not a method
    if frame.f_code.co_argcount:
        first = frame.f_code.co_varnames[0]
        value = frame.f_locals.get(first)
        if first == "self" and value is not None:
            return type(value).__name__
        if first == "cls" and isinstance(value, type):
            return value.__name__
    return None


def check_phase(db_phase: str | None) -> None:
    """ValueError unless db_phase is None or one of DB_PHASES."""
    if db_phase is not None and db_phase not in DB_PHASES:
        raise ValueError(f"db_phase must be one of {', '.join(DB_PHASES)} or None, got {db_phase!r}")


def make_event(message, filename: str | None = None, function: str | None = None, line_num: int | None = None,
               classname: str | None = None, db_phase: str | None = None, method: str | None = None,
               error=None, system_section: str | None = None, timestamp: str | None = None) -> dict:
    """A canonical event dict (exactly CANONICAL_FIELDS, in that order); ValueError on a bad db_phase."""
    check_phase(db_phase)
    event = {
        "filename": filename,
        "timestamp": timestamp or _timestamp(),
        "classname": classname,
        "function": function,
        "system_section": system_section,
        "line_num": line_num,
        "error": _error_text(error),
        "db_phase": db_phase,
        "method": method,
        "message": _message_text(message),
    }
    assert tuple(event) == CANONICAL_FIELDS, "event fields drifted from CANONICAL_FIELDS"
    return event


def _one_line(text: str) -> str:
    """Text with newlines escaped, so it fits on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def render_line(event: dict) -> str:
    """The human-readable line of an event (no newline), e.g.
    '2026-11-24T08:25:05.123Z [ttt] seal.ttt:Trainer.step:88 method=seal | message | error: ...'."""
    where = event.get("filename") or "?"
    if where.endswith(".py"):
        where = where[:-3]
    if where.startswith("nanoseal/"):
        where = where[len("nanoseal/"):]
    if not os.path.isabs(where):
        where = where.replace("/", ".")
    function = event.get("function") or "?"
    if event.get("classname"):
        function = f"{event['classname']}.{function}"
    parts = [event.get("timestamp") or "?", f"[{event.get('db_phase') or '-'}]",
             f"{where}:{function}:{event.get('line_num') if event.get('line_num') is not None else '?'}"]
    if event.get("method"):
        parts.append(f"method={event['method']}")
    if event.get("system_section"):
        parts.append(f"section={event['system_section']}")
    line = " ".join(parts) + " | " + _one_line(str(event.get("message") or ""))
    if event.get("error"):
        line += " | error: " + _one_line(str(event["error"]))
    return line


def append_lines(path: str, lines: list[str]) -> None:
    """Append lines with a single O_APPEND write, then fsync (and fsync the folder when the file is new)."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write to a regular file is very unlikely; finish it anyway
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class EventLog:
    """Appends canonical events to <run_dir>/events.jsonl and their human lines to <run_dir>/events.log."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.jsonl_path = os.path.join(self.run_dir, JSONL_NAME)
        self.human_path = os.path.join(self.run_dir, HUMAN_NAME)
        self._lock = threading.Lock()  # keeps the two files in the same order across threads

    def log(self, message, db_phase: str | None = None, method: str | None = None, error=None,
            system_section: str | None = None, stacklevel: int = 1) -> dict:
        """Append one event located at the caller (stacklevel=2: the caller's caller, for wrappers); returns it."""
        assert stacklevel >= 1, f"stacklevel must be >= 1, got {stacklevel}"
        frame = sys._getframe(stacklevel)
        event = make_event(message, filename=_relative_filename(frame.f_code.co_filename),
                           function=frame.f_code.co_name, line_num=frame.f_lineno, classname=_classname(frame),
                           db_phase=db_phase, method=method, error=error, system_section=system_section)
        del frame
        self.write(event)
        return event

    def write(self, event: dict) -> None:
        """Append an already-built canonical event (see make_event) to both files."""
        assert tuple(event) == CANONICAL_FIELDS, f"not a canonical event: fields {list(event)}"
        check_phase(event["db_phase"])
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            append_lines(self.jsonl_path, [line])
            append_lines(self.human_path, [render_line(event)])


class EventLogHandler(logging.Handler):
    """Forwards Python logging records to an EventLog, located at the record's file/function/line.

    The record's logger name becomes system_section; `extra={"db_phase": ..., "method": ...}` on a logging call
    overrides the handler's defaults; exc_info becomes the error ("Type: message")."""

    def __init__(self, event_log: EventLog, db_phase: str | None = None, method: str | None = None,
                 level: int = logging.NOTSET):
        super().__init__(level)
        check_phase(db_phase)
        self.event_log = event_log
        self.db_phase = db_phase
        self.method = method

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record as one event; a failure goes to logging's handleError, never raised."""
        try:
            error = None
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
            elif record.levelno >= logging.ERROR:
                error = f"{record.levelname}: {record.getMessage()}"
            event = make_event(record.getMessage(), filename=_relative_filename(record.pathname),
                               function=record.funcName, line_num=record.lineno, classname=None,
                               db_phase=getattr(record, "db_phase", self.db_phase),
                               method=getattr(record, "method", self.method), error=error,
                               system_section=record.name,
                               timestamp=datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                               .isoformat(timespec="milliseconds").replace("+00:00", "Z"))
            self.event_log.write(event)
        except Exception:  # noqa: BLE001 - logging handlers must not raise
            self.handleError(record)


def read_jsonl(path: str) -> tuple[list[dict], int]:
    """(objects, skipped) of a JSONL file: lines that are not a whole JSON object (a truncated last line
    after a crash) are skipped and counted; the bounded reader (nanoseal.common.read_jsonl) caps size and
    nesting. A missing file gives ([], 0)."""
    return common_read_jsonl(path, strict=False, allow_nonfinite=True)


def scan_events(run_dir: str) -> tuple[list[dict], int]:
    """(events, skipped) from <run_dir>/events.jsonl (see read_jsonl)."""
    return read_jsonl(os.path.join(str(run_dir), JSONL_NAME))


def read_events(run_dir: str) -> list[dict]:
    """The events of <run_dir>/events.jsonl, skipping (with a warning naming the count) any broken line."""
    events, skipped = scan_events(run_dir)
    if skipped:
        log.warning("%s: skipped %d unreadable line(s) (truncated by a crash?)", os.path.join(run_dir, JSONL_NAME),
                    skipped)
    return events


def rebuild_human_log(run_dir: str) -> int:
    """Re-derive <run_dir>/events.log from events.jsonl (atomically); returns the number of lines written."""
    events = read_events(run_dir)
    text = "".join(render_line(e) + "\n" for e in events)
    atomic_write_text(os.path.join(str(run_dir), HUMAN_NAME), text)
    return len(events)

