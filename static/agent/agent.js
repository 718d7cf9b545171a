// dualgate agent softphone: sign in, then a WebRTC phone built on JsSIP (vendor/jssip.min.js).
//
// The session is the HttpOnly cookie POST /api/login sets; this script never sees the token.
// The WebSocket to /ws on this same host carries that cookie, and the gateway lets the socket
// act only as the signed-in agent, so JsSIP registers without a SIP password (the JWT is the
// credential; JsSIP needs none unless it is challenged, which the gateway never does here).
// Media goes browser to browser (or to the media server): ICE host candidates only, the SDP as
// JsSIP makes it. JsSIP reconnects a dropped socket by itself and registers again; the header
// and the banner show each step. The gateway closes the socket when the token expires, so the
// page renews the session (POST /api/refresh) at two thirds of the token's remaining lifetime;
// the gateway then moves this session's socket to the new expiry and the registration and any
// call carry on. A refresh the gateway refuses ends the session: the page asks to sign in.
// The HTTP client and the sign-in form are window.dualgate (../common/common.js, loaded first).
'use strict';

(function () {
  const DOMAIN = location.hostname.includes(':') ? '[' + location.hostname + ']' : location.hostname;
  const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const MEDIA = { audio: true, video: false };
  const PC_CONFIG = { iceServers: [] };
  const HISTORY_MAX = 50;
  const TITLE = document.title;

  const { byTestId: $, apiClient, hasRole, signInForm } = window.dualgate;
  // Every answer's Date header tells how far the gateway's clock is from ours (see remainingMs).
  const api = apiClient((res) => noteServerClock(res.headers.get('Date')));
  const el = {
    login: $('login'),
    phone: $('phone'),
    session: $('session'),
    user: $('header-user'),
    logout: $('logout'),
    reg: $('reg-state'),
    regText: $('reg-text'),
    banner: $('conn-banner'),
    panel: $('call-panel'),
    callState: $('call-state'),
    timer: $('call-timer'),
    peer: $('call-peer'),
    direction: $('call-direction'),
    status: $('call-status'),
    media: $('call-media'),
    flagMuted: $('flag-muted'),
    flagHeld: $('flag-held'),
    flagRemoteHeld: $('flag-remote-held'),
    answer: $('btn-answer'),
    reject: $('btn-reject'),
    mute: $('btn-mute'),
    hold: $('btn-hold'),
    hangup: $('btn-hangup'),
    dialer: $('dialer'),
    dial: $('dial-input'),
    dialClear: $('dial-clear'),
    keypad: $('keypad'),
    dialError: $('dial-error'),
    hint: $('dialer-hint'),
    call: $('btn-call'),
    history: $('history'),
    historyEmpty: $('history-empty'),
    identity: $('identity'),
    audio: $('remote-audio'),
  };
  const historyTemplate = document.getElementById('history-item');

  let me = null;        // {user, roles, expires} of the signed-in agent
  let ua = null;        // the JsSIP user agent while signed in
  let stopping = false; // signing out: the UA's closing events are expected
  let drops = 0;        // socket losses since the last good connection
  let tick = 0;         // call timer interval
  let call = null;      // the current (or last) call, see newCall

  // ---- views ----

  function show(view) {
    el.login.hidden = view !== 'login';
    el.phone.hidden = view !== 'phone';
    el.session.hidden = view !== 'phone';
  }

  function showLogin(message) {
    show('login');
    document.title = TITLE;
    signIn.show(message);
  }

  // banner shows the connection's trouble above the phone (kind: warn or error; '' hides it).
  function banner(kind, message) {
    el.banner.className = 'alert' + (kind ? ' alert-' + kind : '');
    el.banner.textContent = message || '';
    el.banner.hidden = !message;
    el.banner.dataset.kind = kind || '';
  }

  function setReg(state, text) {
    el.reg.dataset.state = state;
    el.regText.textContent = text;
    el.reg.title = 'SIP over WebSocket: ' + WS_URL;
  }

  function setDialError(message) {
    el.dialError.textContent = message || '';
    el.dialError.hidden = !message;
  }

  // ---- sign in / out ----

  const signIn = signInForm({
    api,
    role: 'agent',
    onSignedIn: startPhone,
    missing: 'Enter your agent ID and password.',
    wrong: 'Wrong agent ID or password.',
    noRole: (user) => 'The account ' + user + ' has no agent role. This softphone is for agents.',
    locked: (left) => 'Too many failed sign-ins. Try again in ' + formatDuration(left) + '.',
  });

  el.logout.addEventListener('click', async () => {
    if (call && call.live && !window.confirm('A call is in progress. Hang up and sign out?')) return;
    stopPhone();
    await api('POST', '/api/logout').catch(() => {});
    showLogin('');
  });

  // stopPhone ends the call, unregisters and closes the socket.
  function stopPhone() {
    stopping = true;
    stopRefresh();
    if (call && call.live) {
      try { call.session.terminate(); } catch (e) { /* already ending */ }
    }
    if (ua) {
      try { ua.stop(); } catch (e) { /* already stopped */ }
      ua = null;
    }
    setReg('offline', 'Offline');
    banner('', '');
  }

  // A signed-out or expired session: the socket cannot come back, so stop trying and ask again.
  // GET /api/me answers 401 for such a session, as the socket's upgrade does, and costs the
  // gateway no new token: every page behind one office NAT asks at once after a network blip,
  // so a refresh here would spend the address's refresh budget. Unreachable or failing: JsSIP
  // keeps trying, and the planned refresh still comes.
  async function checkSession() {
    if (!me || stopping) return;
    const mine = me;
    try {
      await api('GET', '/api/me');
    } catch (e) {
      if (me !== mine || stopping) return;
      if (e.status === 401 || e.status === 403) sessionEnded('Your session has ended. Sign in again.');
    }
  }

  // ---- keeping the session ----

  let refreshTimer = 0;
  let refreshAt = 0;  // when the next refresh is due (our clock); 0: none planned
  let endTimer = 0;
  let clockSkew = 0;  // the gateway's clock minus ours (ms), once they differ by more than the Date header's grain

  function noteServerClock(date) {
    const t = date ? Date.parse(date) : NaN;
    if (Number.isNaN(t)) return;
    const skew = t - Date.now();
    // The Date header has whole seconds: only a larger difference is a wrong clock.
    clockSkew = Math.abs(skew) > 2000 ? skew : 0;
  }

  // remainingMs is how long the current token still lives, by the gateway's clock.
  function remainingMs() {
    return Date.parse(me.expires) - (Date.now() + clockSkew);
  }

  function scheduleRefresh(delay) {
    clearTimeout(refreshTimer);
    refreshAt = Date.now() + delay;
    refreshTimer = setTimeout(refreshSession, delay);
  }

  // planRefresh aims at two thirds of the remaining lifetime: late enough not to load the
  // gateway, early enough that a failed attempt can be retried before the socket closes.
  function planRefresh() {
    if (!me || stopping) return;
    scheduleRefresh(Math.max(Math.floor(remainingMs() * 2 / 3), 250));
  }

  function stopRefresh() {
    clearTimeout(refreshTimer);
    clearTimeout(endTimer);
    refreshTimer = endTimer = refreshAt = 0;
  }

  async function refreshSession() {
    clearTimeout(refreshTimer);
    refreshAt = 0;
    if (!me || stopping) return;
    const mine = me;
    const before = Date.parse(me.expires);
    try {
      const s = await api('POST', '/api/refresh');
      if (me !== mine || stopping) return;
      me.expires = s.expires;
      if (!(Date.parse(s.expires) > before)) {
        // The session has reached its maximum length: no later token will come.
        sessionEnded('Your session has reached its maximum length. Sign in again.');
        return;
      }
      planRefresh();
    } catch (e) {
      if (me !== mine || stopping) return;
      if (e.status === 401 || e.status === 403) {
        sessionEnded('Your session has ended. Sign in again.');
        return;
      }
      // Unreachable, rate-limited or failing: try again while the token still lives.
      const left = remainingMs();
      const wait = Math.min(Math.max((e.retryAfter || 0) * 1000, Math.min(5000, left / 3)), left - 500);
      if (wait > 0) {
        scheduleRefresh(wait);
      } else {
        sessionEnded('Your session has ended: the gateway could not renew it. Sign in again.');
      }
    }
  }

  // sessionEnded stops the phone and asks to sign in again. A call in progress keeps going
  // until the token runs out, when the gateway closes the socket anyway.
  function sessionEnded(message) {
    clearTimeout(refreshTimer);
    refreshAt = 0;
    const left = me ? remainingMs() : 0;
    if (call && call.live && left > 0) {
      banner('error', message.replace(' Sign in again.', '') + ' The phone stops at ' +
        new Date(Date.now() + left).toLocaleTimeString() + '; then sign in again.');
      clearTimeout(endTimer);
      endTimer = setTimeout(() => sessionEnded(message), left);
      return;
    }
    stopPhone();
    me = null;
    showLogin(message);
  }

  // Timers in a hidden tab may fire late: coming back, catch up on a refresh that is due.
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && refreshAt && Date.now() >= refreshAt) refreshSession();
  });

  // ---- the phone ----

  function startPhone(who) {
    me = who;
    stopping = false;
    drops = 0;
    planRefresh();
    el.user.textContent = me.user;
    el.identity.textContent = 'sip:' + me.user + '@' + DOMAIN + ' · ' + WS_URL;
    show('phone');
    banner('', '');
    setDialError('');
    renderCall();
    if (!window.JsSIP) {
      setReg('failed', 'No softphone');
      banner('error', 'The softphone library did not load (vendor/jssip.min.js). Reload the page.');
      return;
    }
    setReg('connecting', 'Connecting…');
    try {
      ua = new window.JsSIP.UA({
        sockets: [new window.JsSIP.WebSocketInterface(WS_URL)],
        uri: 'sip:' + me.user + '@' + DOMAIN,
        register: true,
        register_expires: 300,
        session_timers: false,
        user_agent: 'dualgate-agent JsSIP/' + window.JsSIP.version,
        connection_recovery_min_interval: 2,
        connection_recovery_max_interval: 30,
      });
    } catch (e) {
      setReg('failed', 'Not registered');
      banner('error', 'The softphone could not start: ' + e.message);
      return;
    }
    const mine = ua;
    const live = (fn) => (...args) => { if (ua === mine && !stopping) fn(...args); };
    ua.on('connecting', live(() => {
      setReg(drops ? 'reconnecting' : 'connecting', drops ? 'Reconnecting…' : 'Connecting…');
    }));
    ua.on('connected', live(() => {
      setReg(drops ? 'reconnecting' : 'connecting', 'Registering…');
    }));
    ua.on('disconnected', live(async () => {
      drops++;
      setReg('reconnecting', 'Reconnecting…');
      banner('warn', 'Connection to the gateway lost. Reconnecting' + (drops > 1 ? ' (attempt ' + drops + ')' : '') +
        '… Calls cannot be placed or received until the phone is registered again.');
      await checkSession();
    }));
    ua.on('registered', live(() => {
      const again = drops > 0;
      drops = 0;
      setReg('registered', 'Registered');
      banner('', '');
      if (again) flashBanner('The connection is back: registered again.');
    }));
    ua.on('unregistered', live(() => {
      if (!drops) setReg('offline', 'Not registered');
    }));
    ua.on('registrationFailed', live((e) => {
      const why = e.response ? e.response.status_code + ' ' + e.response.reason_phrase : e.cause;
      setReg('failed', 'Not registered');
      let hint = '';
      if (e.response && e.response.status_code === 403 && /domain/i.test(e.response.reason_phrase)) {
        hint = ' The gateway does not take "' + DOMAIN + '" as its SIP domain: open this page at the gateway\'s own' +
          ' address, or add the name to sip.domains in its config.';
      }
      banner('error', 'Registration refused: ' + why + '.' + hint);
      if (e.response && (e.response.status_code === 401 || e.response.status_code === 403)) checkSession();
    }));
    ua.on('newRTCSession', live(onNewSession));
    ua.start();
  }

  let flashTimer = 0;
  function flashBanner(message) {
    clearTimeout(flashTimer);
    banner('ok', message);
    flashTimer = setTimeout(() => { if (el.banner.dataset.kind === 'ok') banner('', ''); }, 4000);
  }

  // ---- ringing ----

  // ringer plays a ring tone (440 + 480 Hz, 1.6 s on, 2.4 s off) while a call rings in. Browsers
  // only let a page make sound after the user has touched it, so the audio context starts at
  // the first click or key press (signing in is one).
  const ringer = (() => {
    let ctx = null;
    let timer = 0;
    let out = null;
    const unlock = () => {
      try {
        ctx = ctx || new AudioContext();
        if (ctx.state === 'suspended') ctx.resume().catch(() => {});
      } catch (e) { /* no Web Audio: the page still shows the call */ }
    };
    document.addEventListener('pointerdown', unlock, { capture: true });
    document.addEventListener('keydown', unlock, { capture: true });
    const burst = () => {
      if (!ctx || ctx.state !== 'running') return;
      const t = ctx.currentTime;
      out = ctx.createGain();
      out.gain.setValueAtTime(0, t);
      out.gain.linearRampToValueAtTime(0.12, t + 0.03);
      out.gain.setValueAtTime(0.12, t + 1.57);
      out.gain.linearRampToValueAtTime(0, t + 1.6);
      out.connect(ctx.destination);
      for (const f of [440, 480]) {
        const o = ctx.createOscillator();
        o.frequency.value = f;
        o.connect(out);
        o.start(t);
        o.stop(t + 1.6);
      }
    };
    return {
      start() {
        if (timer) return;
        burst();
        timer = setInterval(burst, 4000);
      },
      stop() {
        if (!timer) return;
        clearInterval(timer);
        timer = 0;
        if (out) out.disconnect();
        out = null;
      },
    };
  })();

  // ---- calls ----

  function onNewSession(e) {
    const s = e.session;
    const incoming = e.originator === 'remote';
    if (call && call.live) {
      // One line: a second call while busy is refused (the platform's queue sees 486).
      if (incoming) s.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      return;
    }
    const who = s.remote_identity;
    call = {
      session: s,
      incoming,
      peer: who && who.uri ? who.uri.user || who.uri.host : 'unknown',
      name: who && who.display_name && who.display_name !== (who.uri && who.uri.user) ? who.display_name : '',
      state: incoming ? 'incoming' : 'calling',
      status: incoming ? 'Ringing…' : 'Calling…',
      live: true,
      started: Date.now(),
      confirmed: 0,
      ended: 0,
      failed: false,
      muted: false,
      held: false,
      remoteHeld: false,
      media: '',
    };
    const c = call;
    const on = (name, fn) => s.on(name, (...args) => { if (call === c) fn(...args); });
    if (s.connection) watchConnection(c, s.connection);
    on('peerconnection', (ev) => watchConnection(c, ev.peerconnection));
    on('progress', (ev) => {
      if (!incoming) {
        const code = ev.response && ev.response.status_code;
        update({ state: 'ringing', status: code === 183 ? 'Ringing (early media)…' : 'Ringing…' });
      }
    });
    on('accepted', () => update({ state: 'connecting', status: 'Connecting…' }));
    on('confirmed', () => {
      c.confirmed = Date.now();
      update({ state: 'active', status: 'In call' });
    });
    on('hold', (ev) => {
      if (ev.originator === 'local') c.held = true;
      else c.remoteHeld = true;
      holdState();
    });
    on('unhold', (ev) => {
      if (ev.originator === 'local') c.held = false;
      else c.remoteHeld = false;
      holdState();
    });
    on('muted', () => update({ muted: true }));
    on('unmuted', () => update({ muted: false }));
    on('ended', (ev) => finish(ev, false));
    on('failed', (ev) => finish(ev, true));
    on('getusermediafailed', () => update({ media: 'No microphone: the browser refused access to it.' }));

    setDialError('');
    if (incoming) {
      document.title = 'Incoming call · ' + c.peer + ' — ' + TITLE;
    } else {
      document.title = 'Calling ' + c.peer + ' — ' + TITLE;
    }
    startTimer();
    renderCall();
  }

  function holdState() {
    const c = call;
    if (!c.live || !c.confirmed) return renderCall();
    if (c.held) update({ state: 'held', status: 'On hold' });
    else if (c.remoteHeld) update({ state: 'held', status: 'Held by the other party' });
    else update({ state: 'active', status: 'In call' });
  }

  // watchConnection plays the remote audio and shows the media path's state.
  function watchConnection(c, pc) {
    if (c.pc === pc) return;
    c.pc = pc;
    pc.addEventListener('track', (ev) => {
      if (call !== c || ev.track.kind !== 'audio') return;
      el.audio.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      el.audio.play().catch(() => { /* autoplay refused: the element keeps the stream */ });
    });
    const media = () => {
      if (call !== c) return;
      if (pc.connectionState === 'failed' && c.live && c.confirmed) {
        // The audio path is gone for good (ICE consent lost): no one hears anyone, so end the
        // call rather than leave the agent in a silent one.
        c.lostMedia = true;
        try { c.session.terminate(); } catch (e) { /* already ending */ }
        return;
      }
      const text = {
        new: '', connecting: 'Audio: connecting…', connected: 'Audio: connected',
        disconnected: 'Audio: interrupted, trying to recover…', failed: 'Audio: no media path to the other party',
        closed: '',
      }[pc.connectionState] || '';
      update({ media: text });
    };
    pc.addEventListener('connectionstatechange', media);
    media();
  }

  function update(changes) {
    Object.assign(call, changes);
    renderCall();
  }

  const CAUSES = {
    Busy: 'Busy',
    Rejected: 'Declined',
    Redirected: 'Redirected',
    Unavailable: 'Not available',
    'Not Found': 'Number not found',
    'Address Incomplete': 'Number incomplete',
    'Incompatible SDP': 'Media not compatible',
    'Missing SDP': 'Media not compatible',
    'Authentication Error': 'Not allowed',
    'WebRTC Error': 'Media error',
    'No Answer': 'No answer',
    Expires: 'No answer',
    'No ACK': 'Call setup failed',
    'Dialog Error': 'Call lost',
    'Connection Error': 'Connection to the gateway lost',
    'Request Timeout': 'No response from the gateway',
    'User Denied Media Access': 'Microphone access denied',
    'Bad Media Description': 'Media not compatible',
    'RTP Timeout': 'Audio lost',
    'Internal Error': 'Internal error',
  };

  function finish(ev, failed) {
    const c = call;
    if (!c.live) return;
    c.live = false;
    c.ended = Date.now();
    const cause = ev.cause;
    const local = ev.originator === 'local';
    let text;
    if (c.lostMedia) {
      text = 'Call lost: the audio connection failed';
    } else if (cause === 'Terminated') {
      text = local ? 'You hung up' : (c.incoming ? 'The caller hung up' : 'The other party hung up');
    } else if (cause === 'Canceled') {
      if (c.incoming && !local) {
        text = 'Missed call: the caller hung up';
      } else {
        text = 'Cancelled';
      }
    } else if (cause === 'Rejected' && c.incoming && local) {
      text = 'Declined';
    } else if (cause === 'SIP Failure Code' && ev.message && ev.message.status_code) {
      text = ev.message.status_code + ' ' + ev.message.reason_phrase;
    } else {
      text = CAUSES[cause] || cause || 'Call ended';
    }
    const answered = c.confirmed > 0;
    c.failed = failed && !(c.incoming && local); // declining is not a failure
    c.state = 'ended';
    c.status = (answered ? 'Call ended · ' : (c.incoming ? '' : 'Call failed · ')) + text;
    c.media = '';
    c.muted = c.held = c.remoteHeld = false;
    el.audio.srcObject = null;
    stopTimer();
    document.title = TITLE;
    addHistory({ incoming: c.incoming, peer: c.peer, at: c.started, result: text,
      seconds: answered ? Math.round((c.ended - c.confirmed) / 1000) : -1, missed: c.incoming && !answered && !local,
      failed: c.failed || !!c.lostMedia });
    renderCall();
  }

  // ---- rendering ----

  const BADGE = {
    idle: 'Ready', calling: 'Calling', ringing: 'Ringing', incoming: 'Incoming call', connecting: 'Connecting',
    active: 'In call', held: 'On hold', ended: 'Call ended',
  };

  function renderCall() {
    const c = call;
    const state = c ? c.state : 'idle';
    el.panel.dataset.state = state;
    el.panel.classList.toggle('failed', !!(c && c.failed));
    el.callState.textContent = c && c.state === 'ended' && c.failed ? 'Call failed' : BADGE[state];
    if (!c) {
      el.peer.textContent = 'No call';
      el.direction.textContent = 'Waiting for calls';
      el.status.textContent = '';
      el.media.textContent = '';
    } else {
      el.peer.textContent = c.peer;
      el.direction.textContent = (c.incoming ? 'Incoming call' : 'Outgoing call') + (c.name ? ' · ' + c.name : '');
      el.status.textContent = c.status;
      el.media.textContent = c.media;
    }
    const live = !!(c && c.live);
    const ringingIn = live && c.state === 'incoming';
    const inCall = live && !!c.confirmed;
    el.answer.hidden = !ringingIn;
    el.reject.hidden = !ringingIn;
    el.hangup.hidden = !live || ringingIn;
    el.hangup.textContent = inCall ? 'Hang up' : 'Cancel';
    el.mute.hidden = !inCall;
    el.hold.hidden = !inCall;
    el.mute.setAttribute('aria-pressed', String(live && c.muted));
    el.mute.textContent = live && c.muted ? 'Unmute' : 'Mute';
    el.hold.setAttribute('aria-pressed', String(live && c.held));
    el.hold.textContent = live && c.held ? 'Resume' : 'Hold';
    el.flagMuted.hidden = !(live && c.muted);
    el.flagHeld.hidden = !(live && c.held);
    el.flagRemoteHeld.hidden = !(live && c.remoteHeld);
    el.call.disabled = live;
    el.hint.textContent = inCall ? 'The keypad sends DTMF tones to the call.' : 'Press Enter or Call to dial.';
    if (ringingIn) ringer.start();
    else ringer.stop();
    renderTimer();
  }

  function renderTimer() {
    const c = call;
    if (!c || !c.confirmed) {
      el.timer.textContent = '00:00';
      return;
    }
    const end = c.live ? Date.now() : c.ended;
    el.timer.textContent = clock(Math.max(0, Math.floor((end - c.confirmed) / 1000)));
  }

  function startTimer() {
    stopTimer();
    tick = setInterval(renderTimer, 500);
  }

  function stopTimer() {
    clearInterval(tick);
    tick = 0;
  }

  function clock(s) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, '0');
    return (h ? h + ':' + pad(m) : pad(m)) + ':' + pad(s % 60);
  }

  function formatDuration(s) {
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    return m + ' min' + (s % 60 ? ' ' + (s % 60) + ' s' : '');
  }

  const history = [];

  function addHistory(item) {
    history.unshift(item);
    if (history.length > HISTORY_MAX) history.length = HISTORY_MAX;
    const li = historyTemplate.content.firstElementChild.cloneNode(true);
    li.classList.add(item.incoming ? 'in' : 'out');
    li.classList.toggle('missed', item.missed);
    li.classList.toggle('failed', item.failed);
    li.querySelector('.h-dir').title = item.incoming ? 'Incoming' : 'Outgoing';
    const peer = li.querySelector('.h-peer');
    peer.textContent = item.peer;
    peer.dataset.peer = item.peer;
    li.querySelector('.h-result').textContent = item.result;
    li.querySelector('.h-time').textContent = new Date(item.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.querySelector('.h-dur').textContent = item.seconds >= 0 ? clock(item.seconds) : '–';
    el.history.prepend(li);
    while (el.history.children.length > HISTORY_MAX) el.history.lastElementChild.remove();
    el.historyEmpty.hidden = true;
  }

  el.history.addEventListener('click', (ev) => {
    const b = ev.target.closest('.h-peer');
    if (!b || (call && call.live)) return;
    el.dial.value = b.dataset.peer;
    el.dial.focus();
  });

  // ---- actions ----

  // target turns what the agent typed into a SIP URI on this gateway: digits and agent IDs as
  // typed (spaces, dashes, dots and brackets in phone numbers dropped), or user@host.
  function target(raw) {
    let v = raw.trim().replace(/^sip:/i, '');
    if (!v) return '';
    if (v.includes('@')) return /^[^@\s]+@[^@\s]+$/.test(v) ? 'sip:' + v : '';
    if (/^\+?[\d\s().-]+$/.test(v)) v = v.replace(/[\s().-]/g, '');
    return /^[A-Za-z0-9_.!~*'+#-]+$/.test(v) ? 'sip:' + v + '@' + DOMAIN : '';
  }

  el.dialer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (call && call.live) return;
    const uri = target(el.dial.value);
    if (!uri) {
      setDialError(el.dial.value.trim() ? 'That is not a number or agent ID.' : 'Enter a number or agent ID.');
      el.dial.focus();
      return;
    }
    if (!ua || !ua.isConnected()) {
      setDialError('Not connected to the gateway yet.');
      return;
    }
    setDialError('');
    try {
      ua.call(uri, {
        mediaConstraints: MEDIA,
        pcConfig: PC_CONFIG,
        rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
      });
    } catch (e) {
      setDialError('The call could not start: ' + e.message);
    }
  });

  el.answer.addEventListener('click', () => {
    if (!call || !call.live || call.state !== 'incoming') return;
    update({ state: 'connecting', status: 'Answering…' });
    try {
      call.session.answer({ mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
    } catch (e) {
      update({ status: 'Could not answer: ' + e.message });
    }
  });

  el.reject.addEventListener('click', () => {
    if (!call || !call.live) return;
    try { call.session.terminate({ status_code: 603, reason_phrase: 'Decline' }); } catch (e) { /* already ending */ }
  });

  el.hangup.addEventListener('click', () => {
    if (!call || !call.live) return;
    try { call.session.terminate(); } catch (e) { /* already ending */ }
  });

  el.mute.addEventListener('click', () => {
    if (!call || !call.live) return;
    if (call.session.isMuted().audio) call.session.unmute({ audio: true });
    else call.session.mute({ audio: true });
  });

  el.hold.addEventListener('click', () => {
    if (!call || !call.live) return;
    el.hold.disabled = true;
    const done = () => { el.hold.disabled = false; };
    const ok = call.session.isOnHold().local
      ? call.session.unhold({}, done)
      : call.session.hold({}, done);
    if (!ok) done(); // JsSIP refused (a re-INVITE already in progress)
    setTimeout(done, 5000);
  });

  el.keypad.addEventListener('click', (ev) => {
    const key = ev.target.closest('[data-digit]');
    if (!key) return;
    const digit = key.dataset.digit;
    if (call && call.live && call.confirmed) {
      try {
        call.session.sendDTMF(digit, { transportType: 'RFC2833' });
      } catch (e) { /* no DTMF sender (no audio track) */ }
      return;
    }
    el.dial.value += digit;
    el.dial.focus();
  });

  el.dialClear.addEventListener('click', () => {
    el.dial.value = el.dial.value.slice(0, -1);
    el.dial.focus();
  });

  // Closing the tab mid-call would drop the customer: ask first. Leaving unregisters cleanly.
  window.addEventListener('beforeunload', (ev) => {
    if (call && call.live) ev.preventDefault();
  });
  window.addEventListener('pagehide', (ev) => {
    if (ua && !ev.persisted) {
      stopping = true;
      try { ua.stop(); } catch (e) { /* closing anyway */ }
    }
  });

  // ---- start ----

  (async () => {
    try {
      const who = await api('GET', '/api/me');
      if (hasRole(who, 'agent')) {
        startPhone(who);
        return;
      }
      showLogin('');
    } catch (e) {
      showLogin(e.status === 401 || e.status === 0 ? (e.status === 0 ? e.message : '') : e.message);
    }
  })();
})();
