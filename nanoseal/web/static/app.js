// nanoseal web UI: chat (streamed over SSE), ARC task viewer with side-by-side predictions, SEAL runs.
// Talks to the JSON API of nanoseal/web/app.py; plain DOM code, no framework, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);

// el("div", {class: "x", onclick: f}, child, "text", ...): a DOM element; strings become text nodes (never HTML)
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// JSON request; throws Error(detail) on a non-2xx answer
async function api(path, options = {}) {
  const resp = await fetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new Error((body && body.detail) || `${resp.status} ${resp.statusText}`);
  return body;
}

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const num = (x, d = 4) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

// ---------------------------------------------------------------- tabs

function showView(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === name);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === `view-${name}`);
  if (name === "runs") loadRuns();
}
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showView(b.dataset.view));

// ---------------------------------------------------------------- models

let MODELS = [];

async function loadModels() {
  const info = await api("/api/models");
  MODELS = info.models;
  for (const select of document.querySelectorAll(".model-select")) {
    const previous = select.value;
    select.replaceChildren(...MODELS.map((m) => el("option", {value: m.id}, m.label)));
    if (previous && MODELS.some((m) => m.id === previous)) select.value = previous;
  }
  // side by side: base on the left, the first adapter (else the first other model) on the right
  const other = MODELS.find((m) => m.kind === "adapter") || MODELS.find((m) => m.kind !== "base");
  if (other && !$("#predict-model-b").dataset.touched) $("#predict-model-b").value = other.id;
  $("#chat-temperature").value = info.defaults.temperature;
  $("#chat-max-tokens").value = Math.min(info.defaults.max_tokens, info.limits.max_tokens);
  $("#chat-max-tokens").max = info.limits.max_tokens;
}
$("#predict-model-b").addEventListener("change", (e) => { e.target.dataset.touched = "1"; });

async function loadHealth() {
  try {
    const h = await api("/health");
    $("#status").textContent = `${h.checkpoint} · ${(h.params / 1e6).toFixed(2)}M params · ${h.device}`;
  } catch (e) {
    $("#status").textContent = `server unreachable: ${e.message}`;
  }
}

// ---------------------------------------------------------------- chat

let conversation = [];  // [{role, content}]
let controller = null;  // AbortController of the generation in flight

function addMessage(role, text, model) {
  const who = role === "user" ? "you" : `assistant · ${model}`;
  const body = el("span", {class: "text"}, text);
  const node = el("div", {class: `msg ${role}`}, el("span", {class: "who"}, who), body);
  $("#messages").append(node);
  $("#messages").scrollTop = $("#messages").scrollHeight;
  return body;
}

// POST /chat/completions and feed each streamed `data: {...}` event to onEvent
async function streamChat(payload, onEvent, signal) {
  const resp = await fetch("/chat/completions", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(payload), signal,
  });
  if (!resp.ok) {
    let detail = `${resp.status}`;
    try { detail = (await resp.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

async function sendChat(text) {
  $("#chat-error").textContent = "";
  const model = $("#chat-model").value;
  conversation.push({role: "user", content: text});
  addMessage("user", text);
  const out = addMessage("assistant", "", model);
  out.parentElement.classList.add("streaming");
  let reply = "";
  controller = new AbortController();
  $("#chat-send").disabled = true;
  $("#chat-stop").disabled = false;
  try {
    await streamChat({
      messages: conversation, model,
      temperature: Number($("#chat-temperature").value), max_tokens: Number($("#chat-max-tokens").value),
    }, (ev) => {
      if (ev.token !== undefined) {
        reply += ev.token;
        out.textContent = reply;
        out.dataset.events = String(Number(out.dataset.events || 0) + 1);  // streamed pieces so far
      }
      if (ev.error) $("#chat-error").textContent = ev.error;
      $("#messages").scrollTop = $("#messages").scrollHeight;
    }, controller.signal);
  } catch (e) {
    if (e.name !== "AbortError") $("#chat-error").textContent = e.message;
  } finally {
    out.parentElement.classList.remove("streaming");
    out.parentElement.classList.add("done");
    conversation.push({role: "assistant", content: reply || " "});
    controller = null;
    $("#chat-send").disabled = false;
    $("#chat-stop").disabled = true;
  }
}

$("#chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text || controller) return;
  $("#chat-input").value = "";
  sendChat(text);
});
$("#chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#chat-form").requestSubmit(); }
});
$("#chat-stop").addEventListener("click", () => controller && controller.abort());
$("#chat-new").addEventListener("click", () => {
  if (controller) controller.abort();
  conversation = [];
  $("#messages").replaceChildren();
  $("#chat-error").textContent = "";
});

