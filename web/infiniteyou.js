// InfiniteYou Studio frontend extension.
// * After a run, each InfiniteYou node shows what it did (the nodes send ui.infu_report): the identity
//   node its photos with face box, keypoints and aligned crop; the pose node its control image; the
//   loader variant/precision/blocks/tokens; Apply which identity and region, its preset and variant; the
//   likeness blend its two branches' weights and variants; similarity a score, band and rank per image. Shown in a DOM widget (classic canvas and Nodes 2.0), never saved in the
//   workflow, and shown again when a node's output comes from the cache.
// * The model doctor (GET /infiniteyou/models) as a dialog: from the nodes' context menu, the
//   Extensions menu, and by itself when a run or a validation fails on a model file.
// * Our validation messages (/prompt node_errors) on the nodes and in the dialog.
// * The template browser: each of the pack's cards gets its one-line description (GET /infiniteyou/templates)
//   under its title, where the frontend repeats the file name.
// * Presets (Apply, likeness blend): choosing one sets strength/start/end; editing one of those sets custom.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "InfU_";
const WIDGET = "infu_report";
const lastReports = new Map(); // node id -> last report (kept for cached executions)
const lastErrors = new Map(); // node id -> validation messages
const promptGraphs = new Map(); // prompt id -> the workflow it was queued from (graphGeneration then)
let graphGeneration = 0; // counts the workflows loaded into the canvas: node ids of another mean other nodes

const CSS = `
.infu-panel{font:12px/1.35 system-ui,sans-serif;color:var(--input-text,#ddd);padding:4px 6px;box-sizing:border-box;
  overflow:hidden;width:100%}
.infu-panel img{display:block;max-width:100%;max-height:220px;object-fit:contain;border-radius:3px;margin:2px 0}
.infu-panel .infu-title{font-weight:600;margin:2px 0}
.infu-panel .infu-caption{opacity:.85;margin-bottom:4px}
.infu-panel table{border-collapse:collapse;width:100%}
.infu-panel td{padding:1px 4px;vertical-align:middle}
.infu-panel .infu-bar{height:8px;border-radius:4px;background:#555;min-width:40px;position:relative}
.infu-panel .infu-bar>i{position:absolute;left:0;top:0;bottom:0;border-radius:4px}
.infu-band-same{color:#5fd35f}.infu-bar>i.infu-band-same{background:#3fb93f}
.infu-band-likely{color:#e0b050}.infu-bar>i.infu-band-likely{background:#d09a30}
.infu-band-unlikely,.infu-band-no_face{color:#e06060}.infu-bar>i.infu-band-unlikely{background:#c04040}
.infu-panel tr.infu-kept td:first-child{font-weight:700}
.infu-panel .infu-warning{background:#5a4a1d;color:#ffe9b0;border:1px solid #c9a13a;border-radius:4px;padding:3px 6px;margin:3px 0}
.infu-panel .infu-errors{background:#5a1d1d;color:#ffd7d7;border:1px solid #c44;border-radius:4px;padding:4px 6px;
  white-space:pre-wrap;word-break:break-word;max-height:120px;overflow-y:auto;box-sizing:border-box}
.infu-panel button,.infu-doctor button{cursor:pointer;background:#334;color:#eef;border:1px solid #667;border-radius:4px;
  padding:2px 8px;margin:2px 0}
.infu-doctor-backdrop{position:fixed;inset:0;background:rgba(0,0,0,.55);z-index:10000;display:flex;
  align-items:center;justify-content:center}
.infu-doctor{background:#1e1f24;color:#e8e8ea;font:13px/1.4 system-ui,sans-serif;width:min(1000px,94vw);
  max-height:88vh;overflow:auto;border-radius:8px;border:1px solid #555;padding:12px 16px;box-shadow:0 8px 40px #000}
.infu-doctor h2{font-size:17px;margin:0 0 6px}.infu-doctor h3{font-size:14px;margin:12px 0 4px}
.infu-doctor .infu-close{float:right}
.infu-doctor code,.infu-doctor pre{font:12px/1.35 ui-monospace,monospace;background:#111;border-radius:4px}
.infu-doctor pre{padding:6px 8px;white-space:pre-wrap;word-break:break-all;margin:4px 0}
.infu-doctor .infu-entry{border-top:1px solid #333;padding:6px 0}
.infu-doctor .infu-status{display:inline-block;min-width:70px;text-align:center;border-radius:10px;padding:0 6px;
  font-weight:600;margin-right:6px}
.infu-status-ok{background:#1f5f2a}.infu-status-missing{background:#6a5313}.infu-status-broken,
.infu-status-refused{background:#7a2020}.infu-status-misplaced{background:#6a3d13}
.infu-doctor .infu-errors{background:#5a1d1d;border:1px solid #c44;border-radius:4px;padding:6px 8px;white-space:pre-wrap}
.infu-doctor a{color:#8cf}
.infu-template-line{margin:0;font-size:12px;line-height:1.35;opacity:.8;display:-webkit-box;-webkit-line-clamp:2;
  -webkit-box-orient:vertical;overflow:hidden}
`;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function viewUrl(image) {
  const q = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "", type: image.type ?? "temp" });
  return api.apiURL(`/view?${q}`);
}

