// Browser test of the offline GraphiQL page at GET /graphql, in headless Chromium.
//
// It starts the server binary itself (ATTENDANCE_BIN, default target/debug/attendance) on a
// free loopback port with a fresh SQLite database and an admin made by `create-admin`, opens
// the page with every non-loopback request blocked and recorded, and checks that GraphiQL
// renders from the vendored assets, that `me` without a token is UNAUTHENTICATED, that the
// login bar's token works (and GraphiQL's schema query then succeeds), and that a pasted
// token works. Every wait is on a condition.
//
//   cargo build --bin attendance && npm ci --prefix tests/browser
//   node tests/browser/graphiql.test.mjs
//
// Environment: ATTENDANCE_BIN (the server binary), CHROMIUM (default /usr/bin/chromium),
// GRAPHIQL_SCREENSHOT (also save a screenshot there when the test passes).
// The last line printed is "N passed, M failed"; the exit status is non-zero on failure.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const started = Date.now();
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = resolve(process.env.ATTENDANCE_BIN || join(REPO, 'target', 'debug', 'attendance'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000; // the longest any single condition may take to become true
const WATCHDOG = 180_000; // the whole run

const work = mkdtempSync(join(tmpdir(), 'attendance-browser-'));
const env = {
  // A clean environment, and the server runs in `work`, so no .env or stray variable applies.
  PATH: process.env.PATH,
  HOME: work,
  DATABASE_URL: `sqlite:///${work}/x.db?mode=rwc`,
  DEBUG: 'false',
  SECRET_KEY: randomBytes(32).toString('hex'),
  BIND: '127.0.0.1:0',
  LOG_FORMAT: 'json',
};
const ADMIN = { username: 'admin', password: `pw-${randomBytes(12).toString('hex')}` };

let server = null;
let serverLog = '';
let context = null;
let page = null;
const offLoopback = new Set(); // every request the page tried to make to a non-loopback host
const pageErrors = [];

// Everything goes to stdout, so the summary really is the last line.
const log = (line) => console.log(line);

// --- the server -----------------------------------------------------------------------------

function run(args) {
  return new Promise((resolveRun, reject) => {
    execFile(BIN, args, { cwd: work, env, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${BIN} ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
      else resolveRun(stdout);
    });
  });
}

/** Starts `attendance serve` and resolves with the port it reports in its "listening" log line. */
function startServer() {
  return new Promise((resolvePort, reject) => {
    server = spawn(BIN, ['serve'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error(`no "listening" line from the server in ${WAIT} ms`)), WAIT);
    let pending = '';
    server.stdout.on('data', (chunk) => {
      serverLog += chunk;
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        try {
          const entry = JSON.parse(line);
          if (entry.fields?.message === 'listening' && entry.fields.port) {
            clearTimeout(timer);
            resolvePort(Number(entry.fields.port));
          }
        } catch {
          // not a log line (the server prints nothing else here, but never mind)
        }
      }
    });
    server.stderr.on('data', (chunk) => { serverLog += chunk; });
    server.on('error', (e) => { clearTimeout(timer); reject(e); });
    server.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the server exited early (code ${code}, signal ${signal})`));
    });
  });
}

async function waitForHealth(base) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`GET ${base}/health did not answer 200 in ${WAIT} ms`);
    await new Promise((r) => setTimeout(r, 100)); // polling interval, not a wait for the server
  }
}

let interrupted = false;
let cleaned = null;
/** Closes the browser, stops the server and removes the temporary directory (once). */
function cleanup() {
  cleaned ??= (async () => {
    await context?.close().catch((e) => console.error(`closing the browser: ${e.message}`));
    await stopServer();
    rmSync(work, { recursive: true, force: true });
  })();
  return cleaned;
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

// Never leave the server behind, whatever happens to this process.
process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  try {
    rmSync(work, { recursive: true, force: true });
  } catch {
    // best effort: the browser may still hold its profile
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    interrupted = true;
    console.error(`interrupted by ${signal}`);
    setTimeout(() => process.exit(130), 15_000).unref();
    cleanup().finally(() => process.exit(130));
  });
}

// --- the page -------------------------------------------------------------------------------

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
function isLocal(url) {
  const u = new URL(url);
  return ['data:', 'blob:', 'about:'].includes(u.protocol) || LOOPBACK.has(u.hostname);
}

/** The text the result pane shows, one line per CodeMirror line (no gutter markers). */
function resultText() {
  return page.evaluate(() => {
    const lines = document.querySelectorAll('section.result-window .CodeMirror-line');
    return Array.from(lines, (l) => l.textContent.replace(/\u200b/g, '')).join('\n');
  });
}

/** Waits until the result pane's text, whitespace collapsed, contains every one of `needles`. */
async function waitForResult(needles, what) {
  try {
    await page.waitForFunction(
      (wanted) => {
        const lines = document.querySelectorAll('section.result-window .CodeMirror-line');
        const text = Array.from(lines, (l) => l.textContent.replace(/\u200b/g, '')).join(' ').replace(/\s+/g, ' ');
        return wanted.every((n) => text.includes(n));
      },
      needles,
      { timeout: WAIT },
    );
  } catch (e) {
    throw new Error(`the result pane never showed ${what} (${needles.join(', ')}); it shows:\n${await resultText()}`);
  }
  return (await resultText()).replace(/\s+/g, ' ');
}

/**
 * Clicks GraphiQL's execute button and waits for the POST of the `Me` operation; returns the
 * request's Authorization header (or null).
 */
async function executeMe() {
  const posted = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/graphql'
      && (r.request().postDataJSON()?.query ?? '').includes('query Me'),
    { timeout: WAIT },
  );
  await page.getByRole('button', { name: /^Execute query/ }).click({ timeout: WAIT });
  const response = await posted;
  if (response.status() !== 200) throw new Error(`POST /graphql answered ${response.status()}`);
  return (await response.request().allHeaders()).authorization ?? null;
}

const UNAUTHENTICATED = ['"code": "UNAUTHENTICATED"', '"path": [ "me" ]'];
const ME_ADMIN = ['"username": "admin"', '"role": "ADMIN"'];

async function expectUnauthenticated() {
  const authorization = await executeMe();
  if (authorization !== null) throw new Error(`expected no Authorization header, sent ${authorization}`);
  await waitForResult(UNAUTHENTICATED, 'an UNAUTHENTICATED error for me');
}

async function expectAdmin(token) {
  const authorization = await executeMe();
  if (authorization !== `Bearer ${token}`) throw new Error(`expected "Bearer <token>", sent ${authorization}`);
  const text = await waitForResult(ME_ADMIN, 'the admin');
  if (text.includes('"errors"')) throw new Error(`the result has errors: ${text}`);
}

// --- the checks -----------------------------------------------------------------------------

let base = null;
let token = null;

const checks = [
  ['the server starts with a fresh database and an admin', async () => {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN} (cargo build --bin attendance, or set ATTENDANCE_BIN)`);
    const out = await run(['create-admin', '--username', ADMIN.username, '--password', ADMIN.password]);
    if (!out.includes('is ready')) throw new Error(`create-admin printed: ${out}`);
    const port = await startServer();
    base = `http://127.0.0.1:${port}`;
    await waitForHealth(base);
  }],

  ['GraphiQL renders from the vendored assets', async () => {
    context = await chromium.launchPersistentContext(join(work, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage', // containers often have a tiny /dev/shm
      ],
      viewport: { width: 1280, height: 900 },
      serviceWorkers: 'block',
      timeout: 60_000,
    });
    context.setDefaultTimeout(WAIT);
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (isLocal(url)) return route.continue();
      offLoopback.add(url);
      return route.abort('blockedbyclient');
    });
    // Also record what route interception does not see (e.g. WebSockets).
    context.on('request', (r) => { if (!isLocal(r.url())) offLoopback.add(r.url()); });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('websocket', (ws) => { if (!isLocal(ws.url())) offLoopback.add(ws.url()); });
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    const response = await page.goto(`${base}/graphql`, { waitUntil: 'load' });
    if (response?.status() !== 200) throw new Error(`GET /graphql answered ${response?.status()}`);
    await page.locator('#graphiql .graphiql-container').waitFor({ state: 'visible' });
    await page.getByRole('button', { name: /^Execute query/ }).waitFor({ state: 'visible' });
    await page.waitForFunction(() => {
      const editor = document.querySelector('.graphiql-query-editor .CodeMirror');
      return editor && editor.textContent.includes('query Me');
    });
    const placeholder = await page.locator('#graphiql').evaluate((el) => el.firstChild?.nodeType === Node.TEXT_NODE && el.textContent.startsWith('Loading'));
    if (placeholder) throw new Error('#graphiql still shows the "Loading…" placeholder');
    if (pageErrors.length) throw new Error(`uncaught errors on the page: ${pageErrors.join('; ')}`);
  }],

  ['without a token, me is UNAUTHENTICATED', async () => {
    await expectUnauthenticated();
  }],

  ['logging in through the bar, me returns the admin', async () => {
    // GraphiQL reloads its schema with the admin's token: its own introspection query must
    // fit introspection's limits and come back whole.
    const introspected = page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/graphql'
        && (r.request().postDataJSON()?.query ?? '').includes('query IntrospectionQuery')
        && r.request().headers().authorization !== undefined,
      { timeout: WAIT },
    );
    await page.locator('#username').fill(ADMIN.username);
    await page.locator('#password').fill(ADMIN.password);
    await page.locator('#login').click();
    const schema = await (await introspected).json();
    if (schema.errors || !(schema.data?.__schema?.types?.length > 20)) {
      throw new Error(`GraphiQL's introspection failed: ${JSON.stringify(schema).slice(0, 500)}`);
    }
    await page.waitForFunction(() => document.getElementById('auth-status').textContent.includes('logged in as admin (ADMIN)'));
    token = await page.locator('#token').inputValue();
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw new Error(`#token does not hold a JWT: ${JSON.stringify(token)}`);
    await expectAdmin(token);
  }],

  ['after Clear, me is UNAUTHENTICATED again', async () => {
    await page.locator('#clear').click();
    await page.waitForFunction(() => document.getElementById('auth-status').textContent === 'logged out');
    if ((await page.locator('#token').inputValue()) !== '') throw new Error('#token is not empty after Clear');
    await expectUnauthenticated();
  }],

  ['a token pasted into #token works', async () => {
    await page.locator('#token').fill(token);
    await expectAdmin(token);
  }],

  ['the page made no request off loopback', async () => {
    if (offLoopback.size) throw new Error(`requests to non-loopback hosts (blocked): ${[...offLoopback].join(', ')}`);
    if (pageErrors.length) throw new Error(`uncaught errors on the page: ${pageErrors.join('; ')}`);
  }],
];

