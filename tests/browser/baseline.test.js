// The dashboard shows a plan's baseline (analysis: {baseline: true}): its share in the split bar,
// between the live version's and the new one's, and a line naming it. Run by
// tests/e2e/test_baseline.py against a daemon whose plan holds at weight 25 with a baseline:
//   node tests/browser/baseline.test.js URL OPERATOR_TOKEN SHOTS_DIR
// Prints one JSON line: {"ok": true, ...} or {"ok": false, "error": "..."}; exit 0 only when ok.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const [url, token, shots] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'],
  });
  const result = { ok: false };
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    const box = page.locator('input[type=password]');
    await box.waitFor({ timeout: 5000 });
    await box.fill(token);
    await box.press('Enter');
    const note = page.locator('[data-service=web] .baseline-note');
    await note.waitFor({ timeout: 10000 }).catch(() => { throw new Error('no baseline line on the page'); });
    result.note = await note.textContent();
    result.widths = await page.evaluate(() => {
      const w = (c) => document.querySelector(`[data-service=web] .split .${c}`).style.width;
      return { live: w('live'), baseline: w('baseline'), new: w('new') };
    });
    result.title = await page.locator('[data-service=web] .split').getAttribute('title');
    await page.screenshot({ path: path.join(shots, 'baseline.png'), fullPage: true });
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.message || e).split('\n')[0];
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
})();