function fmt(x, digits = 2) {
  return typeof x === "number" ? x.toFixed(digits) : String(x);
}

// ------------------------------------------------------------------------------------------ node panels
function nodeById(id) {
  // "12:5" is node 5 inside the subgraph that node 12 of the root graph holds, never node 5 of the root graph
  let graph = app.graph, node = null;
  for (const key of String(id).split(":")) {
    if (!graph) return null;
    node = graph.getNodeById?.(Number(key)) ?? graph.getNodeById?.(key) ?? null;
    if (!node) return null;
    graph = node.subgraph ?? null;
  }
  return node;
}

function fromAnotherWorkflow(detail) {
  // a report of a prompt this page queued from a workflow no longer open: its node ids are not this graph's
  const queuedFrom = promptGraphs.get(String(detail?.prompt_id ?? ""));
  return queuedFrom !== undefined && queuedFrom !== graphGeneration;
}

function panelOf(node) {
  if (node.__infuPanel) return node.__infuPanel;
  const div = el("div", { class: "infu-panel", "data-infu-node": String(node.id), "data-infu-type": node.type });
  const widget = node.addDOMWidget(WIDGET, "infu-report", div, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: () => Number(div.dataset.height || 24),
  });
  widget.serialize = false; // never in the saved workflow (graph) ...
  widget.options.serialize = false; // ... nor in the prompt
  node.__infuPanel = div;
  return div;
}

function fit(node, div, height) {
  // The node grows by what the panel needs (and shrinks back when the panel shrinks).
  const previous = Number(div.dataset.height || 0);
  div.dataset.height = String(Math.ceil(height));
  const wanted = Math.max(node.computeSize?.()[1] ?? 0, node.size[1] - previous + Math.ceil(height));
  node.setSize([Math.max(node.size[0], 300), wanted]);
  app.graph?.setDirtyCanvas?.(true, true);
}

const MAX_IMAGE = 220;

function imageHeight(node, ratio) {
  return Math.min(MAX_IMAGE, (Math.max(node.size[0], 300) - 20) * ratio);
}

function photoFacts(p, r, div) {
  // one photo's measurements (Identity From Images): quality, the weight it got, how it agrees with the rest
  if (p.quality == null) return 0;
  const agree = p.similarity_to_others == null ? "" : `, to the other photos ${fmt(p.similarity_to_others, 3)}`;
  div.append(el("div", { class: `infu-caption infu-photo-facts${p.outlier ? " infu-band-unlikely" : ""}`, "data-photo": String(p.photo),
    text: `${p.choice}, ${fmt(p.face_size[0], 0)}×${fmt(p.face_size[1], 0)} px · score ${fmt(p.detector_score)} · ` +
      `sharpness ${fmt(p.sharpness, 0)} · quality ${fmt(p.quality)} · weight ${fmt(p.weight)} (${r.combine}) · ` +
      `similarity ${fmt(p.similarity, 3)}${agree}${p.outlier ? " · OUTLIER" : ""}` }));
  return 34;
}

