// What the portal scripts (admin.spec.mjs, agent.spec.mjs) share: the environment, the
// browser and its pages, the steps, the sign-in, and the end of a run.

import { chromium } from 'playwright-core';
import path from 'node:path';

export const WAIT = 10_000;      // one UI expectation
export const DEADLINE = 120_000; // the whole run (the Go test kills the script at 150 s)

// env reads an environment variable; without a default, a missing one ends the script (exit 2).
export const env = (name, def) => {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (def === undefined) {
      console.error(`missing environment variable ${name}`);
      process.exit(2);
    }
    return def;
  }
  return v;
};

// withSuffix names a picture beside p: withSuffix('a/x.png', '-login') is a/x-login.png.
export const withSuffix = (p, suffix) => path.join(path.dirname(p), path.basename(p, '.png') + suffix + '.png');

// problems collects what must fail a run whatever the steps saw: script errors and CSP
// refusals in any page.
export const problems = [];

const deadline = setTimeout(() => {
  console.error(`FAIL: the whole run took longer than ${DEADLINE / 1000} s`);
  process.exit(1);
}, DEADLINE);
deadline.unref();

// launch starts headless Chromium (DUALGATE_CHROMIUM, default /usr/bin/chromium) with args
// added to the ones every run needs. Playwright adds --no-sandbox, --disable-background-networking
// and friends itself. On these machines the network is closed, so nothing may phone home.
export const launch = (args = []) => chromium.launch({
  executablePath: env('DUALGATE_CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  timeout: 30_000,
  args: [...args, '--disable-gpu', '--disable-quic', '--disable-sync', '--no-first-run', '--disable-component-update',
    '--disable-background-networking'],
});

const pages = []; // every page openPage opened, for the failure report

// openPage opens a page in a new browser context of its own (own cookies) at the given
// viewport, English and UTC, with WAIT as the default timeout and initScript (if any) run in
// every document. The page's console goes to lines; a CSP refusal or an uncaught error goes to
// problems, prefixed with label (the page's name when a run has several). tid finds an element
// by its data-testid.
export async function openPage(browser, { viewport, label = '', initScript }) {
  const context = await browser.newContext({ viewport, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(WAIT);
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const lines = [];
  const prefix = label ? `${label} ` : '';
  page.on('console', (m) => {
    lines.push(`[${m.type()}] ${m.text()}`);
    // The browser logs every non-2xx fetch as an error; the portals expect some (401 before
    // sign-in, the wrong password). What must not happen is a CSP refusal.
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`${prefix}CSP: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${prefix}page error: ${e.message}`));
  pages.push({ page, lines, label });
  return { page, lines, tid: (id) => page.getByTestId(id) };
}

// step runs one named step and prints "ok <name> (<ms> ms)"; a failure names the step.
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    e.message = `${name}: ${e.message}`;
    throw e;
  }
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

// signIn fills the portal's sign-in form, submits it and returns the status of /api/login.
export async function signIn(page, user, pass) {
  await page.getByTestId('login-username').fill(user);
  await page.getByTestId('login-password').fill(pass);
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/login'), { timeout: WAIT });
  await page.getByTestId('login-submit').click();
  return (await answer).status();
}

// run runs the steps in body, then fails on any problem the pages reported. On failure it
// prints FAIL with the message, and for each page a screenshot beside shot (-failure.png, or
// -failure-<label>.png; the whole page with fullPage) and the page's last console lines. It
// closes the browser and ends the process: exit status 0, or 1 on failure.
export async function run(browser, body, { shot, fullPage = false }) {
  let failed = false;
  try {
    await body();
    if (problems.length) throw new Error(`the pages reported problems:\n  ${problems.join('\n  ')}`);
  } catch (e) {
    failed = true;
    console.error(`FAIL: ${String(e.message).replace(/\x1b\[[0-9;]*m/g, '')}`);
    for (const { page, lines, label } of pages) {
      const picture = withSuffix(shot, label ? `-failure-${label}` : '-failure');
      await page.screenshot({ path: picture, fullPage }).catch(() => {});
      console.error(`${label ? label + ' ' : ''}page screenshot: ${picture}`);
      console.error(`${label ? label + ' ' : ''}page console:\n  ${lines.slice(-40).join('\n  ')}`);
    }
  } finally {
    await browser.close().catch(() => {});
  }
  process.exit(failed ? 1 : 0);
}
