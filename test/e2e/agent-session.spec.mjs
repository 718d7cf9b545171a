// End-to-end test of the agent portal's session handling in headless Chromium, driven by
// playwright-core.
//
// test/agent_session_test.go starts a gateway whose tokens live a few seconds (DUALGATE_TTL)
// and runs this script with node. One agent, one page:
//   1. The agent signs in and registers over the WebSocket.
//   2. The page keeps its session for three token lifetimes by itself (POST /api/refresh at two
//      thirds of each token's remaining lifetime): the registration state never leaves
//      "registered" (a MutationObserver on the page and a poll from here both watch it), at
//      least three refreshes answer 200 and each moves the expiry later, and the one WebSocket
//      is never closed nor another opened. Then the script prints "need: cluster-call <user>
//      <expiry of the login's token>": the Go test reads the gateway's metrics (one agent
//      socket, one registration) and a sipp caller on the cluster's address calls the agent,
//      long after the token the socket opened with expired. The page rings, the script answers
//      and hangs up.
//   3. The session is signed out behind the page's back (POST /api/logout from a fetch in the
//      page, as another tab of the same browser would): the gateway closes the socket at once
//      (1008 "signed out"), and the page shows the sign-in form with "Your session has ended.
//      Sign in again." It opens no new socket: on the drop it asks the gateway about the
//      session (GET /api/me, which mints nothing) before JsSIP's first reconnection (at least
//      2 s later), and stops.
//   4. Signed in again, the session is signed out with its token as a bearer from here, so the
//      browser keeps its cookie (a token still within its exp): the same close, the same
//      message, GET /api/me answered 401 (the gateway refuses a signed-out session there
//      too), no new socket.
//   5. The agent signs in again, registers, and the browser loses the session cookie (as when a
//      tab sleeps past the cookie's expiry, which is the token's): the page's next refresh gets
//      401 from the gateway, and the page shows the same message, unregisters, closes its
//      socket itself (after the 401, not before) and opens no other.
// Every wait is bounded, and the whole run has a deadline (lib.mjs).
//
// Environment:
//   DUALGATE_URL          base URL of the HTTP plane, e.g. http://127.0.0.1:8080
//   DUALGATE_TTL          the gateway's http.jwt.ttl in seconds (leeway 0)
//   DUALGATE_SCREENSHOT   a PNG path: on failure the page goes beside it (-failure.png)
//   DUALGATE_CHROMIUM     browser executable (default /usr/bin/chromium)
//   DUALGATE_A / DUALGATE_PASSWORD   the demo agent (1001, dualgate-demo)
//
// Output: one line per step ("ok <step> (<ms> ms)"), "refresh ..." and "socket ..." lines, and
// "need: cluster-call <user> <expiry>" when the Go test must look at the gateway and call.

import { WAIT, env, launch, openPage, run, signIn, step } from './lib.mjs';

const base = env('DUALGATE_URL').replace(/\/$/, '');
const ttl = Number(env('DUALGATE_TTL')) * 1000;
const shot = env('DUALGATE_SCREENSHOT');
const user = env('DUALGATE_A', '1001');
const password = env('DUALGATE_PASSWORD', 'dualgate-demo');

const LIFETIMES = 3;
// Longer than JsSIP's shortest reconnection delay (connection_recovery_min_interval, 2 s): a
// page that was going to reconnect has done so by then.
const QUIET = 2_500;
const ENDED = 'Your session has ended. Sign in again.';

if (!(ttl >= 2000)) {
  console.error(`DUALGATE_TTL must be at least 2 seconds, got ${process.env.DUALGATE_TTL}`);
  process.exit(2);
}

// A fake microphone for answering the cluster's call; host candidates on loopback.
const browser = await launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns']);

