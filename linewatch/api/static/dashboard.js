// linewatch dashboard: plain JavaScript, no build step, no CDN. Data arrives from the
// /v1 API (session cookie after sign-in) and live over server-sent events (/v1/events);
// the camera table and chart are refreshed when events arrive, never on a timer.
"use strict";

const FEED_MAX = 40;
const REFRESH_MIN_MS = 3000; // at most one camera/chart refresh per 3 s of events
const state = { model: null, events: null, refreshTimer: null, lastRefresh: 0 };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    showSignIn();
    throw new Error("unauthorised");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(typeof body.detail === "string" ? body.detail : response.statusText);
  }
  return response.json();
}

function showSignIn() {
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  if (state.events) state.events.close();
}

async function signIn(event) {
  event.preventDefault();
  const response = await fetch("/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  $("token").value = "";
  if (!response.ok) {
    $("sign-in-error").textContent = "wrong token";
    return;
  }
  $("sign-in-error").textContent = "";
  start();
}

async function signOut() {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  showSignIn();
}

const pct = (value) => `${(100 * value).toFixed(1)} %`;
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "-");

async function loadCameras() {
  const data = await api("/v1/cameras?window_min=10");
  $("line-name").textContent = data.line;
  $("cameras-window").textContent = `(last ${data.window_min} min)`;
  $("backlog").textContent = data.backlog === null ? "" : `frames backlog: ${data.backlog}`;
  const rows = data.cameras.map((c) => {
    const stateName = c.state || "unknown";
    const row = el(
      "tr",
      { "data-camera": c.id },
      el("td", { text: c.id }),
      el("td", { class: `state-${stateName.replace(/\s+/g, "-")}`, text: stateName }),
      el("td", { text: c.parts_per_min.toFixed(2) }),
      el("td", { class: c.ng_rate > 0 ? "ng" : "", text: pct(c.ng_rate) }),
      el("td", { text: String(c.parts) }),
      el("td", { class: "model-version", text: c.model_version || "-" }),
      el("td", { text: time(c.last_part_at) }),
    );
    return row;
  });
  $("cameras").querySelector("tbody").replaceChildren(...rows);
}

async function loadChart() {
  const data = await api("/v1/stats/hourly?since=24h");
  drawChart($("ng-chart"), data.hours);
}

const HOUR_MS = 3600 * 1000;

function lastDay(hours) {
  // 24 hourly slots ending with the current UTC hour; hours without parts are empty
  const byHour = new Map(hours.map((h) => [Date.parse(h.hour), h]));
  const now = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
  return Array.from({ length: 24 }, (_, i) => {
    const at = now - (23 - i) * HOUR_MS;
    return byHour.get(at) || { hour: new Date(at).toISOString(), parts: 0, rejected: 0, ng_rate: 0 };
  });
}

function drawChart(canvas, hours) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = { left: 48, right: 8, top: 10, bottom: 22 };
  const slots = lastDay(hours);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  const top = Math.max(0.05, ...slots.map((h) => h.ng_rate));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slotW = plotW / slots.length;
  ctx.strokeStyle = "#ddd";
  ctx.fillStyle = "#666";
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + plotH * (1 - frac);
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(width - pad.right, y);
    ctx.stroke();
    ctx.fillText(pct(top * frac), 2, y + 4);
  }
  slots.forEach((h, i) => {
    const x = pad.left + i * slotW + 1;
    const barH = plotH * (h.ng_rate / top);
    ctx.fillStyle = h.parts ? "#c62828" : "#eee";
    ctx.fillRect(x, pad.top + plotH - Math.max(barH, h.parts ? 1 : 0), slotW - 2, Math.max(barH, h.parts ? 1 : 0));
    if (i % 3 === 0) {
      ctx.fillStyle = "#666";
      ctx.fillText(`${new Date(h.hour).getUTCHours().toString().padStart(2, "0")}h`, x, height - 6);
    }
  });
  if (!hours.length) {
    ctx.fillStyle = "#666";
    ctx.fillText("no parts in the last 24 h", pad.left + 8, pad.top + plotH / 2);
  }
  canvas.dataset.hours = String(hours.length);
}

function evidence(url, alt) {
  if (!url) return el("div", { class: "noimg", text: "no crop" });
  // a click swaps the crop for its heat map (where the model sees the defect) and back
  const heat = url.replace(/evidence\.jpg$/, "heatmap.jpg");
  const img = el("img", { src: url, alt, loading: "lazy", title: "click: heat map", class: "evidence" });
  img.addEventListener("click", () => {
    img.src = img.src.endsWith("heatmap.jpg") ? url : heat;
  });
  return img;
}

