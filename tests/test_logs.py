"""Tests for nanoseal.logs: the canonical event log (fields, caller info, human lines, durability)."""

import json
import logging
import multiprocessing
import os
import re
import sys

import pytest

from nanoseal.logs import (
    CANONICAL_FIELDS,
    EventLog,
    EventLogHandler,
    read_events,
    rebuild_human_log,
    render_line,
    scan_events,
)

THIS_FILE = "tests/test_logs.py"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def jsonl_lines(run_dir) -> list[str]:
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as f:
        return f.read().splitlines()


def human_lines(run_dir) -> list[str]:
    with open(os.path.join(run_dir, "events.log"), encoding="utf-8") as f:
        return f.read().splitlines()


class Worker:
    """Logs from a method, a classmethod and a staticmethod."""

    def __init__(self, events: EventLog):
        self.events = events

    def run(self):
        line = sys._getframe().f_lineno + 1
        return self.events.log("from a method", db_phase="ttt", method="seal"), line

    @classmethod
    def make(cls, events: EventLog):
        line = sys._getframe().f_lineno + 1
        return events.log("from a classmethod"), line

    @staticmethod
    def helper(events: EventLog):
        return events.log("from a staticmethod")


def module_function(events: EventLog):
    line = sys._getframe().f_lineno + 1
    return events.log({"tasks": 3, "solved": 1}, db_phase="eval"), line


def test_exact_fields_and_values(tmp_path):
    events = EventLog(str(tmp_path))
    line = sys._getframe().f_lineno + 1
    events.log("hello", db_phase="sample", method="icl", system_section="seal.selfedit")
    events.log("bad", error=ValueError("boom"))
    events.log("plain error", error="it broke")
    rows = [json.loads(x) for x in jsonl_lines(tmp_path)]
    assert len(rows) == 3
    for row in rows:
        assert tuple(row) == CANONICAL_FIELDS, f"fields {list(row)}"
        assert TIMESTAMP.match(row["timestamp"]), row["timestamp"]
        assert row["filename"] == THIS_FILE
        assert row["function"] == "test_exact_fields_and_values"
        assert row["classname"] is None
    first = rows[0]
    assert first["line_num"] == line
    assert (first["db_phase"], first["method"], first["system_section"], first["message"], first["error"]) == (
        "sample", "icl", "seal.selfedit", "hello", None)
    assert rows[1]["error"] == "ValueError: boom" and rows[1]["db_phase"] is None and rows[1]["method"] is None
    assert rows[2]["error"] == "it broke"
    assert read_events(str(tmp_path)) == rows


def test_caller_info(tmp_path):
    events = EventLog(str(tmp_path))
    event, line = Worker(events).run()
    assert (event["classname"], event["function"], event["line_num"]) == ("Worker", "run", line)
    event, line = Worker.make(events)
    assert (event["classname"], event["function"], event["line_num"]) == ("Worker", "make", line)
    event = Worker.helper(events)
    assert (event["classname"], event["function"]) == ("Worker", "helper")
    event, line = module_function(events)
    assert (event["classname"], event["function"], event["line_num"]) == (None, "module_function", line)
    assert event["message"] == '{"solved":1,"tasks":3}', "non-string messages are stored as compact JSON"

    def nested():
        return events.log("nested")

    assert (nested()["classname"], nested()["function"]) == (None, "nested")
    assert [json.loads(x) for x in jsonl_lines(tmp_path)][0]["line_num"] == Worker(events).run()[1]


def test_stacklevel_points_past_wrappers(tmp_path):
    events = EventLog(str(tmp_path))

    def wrapper(msg):
        return events.log(msg, stacklevel=2)

    line = sys._getframe().f_lineno + 1
    event = wrapper("via wrapper")
    assert (event["function"], event["line_num"]) == ("test_stacklevel_points_past_wrappers", line)


