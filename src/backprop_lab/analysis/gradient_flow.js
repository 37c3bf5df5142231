// The gradient-flow page's script (analysis/gradient_flow.py inlines it). It inflates the
// gzip'd plotly.js and data carried by the page (DecompressionStream: nothing is fetched),
// then draws the layer profile, the layer x epoch heat maps, the glance table and the
// histograms, and wires the controls. window.gradientFlow exposes the state for tests.
"use strict";

async function inflate(id) {
  const text = document.getElementById(id).textContent.trim();
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

const PALETTE = {sigmoid: "#d62728", tanh: "#1f77b4", relu: "#2ca02c", leaky_relu: "#9467bd",
                 softsign: "#ff7f0e", identity: "#7f7f7f"};
const QUALITATIVE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const FONT = {family: "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif",
              size: 12};

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "n/a";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toPrecision(3);
}
function decades(log10ratio) {
  if (log10ratio === null || !isFinite(log10ratio)) return "n/a";
  return (log10ratio >= 0 ? "+" : "") + log10ratio.toFixed(1);
}

function main(D) {
  const $ = (id) => document.getElementById(id);
  const runs = D.runs;
  const metrics = D.metrics;
  const state = {metric: D.default_metric, filters: {}, epochIndex: 0, playing: null,
                 histRun: null, histKind: "deltas", histScale: "own"};
  const allEpochs = Array.from(new Set(runs.flatMap((r) => r.epochs))).sort((a, b) => a - b);
  const colourBy = new Set(runs.map((r) => r.label)).size > 1 ? "label" : "name";
  const keys = Array.from(new Set(runs.map((r) => r[colourBy])));
  const colour = {};
  keys.forEach((k, i) => {
    const act = colourBy === "label" ? runs.find((r) => r.label === k).activation : null;
    colour[k] = (act && PALETTE[act] && new Set(runs.map((r) => r.activation)).size === keys.length)
      ? PALETTE[act] : QUALITATIVE[i % QUALITATIVE.length];
  });
  const runColour = (r) => colour[r[colourBy]];
  const meta = (m) => metrics.find((x) => x.key === m);

  // ---- filters (a select per swept key besides the colour) -------------------------------
  for (const f of D.filters) {
    const wrap = document.createElement("label");
    wrap.textContent = f.key + " ";
    const sel = document.createElement("select");
    sel.id = "filter-" + f.key;
    sel.add(new Option("all", ""));
    for (const v of f.values) sel.add(new Option(String(v), String(v)));
    sel.value = f.default === null ? "" : String(f.default);
    state.filters[f.key] = sel.value;
    sel.addEventListener("change", () => { state.filters[f.key] = sel.value; drawAll(); });
    wrap.appendChild(sel);
    $("filters").appendChild(wrap);
  }
  const visible = () => runs.filter((r) => D.filters.every(
    (f) => state.filters[f.key] === "" || String(r[f.key]) === state.filters[f.key]));

  // ---- metric menu and epoch slider ------------------------------------------------------
  for (const m of metrics) $("metric").add(new Option(m.label, m.key));
  $("metric").value = state.metric;
  $("metric").addEventListener("change", () => { state.metric = $("metric").value; drawAll(); });
  const slider = $("epoch");
  slider.max = String(allEpochs.length - 1);
  slider.value = "0";
  slider.addEventListener("input", () => { state.epochIndex = +slider.value; drawEpoch(); });
  $("play").addEventListener("click", () => {
    if (state.playing) { stop(); return; }
    if (state.epochIndex >= allEpochs.length - 1) state.epochIndex = 0;
    $("play").textContent = "\u275a\u275a pause";
    state.playing = setInterval(() => {
      if (state.epochIndex >= allEpochs.length - 1) { stop(); return; }
      state.epochIndex += 1;
      slider.value = String(state.epochIndex);
      drawEpoch();
    }, Math.max(40, Math.min(150, 6000 / allEpochs.length)));
  });
  const jump = (i) => { stop(); state.epochIndex = i; slider.value = String(i); drawEpoch(); };
  $("to-start").addEventListener("click", () => jump(0));
  $("to-end").addEventListener("click", () => jump(allEpochs.length - 1));
  function stop() {
    clearInterval(state.playing);
    state.playing = null;
    $("play").textContent = "\u25b6 play";
  }

  const epoch = () => allEpochs[state.epochIndex];
  function rowAt(r, e) {  // the run's last kept epoch <= e (its last one if it stopped before)
    let i = 0;
    while (i + 1 < r.epochs.length && r.epochs[i + 1] <= e) i++;
    return i;
  }
  function valuesAt(r, m, e) {
    const row = r.values[m] ? r.values[m][rowAt(r, e)] : null;
    if (!row) return [];
    return meta(m).share ? row : row.map((v) => (v === null ? null : Math.pow(10, v)));
  }

  // ---- the layer profile -----------------------------------------------------------------
  function profileTraces() {
    const m = state.metric, e = epoch(), traces = [];
    const seen = new Set();
    for (const r of visible()) {
      const y = valuesAt(r, m, e);
      const x = y.map((_, i) => i + 1);
      const group = r[colourBy];
      traces.push({
        type: "scatter", mode: "lines+markers", x, y, name: r.name, legendgroup: group,
        legendgrouptitle: seen.has(group) || colourBy === "name" ? undefined : {text: group},
        line: {color: runColour(r), width: 2}, marker: {size: 5}, opacity: 0.85,
        hovertemplate: `<b>${r.name}</b><br>layer %{x}: ${meta(m).label} = %{y:.3g}` +
          `<br>epoch ${r.epochs[rowAt(r, e)]}<extra></extra>`,
      });
      seen.add(group);
      const theory = e === 0 && r.theory && r.theory[m];  // a prediction at initialization
      if (theory) {
        traces.push({
          type: "scatter", mode: "lines", x: theory.map((_, i) => i + 1), y: theory,
          name: r.name + " (theory)", legendgroup: group, showlegend: false,
          line: {color: runColour(r), width: 1.5, dash: "dash"}, opacity: 0.7,
          hovertemplate: `<b>${r.name}</b><br>mean-field theory at init, layer %{x}: ` +
            `%{y:.3g}<extra></extra>`,
        });
      }
    }
    return traces;
  }
  function profileLayout() {
    const m = meta(state.metric), e = epoch();
    const theoryNote = !D.theory_metrics.includes(state.metric) ? ""
      : e === 0 ? " (dashed: mean-field theory at initialization)"
      : " (mean-field theory: at epoch 0)";
    return {
      title: {text: `<b>${m.label}</b> per layer at epoch ${e}${theoryNote}`, x: 0.01,
              font: {size: 15}},
      font: FONT, height: 430, margin: {l: 70, r: 20, t: 45, b: 50},
      xaxis: {title: {text: "layer (1 = fed by the input \u2192 output)"}, dtick: 1,
              zeroline: false, gridcolor: "#eee"},
      yaxis: {title: {text: m.share ? m.label : m.label + " (log scale)"},
              type: m.share ? "linear" : "log", exponentformat: "power", gridcolor: "#eee",
              range: profileRange()},
      legend: {groupclick: "togglegroup", font: {size: 11}},
      hovermode: "closest", plot_bgcolor: "white",
    };
  }
  function profileRange() {  // fixed over epochs, so the slider shows movement
    const m = meta(state.metric);
    let lo = Infinity, hi = -Infinity;
    for (const r of visible()) {
      for (const row of r.values[state.metric] || []) {
        for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      for (const v of (r.theory && r.theory[state.metric]) || []) {
        if (v !== null && v > 0) {
          const t = m.share ? v : Math.log10(v);
          lo = Math.min(lo, t); hi = Math.max(hi, t);
        }
      }
    }
    if (!isFinite(lo)) return undefined;
    const pad = m.share ? 0.03 : 0.3;
    return [lo - pad, hi + pad];
  }

  // ---- heat maps: layer x epoch, one per run, one colour scale ---------------------------
  function heatmaps() {
    const m = meta(state.metric), shown = visible();
    const cols = Math.min(shown.length, shown.length > 4 ? 3 : shown.length);
    const rows = Math.ceil(shown.length / cols);
    let lo = Infinity, hi = -Infinity;
    for (const r of shown) for (const row of r.values[state.metric] || [])
      for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const traces = [], annotations = [], layout = {
      font: FONT, height: 80 + rows * 190, margin: {l: 55, r: 20, t: 30, b: 45},
      grid: {rows, columns: cols, pattern: "independent", xgap: 0.08, ygap: 0.32},
      coloraxis: {colorscale: "Viridis", cmin: lo, cmax: hi,
                  colorbar: {title: {text: m.share ? m.label : "log10<br>" + m.label,
                                     side: "right"}, thickness: 14}},
      plot_bgcolor: "#f4f4f4", showlegend: false,
    };
    shown.forEach((r, i) => {
      const n = i === 0 ? "" : String(i + 1);
      const data = r.values[state.metric] || [];
      const L = data.length ? data[0].length : 0;
      const z = [];
      for (let l = 0; l < L; l++) z.push(data.map((row) => row[l]));
      traces.push({type: "heatmap", x: r.epochs.map((e) => e + 1),
                   y: Array.from({length: L}, (_, l) => l + 1), z,
                   coloraxis: "coloraxis", xaxis: "x" + n, yaxis: "y" + n,
                   hovertemplate: `<b>${r.name}</b><br>layer %{y}, epoch %{customdata}: ` +
                     (m.share ? "%{z:.3f}" : "10^%{z:.2f}") + "<extra></extra>",
                   customdata: z.map(() => r.epochs)});
      const last = r.epochs[r.epochs.length - 1] + 1;
      const ticks = [1, 2, 11, 101, 1001, 10001, 100001].filter((t) => t <= last * 1.01);
      layout["xaxis" + n] = {type: "log", tickvals: ticks, ticktext: ticks.map((t) => t - 1),
                             title: i >= shown.length - cols ? {text: "epoch (log)",
                                                                 standoff: 2} : undefined,
                             range: [0, Math.log10(last)]};
      layout["yaxis" + n] = {title: i % cols === 0 ? {text: "layer"} : undefined,
                             dtick: L > 12 ? 5 : 1};
      annotations.push({text: `<b>${r.name}</b>`, showarrow: false, xref: `x${n} domain`,
                        yref: `y${n} domain`, x: 0, y: 1.02, xanchor: "left",
                        yanchor: "bottom", font: {size: 12}});
    });
    layout.annotations = annotations;
    layout.shapes = epochMarkers(shown);
    return {traces, layout};
  }
  function epochMarkers(shown) {
    return shown.map((r, i) => {
      const n = i === 0 ? "" : String(i + 1);
      const e = r.epochs[rowAt(r, epoch())] + 1;
      return {type: "line", xref: "x" + n, yref: `y${n} domain`, x0: e, x1: e, y0: 0, y1: 1,
              line: {color: "white", width: 1.5, dash: "dot"}};
    });
  }

  // ---- the glance table: how much of the output layer's gradient reaches layer 1 ---------
  function glance() {
    const rows = visible().map((r) => {
      const g = r.ends.grad_norm || [[], []];
      const ratio = (row) => (row.length && row[0] > 0 && row[row.length - 1] > 0
        ? Math.log10(row[0] / row[row.length - 1]) : null);
      const below = (row) => {  // the highest layer whose gradient is < 1/10 of the output's
        let k = 0;
        for (let l = 0; l < row.length - 1; l++)
          if (row[l] !== null && row[row.length - 1] > 0 && row[l] / row[row.length - 1] < 0.1)
            k = l + 1;
        return k ? `1\u2013${k}` : "none";
      };
      const acc = r.final["val/accuracy"] ?? r.final["train/accuracy"];
      return {r, init: ratio(g[0]), end: ratio(g[1]), belowInit: below(g[0]),
              belowEnd: below(g[1]), acc};
    });
    rows.sort((a, b) => (a.init ?? 0) - (b.init ?? 0));
    const head = "<tr><th>run</th><th title='log10 of grad_norm layer 1 / output layer'>" +
      "decades, layer 1 vs output, at init</th><th>after training</th>" +
      "<th>layers below 1/10 of the output's, at init</th><th>after training</th>" +
      "<th>final accuracy</th><th>outcome</th></tr>";
    const cell = (v) => `<td class="num ${v !== null && v < -1 ? "bad" : ""}">${decades(v)}</td>`;
    $("glance").innerHTML = "<table>" + head + rows.map((x) =>
      `<tr><td class="run"><span class="dot" style="background:${runColour(x.r)}"></span>${x.r.name}</td>` +
      cell(x.init) + cell(x.end) + `<td>${x.belowInit}</td><td>${x.belowEnd}</td>` +
      `<td class="num">${x.acc === null || x.acc === undefined ? "n/a" : x.acc.toFixed(3)}</td>` +
      `<td>${x.r.outcome || ""}</td></tr>`).join("") + "</table>";
  }

  // ---- histograms ------------------------------------------------------------------------
  const kindNames = {weights: "weights W", grads: "weight gradients dL/dW",
                     activations: "activations a", deltas: "back-propagated errors \u03b4"};
  function decode(b64) {
    const raw = atob(b64), out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  const decoded = new Map();
  function histData(r, kind) {
    const h = r.hist && r.hist[kind];
    if (!h) return null;
    const k = r.id + "/" + kind;
    if (!decoded.has(k)) decoded.set(k, decode(h.counts));
    return {h, counts: decoded.get(k)};
  }
  function setupHistograms() {
    const withHist = runs.filter((r) => r.hist && Object.keys(r.hist).length);
    if (!withHist.length) {
      $("hist-section").style.display = "none";
      return false;
    }
    for (const r of withHist) $("hist-run").add(new Option(r.name, r.id));
    const shown = visible().filter((r) => withHist.includes(r));
    state.histRun = (shown[0] || withHist[0]).id;
    $("hist-run").value = state.histRun;
    const kinds = Object.keys(withHist[0].hist);
    for (const k of ["deltas", "grads", "activations", "weights"].filter((k) => kinds.includes(k)))
      $("hist-kind").add(new Option(kindNames[k], k));
    state.histKind = kinds.includes("deltas") ? "deltas" : kinds[0];
    $("hist-kind").value = state.histKind;
    $("hist-run").addEventListener("change", () => { state.histRun = $("hist-run").value; drawHist(); });
    $("hist-kind").addEventListener("change", () => { state.histKind = $("hist-kind").value; drawHist(); });
    $("hist-scale").addEventListener("change", () => { state.histScale = $("hist-scale").value; drawHist(); });
    return true;
  }
  function drawHist() {
    const r = runs.find((x) => x.id === state.histRun);
    const got = r && histData(r, state.histKind);
    if (!got) { Plotly.purge($("hist")); return; }
    const {h, counts} = got;
    let i = 0;
    while (i + 1 < h.epochs.length && h.epochs[i + 1] <= epoch()) i++;
    const L = h.lo[0].length, B = h.bins, own = state.histScale === "own";
    let gLo = Infinity, gHi = -Infinity;
    for (let l = 0; l < L; l++) {
      if (h.lo[i][l] !== null) gLo = Math.min(gLo, h.lo[i][l]);
      if (h.hi[i][l] !== null) gHi = Math.max(gHi, h.hi[i][l]);
    }
    if (!own) { const a = Math.max(Math.abs(gLo), Math.abs(gHi)); if (state.histKind !== "activations" || gLo < 0) { gLo = -a; gHi = a; } }
    const z = [], text = [], ranges = [], shares = [];
    for (let l = 0; l < L; l++) {
      const lo = h.lo[i][l], hi = h.hi[i][l];
      const row = new Array(B).fill(0), txt = new Array(B).fill("");
      let total = 0;
      for (let b = 0; b < B; b++) total += counts[(i * L + l) * B + b];
      const w = (hi - lo) / B;
      for (let b = 0; b < B; b++) {
        const share = total ? counts[(i * L + l) * B + b] / total : 0;
        if (own) {
          row[b] = share;
          txt[b] = `${fmt(lo + b * w)} .. ${fmt(lo + (b + 1) * w)}`;
        } else {
          const centre = lo + (b + 0.5) * w;
          const t = Math.min(B - 1, Math.max(0, Math.floor((centre - gLo) / (gHi - gLo) * B)));
          row[t] += share;
        }
      }
      if (!own) {
        const gw = (gHi - gLo) / B;
        for (let b = 0; b < B; b++) txt[b] = `${fmt(gLo + b * gw)} .. ${fmt(gLo + (b + 1) * gw)}`;
      }
      const mode = Math.max(...row);
      shares.push(row);
      z.push(row.map((v) => (v > 0 && mode > 0 ? v / mode : null)));
      text.push(txt);
      ranges.push(`${fmt(lo)} .. ${fmt(hi)}`);
    }
    const x = own ? Array.from({length: B}, (_, b) => b + 0.5)
      : Array.from({length: B}, (_, b) => gLo + (b + 0.5) * (gHi - gLo) / B);
    const trace = {type: "heatmap", z, x, y: Array.from({length: L}, (_, l) => l + 1), text,
                   colorscale: [[0, "#eef3fa"], [0.25, "#9ecae1"], [0.6, "#3182bd"],
                                 [1, "#08306b"]], zmin: 0, zmax: 1,
                   customdata: shares.map((row, l) => row.map((v) => [v, ranges[l]])),
                   colorbar: {title: {text: "bin / the<br>layer's<br>fullest bin"}, thickness: 12,
                              x: own ? 1.17 : 1.02, xanchor: "left"},
                   hovertemplate: "layer %{y}: %{text}<br>%{customdata[0]:.1%} of the layer's values" +
                     (own ? "<br>layer's range %{customdata[1]}" : "") + "<extra></extra>"};
    const annotations = own ? ranges.map((t, l) => ({text: t, x: 1.005, xref: "paper", y: l + 1,
      yref: "y", xanchor: "left", showarrow: false, font: {size: 10, color: "#555"}})) : [];
    Plotly.react($("hist"), [trace], {
      font: FONT, height: Math.max(260, 90 + L * 22), plot_bgcolor: "white",
      title: {text: `<b>${r.name}</b>: ${kindNames[state.histKind]} per layer, epoch ` +
                    `${h.epochs[i]}`, x: 0.01, font: {size: 14}},
      margin: {l: 55, r: own ? 230 : 90, t: 45, b: 45}, annotations,
      xaxis: own ? {title: {text: "position in the layer's own range (64 bins, range at right)"},
                    showticklabels: false, range: [0, B]}
        : {title: {text: "value (one range for all layers)"}, exponentformat: "power"},
      yaxis: {title: {text: "layer"}, dtick: L > 12 ? 2 : 1},
    }, {displaylogo: false, responsive: true});
  }

  // ---- drawing ---------------------------------------------------------------------------
  const config = {displaylogo: false, responsive: true};
  function drawEpoch() {
    const e = epoch();
    $("epoch-label").textContent = `epoch ${e}`;
    Plotly.react($("profile"), profileTraces(), profileLayout(), config);
    if ($("heatmaps").layout) Plotly.relayout($("heatmaps"), {shapes: epochMarkers(visible())});
    if (hasHist) drawHist();
    window.gradientFlow.epoch = e;
  }
  function drawAll() {
    const {traces, layout} = heatmaps();
    Plotly.react($("heatmaps"), traces, layout, config);
    glance();
    drawEpoch();
  }
  const hasHist = setupHistograms();
  window.gradientFlow = {epoch: 0, epochs: allEpochs, ready: false};
  drawAll();
  window.gradientFlow.ready = true;
  window.gradientFlow.readyAt = performance.now();
  document.body.dataset.ready = "1";
}

(async function start() {
  try {
    const marks = {start: performance.now()};
    const [lib, data] = await Promise.all([inflate("gf-plotly"), inflate("gf-data")]);
    marks.inflated = performance.now();
    const script = document.createElement("script");
    script.textContent = lib;
    document.head.appendChild(script);
    marks.plotly = performance.now();
    const parsed = JSON.parse(data);
    marks.parsed = performance.now();
    main(parsed);
    marks.drawn = performance.now();
    window.gradientFlow.marks = marks;
  } catch (error) {
    document.getElementById("status").textContent = "This page could not be drawn: " + error;
    throw error;
  }
  document.getElementById("status").remove();
})();
