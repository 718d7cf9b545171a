// End-to-end test of the admin portal in headless Chromium, driven by playwright-core.
//
// test/portal_test.go starts the gateway (sipp backends, calls in progress) and runs this
// script with node; it is not meant to be run on its own, though it can be, against any
// gateway set up the same way. Every wait is bounded, and the whole run has a deadline.
//
// Environment:
//   DUALGATE_URL          base URL of the HTTP plane, e.g. http://127.0.0.1:8080
//   DUALGATE_DRAIN        URI of a set-1 destination to drain and enable again
//   DUALGATE_DISABLE      URI of a set-1 destination to disable (and leave disabled)
//   DUALGATE_DEAD         URI of a destination nothing answers (set 2): must show inactive
//   DUALGATE_MIN_CALLS    calls in progress the dialogs table must show (default 1)
//   DUALGATE_REG_USER     a registered user the registrations panel must list (e.g. 1002)...
//   DUALGATE_REG_SOURCE   ...from this ip:port (a sipp phone: UDP, User-Agent dualgate-test-phone)
//   DUALGATE_REG_UA_SOURCE / DUALGATE_REG_UA   optional: the IP of another binding of that user
//                         and its User-Agent, markup that must show as text
//   DUALGATE_BAN          an IPv4 address banned for wrong passwords (reason auth); the test
//                         lifts the ban from the page
//   DUALGATE_SCREENSHOT   where to write the full-page screenshot of the live view (PNG);
//                         the sign-in page with the lockout message goes beside it (-login.png)
//   DUALGATE_CHROMIUM     browser executable (default /usr/bin/chromium)
//   DUALGATE_ADMIN / DUALGATE_AGENT / DUALGATE_PASSWORD   demo accounts (admin, 1001, dualgate-demo)
//
// Output: one line per step ("ok <step> <ms>"); on failure a message, the page's console,
// and a screenshot beside DUALGATE_SCREENSHOT (-failure.png); exit status 1.

import { WAIT, env, launch, openPage, run, signIn as submitSignIn, step, withSuffix } from './lib.mjs';

const base = env('DUALGATE_URL').replace(/\/$/, '');
const drainURI = env('DUALGATE_DRAIN');
const disableURI = env('DUALGATE_DISABLE');
const deadURI = env('DUALGATE_DEAD');
const minCalls = parseInt(env('DUALGATE_MIN_CALLS', '1'), 10);
const regUser = env('DUALGATE_REG_USER');
const regSource = env('DUALGATE_REG_SOURCE');
const uaSource = env('DUALGATE_REG_UA_SOURCE', '');
const hostileUA = env('DUALGATE_REG_UA', '');
const bannedIP = env('DUALGATE_BAN');
const shot = env('DUALGATE_SCREENSHOT');
const adminUser = env('DUALGATE_ADMIN', 'admin');
const agentUser = env('DUALGATE_AGENT', '1001');
const password = env('DUALGATE_PASSWORD', 'dualgate-demo');

const SLOW_WAIT = 20_000; // probes settling, calls showing up

const browser = await launch();

