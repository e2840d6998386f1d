// Drives the dashboard in headless Debian chromium with playwright-core (pinned in
// package-lock.json; scripts/deps.sh runs `npm ci` here). Run by tests/e2e/test_dashboard_browser.py
// against a real daemon; once logged in it writes SHOTS_DIR/.logged-in, and the test then starts a
// change that advances from 10 % to 40 % on its own:
//   node tests/browser/dashboard.test.js URL OPERATOR_TOKEN VIEWER_TOKEN ADMIN_TOKEN SHOTS_DIR
// Prints one JSON line: {"ok": true, ...} or {"ok": false, "error": "..."}; exit 0 only when ok.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const [url, operator, viewer, admin, shots] = process.argv.slice(2);

// The API with a bearer token, as a tool would call it beside the page.
async function bearer(method, p, token, body) {
  const r = await fetch(new URL(p, url), {
    method, headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return (r.headers.get('Content-Type') || '').startsWith('application/json') ? JSON.parse(text) : text;
}
const result = { ok: false, steps: [] };
const step = (s) => result.steps.push(s);
function done(error) {
  if (error) result.error = error;
  else result.ok = true;
  console.log(JSON.stringify(result));
  process.exit(error ? 1 : 0);
}

async function expectText(page, text, what, timeout = 8000) {
  try {
    await page.getByText(text).first().waitFor({ timeout });
  } catch (e) {
    await page.screenshot({ path: path.join(shots, 'failed.png'), fullPage: true });
    throw new Error(`${what}: the page never showed ${text}`);
  }
}

async function login(page, token) {
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  const box = page.locator('input[type=password]');
  await box.waitFor({ timeout: 5000 });
  await box.fill(token);
  await box.press('Enter');
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'],
  });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) violations.push(m.text()); });
    const hosts = new Set();
    page.on('request', (r) => hosts.add(new URL(r.url()).host));

    // A wrong token: the page says so, and no session starts.
    await login(page, 'not-a-token-0123456789');
    await expectText(page, /wrong token/i, 'a wrong token');
    await page.screenshot({ path: path.join(shots, 'login-refused.png') });
    step('wrong token refused');

    // The operator logs in and watches the canary move from 10 % to 40 % without a reload.
    await page.locator('input[type=password]').fill(operator);
    await page.locator('input[type=password]').press('Enter');
    await expectText(page, 'lead (operator)', 'after login');
    await page.evaluate(() => { window.cutoverTestMarker = 1; });
    await page.locator('[data-service=web]').waitFor({ timeout: 8000 });
    // Now the test starts the change (it waits for this file), and the page follows it.
    require('fs').writeFileSync(path.join(shots, '.logged-in'), '');
    const shareIs = (want, timeout) => page.waitForFunction((w) => {
      const s = document.querySelector('[data-service=web] .share');
      return s && s.textContent === w;
    }, want, { timeout }).catch(() => { throw new Error(`the share never showed ${want} on the page`); });
    await shareIs('10%', 15000);
    await page.screenshot({ path: path.join(shots, 'canary-10.png'), fullPage: true });
    await shareIs('40%', 15000);
    if (await page.evaluate(() => window.cutoverTestMarker) !== 1) throw new Error('the page reloaded');
    // The change's reason is markup-like free text: shown as text, never parsed.
    await expectText(page, '<img src=x onerror="window.pwned=1"> fix #12', 'the reason as text');
    if (await page.evaluate(() => window.pwned !== undefined || document.querySelectorAll('img').length > 0)) {
      throw new Error('the reason became markup');
    }
    step('canary advanced live from 10% to 40%');
    // The charts have drawn the two versions' lines.
    await page.waitForFunction(() => document.querySelectorAll('[data-service=web] svg path.line').length >= 2,
      null, { timeout: 10000 }).catch(() => { throw new Error('no chart lines for the two versions'); });
    await page.screenshot({ path: path.join(shots, 'dashboard.png'), fullPage: true });
    step('charts drawn');

    // Abort asks first; cancelling it changes nothing.
    await page.getByRole('button', { name: 'Abort' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor({ timeout: 3000 }).catch(() => { throw new Error('Abort did not ask for confirmation'); });
    await page.screenshot({ path: path.join(shots, 'abort-confirm.png') });
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    step('abort asked for confirmation, cancelled');

    // Pause: the page says paused, live, and the API agrees.
    await page.getByRole('button', { name: /^Pause$/ }).click();
    await page.locator('[data-service=web] .badge.paused').waitFor({ timeout: 5000 })
      .catch(() => { throw new Error('after Pause the page never said paused'); });
    await expectText(page, /Pause: paused by lead/, 'after Pause');
    const svc = await bearer('GET', '/api/v1/services/web', operator);
    if (svc.change.progress.state !== 'paused') throw new Error('the API says ' + svc.change.progress.state + ' after Pause');
    if (await page.getByRole('button', { name: /^Resume$/ }).isDisabled()) throw new Error('Resume is not offered on a paused change');
    const metrics = await bearer('GET', '/metrics', viewer);
    if (!/^cutover_admin_refused_total 1$/m.test(metrics)) throw new Error('the wrong token was not counted as refused');
    step('paused, the API agrees');

    // The daemon upgrades itself: the page's event stream reconnects to the successor and the
    // session goes on (Resume is sent with the same cookie).
    const before = (await bearer('GET', '/api/v1/health', viewer)).pid;
    await bearer('POST', '/api/v1/upgrade', admin, {});
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await bearer('GET', '/api/v1/health', viewer).then((h) => h.pid, () => before);
    }
    if (after === before) throw new Error('the daemon did not upgrade');
    // The old daemon ends its streams when it exits; the page then opens one to the successor.
    const opens = await page.evaluate(() => Number(document.getElementById('conn').dataset.opens));
    for (let i = 0; i < 150; i++) {
      try { process.kill(before, 0); } catch (e) { break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    await page.waitForFunction((n) => {
      const c = document.getElementById('conn');
      return Number(c.dataset.opens) > n && c.textContent === 'live';
    }, opens, { timeout: 15000 }).catch(() => { throw new Error('the event stream did not come back after the upgrade'); });
    await page.getByRole('button', { name: /^Resume$/ }).click();
    await page.locator('[data-service=web] .badge.running').waitFor({ timeout: 5000 })
      .catch(() => { throw new Error('after the upgrade, Resume did not show running'); });
    step(`upgraded (pid ${before} -> ${after}), stream back, resumed`);

    // Promote to the approval step: it is waiting for lead, who approves from the list.
    await page.getByRole('button', { name: /^Promote$/ }).click();
    const waiting = page.locator('#waiting');
    await waiting.waitFor({ state: 'visible', timeout: 5000 })
      .catch(() => { throw new Error('the approval step never showed in "Waiting for me"'); });
    await page.screenshot({ path: path.join(shots, 'waiting-for-me.png'), fullPage: true });
    await waiting.getByRole('button', { name: 'Approve' }).click();
    await page.locator('#history tr', { hasText: 'completed' }).first().waitFor({ timeout: 8000 })
      .catch(() => { throw new Error('after Approve the change never showed completed'); });
    step('approved from "Waiting for me", completed');

    // The change's report, rendered in the page: its title, its approvals and its timeline.
    await page.locator('#history tr', { hasText: 'completed' }).first().getByRole('button', { name: 'Report' }).click();
    const report = page.locator('#report');
    await report.getByRole('heading', { name: /^Change \d+: deploy/ }).waitFor({ timeout: 5000 })
      .catch(() => { throw new Error('the report was not rendered'); });
    for (const h of ['Approvals', 'Timeline']) {
      if (await report.getByRole('heading', { name: h, exact: true }).count() === 0) throw new Error(`the report has no ${h} section`);
    }
    if (await report.locator('table td', { hasText: 'approved by lead' }).count() === 0) throw new Error('the report table does not say approved by lead');
    await report.screenshot({ path: path.join(shots, 'report.png') });
    step('report rendered');

    if (violations.length) throw new Error('CSP violations: ' + violations.join('; '));
    const own = new URL(url).host;
    const others = [...hosts].filter((h) => h !== own);
    if (others.length) throw new Error('the page contacted other hosts: ' + others.join(', '));
    step('no CSP violation, no other host');

    // A viewer sees the service and is offered no action at all.
    const vctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const vpage = await vctx.newPage();
    await login(vpage, viewer);
    await expectText(vpage, 'grafana (viewer)', 'viewer login');
    await vpage.locator('[data-service=web]').waitFor({ timeout: 8000 });
    const actions = ['Promote', 'Pause', 'Resume', 'Abort', 'Approve', 'Rollback'];
    let offered = 0;
    for (const name of actions) offered += await vpage.getByRole('button', { name, exact: true }).count();
    await vpage.screenshot({ path: path.join(shots, 'viewer.png'), fullPage: true });
    if (offered) throw new Error(`a viewer was offered ${offered} action buttons`);
    step('viewer offered no action');

    // Logging out ends the session: a reload shows the login again.
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.reload();
    await page.locator('input[type=password]').waitFor({ state: 'visible', timeout: 5000 })
      .catch(() => { throw new Error('after logging out a reload did not ask for the token'); });
    step('logged out');
  } finally {
    await browser.close();
  }
})().then(() => done(), (e) => done(String(e && e.message || e).split('\n')[0]));
