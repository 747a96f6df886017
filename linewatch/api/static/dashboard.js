// linewatch dashboard: plain JavaScript, no build step, no CDN. Data arrives from the
// /v1 API (session cookie after sign-in) and live over server-sent events (/v1/events);
// on load the NG feed and the alerts start from SQL (the last rejected parts and alerts),
// so a page opened after a shift change shows them; the camera table and chart are
// refreshed when events arrive, and only the live tiles on a timer (a new frame a second).
// A click on an NG card or a review-queue card opens the part in a dialog (its views,
// evidence crop, heat map, reviews and review buttons).
"use strict";

const FEED_MAX = 40;
const LIVE_REFRESH_MS = 1000; // the live tiles fetch a new frame this often
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

function apiError(status, message) {
  const error = new Error(message);
  error.status = status;
  return error;
}

async function checked(response) {
  // the response, or an error with its status and the API's `detail`
  if (response.status === 401) {
    showSignIn();
    throw apiError(401, "unauthorised");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw apiError(response.status, typeof body.detail === "string" ? body.detail : response.statusText);
  }
  return response;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  return (await checked(response)).json();
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
  showLiveTiles(data.cameras.map((c) => c.id));
}

function liveUrl(camera, file) {
  return `/v1/cameras/${encodeURIComponent(camera)}/${file}`;
}

function liveTile(camera) {
  const img = el("img", { alt: `live view of ${camera}`, "data-camera": camera });
  const caption = el("figcaption", { text: camera });
  img.addEventListener("error", () => {
    img.closest("figure").classList.add("no-view");
    caption.textContent = `${camera} · no live view`;
  });
  img.addEventListener("load", () => {
    img.closest("figure").classList.remove("no-view");
    caption.textContent = camera;
  });
  const tile = el("figure", { class: "live-tile", "data-camera": camera }, img, caption);
  tile.addEventListener("click", () => openLive(camera));
  return tile;
}

function showLiveTiles(cameras) {
  const tiles = $("live-tiles");
  const known = new Set([...tiles.children].map((tile) => tile.dataset.camera));
  for (const camera of cameras) if (!known.has(camera)) tiles.append(liveTile(camera));
  refreshLive();
}

function refreshLive() {
  // a new frame per tile; a camera without a view keeps its tile, marked no-view
  const now = Date.now();
  for (const img of $("live-tiles").querySelectorAll("img")) {
    img.src = `${liveUrl(img.dataset.camera, "preview.jpg")}?t=${now}`;
  }
  $("live-empty").hidden = $("live-tiles").children.length > 0;
}

function openLive(camera) {
  // the large view streams MJPEG until the dialog closes
  $("live-large-name").textContent = camera;
  $("live-large-img").src = liveUrl(camera, "live.mjpg");
  $("live-large").showModal();
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
  return el("img", { src: url, alt, loading: "lazy", class: "evidence" });
}

function decidedAt(verdict) {
  // a live verdict carries decided_ts (ns); a part read back from SQL its capture time
  return verdict.decided_ts ? new Date(verdict.decided_ts / 1e6).toISOString() : verdict.captured_at;
}

function addFeedCard(verdict, newest = true) {
  const feed = $("feed");
  if (verdict.id && feed.querySelector(`[data-part="${verdict.id}"]`)) return;
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
      el("div", { class: "muted", text: `${time(decidedAt(verdict))} · model ${verdict.model_version}` }),
    ),
  );
  if (verdict.id) openable(card, verdict);
  if (newest) feed.prepend(card);
  else feed.append(card);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  $("feed-empty").hidden = true;
}

function addAlert(alert, newest = true) {
  const text = `${alert.state} · ${alert.camera_id} · ${alert.label} · peak ${Number(alert.peak_score).toFixed(2)}`;
  const list = $("alerts");
  const item = el("li", { class: alert.state === "open" ? "ng" : "", text });
  if (newest) list.prepend(item);
  else list.append(item);
  while (list.children.length > FEED_MAX) list.lastChild.remove();
}

