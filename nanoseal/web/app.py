"""
The FastAPI app of `nanoseal serve`: one static page (nanoseal/web/static/) and a JSON API over a ModelHub.

    from nanoseal.web.app import create_app
    from nanoseal.web.hub import ModelHub
    app = create_app(ModelHub.load("~/.cache/nanoseal", adapters_dir="adapters", runs_dir="runs"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)  -- or: nanoseal serve --checkpoint DIR

Endpoints
  GET  /                              the page (chat, ARC viewer, runs)
  POST /chat/completions              nanochat chat_web's API: {messages, temperature, max_tokens, top_k}
                                      (+ optional model, seed); streams `data: {"token": ...}` lines, then
                                      `data: {"done": true}` (an error mid-stream: `data: {"error": ...}`)
  GET  /health, GET /stats            liveness; counters, queue and caches
  GET  /api/models                    base, adapters (--adapters-dir), round policies of runs (--runs-dir)
  GET  /api/tasks?source=S[&run=R]    arcagi1 | arcagi2 | families | run (the tasks of run R)
  GET  /api/task?id=ID[&run=R]        one task's grids
  POST /api/predict                   {task, run?, model, views}: the 2 voted attempts per test input
  GET  /api/runs, /api/runs/{run}     run directories; one run's baselines, rounds, plots, policies
  GET  /api/runs/{run}/selfedits      self-edit rows with rewards (?task=&method=&phase=&limit=&offset=)
  GET  /api/runs/{run}/plots/{file}   a plots/*.png;  GET /api/runs/{run}/report: report.md

Errors are JSON {"detail": "<one line>"}: 400 bad input (including names with '..' or absolute paths, and a
body that is not JSON, nests deeper than 64 levels or holds NaN/Infinity: every body is checked by the bounded
reader, nanoseal.common.loads_json, before it is decoded for the endpoint), 404 unknown run / adapter / task /
plot, 413 body too large (with or without a Content-Length), 503 generation queue full. A client that
disconnects stops its generation at the next token.
"""

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanoseal.chat import BadName, NotFound, conversation_tokens, stream_text
from nanoseal.common import NanosealError, loads_json
from nanoseal.engine import Engine
from nanoseal.web import data
from nanoseal.web.hub import Busy, Limits, ModelHub, Session

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATUS = {BadName: 400, NotFound: 404, Busy: 503}
MAX_SEED = 2**32 - 1  # the seeds torch, numpy and random all accept


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    messages: list[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    top_k: int | None = None
    model: str | None = None  # nanoseal's addition: base | adapter:<name> | policy:<run>/<round>
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class PredictRequest(BaseModel):
    task: str
    run: str | None = None
    model: str | None = None
    views: int | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)


