// Drives Quarry's console in Debian's headless Chromium (playwright-core,
// no browser download) against a running server; run by the Rust e2e test
// tests/tests/e2e/console.rs, or by hand:
//
//   QUARRY_URL=http://127.0.0.1:50051 QUARRY_TOKEN=... QUARRY_TOKEN_NO_ASK=... \
//   QUARRY_TOKEN_EXPIRED=... QUARRY_SHOTS=/tmp/shots node console/tests/browser.mjs
//
// QUARRY_SCENARIO picks another run: `retrieval` (summaries and search
// hits) or `streaming` (a slow model's answer shown as it arrives).
//
// QUARRY_URL_LIMITED (optional): a server whose rate limit is low (1/s,
// burst 2), where asking again as QUARRY_TOKEN_LIMITED must read "wait N s".
//
// Signs in, asks a golden question, waits for the result table and the
// drawn chart, continues the conversation, reopens it after a reload, and
// checks that refusals read in plain words. Prints one JSON line with what
// it saw; exits non-zero (with the reason) on the first failed check.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env("QUARRY_URL");
const token = env("QUARRY_TOKEN");
const shots = env("QUARRY_SHOTS");
const executablePath = process.env.QUARRY_CHROMIUM || "/usr/bin/chromium";
const question = process.env.QUARRY_QUESTION || "What are the 10 most common mediums?";
const followUp = process.env.QUARRY_FOLLOW_UP || "How many artworks are in the Tate collection?";
const TIMEOUT = 120_000;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// the golden question, its follow-up, reopening, phone size, refusals
async function golden(page) {
  const tokenNoAsk = env("QUARRY_TOKEN_NO_ASK");
  const tokenExpired = env("QUARRY_TOKEN_EXPIRED");
  // sign in: the token goes to sessionStorage, never into the URL
  await page.getByLabel("Access token").fill(token);
  await page.getByLabel("Access token").press("Enter");
  await page.locator("#signedin").waitFor({ state: "visible" });
  check(!page.url().includes(token.slice(0, 20)), "the token is not in the URL");
  check(
    (await page.evaluate(() => sessionStorage.getItem("quarry.token"))) === token,
    "the token is kept in sessionStorage",
  );

  // ask with Enter; the first turn streams route, tool call, table, chart
  const ask = async (text) => {
    const box = page.getByRole("textbox", { name: "Question" });
    await box.fill(text);
    await box.press("Enter");
    const turn = page.locator("article.turn").last();
    await turn.locator("h3", { hasText: text }).waitFor();
    await page.locator("article.turn[data-done]").nth((await page.locator("article.turn").count()) - 1).waitFor();
    return turn;
  };
  const first = await ask(question);
  check((await first.getAttribute("data-done")) === "true", `the first Ask completes (${await page.locator("#error").textContent()})`);
  seen.route = await first.locator(".route").textContent();
  check(/Route: (golden_)?sql/.test(seen.route), `the route is shown: ${seen.route}`);
  seen.sql = await first.locator(".sql-block code").first().textContent();
  check(/select/i.test(seen.sql) && /medium/i.test(seen.sql), `the SQL is shown: ${seen.sql}`);
  seen.rows = await first.locator("table.result tbody tr").count();
  check(seen.rows === 10, `the result table has 10 rows, not ${seen.rows}`);
  seen.header = await first.locator("table.result thead th").allTextContents();
  // the chart: Vega's SVG with one mark per row
  const marks = first.locator(".chart svg g.mark-rect path, .chart svg g.mark-arc path");
  // drawn, or the console's "could not be drawn" (fails at once, not by timeout)
  await first.locator(".chart svg g.mark-rect path, .chart svg g.mark-arc path, .chart .refused").first().waitFor();
  const drawError = first.locator(".chart .refused");
  check((await drawError.count()) === 0, `the chart is drawn: ${await drawError.allTextContents()}`);
  seen.marks = await marks.count();
  check(seen.marks >= 10, `the chart draws a mark per row (${seen.marks})`);
  seen.answer = await first.locator(".answer").textContent();
  check(seen.answer.trim().length > 0, "the answer text is shown");
  seen.citations = await first.locator(".citations li").count();
  check(seen.citations > 0, "the answer cites its sources");
  // a citation link moves the focus to the tool call it cites
  const cite = first.locator(".citations a").first();
  if ((await cite.count()) > 0) {
    await cite.click();
    const focused = await page.evaluate(() => document.activeElement?.classList.contains("tool"));
    check(focused, "a citation focuses the tool call it cites");
  }
  seen.usage = await first.locator(".usage").textContent();
  check(/tokens/.test(seen.usage) && /tool call/.test(seen.usage), `usage is shown: ${seen.usage}`);
  seen.conversation = (await page.locator("#context").textContent()).replace("Continuing conversation ", "");
  // the shot: the turn from its question down (route, SQL, table, chart)
  await first.locator("h3").evaluate((h) => h.scrollIntoView({ block: "start" }));
  await page.screenshot({ path: join(shots, "console-desktop.png"), fullPage: false });

  // the follow-up continues the same conversation
  const second = await ask(followUp);
  check((await second.getAttribute("data-done")) === "true", "the follow-up completes");
  const context2 = await page.locator("#context").textContent();
  check(context2.endsWith(seen.conversation), `the follow-up stays in ${seen.conversation}: ${context2}`);
  seen.followUpAnswer = await second.locator(".answer").textContent();
  const listed = page.locator(`#conversation-list button[data-id="${seen.conversation}"]`);
  await listed.locator(".meta", { hasText: "2 turns" }).waitFor();

  // a reload keeps the sign-in (sessionStorage); the conversation reopens
  await page.reload();
  await page.locator("#signedin").waitFor({ state: "visible" });
  await listed.click();
  await page.locator("article.turn").nth(1).waitFor();
  seen.reopenedTurns = await page.locator("article.turn").count();
  check(seen.reopenedTurns === 2, `the reopened conversation shows 2 turns, not ${seen.reopenedTurns}`);
  check(
    /medium/i.test(await page.locator("article.turn").first().locator(".sql-block code").textContent()),
    "the reopened turn shows its SQL",
  );

  // a phone-sized viewport: the same page, one column
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("button", { name: "New" }).click();
  const phone = await ask(question);
  check((await phone.getAttribute("data-done")) === "true", "an Ask at phone size completes");
  await phone.locator(".chart svg g.mark-rect path").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no sideways scrolling at 390 px (${overflow} px too wide)`);
  await phone.locator(".chart").scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, "console-phone.png"), fullPage: false });
  await page.setViewportSize({ width: 1280, height: 800 });

  // refusals in plain words: a token without the `ask` scope, an expired one
  await page.getByRole("button", { name: "Sign out" }).click();
  check((await page.evaluate(() => sessionStorage.getItem("quarry.token"))) === null, "sign-out forgets the token");
  await page.getByLabel("Access token").fill(tokenNoAsk);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#signedin").waitFor({ state: "visible" });
  await ask("How many artworks are in the Tate collection?");
  seen.denied = await page.locator("#error").textContent();
  check(/Permission denied/.test(seen.denied), `a token without the scope reads as denied: ${seen.denied}`);
  await page.screenshot({ path: join(shots, "console-denied.png") });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Access token").fill(tokenExpired);
  await page.getByLabel("Access token").press("Enter");
  seen.expired = await page.locator("#error").textContent();
  await page.locator("#error", { hasText: "expired" }).waitFor();
  seen.expired = await page.locator("#error").textContent();
  check(/token has expired/.test(seen.expired), `an expired token reads as expired: ${seen.expired}`);
  check(await page.locator("#signin").isVisible(), "an expired token signs out");

  // a rate limit reads as "wait N s", the delay from the refusal's RetryInfo
  if (process.env.QUARRY_URL_LIMITED) {
    await page.goto(process.env.QUARRY_URL_LIMITED);
    await page.getByLabel("Access token").fill(env("QUARRY_TOKEN_LIMITED"));
    await page.getByLabel("Access token").press("Enter");
    await page.locator("#signedin").waitFor({ state: "visible" });
    for (let i = 0; i < 6 && !(await page.locator("#error").isVisible()); i++) {
      await ask("How many artworks are in the Tate collection?");
    }
    seen.limited = await page.locator("#error").textContent();
    check(/Too many requests.*Wait \d+ s and try again/.test(seen.limited), `a rate limit reads with its wait: ${seen.limited}`);
    check(await page.locator("#signedin").isVisible(), "a rate limit keeps the sign-in");
  }

}

// QUARRY_SCENARIO=retrieval: a question routed to summaries and search;
// the hits and summaries are listed and the answer's citations lead to them
async function retrieval(page) {
  await page.getByLabel("Access token").fill(token);
  await page.getByLabel("Access token").press("Enter");
  await page.locator("#signedin").waitFor({ state: "visible" });
  const box = page.getByRole("textbox", { name: "Question" });
  await box.fill(question);
  await box.press("Enter");
  const turn = page.locator("article.turn[data-done]").first();
  await turn.waitFor();
  check((await turn.getAttribute("data-done")) === "true", `the Ask completes (${await page.locator("#error").textContent()})`);
  seen.route = await turn.locator(".route").textContent();
  seen.tools = await turn.locator(".tool").evaluateAll((tools) => tools.map((t) => t.dataset.tool));
  seen.summaries = await turn.locator("li.summary").count();
  seen.hits = await turn.locator("li.hit").count();
  check(seen.summaries > 0 && seen.hits > 0, `summaries and hits are listed: ${JSON.stringify(seen)}`);
  seen.summaryText = await turn.locator("li.summary p").first().textContent();
  check(seen.summaryText.trim().length > 0, "a summary's text is shown");
  // each kind of citation links to what it cites
  for (const [kind, target] of [["summary", "li.summary"], ["document", "li.hit"]]) {
    const link = turn.locator(".citations a", { hasText: kind }).first();
    check((await link.count()) === 1, `a ${kind} citation is a link`);
    await link.press("Enter");
    const focused = await page.evaluate((selector) => document.activeElement?.matches(selector), target);
    check(focused, `the ${kind} citation moves the focus to the ${kind}`);
  }
  seen.citations = await turn.locator(".citations li").count();
  await turn.locator("h3").evaluate((h) => h.scrollIntoView({ block: "start" }));
  await page.screenshot({ path: join(shots, "console-retrieval.png") });
}

// QUARRY_SCENARIO=streaming: a model that streams its answer slowly; the
// page shows the tool's result and the answer's first words while the
// stream is still open, then the whole answer (QUARRY_ANSWER) and usage
async function streaming(page) {
  const firstWords = env("QUARRY_FIRST_CHUNK");
  const whole = env("QUARRY_ANSWER");
  await page.getByLabel("Access token").fill(token);
  await page.getByLabel("Access token").press("Enter");
  await page.locator("#signedin").waitFor({ state: "visible" });
  const box = page.getByRole("textbox", { name: "Question" });
  await box.fill(question);
  await box.press("Enter");
  await page.waitForFunction((text) => {
    const turn = document.querySelector("article.turn");
    return turn && !turn.dataset.done && turn.querySelector(".answer").textContent.includes(text);
  }, firstWords);
  const turn = page.locator("article.turn").first();
  seen.partial = await turn.locator(".answer").textContent();
  seen.tableWhileStreaming = await turn.locator("table.result tbody tr").count();
  seen.doneWhileStreaming = await turn.getAttribute("data-done");
  check(seen.partial.length < whole.length, `part of the answer shows before the rest: ${seen.partial}`);
  check(seen.tableWhileStreaming > 0, "the tool's table shows before the answer ends");
  await page.screenshot({ path: join(shots, "console-streaming.png") });
  await page.locator("article.turn[data-done]").waitFor();
  check((await turn.getAttribute("data-done")) === "true", `the Ask completes (${await page.locator("#error").textContent()})`);
  seen.answer = await turn.locator(".answer").textContent();
  check(seen.answer === whole, `the whole answer: ${seen.answer}`);
  seen.usage = await turn.locator(".usage").textContent();
  check(/2 model calls/.test(seen.usage), `usage counts the model calls: ${seen.usage}`);
}

mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "quarry-chromium-"));
const started = Date.now();
const problems = [];
const seen = {};
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  // any CSP violation or script error fails the run
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

  await page.goto(url);
  check((await page.title()) === "Quarry console", "the page loads");
  if (process.env.QUARRY_SCENARIO === "retrieval") await retrieval(page);
  else if (process.env.QUARRY_SCENARIO === "streaming") await streaming(page);
  else await golden(page);

  const csp = problems.filter((p) => /Content Security Policy/i.test(p));
  check(csp.length === 0, `no CSP violation: ${csp.join("; ")}`);
  // refusals are logged by Chromium as failed resources; anything else fails
  const unexpected = problems.filter((p) => !/Failed to load resource/.test(p));
  check(unexpected.length === 0, `no script errors: ${unexpected.join("; ")}`);
  seen.seconds = (Date.now() - started) / 1000;
  console.log(JSON.stringify(seen));
} catch (error) {
  console.error(error?.stack || String(error));
  if (problems.length) console.error(`browser messages:\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
