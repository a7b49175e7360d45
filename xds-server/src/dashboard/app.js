// Weir's dashboard: polls the admin API for the timeline every second and
// draws it; the policy simulator lives in simulator.js.

import { clock, drawChart, peak, sparkline } from "./charts.js";
import { setupSimulator } from "./simulator.js";

const POLL_MS = 1000;
const STATUS_MS = 5000;

const state = {
  token: null,
  points: [],
  marks: [],
  latest: 0,
  capacity: 900,
  intervalMs: 1000,
};

// ---- the admin API, with the bearer token when weir requires one ----------

function readToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get("token");
  if (fromHash) {
    sessionStorage.setItem("weir-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("weir-token");
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET `path` from weir's admin API as JSON. */
export async function api(path) {
  const headers = { accept: "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    askForToken(body?.error);
    throw new ApiError(401, "weir requires its admin token");
  }
  if (!response.ok) throw new ApiError(response.status, body?.error || `${path}: HTTP ${response.status}`);
  return body;
}

function askForToken(message) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-error").textContent = state.token ? message || "" : "";
}

function setupToken() {
  state.token = readToken();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem("weir-token", value);
    document.getElementById("token-form").hidden = true;
    refreshStatus();
  });
}

// ---- small DOM helpers ------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, String(value));
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function chartSvg(cls) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", `chart ${cls}`);
  return svg;
}

const percent = (bp) => `${(bp / 100).toFixed(2)} %`;
const pct = (v) => `${v.toFixed(v < 1 ? 2 : 1)} %`;
const ms = (v) => `${v.toFixed(v < 10 ? 1 : 0)} ms`;
const rate = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1));

// ---- live indicator and status line ----------------------------------------

function setLive(kind, title) {
  const live = document.getElementById("live");
  live.dataset.state = kind;
  live.title = title;
}

async function refreshStatus() {
  try {
    const status = await api("/v1/status");
    const nodes = status.envoys?.connected ?? 0;
    const parts = [
      h("span", {}, "policy ", h("code", {}, status.policy?.file ?? "?")),
      h("span", {}, "snapshot ", h("code", {}, status.snapshot?.version ?? "?")),
      h("span", {}, `${nodes} Envoy${nodes === 1 ? "" : "s"} connected`),
    ];
    if (status.policy?.last_error) {
      parts.push(h("span", { class: "error", title: status.policy.last_error }, "policy edit rejected: the last good one is served"));
    }
    document.getElementById("status").replaceChildren(...parts);
  } catch (err) {
    document.getElementById("status").textContent = `status unavailable: ${err.message}`;
  }
}

// ---- the timeline -------------------------------------------------------------

