// End-to-end test of the agent softphone in headless Chromium, driven by playwright-core.
//
// test/agent_portal_test.go starts the gateway (demo users, a sipp backend as the cluster) and
// runs this script with node. Two agents sign in, each in its own browser context (own
// cookies), and register over the WebSocket bridge with JsSIP. Then:
//   1. 1001 calls a number: the dispatcher sends it to the sipp backend, which answers with
//      WebRTC SDP (the browser accepts it; sipp does no ICE/DTLS, so no media flows), gets the
//      ACK and hangs up with its own BYE 1.5 s later: the page shows the call, then "the other
//      party hung up" (not a media failure). The Go test checks sipp's side (its scenario ran
//      to the end: INVITE with a WebRTC offer, ACK, 200 to its BYE; no BYE from the browser).
//   1b. The script prints "need: cluster-call 1001"; the Go test then starts a sipp caller on
//      the cluster's address that calls 1001 with a WebRTC offer. The page rings, the test
//      answers, the call confirms (ACK), the test hangs up: the BYE reaches sipp (the Go test
//      checks sipp completed: 180, 200 with a WebRTC answer, the BYE).
//      In both calls the peer connection must never reach "failed" while the call is up (the
//      portal ends a confirmed call whose connection fails). Chromium gives up on an ICE path
//      whose peer never answers after about 15 s (measured: "failed" at 15.1 s); these calls
//      last about 2 s, and the page shows "Audio: connecting…" meanwhile.
//   2. 1001 calls 1002 through the gateway; 1002 answers; both reach the call state and audio
//      RTP flows both ways (getStats: inbound-rtp audio bytesReceived grows on both pages).
//      Hold/resume and mute show on both sides; screenshot; 1002 hangs up; both show it ended.
//   3. 1001's socket is dropped: the page shows it reconnecting, registers again, and a call
//      from 1002 reaches it (1001 declines it).
//   4. 1001 signs out: its registration is gone.
//   5. 1002's session ends (its cookie is cleared) and its socket drops: the page stops
//      reconnecting and asks to sign in again.
// Every wait is bounded, and the whole run has a deadline.
//
// Environment:
//   DUALGATE_URL            base URL of the HTTP plane, e.g. http://127.0.0.1:8080
//   DUALGATE_NUMBER         a number the route table sends to the sipp backend (default 5551000)
//   DUALGATE_JSSIP_VERSION  the JsSIP version package-lock.json pins: the served bundle must be it
//   DUALGATE_SCREENSHOT     where to write the screenshot of 1001 in the call (PNG); 1002's
//                           page ringing goes beside it (-incoming.png), and on failure both
//                           pages (-failure-1001.png, -failure-1002.png)
//   DUALGATE_CHROMIUM       browser executable (default /usr/bin/chromium)
//   DUALGATE_A / DUALGATE_B / DUALGATE_PASSWORD   demo agents (1001, 1002, dualgate-demo)
//
// Output: one line per step ("ok <step> (<ms> ms)"), "rtp ..." lines with the getStats figures,
// "ice ..." lines with each sipp call's connection states, "need: cluster-call <user>" when the
// Go test must start the cluster's call;
// on failure a message and both pages' consoles; exit status 1.

import { WAIT, env, launch, openPage, run, signIn as submitSignIn, step, withSuffix } from './lib.mjs';

const base = env('DUALGATE_URL').replace(/\/$/, '');
const number = env('DUALGATE_NUMBER', '5551000');
const jssipVersion = env('DUALGATE_JSSIP_VERSION');
const shot = env('DUALGATE_SCREENSHOT');
const userA = env('DUALGATE_A', '1001');
const userB = env('DUALGATE_B', '1002');
const password = env('DUALGATE_PASSWORD', 'dualgate-demo');

const RTP_WINDOW = 3_000; // between the two getStats readings

// Fake microphone (a tone) and no permission prompt; host candidates on loopback, with raw IPs
// (no mDNS). Playwright adds --mute-audio itself.
const browser = await launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required']);