async function loadHistory() {
  // the last rejected parts (defect and uninspected) and alerts, newest first, from SQL
  const [defects, uninspected, alerts] = await Promise.all([
    api(`/v1/parts?verdict=defect&limit=${FEED_MAX}`),
    api(`/v1/parts?verdict=uninspected&limit=${FEED_MAX}`),
    api(`/v1/alerts?limit=${FEED_MAX}`),
  ]);
  const rejected = [...defects.items, ...uninspected.items].sort((a, b) => b.id - a.id);
  rejected.slice(0, FEED_MAX).forEach((part) => addFeedCard(part, false));
  alerts.items.forEach((alert) => addAlert(alert, false));
  $("feed-empty").hidden = rejected.length > 0;
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
  const submit = (verdict) => review(part.id, verdict, select.value, note);
  okButton.addEventListener("click", () => submit("ok"));
  ngButton.addEventListener("click", () => submit("defect"));
  openable(card, part);
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

function postReview(partId, body) {
  return api(`/v1/parts/${partId}/review`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function review(partId, verdict, label, note) {
  try {
    markReviewed(partId, await postReview(partId, verdict === "ok" ? { verdict } : { verdict, label }));
  } catch (error) {
    note.textContent = error.message;
  }
}

function markReviewed(partId, stored) {
  // the part's queue card is done; its NG card says who reviewed it as what
  const text = `reviewed ${stored.verdict} by ${stored.reviewer}`;
  const queued = $("queue").querySelector(`[data-part="${partId}"]`);
  if (queued) {
    queued.querySelector(".result").textContent = text;
    queued.classList.add("done");
    queued.querySelectorAll(".actions button, .actions select").forEach((node) => (node.disabled = true));
  }
  const card = $("feed").querySelector(`[data-part="${partId}"]`);
  if (card) {
    const meta = card.querySelector(".meta");
    const line = meta.querySelector(".reviewed") || el("div", { class: "reviewed" });
    line.textContent = `${text} (${stored.label})`;
    meta.insertBefore(line, meta.querySelector(".open-part")); // above the card's open button
  }
}

async function loadQueue() {
  const data = await api("/v1/reviews/queue?limit=20");
  $("queue-note").textContent = `(threshold ${data.threshold.toFixed(3)} ± ${data.band})`;
  $("queue").replaceChildren();
  data.items.forEach((part) => addToQueue(part));
  $("queue-empty").hidden = data.items.length > 0;
}

async function setupGalleryButton() {
  // a model with a gallery learns classes from reviews: embed the reviewed parts' crops
  // and add them to its gallery (POST /v1/gallery/reviews); workers reload it
  if (!state.model || !state.model.gallery) return; // no gallery: no button
  let gallery;
  try {
    gallery = await api("/v1/gallery");
  } catch (error) {
    return;
  }
  const button = $("gallery-add-button");
  const result = $("gallery-add-result");
  result.textContent = gallery.classes.map((c) => `${c.label} ${c.trained}+${c.reviewed}`).join(" · ");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const added = await api("/v1/gallery/reviews", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      result.textContent = added.summary;
    } catch (error) {
      result.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
  $("gallery-add").hidden = false;
}

// --- the part dialog: a click on an NG card (or a review-queue card) opens the part ---

const VIEWS_PAGE = 50; // views per request; "more views" fetches the next page
const opened = { id: null, data: null, images: [] }; // the open part and its image object URLs

function openable(card, item) {
  // the whole card opens the part for the mouse; its "open" button for the keyboard
  card.classList.add("openable");
  const button = el("button", {
    type: "button",
    class: "open-part",
    "aria-label": `open part ${item.part_id} of ${item.camera_id}`,
    text: "open",
  });
  card.querySelector(".meta").append(button);
  card.addEventListener("click", (event) => {
    if (!event.target.closest("button, select, input") || event.target === button) openPart(item.id);
  });
}

function problem(error) {
  // what went wrong, said so an operator knows what to do
  if (error.status === 401 || error.status === 403) {
    return `${error.status}: the API needs a valid token; sign in again`;
  }
  return error.status ? `${error.status}: ${error.message}` : error.message;
}

async function openPart(id) {
  resetPart(id);
  $("part-dialog").showModal();
  try {
    const [data, views] = await Promise.all([api(`/v1/parts/${id}`), api(partViewsUrl(id, null))]);
    if (opened.id !== id) return; // closed, or another part opened meanwhile
    opened.data = data;
    showPartFacts(data, views);
    showViews(views);
    showReviews(data.reviews);
    showReviewChoices(data);
    loadPartImages(data);
  } catch (error) {
    if (opened.id === id) $("part-error").textContent = problem(error);
  }
}

function partViewsUrl(id, cursor) {
  return `/v1/parts/${id}/views?limit=${VIEWS_PAGE}` + (cursor === null ? "" : `&cursor=${cursor}`);
}

function resetPart(id) {
  closePart();
  opened.id = id;
  $("part-title").textContent = `part #${id}`;
  $("part-error").textContent = "";
  $("part-facts").replaceChildren();
  $("part-views").querySelector("tbody").replaceChildren();
  $("part-views-note").textContent = "";
  $("part-views-more").hidden = true;
  $("part-reviews").replaceChildren();
  $("part-review-result").textContent = "";
  $("part-note").value = "";
  for (const name of ["evidence", "heatmap"]) $(`part-${name}`).removeAttribute("src");
  $("part-evidence-note").textContent = "evidence crop";
  $("part-heatmap-note").textContent = "heat map";
  $("part-review").querySelectorAll("button, select").forEach((node) => (node.disabled = true));
}

function closePart() {
  // the dialog closed (or shows another part): free its images
  opened.id = null;
  opened.data = null;
  opened.images.forEach((url) => URL.revokeObjectURL(url));
  opened.images = [];
}

function showPartFacts(data, views) {
  $("part-title").textContent = `${data.camera_id} · part ${data.part_id}`;
  const over = data.score >= views.threshold ? "≥" : "<";
  const rule =
    `${over} threshold ${views.threshold.toFixed(3)} ` +
    `(the mean of its top ${views.top_views} views' defect scores)`;
  const facts = [
    ["camera", data.camera_id],
    ["part", `${data.part_id} (row ${data.id})`],
    ["captured", data.captured_at ? new Date(data.captured_at).toLocaleString() : "-"],
    ["verdict", `${data.verdict} · ${data.label}${data.late ? " (late)" : ""}`],
    ["score", `${data.score.toFixed(3)} ${rule}`],
    ["views", `${data.views_inferred} inferred of ${data.views_sent} sent · ended: ${data.end_reason}`],
    ["model", data.model_version],
  ];
  $("part-facts").replaceChildren(
    ...facts.flatMap(([name, value]) => [
      el("dt", { text: name }),
      el("dd", { class: name === "verdict" && data.verdict !== "ok" ? "ng" : "", text: value }),
    ]),
  );
  $("part-dialog").dataset.threshold = String(views.threshold);
}

function showViews(views) {
  const threshold = views.threshold;
  const rows = views.items.map((view) => {
    const defect = view.defect_score === null ? "-" : view.defect_score.toFixed(3);
    const over = view.defect_score !== null && view.defect_score >= threshold;
    return el(
      "tr",
      { "data-view": String(view.view_index) },
      el("td", { text: String(view.view_index) }),
      el("td", { text: view.status }),
      el("td", { text: view.label || "-" }),
      el("td", { text: view.status === "ok" ? view.score.toFixed(3) : "-" }),
      el("td", { class: over ? "over" : "", text: defect }),
      el("td", { text: view.status === "ok" ? (view.is_defect ? "NG" : "OK") : "-" }),
      el("td", { text: sinceCapture(view.captured_at) }),
      el("td", { text: view.model_version }),
    );
  });
  const body = $("part-views").querySelector("tbody");
  body.append(...rows);
  const shown = body.children.length;
  $("part-views-note").textContent = shown
    ? `(${shown} shown; defect score vs threshold ${threshold.toFixed(3)})`
    : "(no views stored)";
  const more = $("part-views-more");
  more.hidden = views.next_cursor === null;
  more.dataset.cursor = views.next_cursor === null ? "" : String(views.next_cursor);
}

function sinceCapture(iso) {
  // a view's capture time after the part's first capture (views are frames apart)
  if (!iso || !opened.data || !opened.data.captured_at) return time(iso);
  return `+${((Date.parse(iso) - Date.parse(opened.data.captured_at)) / 1000).toFixed(2)} s`;
}

async function moreViews() {
  const id = opened.id;
  const more = $("part-views-more");
  more.disabled = true;
  try {
    const views = await api(partViewsUrl(id, Number(more.dataset.cursor)));
    if (opened.id === id) showViews(views);
  } catch (error) {
    $("part-error").textContent = problem(error);
  } finally {
    more.disabled = false;
  }
}

async function partImage(url) {
  // an image as an object URL (fetched, so a refusal shows its status and reason)
  const response = await checked(await fetch(url, { credentials: "same-origin" }));
  const objectUrl = URL.createObjectURL(await response.blob());
  opened.images.push(objectUrl);
  return objectUrl;
}

const IMAGE_NOTES = {
  evidence: ["evidence crop: loading", "evidence crop (the view with the highest defect score)"],
  heatmap: ["heat map: computing (~50 forward passes)", "heat map: red is where covering the crop makes it look good"],
};

async function showPartImage(id, name, url) {
  // one of the dialog's images, its caption saying how it went; true when it shows
  const [loading, done] = IMAGE_NOTES[name];
  const note = $(`part-${name}-note`);
  note.className = "";
  note.textContent = loading;
  try {
    const objectUrl = await partImage(url);
    if (opened.id !== id) return false;
    $(`part-${name}`).src = objectUrl;
    note.textContent = done;
    return true;
  } catch (error) {
    if (opened.id !== id) return false;
    note.className = "error";
    note.textContent = `${loading.split(":")[0]}: ${problem(error)}`;
    return false;
  }
}

async function loadPartImages(data) {
  if (!data.evidence_url) {
    $("part-evidence-note").textContent = "no evidence crop stored";
    $("part-heatmap-note").textContent = "no heat map without a crop";
    return;
  }
  // the heat map costs ~50 forward passes: asked for only once the crop is shown
  if (await showPartImage(data.id, "evidence", data.evidence_url)) {
    await showPartImage(data.id, "heatmap", data.evidence_url.replace(/evidence\.jpg$/, "heatmap.jpg"));
  }
}

function showReviews(reviews) {
  const items = reviews.map((r) => {
    const note = r.note ? ` · “${r.note}”` : "";
    const line = `the line said ${r.machine_verdict} (${r.machine_label})`;
    const when = new Date(r.reviewed_at).toLocaleString();
    const text = `${when} · ${r.reviewer}: ${r.verdict} (${r.label}); ${line}${note}`;
    return el("li", { class: r.verdict === "ok" ? "" : "ng", text });
  });
  const none = el("li", { class: "muted", text: "not reviewed yet" });
  $("part-reviews").replaceChildren(...(items.length ? items : [none]));
}

function showReviewChoices(data) {
  const defects = state.model ? state.model.labels.filter((l) => !state.model.normal_labels.includes(l)) : [];
  const select = labelChoice(data);
  select.id = "part-class";
  $("part-class").replaceWith(select);
  const confirm = $("part-confirm");
  confirm.textContent = defects.includes(data.label) ? `Confirm NG (${data.label})` : "Confirm NG";
  $("part-review").querySelectorAll("button, select").forEach((node) => (node.disabled = false));
  confirm.disabled = !defects.includes(data.label); // e.g. uninspected: name the class instead
  // a model with a gallery learns a class from reviews: an operator may name a new one
  const learns = Boolean(state.model && state.model.gallery);
  $("part-new-class-label").hidden = !learns;
  $("part-new-class").value = "";
  $("part-correct").disabled = defects.length === 0 && !learns;
}

function chosenClass() {
  const typed = $("part-new-class").value.trim();
  return typed || $("part-class").value;
}

async function reviewPart(verdict, label) {
  const id = opened.id;
  const note = $("part-note").value.trim();
  const body = verdict === "ok" ? { verdict } : { verdict, label };
  if (note) body.note = note;
  const controls = [...$("part-review").querySelectorAll("button, select")];
  const enabled = controls.filter((node) => !node.disabled);
  enabled.forEach((node) => (node.disabled = true));
  $("part-review-result").textContent = "saving…";
  try {
    const stored = await postReview(id, body);
    markReviewed(id, stored);
    if (opened.id !== id) return;
    $("part-review-result").textContent = `stored: ${stored.verdict} (${stored.label}) by ${stored.reviewer}`;
    $("part-note").value = "";
    $("part-new-class").value = "";
    showReviews((await api(`/v1/parts/${id}`)).reviews);
  } catch (error) {
    if (opened.id === id) $("part-review-result").textContent = problem(error);
  } finally {
    enabled.forEach((node) => (node.disabled = false));
  }
}

function setUpPartDialog() {
  $("part-dialog").addEventListener("close", closePart);
  $("part-views-more").addEventListener("click", moreViews);
  $("part-confirm").addEventListener("click", () => reviewPart("defect", opened.data.label));
  $("part-ok").addEventListener("click", () => reviewPart("ok"));
  $("part-correct").addEventListener("click", () => reviewPart("defect", chosenClass()));
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
  await Promise.all([loadCameras(), loadChart(), loadQueue(), loadHistory(), setupGalleryButton()]).catch(console.error);
  listen();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  $("live-large").addEventListener("close", () => $("live-large-img").removeAttribute("src"));
  setUpPartDialog();
  setInterval(() => {
    if (!$("dashboard").hidden && !document.hidden) refreshLive();
  }, LIVE_REFRESH_MS);
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  start();
});