// ---------------------------------------------------------------- ARC grids

function gridNode(grid, maxPx = 220) {
  if (!grid || !grid.length) return el("span", {class: "unknown"}, "?");
  const h = grid.length, w = grid[0].length;
  const cell = Math.max(4, Math.min(18, Math.floor(maxPx / Math.max(h, w))));
  const node = el("div", {class: "grid", style: `grid-template-columns: repeat(${w}, ${cell}px); --cell: ${cell}px`,
                          "data-shape": `${h}x${w}`});
  for (const row of grid) for (const v of row) node.append(el("div", {class: `cell c${v}`}));
  return node;
}

let currentTask = null;  // {id, run, data}

function drawTask(task) {
  const rows = [];
  task.train.forEach((p, i) => rows.push(el("div", {class: "pair demo"},
    el("span", {class: "label"}, `demo ${i + 1}`), gridNode(p.input), el("span", {class: "arrow"}, "→"),
    gridNode(p.output))));
  task.test.forEach((p, i) => rows.push(el("div", {class: "pair test"},
    el("span", {class: "label"}, `test ${i + 1}`), gridNode(p.input), el("span", {class: "arrow"}, "→"),
    p.output ? gridNode(p.output) : el("span", {class: "unknown"}, "unknown"))));
  $("#task-view").replaceChildren(el("h2", {}, `${task.id}${task.split ? ` (${task.split})` : ""}`),
                                  el("div", {class: "pairs"}, rows));
  $("#predict-panel").hidden = false;
  $("#predict-a").replaceChildren();
  $("#predict-b").replaceChildren();
}

async function openTask(id, run) {
  $("#task-error").textContent = "";
  const query = new URLSearchParams({id});
  if (run) query.set("run", run);
  try {
    const task = await api(`/api/task?${query}`);
    currentTask = {id, run, data: task};
    drawTask(task);
  } catch (e) {
    $("#task-error").textContent = e.message;
  }
}

async function loadTaskSource() {
  const source = $("#task-source").value;
  const [kind, run] = source.split(":", 2);
  const query = new URLSearchParams({source: kind});
  if (run) query.set("run", run);
  $("#task-note").textContent = "";
  try {
    const info = await api(`/api/tasks?${query}`);
    const ids = info.tasks.map((t) => (kind === "families" ? `${t.id}-1` : t.id));
    $("#task-ids").replaceChildren(...info.tasks.map((t, i) => el("option", {value: ids[i]},
      t.description ? `${t.split}: ${t.description}` : t.split)));
    $("#task-note").textContent = kind === "families"
      ? `${info.tasks.length} families: type <family>-<seed>` : `${info.tasks.length} tasks`;
    // a first id to open, unless the field has text or focus (typing there: a late list must not write into it)
    if (ids.length && !$("#task-id").value && document.activeElement !== $("#task-id")) $("#task-id").value = ids[0];
  } catch (e) {
    $("#task-error").textContent = e.message;
  }
}

async function loadTaskSources() {
  const options = [el("option", {value: "arcagi1"}, "ARC-AGI-1"), el("option", {value: "arcagi2"}, "ARC-AGI-2"),
                   el("option", {value: "families"}, "procedural families")];
  try {
    const runs = await api("/api/runs");
    for (const r of runs.runs) options.push(el("option", {value: `run:${r.name}`}, `run ${r.name}`));
  } catch (e) { /* no runs folder */ }
  const previous = $("#task-source").value;
  $("#task-source").replaceChildren(...options);
  if (previous) $("#task-source").value = previous;
}