async function poll() {
  try {
    const view = await api(`/v1/timeline?since=${state.latest}`);
    state.capacity = view.capacity;
    state.intervalMs = view.interval_ms;
    if (view.points.length || view.marks.length) {
      state.points.push(...view.points);
      state.marks.push(...view.marks);
      if (state.points.length > state.capacity) state.points.splice(0, state.points.length - state.capacity);
      const oldest = state.points.length ? state.points[0].at_ms : 0;
      state.marks = state.marks.filter((m) => m.at_ms >= oldest);
      state.latest = view.latest_ms ?? state.latest;
      render();
    }
    setLive("live", `updated ${clock(Date.now())}`);
  } catch (err) {
    setLive(err.status === 401 ? "locked" : "error", err.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function render() {
  if (!state.points.length) return;
  const x0 = state.points[0].at_ms;
  const x1 = state.points[state.points.length - 1].at_ms;
  renderRollouts(x0, x1);
  renderAdmission();
  renderClusters();
}

const rolloutCards = new Map();

function rolloutCard(canary) {
  let card = rolloutCards.get(canary);
  if (card) return card;
  const container = document.getElementById("rollouts");
  if (!rolloutCards.size) container.replaceChildren();
  const el = h("article", { class: "rollout", "data-rollout": canary });
  const title = h("h3", {}, h("span", { class: "name" }, canary));
  const against = h("span", { class: "against" });
  const phase = h("span", { class: "badge phase" });
  const verdict = h("span", { class: "badge verdict" });
  title.append(against, phase, verdict);
  const weight = h("div", { class: "weight" });
  const figures = h("div", { class: "figures" });
  const weightChart = chartSvg("weight-chart");
  const errorChart = chartSvg("error-chart");
  const latencyChart = chartSvg("latency-chart");
  const decisions = h("ol", { class: "decisions", reversed: true });
  el.append(
    title,
    h("div", { class: "headline" }, weight, figures),
    h("div", { class: "chart-label" }, "canary weight"),
    weightChart,
    h("div", { class: "chart-label" }, "error rate (5xx), canary vs stable"),
    errorChart,
    h("div", { class: "chart-label" }, "p99 latency, canary vs stable"),
    latencyChart,
    h("details", {}, h("summary", {}, "decisions"), decisions),
  );
  container.append(el);
  card = { el, against, phase, verdict, weight, figures, weightChart, errorChart, latencyChart, decisions };
  rolloutCards.set(canary, card);
  return card;
}

function markClass(mark) {
  if (mark.to === "rolled_back") return "rolled-back";
  if (mark.to === "promoted") return "promoted";
  if (mark.to === "paused" || mark.from === "paused") return "paused";
  return "step";
}

function markTitle(mark) {
  const phases = mark.from === mark.to ? mark.to : `${mark.from} → ${mark.to}`;
  return `${clock(mark.at_ms)}  ${phases}, ${percent(mark.from_weight_bp)} → ${percent(mark.weight_bp)}: ${mark.reason}`;
}

function renderRollouts(x0, x1) {
  const latest = state.points[state.points.length - 1];
  for (const [canary, now] of Object.entries(latest.rollouts)) {
    const card = rolloutCard(canary);
    const series = state.points.filter((p) => p.rollouts[canary]).map((p) => [p.at_ms, p.rollouts[canary]]);
    const marks = state.marks.filter((m) => m.canary === canary);
    card.el.dataset.weightBp = now.weight_bp;
    card.el.dataset.phase = now.phase;
    card.el.dataset.points = series.length;
    card.el.dataset.latestMs = latest.at_ms;
    card.against.textContent = ` vs ${now.stable_cluster}`;
    card.phase.textContent = now.phase.replace("_", " ");
    card.phase.dataset.phase = now.phase;
    card.verdict.textContent = now.verdict;
    card.verdict.dataset.verdict = now.verdict;
    // In a mirror phase no device gets the canary: it is judged on copies.
    card.weight.textContent = now.mirror_bp ? `mirrored ${percent(now.mirror_bp)}` : percent(now.weight_bp);
    const figures = (name, v) => {
      if (!v.requests) return `${name}: no requests in the window`;
      const p99 = v.p99_ms !== null && v.p99_ms !== undefined ? `, p99 ${ms(v.p99_ms)}` : "";
      return `${name}: ${v.requests} requests, ${pct(v.error_rate * 100)} errors${p99}`;
    };
    const bucket = (b) => (b.high_ms === null || b.high_ms === undefined ? `over ${ms(b.low_ms)}` : `(${ms(b.low_ms)}, ${ms(b.high_ms)}]`);
    const unresolved = (now.latency_unresolved || []).map((u) =>
      h("span", { class: "unresolved" },
        `${u.quantile} latency not resolvable: canary's in ${bucket(u.canary_bucket)}, stable's in ${bucket(u.stable_bucket)}, too wide for ×${u.limit}`));
    card.figures.replaceChildren(
      h("span", {}, `step ${now.step + 1}`),
      h("span", {}, figures("canary", now.canary)),
      h("span", {}, figures("stable", now.stable)),
      ...unresolved,
    );
    const chartMarks = marks.map((m) => ({ t: m.at_ms, cls: markClass(m), title: markTitle(m) }));
    drawChart(card.weightChart, {
      series: [{ label: "", cls: "weight", step: true, points: series.map(([t, r]) => [t, r.weight_bp / 100]) }],
      x0, x1, yMax: 100, format: (v) => `${v.toFixed(0)} %`, marks: chartMarks,
    });
    const errorSeries = [
      { label: "canary", cls: "canary", points: series.map(([t, r]) => [t, r.canary.requests ? r.canary.error_rate * 100 : null]) },
      { label: "stable", cls: "stable", points: series.map(([t, r]) => [t, r.stable.requests ? r.stable.error_rate * 100 : null]) },
    ];
    drawChart(card.errorChart, {
      series: errorSeries, x0, x1, yMax: peak(errorSeries, 1) * 1.15, format: (v) => pct(v), marks: chartMarks, height: 90,
    });
    const latencySeries = [
      { label: "canary", cls: "canary", points: series.map(([t, r]) => [t, r.canary.p99_ms ?? null]) },
      { label: "stable", cls: "stable", points: series.map(([t, r]) => [t, r.stable.p99_ms ?? null]) },
    ];
    drawChart(card.latencyChart, {
      series: latencySeries, x0, x1, yMax: peak(latencySeries, 1) * 1.15, format: (v) => ms(v), marks: chartMarks, height: 90,
    });
    card.decisions.replaceChildren(
      ...marks.slice(-8).reverse().map((m) => h("li", { class: markClass(m) }, markTitle(m))),
    );
    if (!marks.length) card.decisions.append(h("li", { class: "muted" }, "no decision in the last 15 minutes"));
  }
}

function renderAdmission() {
  const latest = state.points[state.points.length - 1];
  const classes = Object.keys(latest.classes);
  const container = document.getElementById("admission");
  if (!classes.length) return;
  const table = h("table", { class: "admission" });
  table.append(
    h("tr", {}, ...["class", "admitted/s", "queued/s", "released/s", "shed/s", "admitted (green) and shed (red)"].map((c) => h("th", {}, c))),
  );
  for (const cls of classes) {
    const now = latest.classes[cls];
    const history = state.points.filter((p) => p.classes[cls]);
    const admitted = history.map((p) => [p.at_ms, p.classes[cls].admitted_per_s]);
    const shed = history.map((p) => [p.at_ms, p.classes[cls].shed_per_s]);
    const top = peak([{ points: admitted }, { points: shed }], 1);
    const spark = document.createElementNS(SVG, "svg");
    sparkline(spark, admitted, { yMax: top, cls: "admitted", width: 160 });
    const shedSpark = document.createElementNS(SVG, "svg");
    sparkline(shedSpark, shed, { yMax: top, cls: "shed", width: 160 });
    const both = h("div", { class: "sparks" }, spark, shedSpark);
    const t = now.totals;
    table.append(
      h(
        "tr",
        { "data-class": cls },
        h("td", { class: "name" }, cls),
        h("td", { title: `${t.admitted} in all` }, `${rate(now.admitted_per_s)} (${t.admitted})`),
        h("td", { title: `${t.queued} in all` }, `${rate(now.queued_per_s)} (${t.queued})`),
        h("td", { title: `${t.released} in all` }, `${rate(now.released_per_s)} (${t.released})`),
        h("td", { class: now.shed_per_s > 0 ? "shedding" : "", title: `${t.shed} in all` }, `${rate(now.shed_per_s)} (${t.shed})`),
        h("td", {}, both),
      ),
    );
  }
  const limit = latest.concurrency_limit ?? "?";
  container.replaceChildren(
    h("p", { class: "figures" }, `${latest.in_flight} in flight · ${latest.queue_depth} queued · concurrency limit ${limit}`),
    table,
  );
}

function renderClusters() {
  const latest = state.points[state.points.length - 1];
  const names = Object.keys(latest.clusters);
  if (!names.length) return;
  const table = h("table", { class: "clusters" });
  table.append(h("tr", {}, ...["cluster", "SLA score", "", "p99 / target", "score, last 15 min"].map((c) => h("th", {}, c))));
  for (const name of names) {
    const now = latest.clusters[name];
    const bar = h("div", { class: "bar" });
    bar.style.width = `${Math.round(now.score * 100)}%`;
    if (now.score < 0.8) bar.classList.add("low");
    const history = state.points.filter((p) => p.clusters[name]).map((p) => [p.at_ms, p.clusters[name].score]);
    const spark = document.createElementNS(SVG, "svg");
    sparkline(spark, history, { yMax: 1, cls: "score", width: 160 });
    const p99 = now.p99_ms !== null && now.p99_ms !== undefined ? ms(now.p99_ms) : "no data";
    const target = now.target_p99_ms ? ms(now.target_p99_ms) : "no target";
    table.append(
      h(
        "tr",
        { "data-cluster": name, "data-score": now.score },
        h("td", { class: "name" }, name),
        h("td", { class: "score" }, now.score.toFixed(2)),
        h("td", { class: "bar-cell" }, h("div", { class: "track" }, bar)),
        h("td", {}, `${p99} / ${target}`),
        h("td", {}, spark),
      ),
    );
  }
  document.getElementById("clusters").replaceChildren(table);
}

// ---- start --------------------------------------------------------------------

setupToken();
refreshStatus();
setInterval(refreshStatus, STATUS_MS);
poll();
setupSimulator(api);
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(render, 150);
});
