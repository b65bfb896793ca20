// Rendering of server data: every server string goes in as text
// (textContent / createTextNode), never as HTML.
import embed from "vega-embed";
import { expressionInterpreter } from "vega-interpreter";

// An element `tag` with attributes and children (strings become text nodes).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// A safe id fragment for `text` (ids of tool calls, hits, summaries).
export function idOf(...parts) {
  return parts.map((p) => String(p).replace(/[^A-Za-z0-9_-]/g, "_")).join("-");
}

const pad = (n) => String(n).padStart(2, "0");

// A quarry.v1.Value as display text, and whether it is a number.
export function cell(value) {
  const kind = value?.kind;
  switch (kind?.case) {
    case undefined:
    case "nullValue":
      return { text: "—", num: false };
    case "boolValue":
      return { text: kind.value ? "true" : "false", num: false };
    // numbers as the database returned them (no grouping: years, ids and
    // codes stay as they are, and a copied cell pastes as a number)
    case "int64Value":
      return { text: String(kind.value), num: true };
    case "doubleValue":
      return { text: kind.value.toLocaleString("en", { maximumFractionDigits: 6, useGrouping: false }), num: true };
    case "decimalValue":
      return { text: kind.value, num: true };
    case "textValue":
    case "jsonValue":
      return { text: kind.value, num: false };
    case "bytesValue":
      return { text: `${kind.value.length} bytes`, num: false };
    case "dateValue":
      return { text: `${kind.value.year}-${pad(kind.value.month)}-${pad(kind.value.day)}`, num: false };
    case "timestampValue": {
      const ms = Number(kind.value.seconds) * 1000 + Math.floor(kind.value.nanos / 1e6);
      return { text: new Date(ms).toISOString(), num: false };
    }
    default:
      return { text: "", num: false };
  }
}

// A table of a quarry.v1.RowSet, captioned.
export function rowTable(rows, caption) {
  const head = el("tr", {}, rows.columns.map((c) => el("th", { scope: "col", title: c.typeName }, c.name)));
  const body = rows.rows.map((row) =>
    el(
      "tr",
      {},
      row.values.map((v) => {
        const { text, num } = cell(v);
        return el("td", { class: num ? "num" : undefined }, text);
      }),
    ),
  );
  return el(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el("table", { class: "result" }, el("caption", { class: "visually-hidden" }), el("thead", {}, head), el("tbody", {}, body)),
  );
}

// Renders the Vega-Lite `specJson` into `target` as SVG. Expressions run
// through vega-interpreter (no eval), as the page's CSP requires.
export async function chart(target, specJson) {
  const spec = JSON.parse(specJson);
  spec.width = "container";
  spec.autosize = { type: "fit-x", contains: "padding" };
  await embed(target, spec, {
    renderer: "svg",
    actions: false,
    ast: true,
    expr: expressionInterpreter,
  });
}

// Plain-text SQL with a copy button.
export function sqlBlock(sql, label) {
  const code = el("code", {}, sql);
  const status = el("span", { class: "copied", "aria-live": "polite" });
  const copy = el(
    "button",
    {
      type: "button",
      class: "copy",
      "aria-label": `Copy ${label}`,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(sql);
          status.textContent = " copied";
        } catch {
          const range = document.createRange();
          range.selectNodeContents(code);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          status.textContent = " selected: press Ctrl+C to copy";
        }
      },
    },
    "Copy SQL",
  );
  return el("div", { class: "sql-block" }, el("pre", {}, code), copy, status);
}

export function formatUsage(usage) {
  const parts = [
    `${Number(usage.totalTokens).toLocaleString("en")} tokens (${Number(usage.promptTokens).toLocaleString("en")} in, ${Number(usage.completionTokens).toLocaleString("en")} out)`,
    `${usage.modelCalls} model call${usage.modelCalls === 1 ? "" : "s"}`,
    `${usage.toolCalls} tool call${usage.toolCalls === 1 ? "" : "s"}`,
    `${Number(usage.elapsedMs).toLocaleString("en")} ms`,
    usage.costKnown ? `cost $${usage.costUsd.toFixed(4)}` : "cost unknown",
  ];
  return parts.join(" · ");
}