const RENDER = {
  identity(node, r, div) {
    let h = 24;
    div.append(el("div", { class: "infu-title", text: `Identity ${r.fingerprint} · ${r.photos.length} photo(s)` +
      (r.tokens ? ` · ${r.tokens} tokens` : "") }));
    r.photos.forEach((p, i) => {
      const [x1, y1, x2, y2] = p.box;
      if (r.images[i]) {
        div.append(el("img", { class: "infu-face", src: viewUrl(r.images[i]), alt: `photo ${i} with face box, keypoints and aligned crop` }));
        h += imageHeight(node, 512 / 768) + 4;
      }
      div.append(el("div", { class: "infu-caption", text: `photo ${i} (${p.size[0]}×${p.size[1]}): face box ` +
        `${fmt(x1, 0)},${fmt(y1, 0)} – ${fmt(x2, 0)},${fmt(y2, 0)}, ${p.keypoints.length} keypoints; right: the aligned 112×112 crop ArcFace saw` }));
      h += 34 + photoFacts(p, r, div);
    });
    if (r.outliers?.length) {
      div.append(el("div", { class: "infu-errors infu-outliers", text: `photo(s) ${r.outliers.map((n) => n - 1).join(", ")} ` +
        "do not look like the other photos (ArcFace cosine below 0.32): another person, or an unusable photo?" }));
      h += 40;
    }
    return h;
  },
  regions(node, r, div) {
    div.append(el("div", { class: "infu-title", text: `Face regions: ${r.regions.length} people on ${r.width}×${r.height} ` +
      `(${r.order}, feather ${r.feather} px; ${r.found} face(s) in the photo)` }));
    let h = 40;
    if (r.images?.[0]) {
      div.append(el("img", { class: "infu-regions", src: viewUrl(r.images[0]), alt: "layout photo on the canvas, regions coloured and numbered" }));
      h += imageHeight(node, r.height / r.width) + 4;
    }
    const table = el("table", { class: "infu-region-table" });
    for (const g of r.regions) {
      table.append(el("tr", { "data-mask": String(g.mask) },
        el("td", {}, el("span", { style: `display:inline-block;width:12px;height:12px;border-radius:2px;background:rgb(${g.colour.join(",")})` })),
        el("td", { text: `mask_${g.mask}` }),
        el("td", { text: g.identity ? `${g.identity} (${g.fingerprint})` : "no identity connected" }),
        el("td", { text: `${(100 * g.share).toFixed(1)}% of the image` })));
      h += 20;
    }
    div.append(table);
    for (const pair of r.pairs ?? []) {
      div.append(el("div", { class: "infu-caption", text: `${pair.a} vs ${pair.b}: ArcFace cosine ${pair.cosine.toFixed(3)}` }));
      h += 18;
    }
    for (const warning of r.warnings ?? []) {
      div.append(el("div", { class: "infu-errors infu-mixing", text: warning }));
      h += 40;
    }
    return h;
  },
  pose(node, r, div) {
    div.append(el("div", { class: "infu-title", text: `Control image ${r.width}×${r.height}` }));
    if (r.images[0]) div.append(el("img", { class: "infu-pose", src: viewUrl(r.images[0]), alt: "pose control image" }));
    div.append(el("div", { class: "infu-caption", text: "five keypoints on black, at the output size" }));
    return 50 + (r.images[0] ? imageHeight(node, r.height / r.width) : 0);
  },
  infusenet(node, r, div) {
    const rows = [["variant", r.variant], ["precision", r.precision], ["base", r.base],
      ["blocks", `${r.double_blocks} double + ${r.single_blocks} single`], ["identity tokens", r.tokens ?? "none"],
      ["width", r.hidden_size]];
    div.append(el("table", { class: "infu-facts" }, ...rows.map(([k, v]) =>
      el("tr", { "data-key": k }, el("td", { text: k }), el("td", { class: "infu-value", text: String(v) })))));
    return rows.length * 18 + 10;
  },
  apply(node, r, div) {
    const win = `${fmt(r.start)}–${fmt(r.end)} (${r.window})`;
    div.append(el("div", { class: "infu-title", text: `Identity ${r.fingerprint} (${r.photos} photo(s))` }));
    div.append(el("div", { class: "infu-caption", text: `strength ${fmt(r.strength)} · window ${win} · pose ${r.control ? "yes" : "no (black)"}` }));
    const ran = [r.preset && r.preset !== "custom" ? `preset ${r.preset}` : null, r.variant ? `InfuseNet ${r.variant}` : null,
      r.reprojected ? "identity re-projected with this InfuseNet" : null].filter(Boolean);
    if (ran.length) div.append(el("div", { class: "infu-caption infu-ran", text: ran.join(" · ") }));
    let h = 60 + (ran.length ? 18 : 0);
    if (r.mask?.length) {
      div.append(el("div", { class: "infu-caption", text: "region (white = this identity):" }));
      div.append(el("img", { class: "infu-mask", src: viewUrl(r.mask[0]), alt: "mask thumbnail", style: "max-height:128px;background:#000" }));
      h += 150;
    } else {
      div.append(el("div", { class: "infu-caption", text: "region: the whole image (no mask)" }));
      h += 18;
    }
    return h;
  },
  face_encoder(node, r, div) {
    div.append(el("div", { class: "infu-caption", text: `detector on ${r.providers.join(", ")} · ArcFace on ${r.device} (${r.dtype})` }));
    return 34;
  },
  face_mask(node, r, div) {
    div.append(el("div", { class: "infu-caption", text: `face region (grow ${fmt(r.grow)}, feather ${r.feather} px):` }));
    if (r.mask?.length) div.append(el("img", { class: "infu-mask", src: viewUrl(r.mask[0]), alt: "face mask thumbnail", style: "max-height:128px;background:#000" }));
    return 160;
  },
  similarity(node, r, div) {
    div.append(el("div", { class: "infu-title", text: `ArcFace similarity to identity ${r.fingerprint ?? ""}` }));
    const table = el("table", { class: "infu-similarity" });
    r.rows.forEach((row, i) => {
      const pct = row.score == null ? 0 : Math.max(0, Math.min(1, row.score)) * 100;
      table.append(el("tr", { class: `infu-band-${row.band}${row.kept ? " infu-kept" : ""}`, "data-band": row.band,
        "data-rank": String(row.rank ?? ""), "data-kept": String(Boolean(row.kept)) },
        el("td", { text: `image ${i}${i === r.best_index ? " ★" : ""}` }),
        el("td", { class: "infu-rank", text: row.rank ? `#${row.rank}${row.kept ? " kept" : ""}` : "" }),
        el("td", { class: "infu-score", text: row.score == null ? "no face" : row.score.toFixed(3) }),
        el("td", { style: "width:30%" }, el("div", { class: "infu-bar" }, el("i", { class: `infu-band-${row.band}`, style: `width:${pct}%` }))),
        el("td", { class: "infu-meaning", text: row.meaning })));
    });
    div.append(table);
    const kept = r.kept?.length ? `kept: ${r.kept.map((i) => `image ${i}`).join(", ")} · ` : "";
    div.append(el("div", { class: "infu-caption", text: kept + "bands (ArcFace verification thresholds, measured on photos): " +
      r.bands.map((b) => (b.from > -1 ? `≥${b.from} ${b.band}` : `below: ${b.band}`)).join(", ") }));
    return 62 + r.rows.length * 20;
  },
  blend(node, r, div) {
    const win = `${fmt(r.start)}–${fmt(r.end)}`;
    div.append(el("div", { class: "infu-title", text: `Identity ${r.fingerprint} · likeness ${fmt(r.likeness)}` }));
    div.append(el("div", { class: "infu-caption", text: `ran: strength ${fmt(r.strength)} · window ${win} (steps)` +
      ` · preset ${r.preset} · pose ${r.control ? "yes" : "no (black)"}` }));
    const table = el("table", { class: "infu-blend" });
    for (const b of r.branches) {
      table.append(el("tr", { "data-socket": b.socket, "data-ran": String(b.ran) },
        el("td", { text: b.socket.replace("infusenet_", "") }),
        el("td", { class: "infu-variant", text: b.variant }),
        el("td", { class: "infu-value", text: b.ran ? `strength ${fmt(b.strength, 3)}` : "skipped (weight 0)" }),
        el("td", { text: b.reprojected ? "identity re-projected" : "" })));
    }
    div.append(table);
    for (const w of r.warnings) div.append(el("div", { class: "infu-warning", text: w }));
    let h = 70 + r.branches.length * 20 + r.warnings.length * 36;
    if (r.mask?.length) {
      div.append(el("img", { class: "infu-mask", src: viewUrl(r.mask[0]), alt: "mask thumbnail", style: "max-height:128px;background:#000" }));
      h += 132;
    }
    return h;
  },
};