def test_human_log_one_line_per_event(tmp_path):
    events = EventLog(str(tmp_path))
    events.log("first", db_phase="ttt", method="seal")
    events.log("multi\nline message", db_phase="report", error=RuntimeError("bad\nthing"))
    Worker(events).run()
    rows = read_events(str(tmp_path))
    lines = human_lines(tmp_path)
    assert len(lines) == len(rows) == 3
    assert lines == [render_line(r) for r in rows], "events.log is derived from the JSON"
    assert re.match(r"^\S+Z \[ttt\] tests\.test_logs:test_human_log_one_line_per_event:\d+ method=seal \| first$",
                    lines[0]), lines[0]
    assert lines[1].endswith("| multi\\nline message | error: RuntimeError: bad\\nthing"), lines[1]
    assert " [report] " in lines[1]
    assert ":Worker.run:" in lines[2]
    # events.log can be rebuilt from events.jsonl alone
    os.remove(os.path.join(tmp_path, "events.log"))
    assert rebuild_human_log(str(tmp_path)) == 3
    assert human_lines(tmp_path) == lines


def test_render_line_without_phase_or_location():
    event = dict.fromkeys(CANONICAL_FIELDS)
    event.update(timestamp="2026-11-24T08:25:05.123Z", filename="nanoseal/seal/ttt.py", function="train_adapters",
                 line_num=88, db_phase="ttt", method="seal", message="step 3")
    assert render_line(event) == "2026-11-24T08:25:05.123Z [ttt] seal.ttt:train_adapters:88 method=seal | step 3"
    event.update(db_phase=None, method=None, filename=None, line_num=None, system_section="web")
    assert render_line(event) == "2026-11-24T08:25:05.123Z [-] ?:train_adapters:? section=web | step 3"


@pytest.mark.parametrize("phase", ["setup", "train", "", "TTT"])
def test_invalid_phase_rejected(tmp_path, phase):
    events = EventLog(str(tmp_path))
    with pytest.raises(ValueError, match="db_phase"):
        events.log("x", db_phase=phase)
    assert not os.path.exists(os.path.join(tmp_path, "events.jsonl")), "nothing is written for a rejected event"


def test_truncated_last_line_skipped(tmp_path):
    events = EventLog(str(tmp_path))
    for i in range(3):
        events.log(f"event {i}", db_phase="restem")
    with open(os.path.join(tmp_path, "events.jsonl"), "ab") as f:
        f.write(b'{"filename": "x.py", "timest')  # a crash mid-write
    rows, skipped = scan_events(str(tmp_path))
    assert [r["message"] for r in rows] == ["event 0", "event 1", "event 2"] and skipped == 1
    assert len(read_events(str(tmp_path))) == 3
    assert scan_events(str(tmp_path / "missing")) == ([], 0)


def test_logging_handler_forwards_records(tmp_path):
    events = EventLog(str(tmp_path))
    logger = logging.getLogger("nanoseal.test_logs_handler")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = EventLogHandler(events, db_phase="ttt", method="seal")
    logger.addHandler(handler)
    try:
        line = sys._getframe().f_lineno + 1
        logger.info("dropped demonstration %d", 2)
        logger.info("phase override", extra={"db_phase": "eval"})
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed")
        logger.info("bad phase", extra={"db_phase": "nonsense"})  # handleError, never raised
    finally:
        logger.removeHandler(handler)
    rows = read_events(str(tmp_path))
    assert len(rows) == 3
    assert all(tuple(r) == CANONICAL_FIELDS for r in rows)
    first = rows[0]
    assert (first["message"], first["filename"], first["function"], first["line_num"]) == (
        "dropped demonstration 2", THIS_FILE, "test_logging_handler_forwards_records", line)
    assert (first["db_phase"], first["method"], first["system_section"]) == ("ttt", "seal", logger.name)
    assert rows[1]["db_phase"] == "eval"
    assert rows[2]["error"] == "KeyError: 'k'"


def _append_many(run_dir: str, tag: str, n: int) -> None:
    events = EventLog(run_dir)
    for i in range(n):
        events.log(f"{tag}-{i} " + tag * 20000, db_phase="ttt")


def test_concurrent_appends_whole_lines(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), tag, 40)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"
    rows, skipped = scan_events(str(tmp_path))
    assert skipped == 0 and len(rows) == 80
    for tag in "ab":
        assert sorted(r["message"].split()[0] for r in rows if r["message"].startswith(tag)) == \
            sorted(f"{tag}-{i}" for i in range(40))
    assert all(r["message"].endswith(r["message"][0] * 20000) for r in rows)
    assert len(human_lines(tmp_path)) == 80
