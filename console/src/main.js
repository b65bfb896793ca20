// Quarry's console: sign in with a token, ask, and watch the answer form.
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AnswerStatus, AskMode, AskRequestSchema, CitationKind } from "./gen/quarry/v1/assistant_pb.js";
import { assistantClient, plainError, tokenStore } from "./client.js";
import { cell, chart, el, formatUsage, idOf, rowTable, sqlBlock } from "./render.js";

const $ = (id) => document.getElementById(id);
const client = assistantClient();
const state = { conversationId: "", asking: null };

// ---- errors -------------------------------------------------------------

function showError(error) {
  const { title, detail, signOut: out } = plainError(error);
  const box = $("error");
  box.replaceChildren(el("strong", {}, title), detail ? el("span", {}, ` (${detail})`) : "");
  box.hidden = false;
  if (out) signOut(false);
  return title;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// ---- sign in ------------------------------------------------------------

function subjectOf(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return [payload.sub, payload.tenant ?? payload.tid].filter(Boolean).join(" @ ");
  } catch {
    return "";
  }
}

function renderSignedIn() {
  const token = tokenStore.get();
  $("signin").hidden = !!token;
  $("signedin").hidden = !token;
  $("who").textContent = token ? `Signed in ${subjectOf(token) ? `as ${subjectOf(token)}` : ""}` : "";
  $("ask-button").disabled = !token;
  $("question").disabled = !token;
}

function signOut(clear = true) {
  tokenStore.clear();
  if (clear) clearError();
  state.conversationId = "";
  $("conversation-list").replaceChildren();
  $("transcript").replaceChildren();
  renderSignedIn();
  renderContext();
  $("token").focus();
}

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  tokenStore.set(token);
  $("token").value = "";
  clearError();
  renderSignedIn();
  await loadConversations();
  $("question").focus();
});
$("signout").addEventListener("click", () => signOut());

// ---- conversations ------------------------------------------------------

function renderContext() {
  $("context").textContent = state.conversationId
    ? `Continuing conversation ${state.conversationId}`
    : "A new conversation";
  for (const button of document.querySelectorAll("#conversation-list button")) {
    button.setAttribute("aria-current", String(button.dataset.id === state.conversationId));
  }
}

async function loadConversations() {
  if (!tokenStore.get()) return;
  try {
    const response = await client.listConversations({ pageSize: 50 });
    $("conversation-list").replaceChildren(
      ...response.conversations.map((c) => {
        const when = c.updatedAt ? timestampDate(c.updatedAt).toLocaleString() : "";
        return el(
          "li",
          {},
          el(
            "button",
            { type: "button", "data-id": c.conversationId, onclick: () => openConversation(c.conversationId) },
            c.title || c.conversationId,
            el("span", { class: "meta" }, `${c.turnCount} turn${c.turnCount === 1 ? "" : "s"} · ${when}`),
          ),
        );
      }),
    );
    renderContext();
  } catch (error) {
    showError(error);
  }
}

async function openConversation(id) {
  clearError();
  try {
    const response = await client.getConversation({ conversationId: id });
    state.conversationId = id;
    $("transcript").replaceChildren(...response.turns.map(storedTurn));
    renderContext();
    $("question").focus();
  } catch (error) {
    showError(error);
  }
}

$("new").addEventListener("click", () => {
  state.conversationId = "";
  $("transcript").replaceChildren();
  clearError();
  renderContext();
  $("question").focus();
});

// ---- one turn -----------------------------------------------------------

const MODE_NAMES = { [AskMode.AGENTIC]: "agentic", [AskMode.ROUTER]: "router" };