// Each page records the RTCPeerConnections and WebSockets JsSIP makes, so the test can read
// getStats and drop the socket without any hook in the portal itself. Each connection keeps
// the connection states it went through (states).
const recorder = () => {
  const pcs = [];
  const sockets = [];
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...args) {
      super(...args);
      this.states = [this.connectionState];
      this.addEventListener('connectionstatechange', () => this.states.push(this.connectionState));
      pcs.push(this);
    }
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  };
  Object.defineProperty(window, '__dualgateTest', { value: { pcs, sockets } });
};

async function agentPage(user) {
  const { page, tid } = await openPage(browser, { viewport: { width: 1280, height: 820 }, label: user, initScript: recorder });
  return {
    user, page, tid,
    text: async (id) => (await tid(id).textContent()).trim(),
    // waitAttr waits until the element's data-<name> is value.
    waitAttr: (id, name, value, timeout = WAIT) =>
      page.locator(`[data-testid="${id}"][data-${name}="${value}"]`).waitFor({ timeout }),
    // callState waits until the call panel shows state; on timeout it says what it shows.
    callState: async (state, timeout = WAIT) => {
      try {
        await page.locator(`[data-testid="call-panel"][data-state="${state}"]`).waitFor({ timeout });
      } catch (e) {
        const now = await page.evaluate(() => [document.querySelector('[data-testid="call-panel"]')?.dataset.state,
          document.querySelector('[data-testid="call-status"]')?.textContent]).catch(() => []);
        e.message = `${user}: the call panel is not "${state}" but "${now[0]}" ("${now[1]}"): ${e.message}`;
        throw e;
      }
    },
  };
}

// rtp reads the last peer connection's getStats: audio bytes and packets each way, and the
// selected candidate pair.
const rtp = (page) => page.evaluate(async () => {
  const pc = window.__dualgateTest.pcs.at(-1);
  if (!pc) return null;
  const out = { state: pc.connectionState, inBytes: 0, inPackets: 0, outBytes: 0, outPackets: 0, pair: '' };
  const stats = await pc.getStats();
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.inBytes += s.bytesReceived || 0;
      out.inPackets += s.packetsReceived || 0;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outBytes += s.bytesSent || 0;
      out.outPackets += s.packetsSent || 0;
    }
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      const l = byId.get(s.localCandidateId);
      const r = byId.get(s.remoteCandidateId);
      out.pair = `${l?.address}:${l?.port}/${l?.protocol} <-> ${r?.address}:${r?.port}/${r?.protocol}`;
    }
  });
  return out;
});

// registrations reads gateway_sip_registrations from /metrics.
async function registrations(page) {
  const res = await page.request.get(`${base}/metrics`, { timeout: WAIT });
  const m = /^gateway_sip_registrations(?:\{[^}]*\})? (\S+)$/m.exec(await res.text());
  return m ? Number(m[1]) : NaN;
}

