// Drives the GraphiQL playground in Debian's headless Chromium, as a person
// would: type a token into the header editor, run a query over HTTP, then a
// subscription over the WebSocket, and read the values arriving in the result
// pane. Prints one JSON object (what it saw) on stdout; exits non-zero on failure.
//
//   node playground.mjs URL TOKEN
import { chromium } from "playwright-core";

const [url, token] = process.argv.slice(2);
const SUBSCRIPTION = "subscription Ticks { ticks(everyMs: 50) }";
const QUERY = "query Hello { hello }";
const STEP_MS = 20_000;

// Flags for a closed network: no background connections, no first-run, no
// sync (playwright adds --headless and a fresh, empty profile of its own).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  timeout: STEP_MS,
});
const seen = { requests: [], console: [], pageErrors: [], hello: null, ticks: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("response", (r) => seen.requests.push(`${r.request().method()} ${r.url()} ${r.status()}`));
  page.on("console", (m) => m.type() === "error" && seen.console.push(m.text()));
  page.on("pageerror", (e) => seen.pageErrors.push(String(e)));
  await page.goto(url);
  const queryEditor = page.locator(".graphiql-query-editor .monaco-editor").first();
  await queryEditor.waitFor();

  // The token goes in the header editor, as a person would type it.
  await page.locator(".graphiql-editor-tools button", { hasText: "Headers" }).click();
  const headersEditor = page.locator(".graphiql-editor-tool .monaco-editor:visible").first();
  await replaceText(page, headersEditor, JSON.stringify({ Authorization: `Bearer ${token}` }));

  const result = page.locator(".graphiql-response .view-lines").first();
  await replaceText(page, queryEditor, QUERY);
  await parsed(page, "Hello");
  await page.locator(".graphiql-execute-button").click();
  await page.waitForFunction(
    (el) => /"hello":\s*"/.test(el.innerText.replace(/\u00a0/g, " ")),
    await result.elementHandle(),
  );
  seen.hello = await text(result);

  await replaceText(page, queryEditor, SUBSCRIPTION);
  await parsed(page, "Ticks");
  await page.locator(".graphiql-execute-button").click();
  // Values arrive one after another in the result pane: watch it change.
  const deadline = Date.now() + STEP_MS;
  while (seen.ticks.length < 5 && Date.now() < deadline) {
    const match = (await text(result)).match(/"ticks":\s*(\d+)/);
    const value = match ? Number(match[1]) : null;
    if (value !== null && value !== seen.ticks.at(-1)) seen.ticks.push(value);
    await page.waitForTimeout(20); // polling the page's state, bounded by the deadline
  }
  seen.last = await text(result);
  await page.locator(".graphiql-execute-button").click(); // stop: the subscription completes
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));

async function replaceText(page, editor, value) {
  await editor.click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  // insertText: no key events, so Monaco's auto-closing brackets stay out of it.
  await page.keyboard.insertText(value);
}

// GraphiQL reads the document after a debounce; its tab shows the operation's
// name once it has, and only then does "execute" run the new document.
async function parsed(page, operationName) {
  await page.locator(".graphiql-tab-active", { hasText: operationName }).waitFor();
}

async function text(locator) {
  return (await locator.innerText()).replace(/\u00a0/g, " ");
}