function onTheNode(message) {
  // On the node, what is wrong in a line per file; how to fix it (links, shell lines) is the doctor's, a click away.
  return message.replace(/ \(InfiniteYou model doctor: [^)]*\)/, "").split("\n")
    .map((line) => line.replace(/\. Fix: [\s\S]*$/, ".")).join("\n");
}

function render(nodeId) {
  const node = nodeById(nodeId);
  if (!node || !String(node.type).startsWith(PREFIX)) return;
  const report = lastReports.get(String(nodeId));
  const errors = lastErrors.get(String(nodeId));
  if (!report && !errors) return;
  const div = panelOf(node);
  div.replaceChildren();
  let height = 8;
  if (errors?.length) {
    const shown = errors.map(onTheNode).join("\n");
    div.append(el("div", { class: "infu-errors", text: shown, title: errors.join("\n") }));
    height += Math.min(120, 16 + shown.length / 2.2) + 4; // longer scrolls: the node keeps to the room the layout keeps
    if (errors.some(aboutModelFiles)) {
      div.append(el("button", { text: "Open the model doctor", onclick: () => openDoctor() }));
      height += 24;
    }
  }
  if (report && RENDER[report.kind]) height += RENDER[report.kind](node, report, div);
  fit(node, div, height);
  fitToContent(node, div);
}

function fitToContent(node, div) {
  // The estimate above sizes the node before the panel is laid out; once the browser has drawn it (and again
  // as its pictures arrive), the node grows to what the panel really takes, so nothing in it is cut off.
  const measure = () => {
    if (!div.isConnected || !div.childElementCount) return;
    const content = div.scrollHeight; // what the panel's content takes, in its own (unzoomed) pixels
    if (content > div.clientHeight + 1 && content > Number(div.dataset.height || 0) + 1) fit(node, div, content);
  };
  requestAnimationFrame(() => requestAnimationFrame(measure));
  for (const img of div.querySelectorAll("img")) if (!img.complete) img.addEventListener("load", measure, { once: true });
}

