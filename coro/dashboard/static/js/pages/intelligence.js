// Intelligence: the layers, every file with the layer that wins, rendered / source /
// diff-against-lower views, override into the tenant layer, revert, and inline editing
// with live preflight (saving is blocked while preflight reports errors).

import * as api from "../api.js";
import { busy, clear, confirmDialog, h, markdown, notice } from "../ui.js";

const KIND_ORDER = ["workflow", "agent", "instructions", "memory", "skill", "other"];
const PREFLIGHT_DELAY_MS = 300;

/** Line diff (longest common subsequence): [{op: " " | "+" | "-", text}]. */
export function lineDiff(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  const table = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push({ op: " ", text: a[i++] });
      j++;
    } else if (table[i + 1][j] >= table[i][j + 1]) out.push({ op: "-", text: a[i++] });
    else out.push({ op: "+", text: b[j++] });
  }
  while (i < a.length) out.push({ op: "-", text: a[i++] });
  while (j < b.length) out.push({ op: "+", text: b[j++] });
  return out;
}

export async function render(main) {
  const message = h("div");
  const layersBox = h("section", { "aria-labelledby": "layers-title" });
  const filesBox = h("nav", { class: "stack", "aria-label": "Intelligence files" });
  const fileBox = h("section", { id: "file-panel", "aria-live": "polite" });
  let selected = null;

  async function loadLayers() {
    const data = await api.get("/intelligence/layers");
    clear(
      layersBox,
      h("h2", { id: "layers-title" }, "Layers (lowest first)"),
      h(
        "ol",
        { class: "row", style: "list-style:none;padding:0" },
        data.layers.map((layer) =>
          h(
            "li",
            { class: "card", style: "min-width:10rem" },
            h("strong", {}, layer.name),
            h("div", { class: "muted" }, `${layer.rootKind}${layer.writable ? " · editable" : " · read-only"}`),
            h("div", { class: "muted" }, `${layer.counts?.total ?? 0} files`),
            layer.remote?.error ? h("div", { class: "notice error" }, layer.remote.error) : null,
          ),
        ),
      ),
    );
    const byKind = {};
    for (const file of data.files) (byKind[file.kind] ||= []).push(file);
    clear(
      filesBox,
      h("h2", {}, "Files"),
      KIND_ORDER.filter((kind) => byKind[kind]).map((kind) =>
        h(
          "div",
          {},
          h("h3", {}, kind),
          h(
            "ul",
            { style: "padding-left:1rem" },
            byKind[kind].map((file) =>
              h(
                "li",
                {},
                h(
                  "a",
                  {
                    href: "#/intelligence",
                    "aria-current": selected === file.path ? "true" : null,
                    onclick: (event) => {
                      event.preventDefault();
                      open(file.path);
                    },
                  },
                  file.path,
                ),
                " ",
                h("span", { class: "tag", title: `layers: ${file.layers.join(", ")}` }, file.winner),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function open(path) {
    selected = path;
    const file = await api.get(`/intelligence/file?path=${encodeURIComponent(path)}`);
    showFile(file);
  }

  function showFile(file) {
    const view = h("div");
    const modes = [
      ["rendered", "Rendered"],
      ["source", "Source"],
      ["diff", "Diff against lower layer"],
    ];
    let mode = "rendered";
    const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "View" });
    const drawTabs = () =>
      clear(
        tabs,
        modes.map(([key, label]) =>
          h(
            "button",
            {
              type: "button",
              role: "tab",
              "aria-selected": String(mode === key),
              disabled: key === "diff" && file.lowerContent == null,
              onclick: () => {
                mode = key;
                drawTabs();
                drawView();
              },
            },
            label,
          ),
        ),
      );
    const drawView = () => {
      if (mode === "rendered") clear(view, markdown(stripFrontMatter(file.content)));
      if (mode === "source") clear(view, h("pre", {}, file.content));
      if (mode === "diff") {
        const rows = lineDiff(file.lowerContent ?? "", file.content).map((line) =>
          h("div", { class: line.op === "+" ? "add" : line.op === "-" ? "del" : "" }, `${line.op} ${line.text}`),
        );
        clear(view, h("p", { class: "muted" }, `${file.lowerLayer} → ${file.layer}`), h("pre", { class: "diff" }, rows));
      }
    };
    drawTabs();
    drawView();

    const tenantHasIt = file.versions.some((v) => v.layer === "tenant");
    const edit = h("button", { type: "button", class: "primary", id: "edit-file" }, tenantHasIt ? "Edit" : "Override in tenant layer");
    edit.onclick = () => clear(actions, editor(file));
    const revert = h("button", { type: "button", class: "danger", id: "revert-file" }, "Revert to lower layer");
    revert.onclick = async () => {
      if (!(await confirmDialog(`Revert ${file.path}?`, "The tenant layer's copy is deleted.", "Revert"))) return;
      await busy(revert, message, async () => {
        await api.del(`/intelligence/file?path=${encodeURIComponent(file.path)}&layer=tenant`);
        notice(message, `${file.path} reverted.`, "ok");
        await loadLayers();
        await open(file.path);
      });
    };
    const actions = h("div", { class: "row" }, edit, tenantHasIt ? revert : null);
    clear(
      fileBox,
      h("h2", {}, file.path),
      h("p", { class: "muted" }, `${file.kind} · winning layer ${file.winningLayer} · layers: ${file.versions.map((v) => v.layer).join(", ")}`),
      tabs,
      view,
      actions,
    );
  }

  function editor(file) {
    const area = h("textarea", { id: "file-editor", class: "mono", rows: 20, value: file.content, "aria-describedby": "preflight" });
    const report = h("div", { id: "preflight", role: "status" });
    const save = h("button", { type: "button", class: "primary", id: "save-file" }, "Save to tenant layer");
    let timer = null;
    let checked = 0;
    const check = async () => {
      const mine = ++checked;
      const result = await api.post("/intelligence/preflight", { path: file.path, content: area.value });
      if (mine !== checked) return;
      save.disabled = !result.ok;
      clear(
        report,
        result.ok
          ? h("p", { class: "notice ok" }, result.warnings.length ? `OK, with warnings: ${result.warnings.join("; ")}` : "Preflight passed.")
          : h(
              "ul",
              { class: "notice error", role: "alert" },
              result.issues.filter((i) => i.severity !== "warning").map((i) => h("li", {}, `${i.line ? `line ${i.line}: ` : ""}${i.message}`)),
            ),
      );
    };
    area.addEventListener("input", () => {
      save.disabled = true;
      clearTimeout(timer);
      timer = setTimeout(() => check().catch((error) => notice(message, error.message, "error")), PREFLIGHT_DELAY_MS);
    });
    save.onclick = () =>
      busy(save, message, async () => {
        await api.put("/intelligence/file", { path: file.path, content: area.value, layer: "tenant" });
        notice(message, `Saved ${file.path} to the tenant layer.`, "ok");
        await loadLayers();
        await open(file.path);
      });
    check().catch(() => {});
    return h(
      "div",
      { class: "stack", style: "width:100%" },
      h("label", { for: "file-editor" }, `Edit ${file.path}`),
      area,
      report,
      h("div", { class: "row" }, save),
    );
  }

  main.append(
    h("h1", {}, "Intelligence"),
    message,
    layersBox,
    h("div", { class: "grid split" }, filesBox, fileBox),
  );
  await loadLayers();
  clear(fileBox, h("p", { class: "muted" }, "Choose a file to see which layer provides it."));
  return undefined;
}

function stripFrontMatter(text) {
  const match = /^---\n[\s\S]*?\n---\n?/.exec(text);
  return match ? `\`\`\`yaml\n${match[0].replace(/^---\n|\n---\n?$/g, "")}\n\`\`\`\n\n${text.slice(match[0].length)}` : text;
}