function citationList(turnId, citations) {
  if (!citations.length) return null;
  const items = citations.map((c) => {
    let label;
    let target;
    if (c.kind === CitationKind.SQL_ROWS) {
      label = `rows of ${c.callId ? `tool call ${c.callId}` : "the query"}`;
      target = idOf(turnId, "call", c.callId);
    } else if (c.kind === CitationKind.DOCUMENT) {
      label = `document ${c.sourceId}`;
      target = idOf(turnId, "hit", c.callId, c.sourceId);
    } else if (c.kind === CitationKind.SUMMARY) {
      label = `summary ${c.sourceId}`;
      target = idOf(turnId, "summary", c.callId, c.sourceId);
    } else {
      label = c.sourceId || c.callId;
    }
    const link = target && document.getElementById(target)
      ? el("a", { href: `#${target}`, onclick: (e) => jump(e, target) }, label)
      : el("span", {}, label);
    return el("li", {}, link, c.sql ? el("details", {}, el("summary", {}, "SQL"), sqlBlock(c.sql, `the SQL of ${label}`)) : null);
  });
  return el("section", { class: "citations", "aria-label": "Citations" }, el("strong", {}, "Sources"), el("ol", {}, items));
}

function jump(event, target) {
  event.preventDefault();
  const node = document.getElementById(target);
  if (!node) return;
  if (node.tagName === "DETAILS") node.open = true;
  node.closest("details")?.setAttribute("open", "");
  node.scrollIntoView({ block: "center" });
  node.setAttribute("tabindex", "-1");
  node.focus();
}

function statusText(status) {
  switch (status) {
    case AnswerStatus.UNANSWERED:
      return "Not answered from the data.";
    case AnswerStatus.LIMIT_REACHED:
      return "Stopped at a limit before a full answer.";
    case AnswerStatus.FAILED:
      return "The answer failed.";
    default:
      return "";
  }
}

// A live turn: elements filled as the Ask stream's events arrive.
class LiveTurn {
  constructor(question) {
    this.id = `t${Date.now().toString(36)}`;
    this.calls = new Map();
    this.route = el("p", { class: "route" }, "Waiting for the server…");
    this.tools = el("div", { class: "tools" });
    this.answer = el("div", { class: "answer pending", "aria-live": "polite", "aria-atomic": "false", id: idOf(this.id, "answer") });
    this.text = "";
    this.tail = el("div", { class: "tail" });
    this.node = el(
      "article",
      { class: "turn", "aria-label": `Asked: ${question}` },
      el("h3", {}, question),
      this.route,
      this.tools,
      el("h4", { class: "visually-hidden" }, "Answer"),
      this.answer,
      this.tail,
    );
  }

  started(e) {
    state.conversationId = e.conversationId;
    renderContext();
    this.route.textContent = `Request ${e.requestId}: deciding the route…`;
  }

  routeDecided(e) {
    this.route.textContent = `Route: ${e.route || MODE_NAMES[e.mode] || "default"} (${MODE_NAMES[e.mode] ?? "mode"}) — ${e.reason}`;
  }

  toolCallStarted(e) {
    const status = el("span", { class: "state" }, " running…");
    const body = el("div", { class: "body" });
    let args = e.argumentsJson;
    try {
      args = JSON.stringify(JSON.parse(e.argumentsJson), null, 2);
    } catch {
      // shown as sent
    }
    body.append(el("details", {}, el("summary", {}, "Arguments"), el("pre", {}, el("code", {}, args))));
    const node = el(
      "details",
      { class: "tool", open: true, id: idOf(this.id, "call", e.callId), "data-tool": e.toolName },
      el("summary", {}, `${e.toolName} (${e.callId})`, status),
      body,
    );
    this.calls.set(e.callId, { node, body, state: status });
    this.tools.append(node);
  }

  toolResult(e) {
    let call = this.calls.get(e.callId);
    if (!call) {
      this.toolCallStarted({ callId: e.callId, toolName: e.toolName, argumentsJson: "{}" });
      call = this.calls.get(e.callId);
    }
    const ms = Number(e.elapsedMs);
    const outcome = e.outcome;
    switch (outcome.case) {
      case "sql":
        this.sqlResult(call, e.callId, outcome.value, ms);
        break;
      case "search":
        this.searchResult(call, e.callId, outcome.value, ms);
        break;
      case "summaries":
        this.summaryResult(call, e.callId, outcome.value, ms);
        break;
      case "schema":
        call.state.textContent = ` — schema of ${outcome.value.tables?.length ?? 0} tables, ${ms} ms`;
        break;
      case "error":
        call.state.textContent = ` — failed, ${ms} ms`;
        call.body.append(el("p", { class: "refused" }, outcome.value));
        break;
      default:
        call.state.textContent = ` — done, ${ms} ms`;
    }
  }