function onExecuted({ detail }) {
  const out = detail?.output;
  const id = String(detail?.display_node ?? detail?.node ?? "");
  if (!out?.infu_report?.length || fromAnotherWorkflow(detail)) return;
  try {
    lastReports.set(id, JSON.parse(out.infu_report[out.infu_report.length - 1]));
  } catch (e) {
    console.warn("InfiniteYou: unreadable report", e);
    return;
  }
  lastErrors.delete(id);
  render(id);
}

function onCached({ detail }) {
  if (fromAnotherWorkflow(detail)) return;
  for (const id of detail?.nodes ?? []) if (lastReports.has(String(id))) render(String(id));
}

// ------------------------------------------------------------------------------------------ errors
const MODEL_FILE_HINT = /model doctor|not found|missing|truncated|corrupt|INVALID_PROTOBUF|antelopev2|refused|\.onnx|\.safetensors|\.pth|\.bin\b/i;
const aboutModelFiles = (message) => MODEL_FILE_HINT.test(message);

// The server's messages start with the node's name (its logs and API clients need it); shown under the
// node's own title, that name would be said twice.
function nodeNames(id, type) {
  const node = nodeById(id);
  const same = node?.type === type ? node : null; // a report of another graph's node names its own type
  const types = globalThis.LiteGraph?.registered_node_types ?? window.comfyAPI?.litegraph?.LiteGraph?.registered_node_types;
  return [same?.title, same?.constructor?.title, types?.[type]?.title].filter(Boolean);
}

function withoutNodeName(message, names) {
  for (const name of names) if (message.startsWith(`${name}: `)) return message.slice(name.length + 2);
  return message;
}

function showValidation(nodeErrors) {
  const ours = [];
  for (const [id, info] of Object.entries(nodeErrors ?? {})) {
    const type = String(info.class_type ?? nodeById(id)?.type ?? "");
    if (!type.startsWith(PREFIX)) continue;
    const names = nodeNames(id, type);
    const messages = [...new Set((info.errors ?? []).map((e) => withoutNodeName(String(e.details ?? e.message ?? "")
      .replace(/^[a-z_]+ - /, ""), names)))];
    lastErrors.set(String(id), messages);
    render(String(id));
    ours.push({ id, title: names[0] ?? type, messages });
  }
  if (ours.length) openDoctor(ours, !ours.some((o) => o.messages.some(aboutModelFiles)));
}

function wrapQueuePrompt() {
  if (api.__infuWrapped) return;
  const original = api.queuePrompt;
  api.queuePrompt = async function (...args) {
    for (const id of lastErrors.keys()) { lastErrors.delete(id); render(id); }
    const generation = graphGeneration;
    try {
      // ComfyUI queues a prompt when at least one output validates: node_errors may come with a 200.
      const response = await original.apply(this, args);
      if (response?.prompt_id) promptGraphs.set(String(response.prompt_id), generation);
      if (promptGraphs.size > 200) promptGraphs.delete(promptGraphs.keys().next().value);
      if (response?.node_errors && Object.keys(response.node_errors).length) {
        try { showValidation(response.node_errors); } catch (e) { console.warn("InfiniteYou:", e); }
      }
      return response;
    } catch (error) {
      try { showValidation(error?.response?.node_errors); } catch (e) { console.warn("InfiniteYou:", e); }
      throw error;
    }
  };
  api.__infuWrapped = true;
}

function onExecutionError({ detail }) {
  const message = String(detail?.exception_message ?? "");
  const type = String(detail?.node_type ?? "");
  if (type.startsWith(PREFIX) && aboutModelFiles(message)) {
    const names = nodeNames(detail.node_id, type);
    openDoctor([{ id: detail.node_id, title: `${names[0] ?? type} (run failed)`, messages: [withoutNodeName(message, names)] }]);
  }
}

// ------------------------------------------------------------------------------------------ files on open
// When a workflow opens, each of its loaders asks the server whether its files are there and usable (the node's
// own validation, GET /infiniteyou/loader-check): what is missing shows on the node, the doctor one click away,
// before anyone presses Run.
const LOADERS = ["InfU_InfuseNetLoader", "InfU_FaceEncoderLoader"];

