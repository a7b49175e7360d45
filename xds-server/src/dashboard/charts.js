// Time-series charts in plain SVG: lines (or steps) over a shared time axis,
// with vertical marks for events. No library: the dashboard has no build step.

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes, appended to `parent` if given. */
export function svgEl(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

/** hh:mm:ss of a time in ms since the epoch, in the browser's zone. */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

const MARGIN = { left: 52, right: 10, top: 10, bottom: 20 };

/**
 * Draws a chart into `svg`, replacing what it held.
 *
 * - `series`: `[{ label, cls, points: [[t, value or null]], step }]`; a null
 *   value breaks the line (no data), `step` draws a staircase (a weight).
 * - `x0`, `x1`: the time domain (ms); `yMax`: the top of the value axis
 *   (the bottom is 0); `format`: how to print a value.
 * - `marks`: `[{ t, cls, title }]`, vertical lines with a tooltip.
 */
export function drawChart(svg, { series, x0, x1, yMax, format = String, marks = [], height = 110 }) {
  const width = Math.max(240, Math.round(svg.clientWidth || svg.parentElement?.clientWidth || 640));
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const span = Math.max(1, x1 - x0);
  const top = yMax > 0 ? yMax : 1;
  const x = (t) => MARGIN.left + ((t - x0) / span) * plotW;
  const y = (v) => MARGIN.top + plotH - (Math.min(Math.max(v, 0), top) / top) * plotH;

  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    const yy = y(value);
    svgEl("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: yy, y2: yy, class: "grid" }, svg);
    const label = svgEl("text", { x: MARGIN.left - 6, y: yy + 4, class: "axis", "text-anchor": "end" }, svg);
    label.textContent = format(value);
  }
  const left = svgEl("text", { x: MARGIN.left, y: height - 5, class: "axis" }, svg);
  left.textContent = clock(x0);
  const right = svgEl("text", { x: width - MARGIN.right, y: height - 5, class: "axis", "text-anchor": "end" }, svg);
  right.textContent = clock(x1);

  for (const mark of marks) {
    if (mark.t < x0 || mark.t > x1) continue;
    const group = svgEl("g", { class: `mark ${mark.cls || ""}` }, svg);
    svgEl("line", { x1: x(mark.t), x2: x(mark.t), y1: MARGIN.top, y2: MARGIN.top + plotH }, group);
    // A wider invisible line, so that the tooltip is easy to reach.
    svgEl("line", { x1: x(mark.t), x2: x(mark.t), y1: MARGIN.top, y2: MARGIN.top + plotH, class: "hit" }, group);
    svgEl("title", {}, group).textContent = mark.title;
  }

  let legendX = MARGIN.left + 6;
  for (const s of series) {
    let d = "";
    let previous = null;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined || !Number.isFinite(v)) {
        previous = null;
        continue;
      }
      if (previous === null) d += `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      else if (s.step) d += `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
      else d += `L${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      previous = v;
    }
    if (d) svgEl("path", { d, class: `series ${s.cls}` }, svg);
    if (s.label) {
      const swatch = svgEl("text", { x: legendX, y: MARGIN.top + 10, class: `legend ${s.cls}` }, svg);
      swatch.textContent = `— ${s.label}`;
      legendX += 12 + 7 * s.label.length;
    }
  }
}

/** The highest finite value of the series' points, at least `floor`. */
export function peak(series, floor) {
  let top = floor;
  for (const s of series) {
    for (const [, v] of s.points) if (v !== null && Number.isFinite(v) && v > top) top = v;
  }
  return top;
}

/** A small line without axes, for a table cell. */
export function sparkline(svg, points, { yMax, cls = "", width = 120, height = 24 }) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  if (points.length < 2) return;
  const x0 = points[0][0];
  const span = Math.max(1, points[points.length - 1][0] - x0);
  const top = yMax > 0 ? yMax : 1;
  let d = "";
  for (const [t, v] of points) {
    if (v === null || !Number.isFinite(v)) continue;
    const xx = ((t - x0) / span) * (width - 2) + 1;
    const yy = height - 1 - (Math.min(Math.max(v, 0), top) / top) * (height - 2);
    d += `${d ? "L" : "M"}${xx.toFixed(1)},${yy.toFixed(1)}`;
  }
  if (d) svgEl("path", { d, class: `series ${cls}` }, svg);
}
