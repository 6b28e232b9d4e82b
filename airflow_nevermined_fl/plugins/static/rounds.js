// The rounds chart: fetches rounds.json (this page's query: dag_id, run_id) and draws it as SVG; polls
// again while the run goes on. Text goes in through textContent only.
"use strict";

const POLL_MS = 2000;
const RUN_FINISHED = new Set(["success", "failed"]);
const SVG_NS = "http://www.w3.org/2000/svg";
const COLUMNS = [
  ["round", 0], ["global_accuracy", 4], ["global_loss", 4], ["accuracy", 4], ["loss", 4], ["participants", 0],
  ["refused_uploads", 0], ["duration", 1],
];

const byId = (id) => document.getElementById(id);

function svgNode(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// One chart over the rounds: a line per key (kind "line") or a bar per key and round (kind "bar"); a key
// no round reports (e.g. the global model's scores of a custom model) is left out, a missing value too.
function draw(svg, rounds, allKeys, kind, top) {
  const keys = allKeys.filter((k) => rounds.some((r) => r[k] !== null && r[k] !== undefined));
  const [width, height, left, right, above, below] = [360, 170, 40, 8, 8, 24];
  const max = top ?? (Math.max(1, ...rounds.flatMap((r) => keys.map((k) => r[k] ?? 0))));
  const slot = (width - left - right) / Math.max(rounds.length, 1);
  const x = (i) => left + slot * (i + 0.5);
  const y = (v) => above + (height - above - below) * (1 - (v ?? 0) / max);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  for (const tick of [0, max / 2, max]) {
    svg.append(svgNode("line", { class: "grid", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }));
    const label = Number.isInteger(tick) ? String(tick) : tick.toFixed(2);
    svg.append(svgNode("text", { x: left - 4, y: y(tick) + 3, "text-anchor": "end" }, label));
  }
  rounds.forEach((r, i) => svg.append(svgNode("text", { x: x(i), y: height - 8, "text-anchor": "middle" }, r.round)));
  const width1 = (slot * 0.7) / keys.length;
  keys.forEach((key, j) => {
    const group = svgNode("g", { class: `s-${key}`, "data-key": key });
    const known = rounds.map((r, i) => [r, i]).filter(([r]) => r[key] !== null && r[key] !== undefined);
    if (kind === "line" && known.length > 1) {
      group.append(svgNode("polyline", { class: "line", points: known.map(([r, i]) => `${x(i)},${y(r[key])}`).join(" ") }));
    }
    known.forEach(([r, i]) => {
      const mark = kind === "line"
        ? svgNode("circle", { class: "point", cx: x(i), cy: y(r[key]), r: 3.5 })
        : svgNode("rect", {
          class: "bar", x: x(i) - slot * 0.35 + j * width1, y: y(r[key]), width: width1, height: y(0) - y(r[key]),
        });
      mark.append(svgNode("title", {}, `round ${r.round}: ${key} ${r[key] ?? "–"}`));
      group.append(mark);
    });
    svg.append(group);
  });
}

function render(data) {
  const rounds = data.rounds;
  byId("run-id").textContent = data.run_id;
  byId("run-state").textContent = data.run_state;
  byId("progress").textContent = `${rounds.length} / ${data.rounds_planned ?? "?"}`;
  byId("final-accuracy").textContent = fixed(data.final_accuracy, 4);
  byId("refused-total").textContent = data.refused_uploads ?? "–";
  const coordinator = RUN_FINISHED.has(data.run_state) ? "the coordinator's last status" : "the coordinator, live";
  byId("source").textContent = { xcom: "the run's XComs (rounds over)", coordinator }[data.source] ?? "no round yet";
  byId("updated").textContent = new Date().toLocaleTimeString();
  byId("note").textContent = data.note ?? "";
  draw(byId("chart-loss"), rounds, ["global_loss", "loss"], "line");
  draw(byId("chart-accuracy"), rounds, ["global_accuracy", "accuracy"], "line", 1);
  draw(byId("chart-uploads"), rounds, ["participants", "refused_uploads"], "bar");
  draw(byId("chart-duration"), rounds, ["duration"], "bar");
  byId("rounds").replaceChildren(...rounds.map((r) => {
    const row = document.createElement("tr");
    for (const [key, digits] of COLUMNS) row.append(Object.assign(document.createElement("td"), { textContent: fixed(r[key], digits) }));
    return row;
  }));
  document.body.dataset.runState = data.run_state;
}

async function refresh() {
  const response = await fetch(`rounds.json${window.location.search}`, { headers: { Accept: "application/json" } })
    .catch((err) => ({ ok: false, status: 0, statusText: err.message }));
  if (response.ok) {
    const data = await response.json();
    render(data);
    if (!RUN_FINISHED.has(data.run_state)) setTimeout(refresh, POLL_MS);
    return;
  }
  const detail = response.status ? (await response.json().catch(() => ({}))).detail : undefined;
  const reason = typeof detail === "string" ? detail : response.statusText;
  byId("note").textContent = `cannot load the rounds (HTTP ${response.status || "error"}): ${reason}`;
  // A refusal (4xx) stays one; anything else may pass.
  if (!(response.status >= 400 && response.status < 500)) setTimeout(refresh, 2 * POLL_MS);
}

refresh();