def one_line(e: BaseException) -> str:
    """An exception as one line of text."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:500]


def check_chat(req: ChatRequest, limits: Limits) -> None:
    """Refuse a chat request over any limit (NanosealError -> HTTP 400), as nanochat's chat_web does."""
    if not req.messages:
        raise NanosealError("at least one message is required")
    if len(req.messages) > limits.max_messages:
        raise NanosealError(f"too many messages: {len(req.messages)}, at most {limits.max_messages} per request")
    total = 0
    for i, m in enumerate(req.messages):
        if m.role not in ("user", "assistant"):
            raise NanosealError(f"message {i} has role {m.role!r}; expected 'user' or 'assistant'")
        if not m.content:
            raise NanosealError(f"message {i} has empty content")
        if len(m.content) > limits.max_message_chars:
            raise NanosealError(f"message {i} is too long: {len(m.content)} characters, at most "
                                f"{limits.max_message_chars}")
        total += len(m.content)
    if total > limits.max_total_chars:
        raise NanosealError(f"conversation is too long: {total} characters, at most {limits.max_total_chars}")
    if req.temperature is not None and not 0.0 <= req.temperature <= limits.max_temperature:
        raise NanosealError(f"temperature must be between 0 and {limits.max_temperature}")
    if req.top_k is not None and not 0 <= req.top_k <= limits.max_top_k:
        raise NanosealError(f"top_k must be between 0 and {limits.max_top_k}")
    if req.max_tokens is not None and not 1 <= req.max_tokens <= limits.max_tokens:
        raise NanosealError(f"max_tokens must be between 1 and {limits.max_tokens}")


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator (so a disconnect runs the generator's finally)."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


class BodyGuard:
    """ASGI middleware: a request body over max_bytes gets HTTP 413 (checked on Content-Length first, then on the
    bytes actually received, so a chunked body cannot bypass it); a body that the bounded JSON reader refuses
    (not JSON, too deep, NaN/Infinity) gets HTTP 400 before the endpoint's decoder sees it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send, 413, f"request body over {self.max_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, 413, f"request body over {self.max_bytes} bytes")
        body = b"".join(chunks)
        if body:
            try:
                loads_json(body, "request body")
            except NanosealError as e:
                return await self._refuse(scope, receive, send, 400, str(e))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as streaming responses expect

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def create_app(hub: ModelHub, defaults: dict | None = None) -> FastAPI:
    """The app serving `hub`; defaults: temperature / top_k / max_tokens used when a request leaves them out."""
    defaults = {"temperature": 0.8, "top_k": 50, "max_tokens": 512, **(defaults or {})}
    limits = hub.limits
    executor = ThreadPoolExecutor(max_workers=limits.max_queue + 2, thread_name_prefix="nanoseal-web")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="nanoseal", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.hub = hub
    app.add_middleware(BodyGuard, max_bytes=limits.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ errors: one JSON line each

    @app.exception_handler(NanosealError)
    async def nanoseal_error(request: Request, e: NanosealError):
        status = next((s for cls, s in STATUS.items() if isinstance(e, cls)), 400)
        return JSONResponse({"detail": one_line(e)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}" if where else str(first.get("msg"))},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse({"detail": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        return JSONResponse({"detail": f"internal error: {one_line(e)}"}, status_code=500)

    # ------------------------------------------------------------------ sessions on the worker threads

    async def open_session(ref) -> Session:
        """Queue for the model (503 when the queue is full); the session holds it until closed."""
        if not hub.admit():
            raise Busy(f"busy: {limits.max_queue} requests already wait for the model; try again shortly")
        future = asyncio.get_running_loop().run_in_executor(executor, hub.open, ref)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # the client went away while queued: release once the thread is done
            future.add_done_callback(lambda f: hub.leave() if f.cancelled() or f.exception() else f.result().close())
            raise
        except BaseException:
            hub.leave()
            raise

    async def run_in_session(session: Session, fn, *args):
        """fn(*args) on a worker thread; the session is closed there when fn returns (even if we are cancelled)."""
        def job():
            try:
                return fn(*args)
            finally:
                session.close()
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, job))

    # ------------------------------------------------------------------ page, health, stats

    @app.get("/")
    async def index():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "ready": True, "checkpoint": hub.meta.get("checkpoint_dir"),
                "device": str(hub.device), "params": hub.base_params,
                "sequence_len": hub.model.config.sequence_len}

    @app.get("/stats")
    async def stats():
        return {**hub.stats(), "limits": limits.__dict__, "defaults": defaults}

    @app.get("/api/models")
    async def models():
        return {"models": hub.models(), "defaults": defaults, "limits": limits.__dict__}

    # ------------------------------------------------------------------ chat

    @app.post("/chat/completions")
    async def chat_completions(req: ChatRequest):
        check_chat(req, limits)
        ref = hub.parse(req.model)
        temperature = defaults["temperature"] if req.temperature is None else req.temperature
        top_k = defaults["top_k"] if req.top_k is None else req.top_k
        max_tokens = min(limits.max_tokens, defaults["max_tokens"] if req.max_tokens is None else req.max_tokens)
        seed = random.randint(0, 2**31 - 1) if req.seed is None else req.seed
        session = await open_session(ref)
        try:
            tokens = conversation_tokens(session.tokenizer, [m.model_dump() for m in req.messages])
            context = session.model.config.sequence_len
            if len(tokens) >= context:
                raise NanosealError(f"the conversation is {len(tokens)} tokens, the model's context is {context}: "
                                    "start a new chat")
        except BaseException:
            session.close()
            raise
        hub.count("chat_requests")
        loop, queue, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def put(kind: str, value=None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (server shutting down)
                cancel.set()

        def work() -> None:
            outcome, counter = "chat_completed", {"tokens": 0}
            try:
                with session.context():
                    for piece in stream_text(Engine(session.model, session.tokenizer), tokens, max_tokens,
                                             temperature, top_k or None, seed, cancel.is_set, counter):
                        put("token", piece)
                if cancel.is_set():
                    outcome = "chat_cancelled"
            except Exception as e:  # reported in the stream: the status line is already sent
                outcome = "chat_errors"
                put("error", one_line(e))
            finally:
                hub.count(outcome)
                hub.count("tokens_generated", counter["tokens"])
                session.close()
                put("end")

        async def events():
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "end":
                        break
                    payload = {"token": value, "model": ref.id} if kind == "token" else {"error": value}
                    yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
                yield f"data: {json.dumps({'done': True})}\n\n"
            finally:
                cancel.set()  # a disconnect closes this generator: the worker stops at its next token

        executor.submit(work)
        return ClosingStreamingResponse(events(), media_type="text/event-stream",
                                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ ARC tasks

    def lookup_task(task_id: str, run: str | None):
        """(task, split) by id, among a run's tasks when run is given."""
        if run:
            if not isinstance(task_id, str) or not 0 < len(task_id) <= 200:
                raise BadName(f"bad task id {task_id!r}")
            tasks = data.run_tasks(hub.run_path(run))
            if task_id not in tasks:
                raise NotFound(f"task {task_id!r} is not one of run {run!r}'s tasks")
            return tasks[task_id]
        task = data.find_any_task(task_id)
        return task, None

    @app.get("/api/tasks")
    async def tasks(source: str = "arcagi1", run: str | None = None):
        if source == "run":
            if not run:
                raise NanosealError("source=run needs run=<name>")
            items = await asyncio.to_thread(data.run_tasks, hub.run_path(run))
            return {"source": source, "tasks": [{"id": i, "split": s} for i, (_, s) in items.items()]}
        return {"source": source, "tasks": await asyncio.to_thread(data.task_list, source)}

    @app.get("/api/task")
    async def task(id: str, run: str | None = None):
        t, split = await asyncio.to_thread(lookup_task, id, run)
        return data.task_json(t, split)

    @app.post("/api/predict")
    async def predict(req: PredictRequest):
        from nanoseal.seal.ttt import score

        views = limits.max_views if req.views is None else req.views
        if not 1 <= views <= limits.max_views:
            raise NanosealError(f"views must be between 1 and {limits.max_views}")
        t, _ = await asyncio.to_thread(lookup_task, req.task, req.run)
        ref = hub.parse(req.model)
        session = await open_session(ref)
        t0 = time.time()
        attempts = await run_in_session(session, hub.predict, session, t, views, req.seed)
        hub.count("predictions")
        truths = [o for _, o in t.test]
        tests = []
        for i, truth in enumerate(truths):
            grids = attempts[i] if i < len(attempts) else []
            correct = None if truth is None else [tuple(map(tuple, g)) == truth for g in grids]
            tests.append({"attempts": grids, "correct": correct})
        solved, accuracy = score(attempts, truths) if all(x is not None for x in truths) else (None, None)
        return {"model": ref.id, "task": t.id, "views": views, "seconds": round(time.time() - t0, 3),
                "tests": tests, "solved": solved, "cell_accuracy": accuracy}

    # ------------------------------------------------------------------ runs

    @app.get("/api/runs")
    async def runs():
        out = []
        for name in hub.run_names():
            path = os.path.join(hub.runs_dir, name)
            out.append({"name": name, "results": os.path.isfile(os.path.join(path, "results.json")),
                        "policies": hub.policy_rounds(path), "mtime": os.path.getmtime(path)})
        return {"runs_dir": hub.runs_dir, "runs": out}

    @app.get("/api/runs/{run}")
    async def run_summary(run: str):
        path = hub.run_path(run)
        return await asyncio.to_thread(data.run_summary, path, hub.policy_rounds(path))

    @app.get("/api/runs/{run}/selfedits")
    async def selfedits(run: str, task: str | None = None, method: str | None = None, phase: str | None = None,
                        limit: int = 200, offset: int = 0):
        if not 1 <= limit <= limits.max_rows or offset < 0:
            raise NanosealError(f"limit must be between 1 and {limits.max_rows}, offset >= 0")
        path = hub.run_path(run)
        return await asyncio.to_thread(data.selfedit_rows, path, task, method, phase, limit, offset)

    @app.get("/api/runs/{run}/plots/{name}")
    async def plot(run: str, name: str):
        return FileResponse(data.plot_path(hub.run_path(run), name), media_type="image/png")

    @app.get("/api/runs/{run}/report")
    async def report(run: str):
        path = os.path.join(hub.run_path(run), "report.md")
        if not os.path.isfile(path):
            raise NotFound(f"run {run!r} has no report.md yet")
        with open(path, encoding="utf-8", errors="replace") as f:
            return PlainTextResponse(f.read(), media_type="text/markdown; charset=utf-8")

    return app
