// dualgate admin portal: sign in, then a live view of the dispatcher, the calls, the
// registrations and the bans, refreshed every 2 s. Plain JavaScript; the HTTP client and the
// sign-in form are window.dualgate (../common/common.js, loaded first).
'use strict';

(function () {
  const POLL_MS = 2000;
  const MAX_DIALOG_ROWS = 200;
  const MAX_LIST_ROWS = 500;  // registrations and bans
  const STATES = ['active', 'inactive', 'draining', 'disabled'];

  const { byTestId: $, apiClient, hasRole, signInForm } = window.dualgate;
  const api = apiClient();
  const el = {
    login: $('login'),
    dashboard: $('dashboard'),
    session: $('session'),
    user: $('header-user'),
    logout: $('logout'),
    live: $('live'),
    lastUpdated: $('last-updated'),
    appError: $('app-error'),
    sets: $('sets'),
    setsEmpty: $('sets-empty'),
    dialogsBody: $('dialogs-body'),
    dialogsEmpty: $('dialogs-empty'),
    dialogsCount: $('dialogs-count'),
    dialogsMore: $('dialogs-more'),
    regsBody: $('regs-body'),
    regsEmpty: $('regs-empty'),
    regsCount: $('regs-count'),
    regsMore: $('regs-more'),
    bansBody: $('bans-body'),
    bansEmpty: $('bans-empty'),
    bansCount: $('bans-count'),
    bansMore: $('bans-more'),
    stat: {
      up: $('stat-up'), draining: $('stat-draining'), down: $('stat-down'),
      disabled: $('stat-disabled'), calls: $('stat-calls'),
    },
  };
  const setTemplate = document.getElementById('set-template');
  const destTemplate = document.getElementById('dest-template');
  const regTemplate = document.getElementById('reg-template');
  const banTemplate = document.getElementById('ban-template');

  let pollTimer = 0;
  let pollSeq = 0;          // bumps on sign-in and sign-out, so a late answer of an old session is dropped
  let lastOK = 0;           // time of the last good refresh
  const setCards = new Map(); // set id -> card element
  const destRows = new Map(); // "set uri" -> row element
  const pending = new Set();  // rows with a state change in flight
  const regRows = new Map();  // binding key -> row element
  const banRows = new Map();  // prefix -> row element
  const lifting = new Set();  // prefixes with a lift in flight
  let bansGen = 0;            // bumps on each lift, so a refresh begun before it cannot bring the ban back

  // ---- views ----

  function show(view) {
    el.login.hidden = view !== 'login';
    el.dashboard.hidden = view !== 'dashboard';
    el.session.hidden = view !== 'dashboard';
  }

  function showLogin(message) {
    stopPolling();
    show('login');
    signIn.show(message);
  }

  function setAppError(message) {
    el.appError.textContent = message;
    el.appError.hidden = !message;
  }

  function startDashboard(me) {
    el.user.textContent = me.user;
    setAppError('');
    clearDashboard();
    show('dashboard');
    pollSeq++;
    lastOK = 0;
    el.lastUpdated.textContent = 'loading…';
    poll(pollSeq);
  }

  function clearDashboard() {
    el.sets.replaceChildren();
    setCards.clear();
    destRows.clear();
    pending.clear();
    el.dialogsBody.replaceChildren();
    el.regsBody.replaceChildren();
    regRows.clear();
    el.bansBody.replaceChildren();
    banRows.clear();
    lifting.clear();
  }

  function stopPolling() {
    pollSeq++;
    clearTimeout(pollTimer);
  }

  // ---- sign in / out ----

  const signIn = signInForm({
    api,
    role: 'admin',
    onSignedIn: startDashboard,
    missing: 'Enter your user name and password.',
    wrong: 'Wrong user name or password.',
    noRole: (user) => 'The account ' + user + ' has no admin role. This console is for administrators.',
    // The 429's own text says which limit it is ("too many failed logins for this user; try
    // again later"); the countdown replaces its "try again later".
    locked: (left, message) => {
      const reason = /too many/i.test(message) ? message.replace(/[;.]?\s*try again later\.?$/i, '') : 'Too many sign-in attempts';
      return capitalize(reason) + '. Try again in ' + formatDuration(left) + '.';
    },
  });

  el.logout.addEventListener('click', async () => {
    stopPolling();
    el.logout.disabled = true;
    try {
      await api('POST', '/api/logout');
    } catch (e) {
      // The cookie may already be gone; the sign-in form is the right place either way.
    } finally {
      el.logout.disabled = false;
      clearDashboard();
      showLogin('');
    }
  });

  // ---- polling ----

  async function poll(seq) {
    clearTimeout(pollTimer);
    const gen = bansGen;
    try {
      const [disp, dlg, regs, bans] = await Promise.all([
        api('GET', '/api/admin/dispatcher'),
        api('GET', '/api/admin/dialogs'),
        api('GET', '/api/admin/registrations'),
        api('GET', '/api/admin/bans'),
      ]);
      if (seq !== pollSeq) return;
      renderSets(disp.sets || []);
      renderDialogs(dlg.dialogs || []);
      renderRegistrations(regs.registrations || []);
      if (gen === bansGen) renderBans(bans.bans || []);
      lastOK = Date.now();
      setAppError('');
    } catch (e) {
      if (seq !== pollSeq) return;
      if (e.status === 401) {
        showLogin('Your session has ended. Sign in again.');
        return;
      }
      if (e.status === 403) {
        setAppError('This account may not use the admin API (' + e.message + ').');
      } else if (e.status === 429) {
        setAppError('The gateway is rate limiting this browser; retrying.');
      } else {
        setAppError((e.status ? 'Refresh failed: ' + e.message : e.message) + ' Retrying every ' + POLL_MS / 1000 + ' s.');
      }
    }
    renderFreshness();
    pollTimer = setTimeout(() => poll(seq), POLL_MS);
  }

  function renderFreshness() {
    const stale = !lastOK || Date.now() - lastOK > POLL_MS * 2.5;
    el.live.classList.toggle('stale', stale);
    el.lastUpdated.textContent = lastOK ? 'Updated ' + new Date(lastOK).toLocaleTimeString() : 'not connected';
  }

  // ---- dispatcher ----

  function renderSets(sets) {
    const counts = { active: 0, inactive: 0, draining: 0, disabled: 0, calls: 0, total: 0 };
    const seenSets = new Set();
    const seenRows = new Set();
    sets.slice().sort((a, b) => a.id - b.id).forEach((set, i) => {
      seenSets.add(set.id);
      let card = setCards.get(set.id);
      if (!card) {
        card = setTemplate.content.firstElementChild.cloneNode(true);
        card.dataset.set = String(set.id);
        card.querySelector('.set-title').textContent = 'Set ' + set.id;
        setCards.set(set.id, card);
      }
      if (el.sets.children[i] !== card) {
        el.sets.insertBefore(card, el.sets.children[i] || null);
      }
      const tbody = card.querySelector('tbody');
      const dests = set.destinations || [];
      let up = 0;
      dests.forEach((d, j) => {
        const key = set.id + ' ' + d.uri;
        seenRows.add(key);
        let row = destRows.get(key);
        if (!row) {
          row = newDestRow(set.id, d.uri);
          destRows.set(key, row);
        }
        if (tbody.children[j] !== row) {
          tbody.insertBefore(row, tbody.children[j] || null);
        }
        updateDestRow(row, d);
        const st = STATES.includes(d.state) ? d.state : 'disabled';
        counts[st]++;
        counts.total++;
        counts.calls += d.active_calls || 0;
        if (d.state === 'active') up++;
      });
      card.querySelector('.set-summary').textContent =
        up + ' of ' + dests.length + ' up · ' + plural(dests.reduce((n, d) => n + (d.active_calls || 0), 0), 'call');
    });
    for (const [id, card] of setCards) {
      if (!seenSets.has(id)) {
        card.remove();
        setCards.delete(id);
      }
    }
    for (const [key, row] of destRows) {
      if (!seenRows.has(key)) {
        row.remove();
        destRows.delete(key);
      }
    }
    el.setsEmpty.hidden = sets.length > 0;
    el.stat.up.textContent = counts.active + ' / ' + counts.total;
    setStat(el.stat.draining, counts.draining);
    setStat(el.stat.down, counts.inactive);
    setStat(el.stat.disabled, counts.disabled);
    el.stat.calls.textContent = String(counts.calls);
  }

  function setStat(node, n) {
    node.textContent = String(n);
    node.classList.toggle('nonzero', n > 0);
  }

  function newDestRow(setID, uri) {
    const row = destTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.set = String(setID);
    row.dataset.uri = uri;
    row.querySelector('[data-testid="dest-uri"]').textContent = uri;
    row.querySelectorAll('button[data-action]').forEach((btn) => {
      btn.setAttribute('aria-label', btn.textContent + ' ' + uri);
      btn.addEventListener('click', () => changeState(row, setID, uri, btn.dataset.action));
    });
    return row;
  }

  function updateDestRow(row, d) {
    const state = STATES.includes(d.state) ? d.state : 'unknown';
    row.dataset.state = state;
    const badge = row.querySelector('[data-testid="dest-state"]');
    badge.className = 'badge state-' + state;
    badge.textContent = state;
    row.querySelector('.duid').textContent = d.duid ? d.duid : '';
    row.querySelector('[data-testid="dest-rtt"]').textContent = formatRTT(d.rtt_ms);
    row.querySelector('[data-testid="dest-calls"]').textContent =
      String(d.active_calls || 0) + (d.maxload ? ' / ' + d.maxload : '');
    row.querySelector('[data-testid="dest-weight"]').textContent = (d.weight || 0) + ' / ' + (d.priority || 0);

    const probe = row.querySelector('[data-testid="dest-probe"]');
    const age = row.querySelector('.probe-age');
    if (state === 'disabled') {
      probe.textContent = 'not probed';
      probe.classList.remove('bad');
    } else {
      probe.textContent = d.probe_result ? shortProbe(d.probe_result) : 'no probe yet';
      probe.classList.toggle('bad', !!d.probe_result && !/answered 2\d\d/.test(d.probe_result));
    }
    probe.title = d.probe_result || '';
    const last = d.last_probe ? Date.parse(d.last_probe) : NaN;
    age.textContent = Number.isNaN(last) || state === 'disabled' ? '' : formatAge(last);
    age.title = Number.isNaN(last) ? '' : new Date(last).toLocaleString();

    // Offer only the changes that change something. Enable on an inactive destination would
    // override the probes, which bring it back by themselves once it answers.
    const busy = pending.has(row);
    row.classList.toggle('busy', busy);
    setButton(row, 'draining', busy || state === 'draining',
      state === 'draining' ? 'Already draining' : 'Take no new calls; live calls continue');
    setButton(row, 'disabled', busy || state === 'disabled',
      state === 'disabled' ? 'Already disabled' : 'Take no calls and stop probing');
    setButton(row, 'active', busy || state === 'active' || state === 'inactive',
      state === 'inactive' ? 'Down: probes bring it back once it answers' :
        state === 'active' ? 'Already active' : 'Back to active; probes decide its health');
  }

  function setButton(row, action, disabled, title) {
    const btn = row.querySelector('button[data-action="' + action + '"]');
    btn.disabled = disabled;
    btn.title = title;
  }

  async function changeState(row, setID, uri, state) {
    if (pending.has(row)) return;
    pending.add(row);
    row.querySelectorAll('button[data-action]').forEach((b) => { b.disabled = true; });
    row.classList.add('busy');
    const seq = pollSeq;
    try {
      const res = await api('POST', '/api/admin/dispatcher/state', { set: setID, uri, state });
      pending.delete(row);
      if (seq === pollSeq && res && res.sets) {
        renderSets(res.sets);
      }
      setAppError('');
    } catch (e) {
      pending.delete(row);
      if (e.status === 401) {
        showLogin('Your session has ended. Sign in again.');
        return;
      }
      setAppError('Could not set ' + uri + ' to ' + state + ': ' + e.message);
      if (seq === pollSeq) poll(seq);
    }
  }

  // ---- dialogs ----

  function renderDialogs(dialogs) {
    const sorted = dialogs.slice().sort((a, b) => Date.parse(a.started) - Date.parse(b.started));
    const shown = sorted.slice(0, MAX_DIALOG_ROWS);
    const now = Date.now();
    const rows = shown.map((d) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'dialog-row';
      tr.dataset.callId = d.call_id;
      const cid = document.createElement('span');
      cid.className = 'callid';
      cid.textContent = d.call_id;
      cid.title = d.call_id;
      const backend = document.createElement('span');
      backend.className = 'uri';
      backend.textContent = d.backend;
      const badge = document.createElement('span');
      badge.className = 'badge state-' + (d.state === 'confirmed' || d.state === 'early' ? d.state : 'unknown');
      badge.textContent = d.state;
      const started = Date.parse(d.started);
      const since = document.createElement('span');
      since.textContent = Number.isNaN(started) ? '' : formatDuration(Math.max(0, Math.round((now - started) / 1000)));
      since.title = Number.isNaN(started) ? '' : 'Started ' + new Date(started).toLocaleString() +
        (d.answered ? ', answered ' + new Date(d.answered).toLocaleTimeString() : '');
      tr.append(cell(cid), cell(backend), cell(badge), cell(since, 'num'));
      return tr;
    });
    el.dialogsBody.replaceChildren(...rows);
    el.dialogsEmpty.hidden = dialogs.length > 0;
    el.dialogsCount.textContent = String(dialogs.length);
    el.dialogsMore.hidden = dialogs.length <= MAX_DIALOG_ROWS;
    el.dialogsMore.textContent = 'Showing the ' + MAX_DIALOG_ROWS + ' oldest of ' + dialogs.length + ' calls.';
  }

  // ---- registrations ----

  function renderRegistrations(regs) {
    const sorted = regs.slice().sort((a, b) =>
      cmp(a.user, b.user) || cmp(a.source, b.source) || cmp(a.contact, b.contact));
    const now = Date.now();
    syncRows(el.regsBody, regRows, sorted.slice(0, MAX_LIST_ROWS),
      (r) => [r.user, r.source, r.contact, r.instance || ''].join('\n'),
      newRegRow, (row, r) => updateRegRow(row, r, now));
    el.regsEmpty.hidden = regs.length > 0;
    el.regsCount.textContent = String(regs.length);
    el.regsMore.hidden = regs.length <= MAX_LIST_ROWS;
    el.regsMore.textContent = 'Showing ' + MAX_LIST_ROWS + ' of ' + regs.length + ' registrations, by user.';
  }

  function newRegRow(r) {
    const row = regTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.user = r.user;
    row.dataset.source = r.source;
    row.querySelector('[data-testid="reg-user"]').textContent = r.user;
    row.querySelector('[data-testid="reg-source"]').textContent = r.source;
    const contact = row.querySelector('[data-testid="reg-contact"]');
    contact.textContent = r.contact;
    contact.title = r.contact + (r.instance ? '\ninstance ' + r.instance : '');
    return row;
  }

  function updateRegRow(row, r, now) {
    setText(row.querySelector('[data-testid="reg-transport"]'), r.transport || '');
    const ua = row.querySelector('[data-testid="reg-ua"]');
    setText(ua, r.user_agent || '—');
    ua.title = r.user_agent || '';
    ua.classList.toggle('muted', !r.user_agent);
    const exp = row.querySelector('[data-testid="reg-expires"]');
    const t = Date.parse(r.expires);
    const left = Number.isNaN(t) ? NaN : Math.round((t - now) / 1000);
    setText(exp, Number.isNaN(left) ? '—' : left > 0 ? formatDuration(left) : 'expiring');
    exp.title = Number.isNaN(t) ? '' : 'Expires ' + new Date(t).toLocaleString();
    exp.classList.toggle('muted', !(left > 0));
  }

  // ---- bans ----

  const REASONS = {
    flood: 'Kept exceeding its request rate',
    auth: 'Too many failed authentications from this source',
    auth_user: 'Failed for a user who is failing from many sources',
    admin: 'Banned by an operator',
  };

  // The API answers newest first; so does the table.
  function renderBans(bans) {
    const now = Date.now();
    syncRows(el.bansBody, banRows, bans.slice(0, MAX_LIST_ROWS), (b) => b.prefix, newBanRow,
      (row, b) => updateBanRow(row, b, now));
    el.bansEmpty.hidden = bans.length > 0;
    el.bansCount.textContent = String(bans.length);
    el.bansCount.classList.toggle('count-red', bans.length > 0);
    el.bansMore.hidden = bans.length <= MAX_LIST_ROWS;
    el.bansMore.textContent = 'Showing the ' + MAX_LIST_ROWS + ' newest of ' + bans.length + ' bans.';
  }

  function newBanRow(b) {
    const row = banTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.prefix = b.prefix;
    row.querySelector('[data-testid="ban-prefix"]').textContent = b.prefix;
    const btn = row.querySelector('[data-testid="btn-lift"]');
    btn.setAttribute('aria-label', 'Lift the ban on ' + b.prefix);
    btn.addEventListener('click', () => liftBan(row, b.prefix));
    return row;
  }

  function updateBanRow(row, b, now) {
    const known = Object.prototype.hasOwnProperty.call(REASONS, b.reason);
    const reason = row.querySelector('[data-testid="ban-reason"]');
    reason.className = 'badge reason reason-' + (known ? b.reason : 'other');
    setText(reason, b.reason || 'admin');
    reason.title = known ? REASONS[b.reason] : 'Operator: ' + b.reason;
    const user = row.querySelector('[data-testid="ban-user"]');
    setText(user, b.user || '—');
    user.classList.toggle('muted', !b.user);

    const since = Date.parse(b.since);
    const until = Date.parse(b.until);
    const left = Number.isNaN(until) ? NaN : Math.max(0, Math.round((until - now) / 1000));
    setText(row.querySelector('[data-testid="ban-remaining"]'), Number.isNaN(left) ? '—' : formatDuration(left));
    const at = row.querySelector('[data-testid="ban-until"]');
    setText(at, Number.isNaN(until) ? '' : 'until ' + new Date(until).toLocaleTimeString());
    row.querySelector('.until').title = (Number.isNaN(since) ? '' : 'Banned ' + new Date(since).toLocaleString()) +
      (Number.isNaN(until) ? '' : (Number.isNaN(since) ? '' : '\n') + 'Ends ' + new Date(until).toLocaleString());

    const busy = lifting.has(b.prefix);
    row.classList.toggle('busy', busy);
    const btn = row.querySelector('[data-testid="btn-lift"]');
    btn.disabled = busy;
    btn.title = busy ? 'Lifting…' : 'End the ban: ' + b.prefix + ' may send again at once';
  }

  // liftBan ends the ban on a prefix. The API takes an address the ban covers: the prefix's
  // own address does (an IPv4 /32, or the first address of an IPv6 /64).
  async function liftBan(row, prefix) {
    if (lifting.has(prefix)) return;
    lifting.add(prefix);
    row.classList.add('busy');
    row.querySelector('[data-testid="btn-lift"]').disabled = true;
    const seq = pollSeq;
    const address = prefix.replace(/\/\d+$/, '');
    try {
      const res = await api('POST', '/api/admin/bans/lift', { address });
      lifting.delete(prefix);
      bansGen++;
      if (seq === pollSeq && res && Array.isArray(res.bans)) renderBans(res.bans);
      setAppError('');
    } catch (e) {
      lifting.delete(prefix);
      if (e.status === 401) {
        showLogin('Your session has ended. Sign in again.');
        return;
      }
      // 404: the ban ended (or someone lifted it) meanwhile; the refresh shows that.
      if (e.status !== 404) setAppError('Could not lift the ban on ' + prefix + ': ' + e.message);
      if (seq === pollSeq) poll(seq);
    }
  }

  // syncRows makes tbody show one row per item, in order, keeping the row of a key from one
  // refresh to the next (so a click, a hover or a text selection survives the refresh).
  function syncRows(tbody, rows, items, keyOf, create, update) {
    const seen = new Set();
    let i = 0;
    for (const item of items) {
      const key = keyOf(item);
      if (seen.has(key)) continue;
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = create(item);
        rows.set(key, row);
      }
      update(row, item);
      if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
      i++;
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function cmp(a, b) {
    return String(a || '').localeCompare(String(b || ''), undefined, { numeric: true });
  }

  function cell(child, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.append(child);
    return td;
  }

  // ---- formatting ----

  function formatRTT(ms) {
    if (!ms || ms <= 0) return '—';
    if (ms < 10) return ms.toFixed(2) + ' ms';
    if (ms < 100) return ms.toFixed(1) + ' ms';
    return Math.round(ms) + ' ms';
  }

  function formatAge(t) {
    const s = Math.round((Date.now() - t) / 1000);
    return s < 2 ? 'just now' : formatDuration(s) + ' ago';
  }

  function formatDuration(s) {
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + String(s % 60).padStart(2, '0') + ' s';
    return Math.floor(s / 3600) + ' h ' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + ' min';
  }

  // shortProbe keeps a probe verdict to what fits a cell: the row already names the
  // destination, and the full text is the cell's tooltip.
  function shortProbe(r) {
    return r.replace(/^probe /, '').replace(/OPTIONS to \S+: /, '');
  }

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  function capitalize(s) {
    return s ? s[0].toUpperCase() + s.slice(1) : s;
  }

  // ---- start ----

  async function boot() {
    try {
      const me = await api('GET', '/api/me');
      if (hasRole(me, 'admin')) {
        startDashboard(me);
        return;
      }
      showLogin('The account ' + me.user + ' has no admin role. Sign in as an administrator.');
    } catch (e) {
      showLogin(e.status && e.status !== 401 ? 'The gateway answered: ' + e.message : e.status === 0 ? e.message : '');
    }
  }

  boot();
}());