await run(browser, async () => {
  const { page, tid } = await openPage(browser, { viewport: { width: 1360, height: 900 } });

  const row = (uri) => page.locator(`[data-testid="dest-row"][data-uri="${uri}"]`);
  const expectState = async (uri, state, timeout = WAIT) => {
    await page.locator(`[data-testid="dest-row"][data-uri="${uri}"][data-state="${state}"]`).waitFor({ timeout });
    const badge = (await row(uri).getByTestId('dest-state').textContent()).trim();
    if (badge !== state) throw new Error(`${uri}: badge says ${badge}, row state ${state}`);
  };
  // apiState asks the gateway itself (with the page's session cookie), not the page.
  const apiState = async (uri) => {
    const res = await page.request.get(`${base}/api/admin/dispatcher`, { timeout: WAIT });
    if (res.status() !== 200) throw new Error(`GET /api/admin/dispatcher: ${res.status()}`);
    const body = await res.json();
    for (const set of body.sets) {
      for (const d of set.destinations) if (d.uri === uri) return d;
    }
    throw new Error(`${uri} is not in GET /api/admin/dispatcher`);
  };
  const signIn = (user, pass) => submitSignIn(page, user, pass);
  const errorText = async (id) => (await tid(id).textContent()).trim();
  const regRow = (source) => page.locator(`[data-testid="reg-row"][data-user="${regUser}"][data-source^="${source}"]`);
  const banRow = page.locator(`[data-testid="ban-row"][data-prefix="${bannedIP}/32"]`);
  const cellText = async (scope, id) => (await scope.getByTestId(id).textContent()).trim();
  // seconds parses what formatDuration writes: "42 s", "9 min 58 s", "1 h 05 min".
  const seconds = (text) => {
    const m = /^(?:(\d+) h )?(?:(\d+) min ?)?(?:(\d+) s)?$/.exec(text);
    if (!m || !text) return NaN;
    return (+(m[1] || 0)) * 3600 + (+(m[2] || 0)) * 60 + (+(m[3] || 0));
  };
  const apiBans = async () => {
    const res = await page.request.get(`${base}/api/admin/bans`, { timeout: WAIT });
    if (res.status() !== 200) throw new Error(`GET /api/admin/bans: ${res.status()}`);
    return (await res.json()).bans;
  };

  await step('the portal loads and asks to sign in', async () => {
    const res = await page.goto(`${base}/admin/`, { timeout: WAIT });
    if (res.status() !== 200) throw new Error(`GET /admin/: ${res.status()}`);
    await tid('login-form').waitFor({ state: 'visible' });
    if (await tid('dashboard').isVisible()) throw new Error('the dashboard shows before sign-in');
  });

  await step('a wrong password shows an error and no dashboard', async () => {
    const status = await signIn(adminUser, 'not-the-password');
    if (status !== 401) throw new Error(`wrong password answered ${status}, want 401`);
    await tid('login-error').waitFor({ state: 'visible' });
    const msg = await errorText('login-error');
    if (!/wrong user name or password/i.test(msg)) throw new Error(`error shown: "${msg}"`);
    if (await tid('dashboard').isVisible()) throw new Error('the dashboard shows after a wrong password');
  });

  await step(`${adminUser} signs in; the header names the user`, async () => {
    const status = await signIn(adminUser, password);
    if (status !== 200) throw new Error(`login answered ${status}`);
    await tid('dashboard').waitFor({ state: 'visible' });
    await tid('login-error').waitFor({ state: 'hidden' });
    const user = (await tid('header-user').textContent()).trim();
    if (user !== adminUser) throw new Error(`header shows "${user}"`);
  });

  await step('both backends show active with a probe latency; the dead one inactive', async () => {
    for (const uri of [drainURI, disableURI]) {
      await expectState(uri, 'active', SLOW_WAIT);
      await page.waitForFunction(
        (u) => /^\d+(\.\d+)? ms$/.test(document.querySelector(`[data-testid="dest-row"][data-uri="${u}"] [data-testid="dest-rtt"]`)?.textContent ?? ''),
        uri, { timeout: SLOW_WAIT });
      const probe = await row(uri).getByTestId('dest-probe').textContent();
      if (!/answered 200/.test(probe)) throw new Error(`${uri}: last probe "${probe}"`);
    }
    await expectState(deadURI, 'inactive', SLOW_WAIT);
  });

  await step(`the calls table shows at least ${minCalls} calls in progress`, async () => {
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="dialog-row"]').length >= n,
      minCalls, { timeout: SLOW_WAIT });
    if (await tid('dialogs-empty').isVisible()) throw new Error('"no calls" shows beside calls');
  });

  await step(`the registrations panel lists ${regUser} from ${regSource} with a countdown`, async () => {
    const r = regRow(regSource);
    await r.waitFor({ timeout: SLOW_WAIT });
    if (await tid('regs-empty').isVisible()) throw new Error('"No registrations" shows beside a registration');
    const got = {
      user: await cellText(r, 'reg-user'),
      source: await cellText(r, 'reg-source'),
      transport: await cellText(r, 'reg-transport'),
      contact: await cellText(r, 'reg-contact'),
      ua: await cellText(r, 'reg-ua'),
    };
    if (got.user !== regUser || got.source !== regSource || got.transport !== 'UDP' ||
      !got.contact.includes('192.168.1.50') || got.ua !== 'dualgate-test-phone') {
      throw new Error(`row shows ${JSON.stringify(got)}`);
    }
    const first = seconds(await cellText(r, 'reg-expires'));
    if (!(first > 0 && first <= 600)) throw new Error(`expires in "${await cellText(r, 'reg-expires')}"`);
    // The countdown runs: a few seconds later it shows less.
    await page.waitForFunction(([sel, s0]) => {
      const t = document.querySelector(sel)?.textContent.trim() ?? '';
      const m = /^(?:(\d+) min ?)?(?:(\d+) s)?$/.exec(t);
      return !!m && t !== '' && (+(m[1] || 0)) * 60 + (+(m[2] || 0)) < s0;
    }, [`[data-testid="reg-row"][data-source="${regSource}"] [data-testid="reg-expires"]`, first], { timeout: WAIT });
    const count = parseInt(await errorText('regs-count'), 10);
    const rows = await page.getByTestId('reg-row').count();
    if (count < 1 || count !== rows) throw new Error(`count badge ${count}, ${rows} rows`);
  });

  if (hostileUA) {
    await step('a User-Agent with markup shows as text, not as elements', async () => {
      const r = regRow(uaSource + ':');
      await r.waitFor({ timeout: SLOW_WAIT });
      const ua = await r.getByTestId('reg-ua').textContent();
      if (ua !== hostileUA) throw new Error(`user agent cell shows ${JSON.stringify(ua)}, want ${JSON.stringify(hostileUA)}`);
      const injected = await page.evaluate(() =>
        document.querySelectorAll('[data-testid="regs-body"] img, [data-testid="regs-body"] b').length + (window.pwned ? 100 : 0));
      if (injected) throw new Error(`the user agent became markup (${injected})`);
    });
  }

  await step(`the bans panel lists ${bannedIP} (reason auth) with the time left`, async () => {
    await banRow.waitFor({ timeout: SLOW_WAIT });
    if (await tid('bans-empty').isVisible()) throw new Error('"No bans" shows beside a ban');
    const reason = await cellText(banRow, 'ban-reason');
    if (reason !== 'auth') throw new Error(`reason "${reason}"`);
    const left = seconds(await cellText(banRow, 'ban-remaining'));
    if (!(left > 0 && left <= 600)) throw new Error(`remaining "${await cellText(banRow, 'ban-remaining')}"`);
    const until = await cellText(banRow, 'ban-until');
    if (!/^until \d\d:\d\d:\d\d$/.test(until)) throw new Error(`until "${until}"`);
    if (await banRow.getByTestId('btn-lift').isDisabled()) throw new Error('Lift is not offered');
    const count = parseInt(await errorText('bans-count'), 10);
    if (count !== (await apiBans()).length) throw new Error(`count badge ${count}`);
  });

  await step(`Drain ${drainURI}: the badge and the gateway say draining, its calls stay`, async () => {
    const before = await apiState(drainURI);
    await row(drainURI).getByTestId('btn-drain').click();
    await expectState(drainURI, 'draining');
    const now = await apiState(drainURI);
    if (now.state !== 'draining') throw new Error(`gateway says ${now.state}`);
    if (now.active_calls < before.active_calls) {
      throw new Error(`draining dropped calls: ${before.active_calls} -> ${now.active_calls}`);
    }
    if (!(await row(drainURI).getByTestId('btn-drain').isDisabled())) throw new Error('Drain still offered while draining');
  });

  await step(`full-page screenshot -> ${shot}`, async () => {
    await tid('stat-draining').and(page.locator('.nonzero')).waitFor();
    await page.mouse.move(0, 0); // no hover highlight in the picture
    await page.screenshot({ path: shot, fullPage: true });
  });

  await step(`Lift the ban on ${bannedIP}: the row goes, and the gateway agrees`, async () => {
    const answer = page.waitForResponse((r) => r.url().endsWith('/api/admin/bans/lift'), { timeout: WAIT });
    await banRow.getByTestId('btn-lift').click();
    const res = await answer;
    if (res.status() !== 200) throw new Error(`POST /api/admin/bans/lift answered ${res.status()}`);
    const sent = res.request().postDataJSON();
    if (sent.address !== bannedIP) throw new Error(`lift sent ${JSON.stringify(sent)}`);
    await banRow.waitFor({ state: 'detached' });
    const bans = await apiBans();
    if (bans.some((b) => b.prefix.startsWith(bannedIP + '/'))) throw new Error(`the gateway still lists ${bannedIP}`);
    if (bans.length === 0) await tid('bans-empty').waitFor({ state: 'visible' });
    // Two refreshes later it is still gone (a refresh in flight must not bring it back).
    await page.waitForTimeout(4500);
    if (await banRow.count()) throw new Error('the lifted ban came back');
    if (parseInt(await errorText('bans-count'), 10) !== bans.length) throw new Error('the count badge was not updated');
  });

  await step(`Enable ${drainURI}: active again`, async () => {
    await row(drainURI).getByTestId('btn-enable').click();
    await expectState(drainURI, 'active');
    const now = await apiState(drainURI);
    if (now.state !== 'active') throw new Error(`gateway says ${now.state}`);
  });

  await step(`Disable ${disableURI}: disabled in the page and the gateway`, async () => {
    await row(disableURI).getByTestId('btn-disable').click();
    await expectState(disableURI, 'disabled');
    const now = await apiState(disableURI);
    if (now.state !== 'disabled') throw new Error(`gateway says ${now.state}`);
  });

  await step('Sign out: back to the sign-in form, the session is gone', async () => {
    await tid('logout').click();
    await tid('login-form').waitFor({ state: 'visible' });
    await tid('dashboard').waitFor({ state: 'hidden' });
    const me = await page.request.get(`${base}/api/me`, { timeout: WAIT });
    if (me.status() !== 401) throw new Error(`GET /api/me after sign-out: ${me.status()}`);
  });

  await step(`${agentUser} (agent) is refused with a clear message`, async () => {
    const status = await signIn(agentUser, password);
    if (status !== 200) throw new Error(`agent login answered ${status}`);
    await tid('login-error').waitFor({ state: 'visible' });
    const msg = await errorText('login-error');
    if (!/no admin role/i.test(msg)) throw new Error(`error shown: "${msg}"`);
    if (await tid('dashboard').isVisible()) throw new Error('an agent got the dashboard');
    const me = await page.request.get(`${base}/api/me`, { timeout: WAIT });
    if (me.status() !== 401) throw new Error(`the agent's session was not ended: /api/me ${me.status()}`);
  });

  await step('repeated wrong passwords lock the name out; the page shows Retry-After', async () => {
    let status = 0;
    for (let i = 0; i < 8 && status !== 429; i++) {
      status = await signIn(agentUser, `wrong-${i}`);
      if (status !== 401 && status !== 429) throw new Error(`attempt ${i + 1} answered ${status}`);
    }
    if (status !== 429) throw new Error('8 wrong passwords never got 429');
    await page.waitForFunction(() => /try again in \d/i.test(document.querySelector('[data-testid="login-error"]')?.textContent ?? ''),
      null, { timeout: WAIT });
    if (!(await tid('login-submit').isDisabled())) throw new Error('Sign in stays enabled while locked out');
    await page.screenshot({ path: withSuffix(shot, '-login') });
  });
}, { shot, fullPage: true });