  sqlResult(call, callId, r, ms) {
    const rows = Number(r.rowCount);
    call.state.textContent = ` — ${rows.toLocaleString("en")} row${rows === 1 ? "" : "s"}, ${ms} ms`;
    call.body.append(el("h5", {}, "SQL"), sqlBlock(r.sql, `the SQL of call ${callId}`));
    const failed = r.attempts.filter((a) => a.error);
    if (failed.length) {
      call.body.append(
        el("details", {}, el("summary", {}, `${failed.length} earlier attempt${failed.length === 1 ? "" : "s"} refused`),
          failed.map((a) => el("div", {}, el("pre", {}, el("code", {}, a.sql)), el("p", { class: "refused" }, a.error)))),
      );
    }
    // the table and its chart side by side on a wide screen
    const grid = el("div", { class: "result-grid" });
    call.body.append(grid);
    if (r.rows && r.rows.columns.length) {
      const shown = r.rows.rows.length;
      grid.append(
        el(
          "div",
          {},
          el("h5", {}, shown < rows ? `Result (first ${shown} of ${rows.toLocaleString("en")} rows)` : "Result"),
          rowTable(r.rows, `Result of call ${callId}`),
        ),
      );
    }
    if (r.chartSpecJson) {
      const target = el("div", { class: "chart", role: "img", "aria-label": `Chart of the result of call ${callId}` });
      grid.append(el("div", {}, el("h5", {}, "Chart"), target));
      chart(target, r.chartSpecJson).catch((error) => {
        target.replaceChildren(el("p", { class: "refused" }, `The chart could not be drawn: ${error.message}`));
      });
    }
  }

  searchResult(call, callId, r, ms) {
    call.state.textContent = ` — ${r.hits.length} hit${r.hits.length === 1 ? "" : "s"} in ${r.collection}, ${ms} ms`;
    const items = r.hits.map((hit) => {
      const fields = Object.entries(hit.fields).sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, value]) => {
        const { text } = cell(value);
        // only http(s) links: a stored string is data, not a script URL
        const shown = /^https?:\/\//i.test(text) ? el("a", { href: text, rel: "noopener noreferrer", target: "_blank" }, text) : text;
        return el("div", {}, el("strong", {}, `${name}: `), shown);
      });
      // a document citation's source id is `collection/key`
      const id = idOf(this.id, "hit", callId, `${r.collection}/${hit.key}`);
      return el("li", { id, class: "hit" }, el("span", {}, `${hit.key} (score ${hit.score.toFixed(3)})`), fields);
    });
    call.body.append(el("p", {}, `Query: ${r.query}`), el("ol", { class: "hits" }, items));
  }

  summaryResult(call, callId, r, ms) {
    call.state.textContent = ` — ${r.summaries.length} summar${r.summaries.length === 1 ? "y" : "ies"}, ${ms} ms`;
    const items = r.summaries.map((s) =>
      el("li", { id: idOf(this.id, "summary", callId, s.id), class: "summary" }, el("strong", {}, `${s.kind} · ${s.entityName || s.entityKey}`), el("p", {}, s.text)),
    );
    call.body.append(el("ul", { class: "summaries" }, items));
  }

  answerDelta(e) {
    if (!this.text) {
      // the answer starts: bring it into view once (the reader may then
      // scroll back up to the tool calls without being pulled down again)
      this.answer.classList.remove("pending");
      this.answer.scrollIntoView({ block: "nearest" });
    }
    this.text += e.text;
    this.answer.append(document.createTextNode(e.text));
  }

  finalAnswer(e) {
    this.answer.classList.remove("pending");
    if (e.text !== this.text) this.answer.textContent = e.text;
    const status = statusText(e.status);
    if (status) this.tail.append(el("p", { class: "refused" }, status));
    if (e.ungroundedNumbers.length) {
      this.tail.append(el("p", { class: "refused" }, `Numbers not found in any tool result: ${e.ungroundedNumbers.join(", ")}`));
    }
    const cites = citationList(this.id, e.citations);
    if (cites) this.tail.append(cites);
  }

  usage(e) {
    this.tail.append(el("p", { class: "usage" }, formatUsage(e)));
  }

  failed(message) {
    this.answer.classList.remove("pending");
    if (!this.text) this.answer.textContent = "";
    this.tail.append(el("p", { class: "refused", role: "status" }, message));
  }
}