function addFeedCard(verdict) {
  const label = `${verdict.verdict} · ${verdict.label} (${verdict.score.toFixed(2)})`;
  const card = el(
    "li",
    { class: "card", "data-part": String(verdict.id || ""), "data-camera": verdict.camera_id },
    evidence(verdict.evidence_url, `part ${verdict.part_id} on ${verdict.camera_id}`),
    el(
      "div",
      { class: "meta" },
      el("div", { class: "ng", text: label }),
      el("div", { text: `${verdict.camera_id} · part ${verdict.part_id}` }),
      el("div", { class: "muted", text: `${time(new Date(verdict.decided_ts / 1e6).toISOString())} · model ${verdict.model_version}` }),
    ),
  );
  const feed = $("feed");
  feed.prepend(card);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  $("feed-empty").hidden = true;
}

function addAlert(alert) {
  const text = `${alert.state} · ${alert.camera_id} · ${alert.label} · peak ${Number(alert.peak_score).toFixed(2)}`;
  const list = $("alerts");
  list.prepend(el("li", { class: alert.state === "open" ? "ng" : "", text }));
  while (list.children.length > FEED_MAX) list.lastChild.remove();
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  const wait = Math.max(0, state.lastRefresh + REFRESH_MIN_MS - Date.now());
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    state.lastRefresh = Date.now();
    loadCameras().catch(console.error);
    loadChart().catch(console.error);
  }, wait);
}

function listen() {
  if (state.events) state.events.close();
  const source = new EventSource("/v1/events");
  state.events = source;
  source.onopen = () => {
    $("live").textContent = "live";
    $("live").className = "badge on";
  };
  source.onerror = () => {
    $("live").textContent = "reconnecting";
    $("live").className = "badge off";
  };
  source.addEventListener("verdict", (event) => {
    const verdict = JSON.parse(event.data);
    if (verdict.verdict !== "ok") {
      addFeedCard(verdict);
      if (verdict.id) addToQueue({ ...verdict, queued_for: ["new NG part"] }, false);
    }
    scheduleRefresh();
  });
  source.addEventListener("alert", (event) => addAlert(JSON.parse(event.data)));
}

function labelChoice(part) {
  const model = state.model;
  const defects = model ? model.labels.filter((l) => !model.normal_labels.includes(l)) : [];
  const select = el("select", { class: "label", "aria-label": "defect class" });
  for (const label of defects) {
    const option = el("option", { value: label, text: label });
    if (label === part.label) option.selected = true;
    select.append(option);
  }
  return select;
}

function queueCard(part) {
  const select = labelChoice(part);
  const note = el("span", { class: "muted result" });
  const okButton = el("button", { type: "button", class: "review-ok", text: "OK" });
  const ngButton = el("button", { type: "button", class: "review-defect", text: "Defect" });
  const card = el(
    "li",
    { class: "card", "data-part": String(part.id) },
    evidence(part.evidence_url, `part ${part.part_id}`),
    el(
      "div",
      { class: "meta" },
      el("div", { class: part.verdict === "ok" ? "" : "ng", text: `line: ${part.verdict} · ${part.label} (${part.score.toFixed(3)})` }),
      el("div", { text: `${part.camera_id} · part ${part.part_id}` }),
      el("div", { class: "muted", text: (part.queued_for || []).join(", ") }),
    ),
    el("div", { class: "actions" }, okButton, select, ngButton, note),
  );
  const submit = (verdict) => review(part.id, verdict, select.value, card, note);
  okButton.addEventListener("click", () => submit("ok"));
  ngButton.addEventListener("click", () => submit("defect"));
  return card;
}

function addToQueue(part, append = true) {
  const queue = $("queue");
  if (queue.querySelector(`[data-part="${part.id}"]`)) return;
  const card = queueCard(part);
  if (append) queue.append(card);
  else queue.prepend(card);
  $("queue-empty").hidden = true;
}

async function review(partId, verdict, label, card, note) {
  const body = verdict === "ok" ? { verdict } : { verdict, label };
  try {
    const stored = await api(`/v1/parts/${partId}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    note.textContent = `reviewed ${stored.verdict} by ${stored.reviewer}`;
    card.classList.add("done");
    card.querySelectorAll("button, select").forEach((node) => (node.disabled = true));
  } catch (error) {
    note.textContent = error.message;
  }
}

async function loadQueue() {
  const data = await api("/v1/reviews/queue?limit=20");
  $("queue-note").textContent = `(threshold ${data.threshold.toFixed(3)} ± ${data.band})`;
  $("queue").replaceChildren();
  data.items.forEach((part) => addToQueue(part));
  $("queue-empty").hidden = data.items.length > 0;
}

async function start() {
  try {
    state.model = await api("/v1/model");
  } catch (error) {
    if (error.message === "unauthorised") return;
    state.model = null;
  }
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  if (state.model) $("model-name").textContent = `${state.model.name} ${state.model.version}`;
  await Promise.all([loadCameras(), loadChart(), loadQueue()]).catch(console.error);
  listen();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  start();
});