async function checkLoaders() {
  const generation = graphGeneration;
  const nodes = (app.graph?.nodes ?? app.graph?._nodes ?? []).filter((n) => LOADERS.includes(n.type) && n.mode !== 4);
  await Promise.all(nodes.map(async (node) => {
    const query = new URLSearchParams({ node: node.type });
    for (const w of node.widgets ?? []) {
      if (w.name === WIDGET || w.value == null || typeof w.value === "object") continue;
      const input = node.inputs?.find((i) => i.name === w.name);
      if (input?.link != null) return; // a name that comes over a link is checked when the node runs
      query.set(w.name, String(w.value));
    }
    try {
      const res = await api.fetchApi(`/infiniteyou/loader-check?${query}`, { cache: "no-store" });
      const answer = await res.json();
      if (generation !== graphGeneration || answer.ok !== false) return;
      lastErrors.set(String(node.id), [withoutNodeName(String(answer.message), nodeNames(node.id, node.type))]);
      render(String(node.id));
    } catch (e) {
      console.warn("InfiniteYou: could not check the loader's files", e);
    }
  }));
}

// ------------------------------------------------------------------------------------------ presets
// Apply InfiniteYou and the likeness blend send their preset table in the preset combo's options
// (infu_presets: name -> {strength, start, end}, null for custom), the same numbers the server runs.
const PRESET_FIELDS = ["strength", "start", "end"];

function presetTable(nodeData) {
  const spec = nodeData?.input?.required?.preset ?? nodeData?.input?.optional?.preset;
  return spec?.[1]?.infu_presets ?? null;
}

function linkPresets(node, table) {
  const find = (name) => node.widgets?.find((w) => w.name === name);
  const preset = find("preset");
  if (!preset || node.__infuPresets) return;
  node.__infuPresets = true;
  let applying = false;
  const show = (name) => {
    const values = table[name];
    if (!values) return; // custom: the widgets' own values run
    applying = true;
    try {
      for (const field of PRESET_FIELDS) {
        const w = find(field);
        if (w && values[field] != null) w.value = values[field];
      }
    } finally {
      applying = false;
    }
    node.setDirtyCanvas?.(true, true);
  };
  const presetCallback = preset.callback;
  preset.callback = function (...args) {
    const result = presetCallback?.apply(this, args);
    show(preset.value);
    return result;
  };
  for (const field of PRESET_FIELDS) {
    const w = find(field);
    if (!w) continue;
    const callback = w.callback;
    w.callback = function (...args) {
      const result = callback?.apply(this, args);
      const values = table[preset.value];
      if (!applying && values && Number(w.value) !== values[field]) preset.value = "custom"; // edited by hand
      return result;
    };
  }
  return show;
}

// ------------------------------------------------------------------------------------------ the doctor
function copyButton(text) {
  return el("button", { text: "copy", onclick: () => navigator.clipboard?.writeText(text) });
}

