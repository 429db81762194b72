"""Generated bad input (hypothesis): malformed ARC task files, checkpoint metas, command-line flags, self-edit strings
and HTTP bodies. The contract: a non-zero exit with one line on stderr (or an HTTP 4xx whose JSON detail is one
line), never a traceback or an "internal error", and the server answers /health afterwards. Whole file: well under
a minute (max_examples and deadlines below; derandomized, so CI runs the same examples every time)."""

import contextlib
import io
import json
import math
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoseal.arc.data import load_task_file
from nanoseal.checkpoint import save_checkpoint
from nanoseal.cli import build_parser, main
from nanoseal.common import MAX_JSON_DEPTH, NanosealError, loads_json
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, parse_self_edit

from conftest import make_tiny_model

EDIT_TEXT = json.dumps(DEFAULT_SELF_EDIT.to_json())

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# any JSON value (NaN and +-Infinity included: Python's json writes them)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def nested(depth: int, inner: str = "1") -> str:
    """JSON arrays nested `depth` deep."""
    return "[" * depth + inner + "]" * depth


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status: int, err: str, expected_status: int = 2) -> None:
    """Refused the way bad input is: the status, one line on stderr, neither a traceback nor a bug report."""
    assert status == expected_status, (status, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err


# ----------------------------------------------------------------------------- ARC task files

GOOD_TASK = {"train": [{"input": [[0, 1], [2, 3]], "output": [[3, 2], [1, 0]]}, {"input": [[5]], "output": [[5]]}],
             "test": [{"input": [[1, 1]], "output": [[1, 1]]}]}


@st.composite
def mutated_task(draw) -> str:
    """GOOD_TASK with one value somewhere replaced by any JSON value (or a key removed)."""
    task = json.loads(json.dumps(GOOD_TASK))
    node, path = task, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append((node, key))
        node = node[key]
    if not path:
        return json.dumps(draw(json_values))
    parent, key = path[-1]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(json_values)
    return json.dumps(task)


task_texts = st.one_of(
    mutated_task(),
    json_values.map(json.dumps),
    st.integers(MAX_JSON_DEPTH + 1, 100_000).map(lambda d: '{"train": ' + nested(d) + ', "test": []}'),
    st.sampled_from(['{"train": [{"input": [[NaN]], "output": [[1]]}], "test": [{"input": [[1]]}]}',
                     '{"train": [{"input": [[1e999]], "output": [[1]]}], "test": [{"input": [[1]]}]}',
                     '{"train": [{"input": [[' + "9" * 5000 + ']], "output": [[1]]}], "test": [{"input": [[1]]}]}']),
    st.integers(1, 200).map(lambda n: json.dumps(GOOD_TASK)[:n]),  # cut short
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=task_texts, raw=st.booleans())
def test_malformed_task_files_are_one_line_each(scratch, text, raw):
    path = scratch / "task.json"
    path.write_bytes(text.encode("latin-1", "replace") if raw else text.encode("utf-8", "surrogatepass"))
    try:
        load_task_file(path)
        valid = True
    except NanosealError as e:
        valid = False
        assert "\n" not in str(e) and str(e).startswith(str(path))
    status, out, err = run_cli(["arc", "validate", str(path)])
    assert status == (0 if valid else 1) and "Traceback" not in out + err
    assert len(out.splitlines()) == (0 if valid else 1) and len(err.splitlines()) == 1
    if not valid:
        assert_one_line_error(*run_cli(["arc", "show", str(path)])[::2])


# ----------------------------------------------------------------------------- checkpoint metas

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A real tiny checkpoint (tokenizer, model_000001.pt, meta) whose meta each example overwrites."""
    base = tmp_path_factory.mktemp("meta-fuzz")
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=256)
    tokenizer.save(str(base / "tokenizer"))
    folder = base / "base_checkpoints" / "d2"
    save_checkpoint(str(folder), 1, model.state_dict(), None, {"model_config": model.config.to_dict(), "step": 1})
    return folder, model.config.to_dict()


# sizes that are not positive ints, that break divisibility or the weights' shapes, or that no machine holds
# (positive but merely large values are left out: they are valid and would be allocated)
bad_sizes = st.one_of(st.integers(-10**6, 0), st.integers(10**12, 10**40), st.sampled_from([1, 3, 5, 7, 33, 65, 96]),
                      st.floats(), st.text(max_size=6), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@st.composite
def bad_metas(draw, config: dict) -> bytes:
    kind = draw(st.sampled_from(["field", "missing", "extra", "not object", "deep", "nan", "bytes"]))
    cfg = dict(config)
    if kind == "field":
        for field in draw(st.lists(st.sampled_from(sorted(config)), min_size=1, max_size=3, unique=True)):
            cfg[field] = draw(bad_sizes)
    elif kind == "missing":
        del cfg[draw(st.sampled_from(sorted(config)))]
    elif kind == "extra":
        cfg[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in config))] = draw(json_values)
    elif kind == "not object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "deep":
        return ('{"model_config": ' + nested(draw(st.integers(MAX_JSON_DEPTH + 1, 50_000))) + "}").encode()
    elif kind == "nan":
        return json.dumps({"model_config": dict(cfg, n_embd=float("nan"))}).encode()
    else:
        return draw(st.binary(max_size=40))
    return json.dumps({"model_config": cfg, "step": 1}).encode()


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_malformed_metas_are_refused_in_one_line_before_allocation(checkpoint, data):
    folder, config = checkpoint
    meta = data.draw(bad_metas(config))
    (folder / "meta_000001.json").write_bytes(meta)
    status, out, err = run_cli(["chat", "--checkpoint", str(folder), "-p", "Hi", "--max-tokens", "1",
                                "--device", "cpu", "-t", "0"])
    if status != 0:  # a meta may come out valid (a size replaced by its own value): then the chat just works
        assert_one_line_error(status, err)


def test_the_implausible_model_of_the_report_is_refused_naming_its_size(checkpoint):
    folder, config = checkpoint
    (folder / "meta_000001.json").write_text(json.dumps({"model_config": dict(config, n_embd=10_000_000)}))
    status, _, err = run_cli(["chat", "--checkpoint", str(folder), "-p", "Hi", "--device", "cpu"])
    assert_one_line_error(status, err)
    assert "model_config asks for" in err and "n_embd 10,000,000" in err and "GB" in err
    (folder / "meta_000001.json").write_text(json.dumps({"model_config": config}))


# ----------------------------------------------------------------------------- command-line flags

INF = None
FLAGS = [  # (argv before the flag, flag, int or float, lowest, highest, lowest excluded)
    (["chat"], "--temperature", float, 0, 10, False), (["chat"], "--top-k", int, 0, INF, False),
    (["chat"], "--max-tokens", int, 1, 100_000, False), (["chat"], "--seed", int, 0, 2**32 - 1, False),
    (["chat"], "--step", int, 0, INF, False),
    (["serve"], "--port", int, 1, 65535, False), (["serve"], "--temperature", float, 0, 2, False),
    (["serve"], "--top-k", int, 0, 200, False), (["serve"], "--max-tokens", int, 1, 4096, False),
    (["serve"], "--max-queue", int, 0, 1024, False), (["serve"], "--max-policies", int, 1, 64, False),
    (["pretrain"], "--steps", int, 1, INF, False), (["pretrain"], "--minutes", float, 0, INF, True),
    (["pretrain"], "--seed", int, 0, 2**32 - 1, False), (["sft"], "--steps", int, 1, INF, False),
    (["sft"], "--minutes", float, 0, INF, True),
    (["train-tokenizer"], "--vocab-size", int, 265, 2**20, False), (["train-tokenizer"], "--seed", int, 0, 2**32 - 1,
                                                                   False),
    (["arc", "gen", "flip_lr"], "--seed", int, 0, 999_999_999, False), (["arc", "gen", "flip_lr"], "--k", int, 1, 100,
                                                                        False),
    (["lora-info"], "--rank", int, 1, INF, False), (["lora-info"], "--depth", int, 1, 1000, False),
    (["lora-info"], "--n-layer", int, 1, 1000, False), (["lora-info"], "--n-embd", int, 1, INF, False),
]

flag_values = st.one_of(
    st.integers(-10**25, 10**25).map(str), st.floats().map(repr), st.floats().map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "-0", "", " ", "0x10", "1_000", "5.", "1e3", "2**8", "-"]),
    st.text(max_size=8).filter(lambda t: t != "--"))  # argparse drops a "--" value (--flag=-- is the default)


def expected_value(text: str, kind, lo, hi, lo_open):
    """The value a flag should take, or None where it should be refused."""
    try:
        value = kind(text)
    except ValueError:
        return None
    if kind is float and not math.isfinite(value):
        return None
    if value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
        return None
    return value


@settings(FUZZ, max_examples=300)
@given(case=st.sampled_from(FLAGS), text=flag_values)
def test_numeric_flags_take_exactly_their_range(case, text):
    prefix, flag, kind, lo, hi, lo_open = case
    argv = [*prefix, f"{flag}={text}"]
    want = expected_value(text, kind, lo, hi, lo_open)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
            status = 0
        except SystemExit as e:
            status = e.code
    if want is None:
        assert_one_line_error(status, err.getvalue())
        assert flag in err.getvalue() and "(see nanoseal" in err.getvalue()
    else:
        assert status == 0, err.getvalue()
        assert getattr(args, flag.lstrip("-").replace("-", "_")) == want


@pytest.mark.parametrize("argv", [
    ["chat", "-t", "-5"], ["chat", "--temperature", "nan"], ["chat", "-k", "-1"], ["chat", "--max-tokens", "0"],
    ["serve", "--port", "70000"], ["pretrain", "--minutes", "inf"], ["pretrain", "--steps", "0"],
    ["sft", "--seed", "-3"], ["train-tokenizer", "--vocab-size", "100"], ["arc", "gen", "flip_lr", "--k", "0"],
    ["chat", "--max-tokens", "1" * 5000], ["pretrain", "--no-such-flag"], [], ["chat", "--device", "tpu:0"],
    ["lora-info", "--n-embd", "770", "--n-head", "70"], ["lora-info", "--n-head", "5"],
    ["pretrain", "--preset", "micro", "--device", "cuda:99"]])
def test_bad_flags_end_the_command_in_one_line(argv, monkeypatch, tmp_path):
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(tmp_path))
    assert_one_line_error(*run_cli(argv)[::2])


def test_a_run_dir_or_base_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(tmp_path / "base"))
    status, _, err = run_cli(["seal", "--run-dir", str(a_file), "--checkpoint", str(tmp_path)])
    assert_one_line_error(status, err)
    assert str(a_file) in err
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(a_file))
    status, _, err = run_cli(["chat", "-p", "Hi"])
    assert_one_line_error(status, err)
    assert f"{a_file} is a file, expected a folder" in err


# ----------------------------------------------------------------------------- self-edit strings

@FUZZ
@given(text=st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                      st.integers(100, 100_000).map(lambda d: nested(d, "{}")),
                      st.integers(1, len(EDIT_TEXT)).map(lambda n: EDIT_TEXT[:n])))
def test_any_self_edit_string_is_parsed_or_refused_in_one_line(text):
    edit, reason = parse_self_edit(text)
    assert (edit is None) != (reason is None)
    assert reason is None or "\n" not in reason


@FUZZ
@given(text=st.one_of(st.text(max_size=100), json_values.map(json.dumps),
                      st.integers(0, 3000).map(nested)))
def test_bounded_reader_returns_json_or_one_line(text):
    try:
        value = loads_json(text, "x")
    except NanosealError as e:
        assert str(e).startswith("x: ") and "\n" not in str(e)
        return
    assert value == json.loads(text)  # what it accepts decodes as Python's json does


# ----------------------------------------------------------------------------- HTTP bodies

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi, uvicorn) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from nanoseal.web.app import create_app  # noqa: E402
from nanoseal.web.hub import Limits, ModelHub  # noqa: E402

LIMITS = Limits()
VALID_CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("http-fuzz")
    (root / "adapters").mkdir()
    (root / "runs").mkdir()
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=256)
    hub = ModelHub(model, tokenizer, {"checkpoint_dir": str(root)}, "cpu", adapters_dir=str(root / "adapters"),
                   runs_dir=str(root / "runs"))
    with TestClient(create_app(hub), raise_server_exceptions=False) as c:
        yield c


def out_of(lo, hi, integer: bool):
    """Numbers outside [lo, hi] (and non-finite floats, for floats)."""
    if integer:
        return st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1)
    return st.floats(max_value=lo, exclude_max=True) | st.floats(min_value=hi, exclude_min=True) | \
        st.sampled_from([math.nan, math.inf, -math.inf])


def _number_text(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# values no number field accepts (a numeric string would be converted by pydantic, so none is drawn)
wrong_types = st.one_of(st.text(max_size=5).filter(lambda t: not _number_text(t)), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def bad_chat_body(draw) -> bytes:
    """A chat request that must be refused: one field out of range or of the wrong type, or not a request at all."""
    body = json.loads(json.dumps(VALID_CHAT))
    kind = draw(st.sampled_from(["temperature", "top_k", "max_tokens", "seed", "model", "messages", "role", "content",
                                 "any json", "bytes", "deep", "huge"]))
    if kind == "temperature":
        body["temperature"] = draw(out_of(0.0, LIMITS.max_temperature, False) | wrong_types)
    elif kind == "top_k":
        body["top_k"] = draw(out_of(0, LIMITS.max_top_k, True) | wrong_types | st.floats().filter(
            lambda x: not x.is_integer() if math.isfinite(x) else True))
    elif kind == "max_tokens":
        body["max_tokens"] = draw(out_of(1, LIMITS.max_tokens, True) | wrong_types)
    elif kind == "seed":
        body["seed"] = draw(out_of(0, 2**32 - 1, True) | wrong_types)
    elif kind == "model":
        body["model"] = draw(st.text(max_size=30).filter(lambda m: m not in ("", "base")) | st.integers())
    elif kind == "messages":
        body["messages"] = draw(st.just([]) | wrong_types | st.lists(json_values, min_size=1, max_size=3).filter(
            lambda ms: not all(isinstance(m, dict) and m.get("role") in ("user", "assistant")
                               and isinstance(m.get("content"), str) and m["content"] for m in ms)))
    elif kind == "role":
        body["messages"][0]["role"] = draw(st.text(max_size=10).filter(lambda r: r not in ("user", "assistant")))
    elif kind == "content":
        body["messages"][0]["content"] = draw(st.just("") | st.integers(LIMITS.max_message_chars + 1, 20_000).map(
            lambda n: "x" * n) | st.integers() | st.lists(st.text(), max_size=2) | st.none())
    elif kind == "any json":
        return json.dumps(draw(json_values)).encode()
    elif kind == "bytes":
        return draw(st.binary(max_size=64))
    elif kind == "deep":
        return ('{"messages": ' + nested(draw(st.integers(MAX_JSON_DEPTH + 1, 300_000))) + "}").encode()
    else:
        return b'{"messages": "' + b"x" * (LIMITS.max_body_bytes + 1) + b'"}'
    return json.dumps(body).encode()


def assert_4xx_one_line(r) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail


@settings(FUZZ, max_examples=80)
@given(body=bad_chat_body())
def test_malformed_chat_bodies_get_4xx_json_and_the_server_stays_up(client, body):
    r = client.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_4xx_one_line(r)
    assert client.get("/health").status_code == 200


@st.composite
def bad_predict_body(draw) -> bytes:
    """A prediction request that must be refused (a task id that cannot name a task, views or seed out of range)."""
    body = {"task": "flip_lr-3", "views": 1}
    kind = draw(st.sampled_from(["task", "views", "seed", "run", "model"]))
    if kind == "task":
        body["task"] = draw(st.text(max_size=40).filter(lambda t: not t.isascii() or "/" in t or "." in t or not t)
                            | st.integers() | st.none())
    elif kind == "views":
        body["views"] = draw(out_of(1, LIMITS.max_views, True) | wrong_types)
    elif kind == "seed":
        body["seed"] = draw(out_of(0, 2**32 - 1, True) | wrong_types)
    elif kind == "run":
        body["run"] = draw(st.text(min_size=1, max_size=20))
    else:
        body["model"] = draw(st.text(min_size=1, max_size=30).filter(lambda m: m != "base"))
    return json.dumps(body).encode()


@settings(FUZZ, max_examples=60)
@given(body=bad_predict_body())
def test_malformed_predict_bodies_get_4xx_json(client, body):
    r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert_4xx_one_line(r)


@settings(FUZZ, max_examples=80)
@given(route=st.sampled_from(["/api/task?id={}", "/api/tasks?source={}", "/api/runs/{}", "/api/runs/{}/selfedits",
                              "/api/runs/x/selfedits?limit={}", "/api/runs/x/selfedits?offset={}",
                              "/api/runs/{}/plots/a.png", "/api/runs/x/plots/{}", "/api/runs/{}/report",
                              "/api/tasks?source=run&run={}"]),
       text=st.text(max_size=30))
def test_any_query_or_path_gets_json_and_never_a_5xx(client, route, text):
    r = client.get(route.format(urllib.parse.quote(text, safe="")))
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert_4xx_one_line(r)


def test_a_chunked_body_over_the_limit_is_413_and_the_server_still_chats(client):
    def chunks():
        for _ in range(LIMITS.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    r = client.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over" in r.json()["detail"]
    with client.stream("POST", "/chat/completions", json=VALID_CHAT) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == 'data: {"done": true}'
