// dualgate portals: the code both the admin console and the agent softphone use, loaded before
// each portal's own script. It defines one global, window.dualgate:
//
//   byTestId(id)          the element with data-testid="id" (the portals name their elements so)
//   apiClient(onResponse) a function api(method, path, body) for the gateway's JSON API
//   hasRole(who, role)    whether a /api/me or /api/login answer carries the role
//   signInForm(options)   the sign-in form: submit, wrong password, role check, lockout countdown
//
// Plain JavaScript with no dependencies. The session is the HttpOnly cookie the login sets, so
// no script sees the token; every request is same-origin, and the browser adds the Origin
// header the API's CSRF check wants on POSTs.
'use strict';

window.dualgate = (function () {
  const byTestId = (id) => document.querySelector('[data-testid="' + id + '"]');

  // ---- HTTP ----

  // APIError is what api throws: status 0 when the gateway cannot be reached, else the HTTP
  // status, the API's error text, and Retry-After in seconds (0 when absent).
  class APIError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // apiClient returns api(method, path, body): body (if any) is sent as JSON, the answer's
  // JSON comes back (null for 204), anything but 2xx throws an APIError. onResponse, when
  // given, sees every response that arrives, before its body is read.
  function apiClient(onResponse) {
    return async function api(method, path, body) {
      const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store' };
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
      let res;
      try {
        res = await fetch(path, opts);
      } catch (e) {
        throw new APIError(0, 'The gateway cannot be reached.');
      }
      if (onResponse) onResponse(res);
      if (res.status === 204) return null;
      let data = null;
      try {
        data = await res.json();
      } catch (e) {
        data = null;
      }
      if (!res.ok) {
        const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + res.status;
        throw new APIError(res.status, msg, retryAfterSeconds(res.headers.get('Retry-After')));
      }
      return data;
    };
  }

  // retryAfterSeconds reads a Retry-After value: seconds, or an HTTP date.
  function retryAfterSeconds(v) {
    if (!v) return 0;
    if (/^\d+$/.test(v.trim())) return parseInt(v, 10);
    const t = Date.parse(v);
    return Number.isNaN(t) ? 0 : Math.max(0, Math.ceil((t - Date.now()) / 1000));
  }

  function hasRole(who, role) {
    return Array.isArray(who.roles) && who.roles.includes(role);
  }

  // ---- sign in ----

  // signInForm runs the sign-in form (login-form, login-username, login-password, login-submit,
  // login-error): it posts the name and password to /api/login and hands an account with the
  // portal's role to onSignedIn; an account without it is signed out again at once. A 429
  // (too many attempts) keeps the button off with a countdown until Retry-After has passed.
  // options:
  //   api                  the portal's api function (apiClient)
  //   role                 the role the portal needs, e.g. 'admin'
  //   onSignedIn(who)      the /api/login answer of an account with the role
  //   missing, wrong       the messages for an empty field and for 401
  //   noRole(user)         the message for an account without the role
  //   locked(left, reason) the lockout message, left seconds to go; reason is the 429's text
  // It returns { show(message) }: show clears the password, shows message ('' hides it) and
  // focuses the first field to fill; the portal calls it once its sign-in view is visible.
  function signInForm(options) {
    const form = byTestId('login-form');
    const errorBox = byTestId('login-error');
    const username = byTestId('login-username');
    const password = byTestId('login-password');
    const submit = byTestId('login-submit');
    let lockTimer = 0;

    function setError(message) {
      errorBox.textContent = message;
      errorBox.hidden = !message;
    }

    function show(message) {
      setError(message || '');
      password.value = '';
      (username.value ? password : username).focus();
    }

    function lock(seconds, reason) {
      clearInterval(lockTimer);
      const until = Date.now() + Math.max(seconds, 1) * 1000;
      const step = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        if (left <= 0) {
          clearInterval(lockTimer);
          lockTimer = 0;
          submit.disabled = false;
          setError('');
          return;
        }
        setError(options.locked(left, reason));
      };
      submit.disabled = true;
      lockTimer = setInterval(step, 1000);
      step();
    }

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = username.value.trim();
      const pass = password.value;
      if (!name || !pass) {
        setError(options.missing);
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Signing in…';
      setError('');
      try {
        const who = await options.api('POST', '/api/login', { username: name, password: pass });
        password.value = '';
        if (!hasRole(who, options.role)) {
          await options.api('POST', '/api/logout').catch(() => {});
          show(options.noRole(who.user));
          return;
        }
        options.onSignedIn(who);
      } catch (e) {
        password.value = '';
        if (e.status === 429) {
          lock(e.retryAfter, e.message);
          return;
        }
        setError(e.status === 401 ? options.wrong : e.message);
        password.focus();
      } finally {
        if (!lockTimer) submit.disabled = false;
        submit.textContent = 'Sign in';
      }
    });

    return { show };
  }

  return Object.freeze({ byTestId, apiClient, hasRole, signInForm });
}());