function humanSize(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function entryView(e) {
  const box = el("div", { class: `infu-entry infu-entry-${e.status}`, "data-key": e.key, "data-status": e.status },
    el("span", { class: `infu-status infu-status-${e.status}`, text: e.status }),
    el("b", { text: e.title }), " ",
    el("code", { text: e.found ?? e.expected }),
    e.size != null ? ` · ${humanSize(e.size)}` : "",
    el("div", { class: "infu-detail", text: e.detail + (e.note ? ` — ${e.note}` : "") }));
  const fix = e.fix;
  if (fix) {
    const how = el("div", { class: "infu-fix" }, el("div", { text: fix.what ?? "" }));
    if (fix.folder) how.append(el("div", {}, "folder: ", el("code", { text: `ComfyUI/models/${fix.folder}` })));
    if (fix.url) how.append(el("div", {}, "download: ", el("a", { href: fix.url, target: "_blank", rel: "noopener", text: fix.url })));
    if (fix.page) how.append(el("div", {}, "page: ", el("a", { href: fix.page, target: "_blank", rel: "noopener", text: fix.page })));
    if (fix.note) how.append(el("div", { text: `note: ${fix.note}` }));
    if (fix.shell) how.append(el("pre", { class: "infu-shell", text: fix.shell }), copyButton(fix.shell));
    box.append(how);
  }
  return box;
}

// the model files the open workflow's loaders name, as paths under ComfyUI's models folder; the detector packs apart
const MODEL_WIDGETS = {
  UNETLoader: { unet_name: "diffusion_models" }, CLIPLoader: { clip_name: "text_encoders" },
  DualCLIPLoader: { clip_name1: "text_encoders", clip_name2: "text_encoders" }, VAELoader: { vae_name: "vae" },
  InfU_InfuseNetLoader: { infusenet_name: "infiniteyou", projection: "infiniteyou" },
  InfU_FaceEncoderLoader: { arcface: "insightface" },
};

function filesOfTheOpenWorkflow() {
  const files = new Set(), packs = new Set(), names = new Set();
  for (const n of app.graph?.nodes ?? app.graph?._nodes ?? []) {
    if (n.mode === 4) continue; // bypassed
    const value = (name) => n.widgets?.find((w) => w.name === name)?.value;
    for (const w of n.widgets ?? []) if (typeof w.value === "string" && w.value.length > 2) names.add(w.value);
    for (const [widget, folder] of Object.entries(MODEL_WIDGETS[n.type] ?? {})) {
      let name = value(widget);
      if (typeof name !== "string" || !name) continue;
      if (widget === "projection" && name.startsWith("auto")) {
        // "auto" reads image_proj_model.bin beside the InfuseNet
        const net = String(value("infusenet_name") ?? "");
        name = `${net.includes("/") ? net.slice(0, net.lastIndexOf("/") + 1) : ""}image_proj_model.bin`;
      }
      files.add(`${folder}/${name}`);
    }
    if (n.type === "InfU_FaceEncoderLoader" && typeof value("detector_pack") === "string") packs.add(value("detector_pack"));
  }
  return { files, packs, names };
}

async function workflowEntries(report) {
  // the doctor's entries for what the open workflow uses, one per file: the catalogue's where it names the file,
  // else the doctor's check of that one file (GET /infiniteyou/models/<path>)
  const { files, packs, names } = filesOfTheOpenWorkflow();
  const uses = (path) => files.has(path) || [...packs].some((p) => path.includes(`/${p}/`) || path.endsWith(`/${p}`)) ||
    [...names].some((v) => path.endsWith(`/${v}`));
  const here = new Map(); // path -> entry
  for (const e of report.entries) if (uses(String(e.expected ?? "")) && !here.has(e.expected)) here.set(e.expected, e);
  for (const path of files) {
    if (here.has(path)) continue;
    try {
      const res = await api.fetchApi(`/infiniteyou/models/${path.split("/").map(encodeURIComponent).join("/")}`, { cache: "no-store" });
      if (res.ok) here.set(path, await res.json());
    } catch (e) {
      console.warn("InfiniteYou: could not check", path, e);
    }
  }
  return [...here.values()];
}

function fixAllView(body, line, heading) {
  if (line) body.append(el("h3", { text: heading }), el("pre", { class: "infu-shell infu-fix-all", text: line }), copyButton(line));
}

function workflowView(body, report, here) {
  // what the open workflow needs, apart from the alternatives it does not use and other workflows' files
  const missing = here.filter((e) => e.status !== "ok");
  body.append(el("div", { class: "infu-summary", "data-ready": String(!missing.length), "data-scope": "workflow",
    text: missing.length ? `This workflow cannot run yet: ${missing.length} of the ${here.length} model files it uses ` +
      `missing or unusable (${[...new Set(missing.map((e) => e.title))].join(", ")}).` :
      `Every model file this workflow uses is in place and opens (${here.length} files).` }));
  body.append(el("div", { text: `Shell lines run in ${report.run_in}.` }));
  fixAllView(body, [...new Set(missing.map((e) => e.fix?.shell).filter(Boolean))].join(" && "),
    "What this workflow is missing, in one line"); // one download for the files of one archive
  body.append(el("h3", { text: "Files this workflow uses" }), el("div", { class: "infu-here" }, ...here.map(entryView)));
  const shown = new Set(here.map((e) => e.expected));
  const rest = report.entries.filter((e) => !shown.has(e.expected));
  if (rest.length) {
    const others = el("details", { class: "infu-others" }, el("summary", { text:
      `${rest.length} other file(s): alternatives this workflow does not use and other workflows' files` }));
    fixAllView(others, report.fix_all, "Every missing file the pack can use, in one line");
    others.append(...rest.map(entryView));
    body.append(others);
  }
}

function inventoryView(body, report) {
  const missing = report.missing_groups ?? [];
  body.append(el("div", { class: "infu-summary", "data-ready": String(report.ready), "data-scope": "pack",
    text: report.ready ? "Every required model file is in place and opens." :
      `Not ready: ${missing.length} required model(s) missing or unusable (${missing.join(", ")}).` }));
  body.append(el("div", { text: `Shell lines run in ${report.run_in}.` }));
  fixAllView(body, report.fix_all, "Everything missing, in one line");
  const needed = report.entries.filter((e) => e.need === "required" || e.status === "broken" || e.status === "refused" || e.status === "misplaced" || e.status === "ok");
  const rest = report.entries.filter((e) => !needed.includes(e));
  body.append(el("h3", { text: "Files" }), ...needed.map(entryView));
  if (rest.length) {
    body.append(el("details", {}, el("summary", { text: `${rest.length} optional file(s) not installed` }), ...rest.map(entryView)));
  }
}

let doctorOpen = null;

async function openDoctor(errors = [], errorsOnly = false) {
  // errorsOnly: messages about values (start after end, an unknown choice), not files: no model doctor in sight
  doctorOpen?.remove();
  const title = errorsOnly ? "InfiniteYou: the run was refused" : "InfiniteYou model doctor";
  const dialog = el("div", { class: "infu-doctor", role: "dialog", "aria-label": title,
    "data-infu-dialog": errorsOnly ? "refused" : "doctor" });
  const backdrop = el("div", { class: "infu-doctor-backdrop", onclick: (ev) => ev.target === backdrop && backdrop.remove() }, dialog);
  doctorOpen = backdrop;
  dialog.append(el("button", { class: "infu-close", text: "close", onclick: () => backdrop.remove() }),
    el("h2", { text: title }));
  if (errors.length && !errorsOnly) {
    dialog.append(el("h3", { text: "The run was refused" }));
  }
  if (errors.length) {
    for (const e of errors) {
      dialog.append(el("div", { class: "infu-errors", "data-node": String(e.id) }, el("b", { text: `${e.title}: ` }), e.messages.join("\n")));
    }
  }
  document.body.append(backdrop);
  if (errorsOnly) return backdrop;
  const body = el("div", { class: "infu-doctor-body", text: "checking the model folders…" });
  dialog.append(body);
  try {
    const res = await api.fetchApi("/infiniteyou/models", { cache: "no-store" });
    const report = await res.json();
    body.replaceChildren();
    const here = await workflowEntries(report);
    if (here.length) workflowView(body, report, here);
    else inventoryView(body, report);
  } catch (error) {
    body.textContent = `Could not reach /infiniteyou/models: ${error}`;
  }
  return backdrop;
}

// ------------------------------------------------------------------------------------------ template cards
// The frontend titles a custom node's template with its file name and gives it no description (1.32.9 shows the
// name again, spaced out, where a description goes). Cards carry data-testid="template-workflow-<name>".
const CARD = "template-workflow-";

function describeCards(lines) {
  for (const card of document.querySelectorAll(`[data-testid^="${CARD}"]`)) {
    const line = lines[card.dataset.testid.slice(CARD.length)];
    const title = line && card.querySelector("h3");
    if (!title) continue;
    const own = card.querySelector(".infu-template-line");
    const theirs = own ? null : title.parentElement.querySelector("p[title]"); // 1.32.9: the name, spaced out
    const target = own ?? theirs ?? title.insertAdjacentElement("afterend", el("p", { class: "infu-template-line" }));
    if (target.textContent !== line) target.textContent = line;
    if (target.title !== line) target.title = line;
  }
}

async function watchTemplateCards() {
  let lines;
  try {
    lines = await (await api.fetchApi("/infiniteyou/templates")).json();
  } catch {
    return; // an older server without the route: the cards keep the frontend's text
  }
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      if (document.querySelector('[data-testid="template-workflows-content"]')) describeCards(lines);
    });
  }).observe(document.body, { childList: true, subtree: true });
}

