// InfiniteYou Studio frontend extension.
// * After a run, each InfiniteYou node shows what it did (the nodes send ui.infu_report): the identity
//   node its photos with face box, keypoints and aligned crop; the pose node its control image; the
//   loader variant/precision/blocks/tokens; Apply which identity and region, its preset and variant; the
//   likeness blend its two branches' weights and variants; similarity a score, band and rank per image. Shown in a DOM widget (classic canvas and Nodes 2.0), never saved in the
//   workflow, and shown again when a node's output comes from the cache.
// * The model doctor (GET /infiniteyou/models) as a dialog: from the nodes' context menu, the
//   Extensions menu, and by itself when a run or a validation fails on a model file.
// * Our validation messages (/prompt node_errors) on the nodes and in the dialog.
// * Presets (Apply, likeness blend): choosing one sets strength/start/end; editing one of those sets custom.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "InfU_";
const WIDGET = "infu_report";
const lastReports = new Map(); // node id -> last report (kept for cached executions)
const lastErrors = new Map(); // node id -> validation messages

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
  white-space:pre-wrap;word-break:break-word}
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
  const key = String(id).split(":").pop();
  return app.graph?.getNodeById?.(Number(key)) ?? app.graph?.getNodeById?.(key) ?? null;
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
    div.append(el("div", { class: "infu-errors", text: errors.join("\n") }));
    height += 16 + errors.join("\n").length / 2.2;
    if (errors.some(aboutModelFiles)) {
      div.append(el("button", { text: "Open the model doctor", onclick: () => openDoctor() }));
      height += 24;
    }
  }
  if (report && RENDER[report.kind]) height += RENDER[report.kind](node, report, div);
  fit(node, div, height);
}

function onExecuted({ detail }) {
  const out = detail?.output;
  const id = String(detail?.display_node ?? detail?.node ?? "");
  if (!out?.infu_report?.length) return;
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
  for (const id of detail?.nodes ?? []) if (lastReports.has(String(id))) render(String(id));
}

// ------------------------------------------------------------------------------------------ errors
const MODEL_FILE_HINT = /model doctor|not found|missing|truncated|corrupt|INVALID_PROTOBUF|antelopev2|refused|\.onnx|\.safetensors|\.pth|\.bin\b/i;
const aboutModelFiles = (message) => MODEL_FILE_HINT.test(message);

function showValidation(nodeErrors) {
  const ours = [];
  for (const [id, info] of Object.entries(nodeErrors ?? {})) {
    if (!String(info.class_type ?? nodeById(id)?.type ?? "").startsWith(PREFIX)) continue;
    const messages = [...new Set((info.errors ?? []).map((e) => String(e.details ?? e.message ?? "")
      .replace(/^[a-z_]+ - /, "")))];
    lastErrors.set(String(id), messages);
    render(String(id));
    ours.push({ id, title: nodeById(id)?.title ?? info.class_type, messages });
  }
  if (ours.length) openDoctor(ours, !ours.some((o) => o.messages.some(aboutModelFiles)));
}

function wrapQueuePrompt() {
  if (api.__infuWrapped) return;
  const original = api.queuePrompt;
  api.queuePrompt = async function (...args) {
    for (const id of lastErrors.keys()) { lastErrors.delete(id); render(id); }
    try {
      // ComfyUI queues a prompt when at least one output validates: node_errors may come with a 200.
      const response = await original.apply(this, args);
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
  if (String(detail?.node_type ?? "").startsWith(PREFIX) && aboutModelFiles(message)) {
    openDoctor([{ id: detail.node_id, title: `${detail.node_type} (run failed)`, messages: [message] }]);
  }
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
    const missing = report.missing_groups ?? [];
    body.append(el("div", { class: "infu-summary", "data-ready": String(report.ready),
      text: report.ready ? "Every required model file is in place and opens." :
        `Not ready: ${missing.length} required model(s) missing or unusable (${missing.join(", ")}).` }));
    body.append(el("div", { text: `Shell lines run in ${report.run_in}.` }));
    if (report.fix_all) body.append(el("h3", { text: "Everything missing, in one line" }),
      el("pre", { class: "infu-shell infu-fix-all", text: report.fix_all }), copyButton(report.fix_all));
    const needed = report.entries.filter((e) => e.need === "required" || e.status === "broken" || e.status === "refused" || e.status === "misplaced" || e.status === "ok");
    const rest = report.entries.filter((e) => !needed.includes(e));
    body.append(el("h3", { text: "Files" }), ...needed.map(entryView));
    if (rest.length) {
      body.append(el("details", {}, el("summary", { text: `${rest.length} optional file(s) not installed` }), ...rest.map(entryView)));
    }
  } catch (error) {
    body.textContent = `Could not reach /infiniteyou/models: ${error}`;
  }
  return backdrop;
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
    window.InfiniteYou = { openDoctor, lastReports, lastErrors, render };
  },
  async beforeConfigureGraph() {
    // another workflow: node ids mean other nodes now
    lastReports.clear();
    lastErrors.clear();
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