// recorder runs in the page before its scripts: it keeps every WebSocket the page opens (with
// how it closed) and every change of the registration state, with the time of each.
const recorder = () => {
  const sockets = [];
  const reg = [];
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      const rec = { opened: Date.now(), closed: 0, code: 0, reason: '' };
      sockets.push(rec);
      this.addEventListener('close', (e) => Object.assign(rec, { closed: Date.now(), code: e.code, reason: e.reason }));
    }
  };
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.querySelector('[data-testid="reg-state"]');
    const note = () => {
      if (reg.at(-1)?.state !== el.dataset.state) reg.push({ state: el.dataset.state, at: Date.now() });
    };
    note();
    new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
  Object.defineProperty(window, '__dualgateTest', { value: { sockets, reg } });
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await run(browser, async () => {
  const { page, tid } = await openPage(browser, { viewport: { width: 1280, height: 820 }, initScript: recorder });
  const text = async (id) => (await tid(id).textContent()).trim();
  const regState = () => tid('reg-state').getAttribute('data-state');
  const recorded = () => page.evaluate(() => ({ sockets: window.__dualgateTest.sockets, reg: window.__dualgateTest.reg }));

  // What the network saw, from here: every /api/refresh and GET /api/me answer, every
  // WebSocket and the REGISTERs sent on it.
  const refreshes = [];
  const checks = [];
  page.on('response', (r) => {
    if (r.url().endsWith('/api/me') && r.request().method() === 'GET') checks.push({ status: r.status(), at: Date.now() });
    if (!r.url().endsWith('/api/refresh')) return;
    const entry = { status: r.status(), at: Date.now(), expires: '' };
    refreshes.push(entry);
    if (r.status() === 200) r.json().then((b) => { entry.expires = b.expires; }).catch(() => {});
  });
  const sockets = [];
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), opened: Date.now(), closed: 0, registers: 0, unregistered: 0 };
    sockets.push(entry);
    ws.on('framesent', (f) => {
      if (typeof f.payload !== 'string' || !f.payload.startsWith('REGISTER ')) return;
      entry.registers++;
      // JsSIP unregisters with "Expires: 0" (and ;expires=0 on the Contact).
      if (/^Expires:\s*0\s*$/mi.test(f.payload)) entry.unregistered = Date.now();
    });
    ws.on('close', () => { entry.closed = Date.now(); });
  });

  // signInAndRegister signs in and waits for the registration; it returns the login's expiry.
  const signInAndRegister = async () => {
    const login = page.waitForResponse((r) => r.url().endsWith('/api/login'), { timeout: WAIT });
    const status = await signIn(page, user, password);
    if (status !== 200) throw new Error(`login answered ${status}`);
    const exp = Date.parse((await (await login).json()).expires);
    if (Number.isNaN(exp)) throw new Error('the login answer carries no expiry');
    await tid('phone').waitFor({ state: 'visible' });
    await page.locator('[data-testid="reg-state"][data-state="registered"]').waitFor({ timeout: WAIT });
    if ((await text('reg-text')) !== 'Registered') throw new Error(`registration text "${await text('reg-text')}"`);
    return exp;
  };

  // registrations reads gateway_sip_registrations from /metrics; waitRegistrations waits for n.
  const registrations = async () => {
    const res = await page.request.get(`${base}/metrics`, { timeout: WAIT });
    const m = /^gateway_sip_registrations(?:\{[^}]*\})? (\S+)$/m.exec(await res.text());
    return m ? Number(m[1]) : NaN;
  };
  const waitRegistrations = async (want) => {
    const until = Date.now() + WAIT;
    let n;
    while (Date.now() < until) {
      if ((n = await registrations()) === want) return;
      await sleep(100);
    }
    throw new Error(`the gateway holds ${n} registrations, want ${want}`);
  };

  // watchRegistered polls the page's registration state until stop() and remembers anything
  // other than "registered" it saw.
  const watchRegistered = () => {
    const seen = [];
    const t0 = Date.now();
    let on = true;
    const done = (async () => {
      while (on) {
        const s = await regState().catch((e) => `unreadable (${e.message})`);
        if (s !== 'registered') seen.push(`${s} at +${Date.now() - t0} ms`);
        await sleep(150);
      }
    })();
    return { seen, stop: async () => { on = false; await done; } };
  };

  // sessionEnded checks the page is back at sign-in with the session-ended message, the phone
  // offline.
  const sessionEnded = async () => {
    await tid('login-form').waitFor({ state: 'visible' });
    await tid('login-error').waitFor({ state: 'visible' });
    if ((await text('login-error')) !== ENDED) throw new Error(`sign-in message "${await text('login-error')}", want "${ENDED}"`);
    if (await tid('phone').isVisible()) throw new Error('the phone still shows');
    if ((await regState()) !== 'offline') throw new Error(`registration state "${await regState()}", want offline`);
  };

  // noNewSocket checks that, QUIET after the session ended, the page opened no socket past the
  // first n (as the network and the page itself count them).
  const noNewSocket = async (n, when) => {
    await sleep(QUIET);
    const rec = await recorded();
    if (sockets.length !== n || rec.sockets.length !== n) {
      throw new Error(`the page opened ${sockets.length - n} WebSockets (page's count: ${rec.sockets.length - n}) after ${when}, want none`);
    }
  };

  let loginExp = 0;
  let watch;

  await step(`${user} signs in and registers over the WebSocket`, async () => {
    const res = await page.goto(`${base}/agent/`, { timeout: WAIT });
    if (res.status() !== 200) throw new Error(`GET /agent/: ${res.status()}`);
    await tid('login-form').waitFor({ state: 'visible' });
    loginExp = await signInAndRegister();
    watch = watchRegistered();
    if (sockets.length !== 1) throw new Error(`${sockets.length} WebSockets, want 1`);
    if (sockets[0].registers !== 1) throw new Error(`${sockets[0].registers} REGISTERs sent, want 1`);
    const left = loginExp - Date.now();
    if (!(left > 0 && left <= ttl + 1000)) throw new Error(`the login's token lives ${left} ms, want up to the ttl ${ttl} ms`);
  });

  await step(`the page stays registered for ${LIFETIMES} token lifetimes on one socket, refreshing its session`, async () => {
    // The login's token was minted one ttl before loginExp.
    const until = loginExp + (LIFETIMES - 1) * ttl + 250;
    while (Date.now() < until) {
      await sleep(Math.min(500, until - Date.now()));
      if (watch.seen.length) throw new Error(`the registration state left "registered": ${watch.seen.join(', ')}`);
      if (sockets[0].closed) throw new Error(`the WebSocket closed ${sockets[0].closed - sockets[0].opened} ms after it opened`);
    }
    const ok = refreshes.filter((r) => r.status === 200);
    console.log(`refresh ${refreshes.map((r) => `${r.status} at +${r.at - (loginExp - ttl)} ms -> ${r.expires || '-'}`).join('; ')}`);
    const bad = refreshes.filter((r) => r.status !== 200);
    if (bad.length) throw new Error(`refreshes answered ${bad.map((r) => r.status).join(', ')}`);
    if (ok.length < LIFETIMES) throw new Error(`${ok.length} refreshes in ${LIFETIMES} lifetimes, want at least ${LIFETIMES}`);
    let last = loginExp;
    for (const r of ok) {
      const exp = Date.parse(r.expires);
      if (!(exp > last)) throw new Error(`a refresh answered expiry ${r.expires}, not later than ${new Date(last).toISOString()}`);
      last = exp;
    }
    if (!(last > Date.now())) throw new Error(`the last refresh's token expired at ${new Date(last).toISOString()}`);
    const rec = await recorded();
    const states = rec.reg.map((r) => r.state);
    if (states.at(-1) !== 'registered' || states.slice(states.indexOf('registered')).some((s) => s !== 'registered')) {
      throw new Error(`registration states on the page: ${states.join(' > ')}`);
    }
    if (sockets.length !== 1 || sockets[0].closed) throw new Error(`${sockets.length} WebSockets, the first closed: ${!!sockets[0].closed}`);
    if (rec.sockets.length !== 1 || rec.sockets[0].closed) throw new Error(`the page made ${rec.sockets.length} WebSockets: ${JSON.stringify(rec.sockets)}`);
    console.log(`socket one WebSocket open for ${Date.now() - sockets[0].opened} ms, ${sockets[0].registers} REGISTER(s) on it; ` +
      `the login's token expired ${Date.now() - loginExp} ms ago; registration states ${states.join(' > ')}`);
  });

  await step(`the cluster calls ${user} past the login token's expiry: the page rings, ${user} answers and hangs up`, async () => {
    console.log(`need: cluster-call ${user} ${new Date(loginExp).toISOString()}`);
    await page.locator('[data-testid="call-panel"][data-state="incoming"]').waitFor({ timeout: WAIT });
    if ((await text('call-peer')) !== 'cluster') throw new Error(`the call comes from "${await text('call-peer')}"`);
    await tid('btn-answer').click();
    await page.locator('[data-testid="call-panel"][data-state="active"]').waitFor({ timeout: WAIT });
    await tid('btn-hangup').click();
    await page.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: WAIT });
    if ((await text('call-status')) !== 'Call ended · You hung up') throw new Error(`status "${await text('call-status')}"`);
    await watch.stop();
    if (watch.seen.length) throw new Error(`the registration state left "registered": ${watch.seen.join(', ')}`);
    if (sockets.length !== 1 || sockets[0].closed) throw new Error(`${sockets.length} WebSockets, the first closed: ${!!sockets[0].closed}`);
  });

  await step('the session is signed out behind the page: the gateway closes the socket, the page asks to sign in, no reconnection', async () => {
    const n = sockets.length;
    const status = await page.evaluate(async () => (await fetch('/api/logout', { method: 'POST', credentials: 'same-origin' })).status);
    if (status !== 204) throw new Error(`POST /api/logout answered ${status}`);
    await sessionEnded();
    const rec = await recorded();
    const s = rec.sockets[n - 1];
    if (!s.closed || s.code !== 1008 || s.reason !== 'signed out') {
      throw new Error(`the socket closed with ${s.code} "${s.reason}", want 1008 "signed out"`);
    }
    await noNewSocket(n, 'the sign-out');
    await waitRegistrations(0);
    const me = await page.request.get(`${base}/api/me`, { timeout: WAIT });
    if (me.status() !== 401) throw new Error(`GET /api/me after the sign-out: ${me.status()}`);
  });

  await step('signed in again, the session is signed out with its token from elsewhere (the cookie stays): the same, no reconnection', async () => {
    await signInAndRegister();
    await waitRegistrations(1);
    const n = sockets.length;
    const from = checks.length;
    const cookie = (await page.context().cookies()).find((c) => c.name === 'dualgate_session');
    if (!cookie) throw new Error('no session cookie in the browser');
    const res = await fetch(`${base}/api/logout`, { method: 'POST', headers: { Authorization: `Bearer ${cookie.value}` } });
    if (res.status !== 204) throw new Error(`POST /api/logout with the bearer token answered ${res.status}`);
    await sessionEnded();
    const s = (await recorded()).sockets[n - 1];
    if (!s.closed || s.code !== 1008 || s.reason !== 'signed out') {
      throw new Error(`the socket closed with ${s.code} "${s.reason}", want 1008 "signed out"`);
    }
    // The page learnt it from the gateway (its cookie still holds a token within its exp).
    if (!(await page.context().cookies()).some((c) => c.name === 'dualgate_session')) throw new Error('the browser lost the cookie');
    const asked = checks.slice(from).map((r) => r.status);
    if (!asked.includes(401)) throw new Error(`the page's session checks (GET /api/me) since the sign-out answered [${asked.join(', ')}], want a 401`);
    await noNewSocket(n, 'the sign-out');
    await waitRegistrations(0);
  });

  await step('signed in again, the cookie is lost: the refresh gets 401 and the page asks to sign in, no reconnection', async () => {
    await signInAndRegister();
    await waitRegistrations(1);
    const n = sockets.length;
    const mine = sockets[n - 1];
    const from = refreshes.length;
    const regFrom = (await recorded()).reg.length;
    await page.context().clearCookies();
    // The page's own next refresh, due within two thirds of a ttl.
    const until = Date.now() + ttl + WAIT;
    while (refreshes.length === from && Date.now() < until) await sleep(50);
    const r = refreshes[from];
    if (!r) throw new Error('the page did not refresh its session');
    if (r.status !== 401) throw new Error(`the refresh answered ${r.status}, want 401`);
    if (mine.closed && mine.closed < r.at) throw new Error(`the socket closed ${r.at - mine.closed} ms before the refresh's 401`);
    await sessionEnded();
    // Straight from registered to offline: the socket never dropped on its own before.
    const states = (await recorded()).reg.slice(regFrom - 1).map((x) => x.state);
    if (states.join(' > ') !== 'registered > offline') throw new Error(`registration states since the sign-in: ${states.join(' > ')}`);
    // The page itself stops the phone: it unregisters (REGISTER with Expires: 0 on its socket)
    // and the socket closes: JsSIP closes it 2 s after the un-REGISTER, unless the gateway
    // does first at the token's expiry (1008 "token expired"), as with these short tokens.
    const until2 = Date.now() + WAIT;
    while (!mine.unregistered && Date.now() < until2) await sleep(50);
    if (!(mine.unregistered >= r.at)) throw new Error(`the page did not unregister after the refused refresh (${mine.registers} REGISTERs)`);
    await waitRegistrations(0);
    await page.waitForFunction((i) => window.__dualgateTest.sockets[i].closed > 0, n - 1, { timeout: WAIT });
    const s = (await recorded()).sockets[n - 1];
    console.log(`socket unregistered ${mine.unregistered - r.at} ms after the refresh's 401; closed ${s.closed - r.at} ms after it, ${s.code} "${s.reason}"`);
    await noNewSocket(n, 'the refused refresh');
  });
}, { shot });