$("#task-source").addEventListener("change", () => { $("#task-id").value = ""; loadTaskSource(); });
$("#task-open").addEventListener("click", () => {
  const id = $("#task-id").value.trim();
  const source = $("#task-source").value;
  if (id) openTask(id, source.startsWith("run:") ? source.slice(4) : null);
});
$("#task-id").addEventListener("keydown", (e) => { if (e.key === "Enter") $("#task-open").click(); });

function drawPrediction(target, result) {
  const head = el("h3", {}, result.model,
                  el("span", {class: "muted"}, ` · ${result.views} view(s) · ${result.seconds}s`),
                  result.solved === null ? null
                    : el("span", {class: `badge ${result.solved ? "right" : "wrong"}`}, result.solved ? " solved" : " not solved"));
  const tests = result.tests.map((t, i) => el("div", {class: "test-prediction"},
    el("div", {class: "muted"}, `test ${i + 1}`),
    t.attempts.length ? t.attempts.map((g, k) => el("div", {class: "attempt"}, gridNode(g, 160),
      t.correct === null ? el("span", {class: "badge unknown-truth"}, `attempt ${k + 1}`)
        : el("span", {class: `badge ${t.correct[k] ? "right" : "wrong"}`}, `attempt ${k + 1} ${t.correct[k] ? "✓ right" : "✗ wrong"}`)))
      : el("span", {class: "unknown no-attempt"}, "no attempt (no output parsed as a grid)")));
  target.replaceChildren(head, ...tests);
}

async function predictOne(target, model) {
  target.replaceChildren(el("h3", {}, model), el("span", {class: "muted"}, "predicting…"));
  try {
    const result = await api("/api/predict", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({task: currentTask.id, run: currentTask.run, model, views: Number($("#predict-views").value)}),
    });
    drawPrediction(target, result);
  } catch (e) {
    target.replaceChildren(el("h3", {}, model), el("div", {class: "error"}, e.message));
  }
}

$("#predict").addEventListener("click", async () => {
  if (!currentTask) return;
  $("#predict").disabled = true;
  // one after the other: the server runs one model at a time anyway
  await predictOne($("#predict-a"), $("#predict-model-a").value);
  await predictOne($("#predict-b"), $("#predict-model-b").value);
  $("#predict").disabled = false;
});

// ---------------------------------------------------------------- runs