// A turn reopened from the conversation store (no rows are kept there).
function storedTurn(t) {
  const id = `s${t.turn}`;
  const tools = t.toolCalls.map((c) =>
    el(
      "details",
      { class: "tool", id: idOf(id, "call", c.callId), "data-tool": c.toolName },
      el("summary", {}, `${c.toolName} (${c.callId})`, el("span", { class: "state" }, c.error ? " — failed" : ` — ${Number(c.resultCount)} results`)),
      c.sql ? sqlBlock(c.sql, `the SQL of call ${c.callId}`) : null,
      c.error ? el("p", { class: "refused" }, c.error) : null,
    ),
  );
  const node = el(
    "article",
    { class: "turn", "aria-label": `Asked: ${t.question}` },
    el("h3", {}, t.question),
    el("p", { class: "route" }, `Route: ${t.route || MODE_NAMES[t.mode] || "default"}${t.askedAt ? ` · ${timestampDate(t.askedAt).toLocaleString()}` : ""}`),
    el("div", { class: "tools" }, tools),
    el("div", { class: "answer" }, t.answer),
  );
  const status = statusText(t.status);
  if (status) node.append(el("p", { class: "refused" }, status));
  // citations link to the calls above, so the node must be in a document
  // for the lookup: build them against the node itself
  const probe = (target) => node.querySelector(`#${CSS.escape(target)}`);
  const cites = t.citations.map((c) => {
    const target = idOf(id, "call", c.callId);
    const label = c.kind === CitationKind.SQL_ROWS ? `rows of tool call ${c.callId}` : `${c.sourceId || c.callId}`;
    return el("li", {}, probe(target) ? el("a", { href: `#${target}`, onclick: (e) => jump(e, target) }, label) : el("span", {}, label));
  });
  if (cites.length) node.append(el("section", { class: "citations", "aria-label": "Citations" }, el("strong", {}, "Sources"), el("ol", {}, cites)));
  if (t.usage) node.append(el("p", { class: "usage" }, formatUsage(t.usage)));
  return node;
}

// ---- asking -------------------------------------------------------------

async function ask(question) {
  clearError();
  const turn = new LiveTurn(question);
  $("transcript").append(turn.node);
  turn.node.scrollIntoView({ block: "start" });
  const controller = new AbortController();
  state.asking = controller;
  $("ask-button").disabled = true;
  $("stop").hidden = false;
  const request = create(AskRequestSchema, {
    question,
    conversationId: state.conversationId,
    mode: Number($("mode").value),
    previewRows: 50,
  });
  try {
    for await (const response of client.ask(request, { signal: controller.signal })) {
      const event = response.event;
      switch (event.case) {
        case "started":
          turn.started(event.value);
          break;
        case "route":
          turn.routeDecided(event.value);
          break;
        case "toolCallStarted":
          turn.toolCallStarted(event.value);
          break;
        case "toolResult":
          turn.toolResult(event.value);
          break;
        case "answerDelta":
          turn.answerDelta(event.value);
          break;
        case "finalAnswer":
          turn.finalAnswer(event.value);
          break;
        case "usage":
          turn.usage(event.value);
          break;
        default:
          break;
      }
    }
    turn.node.dataset.done = "true";
  } catch (error) {
    const message = showError(error);
    turn.failed(message);
    turn.node.dataset.done = "error";
  } finally {
    state.asking = null;
    $("ask-button").disabled = !tokenStore.get();
    $("stop").hidden = true;
    await loadConversations();
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.asking || !tokenStore.get()) return;
  $("question").value = "";
  ask(question);
});
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("ask").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.asking?.abort());

renderSignedIn();
renderContext();
if (tokenStore.get()) loadConversations();
