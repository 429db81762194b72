"""End-to-end tests of the web UI in headless Chromium: the real `nanoseal serve` in a subprocess on a free port,
driven by Playwright (Debian's chromium, executable_path; no browser download). Screenshots of each view go
to $NANOSEAL_SCREENSHOTS, else a pytest temp folder; the folder is printed. Skipped, with the reason, when
Playwright or a chromium binary is missing (.ci/run installs chromium)."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from test_web import ANSWER, FOX, build_world, free_port

CHROMIUM = os.environ.get("NANOSEAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# as root, in a sandbox with a closed network: no sandbox, no GPU, no background connections
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium "
                                "chromium-driver, or set NANOSEAL_CHROMIUM)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    """`python -m nanoseal serve` over the shared test world; yields its base URL."""
    world = build_world(tmp_path_factory, tokenizer)
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "nanoseal", "serve", "--checkpoint", world["base"],
                             "--runs-dir", world["runs"], "--adapters-dir", world["adapters"], "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"nanoseal serve exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if json.load(r)["status"] == "ok":
                    break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail("nanoseal serve did not answer /health within 60 s")
    yield url, world
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where screenshots go (printed, so it can be found)."""
    folder = os.environ.get("NANOSEAL_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, shots, capsys):
    """A fresh page on the app, ready (models and task sources loaded), failing on any page error."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url + "/")
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    with capsys.disabled():
        print(f"\n[web UI screenshots: {shots}]")
    assert not errors, errors


def send(page, text: str) -> str:
    """Type a message, send it with Enter, wait for the streamed reply to finish; return the reply."""
    n = page.locator(".msg.assistant.done").count()
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")
    page.wait_for_function(f"document.querySelectorAll('.msg.assistant.done').length > {n}")
    return page.locator(".msg.assistant .text").last.text_content()


def test_chat_streams_and_adapter_switch(page, shots):
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "40")
    base_reply = send(page, "hi")
    events = int(page.locator(".msg.assistant .text").last.get_attribute("data-events"))
    assert base_reply and events >= 3, events  # it arrived piece by piece over SSE, not in one answer
    assert page.locator(".msg.user").last.text_content().endswith("hi")
    assert "assistant · base" in page.locator(".msg.assistant .who").last.text_content()
    # switch to the adapter trained to answer "Hello" with FOX; a new chat, so the history is just "Hello"
    page.select_option("#chat-model", "adapter:fox")
    page.click("#chat-new")
    assert send(page, "Hello") == FOX
    assert "adapter:fox" in page.locator(".msg.assistant .who").last.text_content()
    page.screenshot(path=os.path.join(shots, "chat.png"))
    # and back to the base model: a different answer
    page.select_option("#chat-model", "base")
    page.click("#chat-new")
    assert send(page, "Hello") != FOX


def test_arc_task_grids_and_side_by_side_prediction(page, shots, server):
    from nanoseal.arc.gen import make_task

    page.click("#tab-arc")
    page.select_option("#task-source", "families")
    page.fill("#task-id", "flip_lr-6")
    page.click("#task-open")
    page.wait_for_selector("#task-view .pair.demo .grid")
    task = make_task("flip_lr", 6)
    assert page.locator("#task-view h2").text_content() == "flip_lr-6"
    assert page.locator(".pair.demo").count() == len(task.train) and page.locator(".pair.test").count() == 1
    first_input = task.train[0][0]
    grid = page.locator(".pair.demo").first.locator(".grid").first
    assert grid.get_attribute("data-shape") == f"{len(first_input)}x{len(first_input[0])}"
    colours = grid.locator(".cell").evaluate_all("cells => cells.map(c => c.className)")
    assert colours == [f"cell c{v}" for row in first_input for v in row]  # drawn cell by cell, ARC palette
    assert page.locator(".cell.c0").first.evaluate("c => getComputedStyle(c).backgroundColor") == "rgb(0, 0, 0)"
    # predict with the base (left) and the adapter that memorised this task (right), 3 augmented views each
    page.select_option("#predict-model-a", "base")
    page.select_option("#predict-model-b", f"adapter:{ANSWER}")
    page.select_option("#predict-views", "3")
    page.click("#predict")
    page.wait_for_selector("#predict-b h3 .badge", timeout=120_000)
    for side, model in (("a", "base"), ("b", f"adapter:{ANSWER}")):
        head = page.locator(f"#predict-{side} h3").text_content()
        assert head.startswith(model) and "3 view(s)" in head and "solved" in head
        shown = page.locator(f"#predict-{side} .attempt").count() + page.locator(f"#predict-{side} .no-attempt").count()
        assert shown >= 1
    assert page.locator("#predict-b h3 .badge").text_content().strip() == "solved"
    first = page.locator("#predict-b .attempt").first
    assert first.locator(".badge").text_content() == "attempt 1 ✓ right"
    truth = task.test[0][1]
    assert first.locator(".cell").evaluate_all("cells => cells.map(c => c.className)") == [
        f"cell c{v}" for row in truth for v in row]
    page.screenshot(path=os.path.join(shots, "arc.png"), full_page=True)
    # an unknown task is a clear error, not a blank page
    page.fill("#task-id", "zzzz_9")
    page.click("#task-open")
    page.wait_for_function("document.querySelector('#task-error').textContent.length > 0")
    assert "neither an ARC" in page.locator("#task-error").text_content()


def test_a_late_task_list_does_not_write_into_the_id_field_being_typed_in(page):
    held = []
    page.route("**/api/tasks?source=families*", lambda route: held.append(route))  # the list arrives late
    page.click("#tab-arc")
    page.select_option("#task-source", "families")  # clears the id field and asks for the list
    for _ in range(500):  # until the request is out and held (Playwright serves routes while it waits)
        if held:
            break
        page.wait_for_timeout(10)
    page.click("#task-id")  # the user is in the empty field, about to type
    assert page.input_value("#task-id") == "" and len(held) == 1
    held[0].continue_()
    page.wait_for_function("document.querySelector('#task-note').textContent.includes('families')")
    assert page.input_value("#task-id") == ""  # not "<first family>-1", which the typing would have appended to
    page.keyboard.type("flip_lr-6")
    page.keyboard.press("Enter")
    page.wait_for_selector("#task-view .pair.demo .grid")
    assert page.locator("#task-view h2").text_content() == "flip_lr-6"


def test_runs_view_shows_the_report(page, shots, server):
    from nanoseal.report import load_selfedits

    _, world = server
    run_dir = os.path.join(world["runs"], world["run"])
    page.click("#tab-runs")
    page.click("#runs-list button[data-run='demo']")
    page.wait_for_selector("#selfedits table")
    assert page.locator("#run-view h2").text_content() == "demo"
    baselines = page.locator("#run-view table").first.locator("tbody tr")
    assert baselines.count() == len(json.load(open(os.path.join(run_dir, "results.json")))["methods"])
    assert baselines.first.locator("td").first.text_content() == "ICL (no adaptation)"
    page.wait_for_function("(imgs => imgs.length == 3 && imgs.every(i => i.complete && i.naturalWidth > 0))"
                           "(Array.from(document.querySelectorAll('.plots img')))")
    rows = load_selfedits(run_dir)
    assert page.locator("#selfedits tbody tr").count() == len(rows)
    page.screenshot(path=os.path.join(shots, "runs.png"), full_page=True)
    # filter the self-edits by task, then jump to that task's grids in the ARC viewer
    page.select_option("#selfedit-task", "flip_lr-6")
    page.wait_for_function("document.querySelectorAll('#selfedits tbody tr').length == "
                           f"{sum(r['task'] == 'flip_lr-6' for r in rows)}")
    page.locator("#selfedits tbody tr a").first.click()
    page.wait_for_selector("#view-arc.active #task-view .grid")
    assert page.locator("#task-view h2").text_content() == "flip_lr-6 (train)"