function table(header, rows, numeric = []) {
  return el("table", {},
    el("thead", {}, el("tr", {}, header.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", {class: numeric.includes(i) ? "num" : null}, c))))));
}

async function loadRuns() {
  try {
    const info = await api("/api/runs");
    $("#runs-dir").textContent = info.runs_dir || "no runs folder";
    $("#runs-list").replaceChildren(...info.runs.map((r) => el("li", {},
      el("button", {"data-run": r.name, onclick: () => openRun(r.name)}, r.name,
         el("span", {class: "muted"}, r.results ? "" : " (running)")))));
    if (!info.runs.length) $("#runs-list").replaceChildren(el("li", {class: "muted"}, "no runs yet"));
  } catch (e) {
    $("#run-view").replaceChildren(el("div", {class: "error"}, e.message));
  }
}

function editSummary(row) {
  const se = row.self_edit;
  if (!se) return el("span", {class: "muted"}, row.reason || row.skipped || "–");
  const d = se.data_generation || {}, t = se.training || {};
  const augs = ["basic", "size", "chain", "repeat"].filter((a) => d[`use_${a}_augmentations`]);
  return el("span", {class: "edit", title: row.raw || ""},
            `aug: ${augs.join("+") || "none"} · ${t.strategy || "?"} · lr ${t.learning_rate} · ${t.num_train_epochs} ep`);
}

async function loadSelfEdits(run, task) {
  const query = new URLSearchParams({limit: "500"});
  if (task) query.set("task", task);
  const page = await api(`/api/runs/${encodeURIComponent(run)}/selfedits?${query}`);
  const rows = page.rows.map((r) => [r.phase, r.round, r.method,
    el("a", {href: "#", onclick: (e) => { e.preventDefault(); showView("arc"); viewRunTask(run, r.task); }}, r.task),
    r.k, el("span", {class: `badge ${r.reward ? "right" : "wrong"}`}, r.reward ? "1 ✓" : "0 ✗"),
    num(r.cell_accuracy, 3), editSummary(r)]);
  $("#selfedits").replaceChildren(
    el("div", {class: "muted"}, `${page.total} row(s)${page.total > page.rows.length ? `, first ${page.rows.length} shown` : ""}`),
    table(["phase", "round", "method", "task", "k", "reward", "cell acc.", "self-edit (or why it was invalid)"], rows, [1, 4, 6]));
  return page;
}

async function viewRunTask(run, task) {
  await loadTaskSources();
  $("#task-source").value = `run:${run}`;
  await loadTaskSource();
  $("#task-id").value = task;
  await openTask(task, run);
}

async function openRun(name) {
  for (const b of document.querySelectorAll("#runs-list button")) b.classList.toggle("active", b.dataset.run === name);
  const view = $("#run-view");
  view.replaceChildren(el("p", {class: "muted"}, "loading…"));
  try {
    const run = await api(`/api/runs/${encodeURIComponent(name)}`);
    const cfg = run.config || {};
    const parts = [
      el("h2", {}, run.name),
      el("div", {class: "muted"}, run.status, run.report
        ? el("span", {}, " · ", el("a", {href: `/api/runs/${encodeURIComponent(name)}/report`, target: "_blank"}, "report.md")) : null),
      el("p", {class: "muted"}, Object.entries(cfg).filter(([, v]) => v !== null && typeof v !== "object")
        .map(([k, v]) => `${k}=${v}`).join(" · ")),
      el("h3", {}, "Baselines (held-out tasks)"),
      table(["method", "success rate", "tasks solved (any)", "tasks", "pairs"],
            run.methods.map((m) => [m.label, pct(m.success_rate), m.tasks_solved_any, m.n_tasks, m.n_pairs]), [1, 2, 3, 4]),
      el("h3", {}, "Per round (training tasks)"),
      run.rounds.length
        ? table(["round", "success rate", "pairs", "kept", "ReST-EM loss", "note"],
                run.rounds.map((r) => [r.round, pct(r.success_rate), r.n_pairs ?? "–", r.n_kept ?? "–",
                                       num(r.restem_loss), r.skipped || ""]), [0, 1, 2, 3, 4])
        : el("p", {class: "muted"}, "no finished round"),
      el("h3", {}, "Plots"),
      el("div", {class: "plots"}, run.plots.map((p) => el("figure", {},
        el("img", {src: `/api/runs/${encodeURIComponent(name)}/plots/${encodeURIComponent(p)}`, alt: p}),
        el("figcaption", {class: "muted"}, p)))),
      el("h3", {}, "Self-edits and rewards"),
      el("div", {class: "toolbar"}, el("label", {}, "task ", el("select", {id: "selfedit-task"}))),
      el("div", {id: "selfedits"}),
    ];
    if (!run.plots.length) parts.splice(parts.length - 4, 1, el("p", {class: "muted"}, "no plots (nanoseal report RUN_DIR writes them)"));
    view.replaceChildren(...parts);
    const page = await loadSelfEdits(name, null);
    const select = $("#selfedit-task");
    select.replaceChildren(el("option", {value: ""}, "all tasks"), ...page.tasks.map((t) => el("option", {value: t}, t)));
    select.addEventListener("change", () => loadSelfEdits(name, select.value || null));
  } catch (e) {
    view.replaceChildren(el("div", {class: "error"}, e.message));
  }
}

// ---------------------------------------------------------------- start

(async function start() {
  loadHealth();
  try { await loadModels(); } catch (e) { $("#chat-error").textContent = e.message; }
  await loadTaskSources();
  await loadTaskSource();
  document.body.dataset.ready = "1";
})();