// --- run --------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
const watchdog = setTimeout(() => {
  console.error(`the browser test took longer than ${WATCHDOG / 1000} s; giving up`);
  process.exit(1);
}, WATCHDOG);
watchdog.unref();

log(`browser test: ${BIN}, ${CHROMIUM}`);
try {
  for (const [name, check] of checks) {
    const t0 = Date.now();
    try {
      await check();
      passed += 1;
      log(`ok ${passed + failed} - ${name} (${Date.now() - t0} ms)`);
    } catch (error) {
      if (interrupted) break; // the browser and server are being torn down; nothing to report
      failed += 1;
      log(`not ok ${passed + failed} - ${name}`);
      log(String(error?.stack ?? error).replace(/^/gm, '    '));
      break; // each check builds on the previous ones
    }
  }
  const notRun = checks.length - passed - failed;
  if (failed && !interrupted) {
    if (page) {
      const shot = join(tmpdir(), `attendance-graphiql-failure-${Date.now()}.png`);
      try {
        await page.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
        log(`screenshot of the page: ${shot}`);
      } catch (e) {
        log(`no screenshot: ${e.message}`);
      }
    }
    if (offLoopback.size) log(`blocked non-loopback requests: ${[...offLoopback].join(', ')}`);
    if (serverLog) log(`server output (last 4000 characters):\n${serverLog.slice(-4000).trimEnd()}`);
    if (notRun) log(`${notRun} not run`);
  } else if (!failed && !interrupted && process.env.GRAPHIQL_SCREENSHOT && page) {
    await page.screenshot({ path: resolve(process.env.GRAPHIQL_SCREENSHOT), fullPage: true });
    log(`screenshot of the page: ${resolve(process.env.GRAPHIQL_SCREENSHOT)}`);
  }
} finally {
  await cleanup();
}
log(`${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exitCode = failed ? 1 : 0;