// ------------------------------------------------------------------------------------------ registration
app.registerExtension({
  name: "infiniteyou-studio.frontend",
  commands: [{ id: "InfiniteYou.ModelDoctor", label: "InfiniteYou: model doctor", icon: "pi pi-heart", function: () => openDoctor() }],
  menuCommands: [{ path: ["Extensions", "InfiniteYou"], commands: ["InfiniteYou.ModelDoctor"] }],
  async setup() {
    document.head.append(el("style", { id: "infiniteyou-style", text: CSS }));
    api.addEventListener("executed", onExecuted);
    api.addEventListener("execution_cached", onCached);
    api.addEventListener("execution_error", onExecutionError);
    wrapQueuePrompt();
    watchTemplateCards();
    window.InfiniteYou = { openDoctor, lastReports, lastErrors, render };
  },
  async beforeConfigureGraph() {
    // another workflow: node ids mean other nodes now
    graphGeneration += 1;
    lastReports.clear();
    lastErrors.clear();
  },
  async afterConfigureGraph() {
    checkLoaders();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const presets = presetTable(nodeData);
    if (presets) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        this.__infuShowPreset = linkPresets(this, presets);
        return r;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = onConfigure?.apply(this, arguments);
        const preset = this.widgets?.find((w) => w.name === "preset");
        if (preset) this.__infuShowPreset?.(preset.value); // a saved preset shows the values it runs
        return r;
      };
    }
    const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const r = getExtraMenuOptions?.apply(this, arguments);
      options.push(null, { content: "InfiniteYou: model doctor…", callback: () => openDoctor() });
      return r;
    };
  },
});