async function waitRegistrations(page, want) {
  const until = Date.now() + WAIT;
  let n;
  while (Date.now() < until) {
    n = await registrations(page);
    if (n === want) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the gateway holds ${n} registrations, want ${want}`);
}

await run(browser, async () => {
  const A = await agentPage(userA);
  const B = await agentPage(userB);

  await step('the portal loads on both pages and asks to sign in', async () => {
    for (const p of [A, B]) {
      const res = await p.page.goto(`${base}/agent/`, { timeout: WAIT });
      if (res.status() !== 200) throw new Error(`GET /agent/: ${res.status()}`);
      await p.tid('login-form').waitFor({ state: 'visible' });
      if (await p.tid('phone').isVisible()) throw new Error('the phone shows before sign-in');
    }
    const v = await A.page.evaluate(() => window.JsSIP && window.JsSIP.version);
    if (v !== jssipVersion) throw new Error(`the served bundle is JsSIP ${v}, package-lock.json pins ${jssipVersion}`);
  });

  const signIn = (p, pass) => submitSignIn(p.page, p.user, pass);

  await step('a wrong password shows an error', async () => {
    const status = await signIn(A, 'not-the-password');
    if (status !== 401) throw new Error(`wrong password answered ${status}, want 401`);
    await A.tid('login-error').waitFor({ state: 'visible' });
    if (!/wrong agent id or password/i.test(await A.text('login-error'))) throw new Error(`error: ${await A.text('login-error')}`);
  });

  await step(`${userA} and ${userB} sign in and register over the WebSocket`, async () => {
    for (const p of [A, B]) {
      const status = await signIn(p, password);
      if (status !== 200) throw new Error(`${p.user}: login answered ${status}`);
      await p.tid('phone').waitFor({ state: 'visible' });
      if ((await p.text('header-user')) !== p.user) throw new Error(`${p.user}: header shows ${await p.text('header-user')}`);
    }
    for (const p of [A, B]) {
      await p.waitAttr('reg-state', 'state', 'registered');
      if ((await p.text('reg-text')) !== 'Registered') throw new Error(`${p.user}: "${await p.text('reg-text')}"`);
    }
    await waitRegistrations(A.page, 2);
  });

  // states returns the connection states the page's last peer connection went through.
  const states = (p) => p.page.evaluate(() => window.__dualgateTest.pcs.at(-1)?.states || []);
  const historyTop = async (p) => (await p.page.locator('[data-testid="history-item"] .h-result').first().textContent()).trim();

  await step(`${userA} calls ${number}: the sipp backend answers with WebRTC SDP, the call is up, then the backend hangs up`, async () => {
    const pcsBefore = await A.page.evaluate(() => window.__dualgateTest.pcs.length);
    await A.tid('dial-input').fill(number);
    await A.tid('btn-call').click();
    await A.callState('ringing');
    // Confirmed: the browser took the 200's SDP (setRemoteDescription) and sent the ACK.
    await A.callState('active');
    if ((await A.text('call-status')) !== 'In call') throw new Error(`status: "${await A.text('call-status')}"`);
    if ((await A.text('call-peer')) !== number) throw new Error(`peer: "${await A.text('call-peer')}"`);
    await A.tid('btn-hangup').waitFor({ state: 'visible' });
    // No media: sipp answers no ICE checks (Chrome gives up on such a path after about 15 s).
    if ((await A.text('call-media')) !== 'Audio: connecting…') throw new Error(`media line: "${await A.text('call-media')}"`);
    const during = await states(A);
    // The backend's BYE ends it; the page did not end it itself (no media failure).
    await A.callState('ended');
    const status = await A.text('call-status');
    if (status !== 'Call ended · The other party hung up') throw new Error(`status: "${status}"`);
    if ((await A.text('call-state')) !== 'Call ended') throw new Error(`badge: ${await A.text('call-state')}`);
    if ((await historyTop(A)) !== 'The other party hung up') throw new Error(`history: "${await historyTop(A)}"`);
    const pcs = await A.page.evaluate(() => window.__dualgateTest.pcs.length);
    if (pcs !== pcsBefore + 1) throw new Error(`${pcs - pcsBefore} peer connections for the call, want 1`);
    const all = await states(A);
    console.log(`ice  ${userA} -> ${number} (sipp, no ICE): connection states in the call ${during.join(' > ')}; at the end ${all.join(' > ')}`);
    if (all.includes('failed')) throw new Error(`the peer connection failed during the call: ${all.join(' > ')}`);
  });

  await step(`the cluster (sipp) calls ${userA}: the page rings, ${userA} answers, the call confirms, ${userA} hangs up`, async () => {
    console.log(`need: cluster-call ${userA}`);
    await A.callState('incoming');
    if ((await A.text('call-peer')) !== 'cluster') throw new Error(`${userA} sees the call from "${await A.text('call-peer')}"`);
    if ((await A.text('call-direction')) !== 'Incoming call') throw new Error(`direction: "${await A.text('call-direction')}"`);
    await A.tid('btn-answer').click();
    // Confirmed: the browser's answer went out in the 200 and sipp's ACK came back.
    await A.callState('active');
    if ((await A.text('call-status')) !== 'In call') throw new Error(`status: "${await A.text('call-status')}"`);
    await A.page.waitForFunction(() => document.querySelector('[data-testid="call-timer"]').textContent !== '00:00',
      null, { timeout: 3000 });
    if ((await A.text('call-media')) !== 'Audio: connecting…') throw new Error(`media line: "${await A.text('call-media')}"`);
    const during = await states(A);
    if (during.includes('failed')) throw new Error(`the peer connection failed during the call: ${during.join(' > ')}`);
    await A.tid('btn-hangup').click();
    await A.callState('ended');
    const status = await A.text('call-status');
    if (status !== 'Call ended · You hung up') throw new Error(`status: "${status}"`);
    if ((await historyTop(A)) !== 'You hung up') throw new Error(`history: "${await historyTop(A)}"`);
    console.log(`ice  cluster -> ${userA} (sipp, no ICE): connection states in the call ${during.join(' > ')}; at the end ${(await states(A)).join(' > ')}`);
  });

  await step(`${userA} calls ${userB}: ${userB} rings, ${userA} hears ringing`, async () => {
    await A.tid('dial-input').fill(userB);
    await A.tid('btn-call').click();
    await B.callState('incoming');
    if ((await B.text('call-peer')) !== userA) throw new Error(`${userB} sees the call from "${await B.text('call-peer')}"`);
    await B.tid('btn-answer').waitFor({ state: 'visible' });
    await B.tid('btn-reject').waitFor({ state: 'visible' });
    await A.callState('ringing');
    await B.page.mouse.move(0, 0);
    await B.page.screenshot({ path: withSuffix(shot, '-incoming') });
    if ((await A.text('call-peer')) !== userB) throw new Error(`${userA} shows "${await A.text('call-peer')}"`);
  });

  await step(`${userB} answers: both pages show the call, the timer runs`, async () => {
    await B.tid('btn-answer').click();
    for (const p of [A, B]) {
      await p.callState('active');
      await p.tid('btn-hangup').waitFor({ state: 'visible' });
      await p.tid('btn-mute').waitFor({ state: 'visible' });
      await p.tid('btn-hold').waitFor({ state: 'visible' });
    }
    await A.page.waitForFunction(() => document.querySelector('[data-testid="call-timer"]').textContent !== '00:00',
      null, { timeout: 3000 });
  });

  await step('audio RTP flows both ways (getStats inbound-rtp bytesReceived grows on both pages)', async () => {
    for (const p of [A, B]) {
      await p.page.waitForFunction(() => window.__dualgateTest.pcs.at(-1)?.connectionState === 'connected', null, { timeout: WAIT });
    }
    const first = [await rtp(A.page), await rtp(B.page)];
    await new Promise((r) => setTimeout(r, RTP_WINDOW));
    const second = [await rtp(A.page), await rtp(B.page)];
    [A, B].forEach((p, i) => {
      const a = first[i];
      const b = second[i];
      console.log(`rtp  ${p.user}: inbound audio ${a.inBytes} -> ${b.inBytes} bytes (+${b.inBytes - a.inBytes} in ${RTP_WINDOW / 1000} s, ` +
        `${b.inPackets - a.inPackets} packets); outbound ${a.outBytes} -> ${b.outBytes} bytes; pair ${b.pair}`);
      if (!(b.inBytes > a.inBytes)) throw new Error(`${p.user}: no audio received (${a.inBytes} -> ${b.inBytes} bytes)`);
      if (!(b.outBytes > a.outBytes)) throw new Error(`${p.user}: no audio sent (${a.outBytes} -> ${b.outBytes} bytes)`);
    });
    for (const p of [A, B]) {
      const media = await p.text('call-media');
      if (media !== 'Audio: connected') throw new Error(`${p.user} media line: "${media}"`);
      const playing = await p.page.evaluate(() => {
        const a = document.querySelector('[data-testid="remote-audio"]');
        return !!a.srcObject && a.srcObject.getAudioTracks().some((t) => t.readyState === 'live') && !a.paused;
      });
      if (!playing) throw new Error(`${p.user}: the remote audio is not playing in the <audio> element`);
    }
  });

  await step(`${userA} holds: ${userA} shows On hold, ${userB} shows held by the other party; resume`, async () => {
    await A.tid('btn-hold').click();
    await A.callState('held');
    await A.tid('flag-held').waitFor({ state: 'visible' });
    if ((await A.tid('btn-hold').getAttribute('aria-pressed')) !== 'true') throw new Error('Hold is not shown pressed');
    await B.callState('held');
    await B.tid('flag-remote-held').waitFor({ state: 'visible' });
    await A.tid('btn-hold').click();
    await A.callState('active');
    await B.callState('active');
    await B.tid('flag-remote-held').waitFor({ state: 'hidden' });
  });

  await step(`${userB} mutes and unmutes`, async () => {
    await B.tid('btn-mute').click();
    await B.tid('flag-muted').waitFor({ state: 'visible' });
    if ((await B.text('btn-mute')) !== 'Unmute') throw new Error(`mute button says ${await B.text('btn-mute')}`);
    await B.tid('btn-mute').click();
    await B.tid('flag-muted').waitFor({ state: 'hidden' });
  });

  await step(`screenshot of ${userA} in the call -> ${shot}`, async () => {
    await A.page.waitForFunction(() => /^00:0[2-9]|^00:[1-5]\d/.test(document.querySelector('[data-testid="call-timer"]').textContent),
      null, { timeout: WAIT });
    await A.page.mouse.move(0, 0);
    await A.page.screenshot({ path: shot });
  });

  await step(`${userB} hangs up: both pages show the call ended`, async () => {
    await B.tid('btn-hangup').click();
    await B.callState('ended');
    await A.callState('ended');
    const a = await A.text('call-status');
    const b = await B.text('call-status');
    if (!/call ended.*other party hung up/i.test(a)) throw new Error(`${userA}: "${a}"`);
    if (!/call ended.*you hung up/i.test(b)) throw new Error(`${userB}: "${b}"`);
    for (const p of [A, B]) {
      if (await p.tid('btn-hangup').isVisible()) throw new Error(`${p.user}: Hang up still offered`);
      if (await p.tid('btn-call').isDisabled()) throw new Error(`${p.user}: Call stays disabled`);
    }
    if ((await A.page.locator('[data-testid="history-item"]').count()) !== 3) throw new Error(`${userA}: history is not 3 calls`);
  });

  await step(`${userA}'s socket drops: the page shows it reconnecting, then registered again`, async () => {
    await A.page.evaluate(() => window.__dualgateTest.sockets.at(-1).close(4000, 'test drops the socket'));
    await A.waitAttr('reg-state', 'state', 'reconnecting', 3000);
    await A.tid('conn-banner').waitFor({ state: 'visible' });
    if (!/reconnecting/i.test(await A.text('conn-banner'))) throw new Error(`banner: "${await A.text('conn-banner')}"`);
    await A.waitAttr('reg-state', 'state', 'registered', 15_000);
    await waitRegistrations(A.page, 2);
    const n = await A.page.evaluate(() => window.__dualgateTest.sockets.length);
    if (n !== 2) throw new Error(`${n} sockets opened, want 2`);
  });

  await step(`${userB} calls ${userA} on the new socket; ${userA} declines`, async () => {
    await B.tid('dial-input').fill(userA);
    await B.tid('btn-call').click();
    await A.callState('incoming');
    await A.tid('btn-reject').click();
    await A.callState('ended');
    await B.callState('ended');
    const b = await B.text('call-status');
    if (!/declined/i.test(b)) throw new Error(`${userB}: "${b}"`);
    const a = await A.text('call-status');
    if (!/declined/i.test(a)) throw new Error(`${userA}: "${a}"`);
  });

  await step(`${userA} signs out: back to sign-in, the registration is gone`, async () => {
    await A.tid('logout').click();
    await A.tid('login-form').waitFor({ state: 'visible' });
    await waitRegistrations(B.page, 1);
    const me = await A.page.request.get(`${base}/api/me`, { timeout: WAIT });
    if (me.status() !== 401) throw new Error(`GET /api/me after sign-out: ${me.status()}`);
  });

  await step(`${userB}'s session ends (cookie gone) and the socket drops: the page asks to sign in again`, async () => {
    await B.page.context().clearCookies();
    await B.page.evaluate(() => window.__dualgateTest.sockets.at(-1).close(4000, 'test drops the socket'));
    await B.tid('login-form').waitFor({ state: 'visible' });
    if (!/session has ended/i.test(await B.text('login-error'))) throw new Error(`login message: "${await B.text('login-error')}"`);
    await waitRegistrations(B.page, 0);
    // The phone stopped: no further upgrade attempts once the login shows.
    const n = await B.page.evaluate(() => window.__dualgateTest.sockets.length);
    await new Promise((r) => setTimeout(r, 2500));
    const m = await B.page.evaluate(() => window.__dualgateTest.sockets.length);
    if (m !== n) throw new Error(`the page kept opening sockets after the session ended (${n} -> ${m})`);
  });
}, { shot });
