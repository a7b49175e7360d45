// The policy simulator panel: the policy crate, compiled to WebAssembly with
// wasm-bindgen (weir serves it from --simulator-dir), decides in the browser
// what the filter would do with a request, stage by stage.

let simulate = null;
let api = null;
let running = 0;

const $ = (id) => document.getElementById(id);

function notice(text) {
  const el = $("sim-unavailable");
  el.textContent = text;
  el.hidden = false;
}

/** Loads the served policy text into the editor. */
async function loadPolicy() {
  try {
    const policy = await api("/v1/policy");
    $("sim-policy").value = policy.text;
    $("sim-policy-source").textContent = policy.last_error
      ? `${policy.file} (as on disk; weir rejected it and serves the last good one)`
      : `${policy.file}, as served`;
    $("sim-policy").dataset.loaded = "served";
  } catch (err) {
    $("sim-policy-source").textContent = `the served policy could not be read: ${err.message}`;
  }
}

/** `name: value` lines (or `name=value`) into pairs; bad lines are reported. */
function parseHeaders(text) {
  const pairs = [];
  const bad = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const colon = line.indexOf(":");
    const equals = line.indexOf("=");
    const at = colon > 0 ? colon : equals;
    if (at <= 0) {
      bad.push(`header line ${i + 1} is not "name: value": ${line}`);
      return;
    }
    pairs.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
  });
  return { pairs, bad };
}

/** Selects line:column in the policy editor. */
function reveal(line, column) {
  const editor = $("sim-policy");
  const lines = editor.value.split("\n");
  let offset = 0;
  for (let i = 0; i < Math.max(0, line - 1) && i < lines.length; i++) offset += lines[i].length + 1;
  offset += Math.max(0, column - 1);
  editor.focus();
  editor.setSelectionRange(offset, Math.min(editor.value.length, offset + 1));
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(answer, extraProblems = []) {
  const result = $("sim-result");
  result.replaceChildren();
  const problems = [...extraProblems, ...(answer?.problems ?? [])];
  const ok = answer?.ok && !extraProblems.length;
  result.dataset.state = ok ? "ok" : "error";
  const decision = answer?.decision;
  result.dataset.class = decision?.class?.name ?? "";
  result.dataset.cluster = decision?.cluster ?? "";
  result.dataset.admission = decision?.admission?.verdict ?? "";
  result.dataset.variant = decision?.route?.split?.variant ?? "";
  if (problems.length) {
    const list = el("ul", "problems");
    for (const p of problems) {
      const item = el("li", `problem ${p.kind}`);
      if (p.line) {
        const where = el("a", "where", `line ${p.line}, column ${p.column}`);
        where.href = "#sim-policy";
        where.addEventListener("click", (event) => {
          event.preventDefault();
          reveal(p.line, p.column);
        });
        item.append(el("span", "kind", `${p.kind} error at `), where, document.createTextNode(": "));
      } else {
        item.append(el("span", "kind", `${p.kind} error: `));
      }
      item.append(document.createTextNode(p.path ? `${p.path}: ${p.message}` : p.message));
      list.append(item);
    }
    result.append(list);
  }
  if (answer?.stages?.length) {
    const table = el("table", "stages");
    for (const stage of answer.stages) {
      const row = el("tr", `stage ${stage.name}`);
      row.dataset.stage = stage.name;
      row.append(el("th", "", stage.name), el("td", "outcome", stage.outcome));
      const lines = el("td", "lines");
      lines.append(el("pre", "", stage.lines.join("\n")));
      row.append(lines);
      table.append(row);
    }
    result.append(table);
  }
}

async function run() {
  if (!simulate) return;
  const ticket = ++running;
  const { pairs, bad } = parseHeaders($("sim-headers").value);
  const inFlight = Number.parseInt($("sim-in-flight").value || "0", 10);
  const request = {
    method: $("sim-method").value,
    host: $("sim-host").value.trim(),
    path: $("sim-path").value || "/",
    headers: pairs,
    in_flight: Number.isFinite(inFlight) && inFlight >= 0 ? inFlight : 0,
  };
  let feed = "";
  const extra = bad.map((message) => ({ kind: "request", line: 0, column: 0, path: "", message }));
  if ($("sim-feed").value === "live") {
    try {
      feed = JSON.stringify(await api("/v1/feed"));
    } catch (err) {
      extra.push({ kind: "feed", line: 0, column: 0, path: "", message: `weir's live feed could not be read: ${err.message}` });
    }
  }
  if (ticket !== running) return; // a newer run started meanwhile
  let answer;
  try {
    answer = JSON.parse(simulate($("sim-policy").value, JSON.stringify(request), feed));
  } catch (err) {
    answer = { ok: false, problems: [{ kind: "simulator", line: 0, column: 0, path: "", message: String(err) }], stages: [] };
  }
  show(answer, extra);
}

let debounce = null;
function soon() {
  clearTimeout(debounce);
  debounce = setTimeout(run, 200);
}

/** Sets the panel up; `adminApi(path)` GETs JSON from weir with the token. */
export async function setupSimulator(adminApi) {
  api = adminApi;
  $("sim-request").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  for (const id of ["sim-policy", "sim-host", "sim-path", "sim-headers", "sim-in-flight"]) {
    $(id).addEventListener("input", soon);
  }
  for (const id of ["sim-method", "sim-feed"]) $(id).addEventListener("change", soon);
  $("sim-reload").addEventListener("click", async () => {
    await loadPolicy();
    run();
  });
  const loaded = loadPolicy();
  let status;
  try {
    status = await api("/v1/simulator");
  } catch (err) {
    notice(`The simulator's status could not be read: ${err.message}`);
    $("sim-result").dataset.state = "unavailable";
    return;
  }
  if (!status.available) {
    notice(
      `The policy simulator is not installed: weir looked in ${status.dir} and did not find ` +
        `${status.missing.join(", ")}. Build it with \`make build\` (or scripts/build-simulator.sh), ` +
        "or start weir serve with --simulator-dir pointing at it.",
    );
    $("sim-run").disabled = true;
    $("sim-result").dataset.state = "unavailable";
    return;
  }
  try {
    const module = await import(status.module);
    await module.default();
    simulate = module.simulate;
    $("sim-result").dataset.version = module.version();
  } catch (err) {
    notice(`The policy simulator could not be loaded from ${status.module}: ${err}`);
    $("sim-run").disabled = true;
    $("sim-result").dataset.state = "unavailable";
    return;
  }
  await loaded;
  run();
}
