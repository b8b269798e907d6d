// AI Shell page: sign in, open or resume a session through the session API,
// and run a terminal over the relay's client socket (protocol.md).
//
// Tests read window.aishell (state, sessionId, lastError, warm, screenText())
// and the elements #user, #signin, #status, #error and #terminal.

const API = document.querySelector('meta[name="aishell-api"]')?.content || "/api";

const HEARTBEAT_MS = 25000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const RETRY_AFTER_MAX_MS = 30000;
// Input frames stay far below the relay's 64 KiB frame limit even when every
// character is escaped by JSON (six bytes each).
const INPUT_CHUNK = 8192;
// Keystrokes typed while the socket is down wait here, up to this much.
const PENDING_MAX_CHARS = 1 << 20;

// Plain words for every error code of the client socket (protocol.md).
const SOCKET_ERRORS = {
  UNAUTHORIZED: "The relay did not accept this connection.",
  TICKET_EXPIRED: "The connection ticket expired before it was used.",
  SESSION_NOT_FOUND: "The relay does not know this session.",
  TASK_START_FAILED: "The session's container could not be started.",
  TASK_RESTART_FAILED: "The session's container could not be restarted.",
  QUEUE_FULL: "Too much input is waiting for the session to get ready; the rest was not delivered.",
  MESSAGE_TOO_LARGE: "A message was too large for the relay and was not delivered.",
  BAD_MESSAGE: "The relay could not read a message from this page.",
  SESSION_ENDED: "The session has ended.",
  RELAY_SHUTTING_DOWN: "The relay is shutting down; the page reconnects by itself.",
};

// Plain words for the HTTP statuses of the session API.
const HTTP_ERRORS = {
  0: "The server could not be reached.",
  400: "The server did not accept the request.",
  401: "Your sign-in is not valid or has expired; please sign in again.",
  403: "That session belongs to someone else.",
  404: "That session does not exist.",
  503: "No capacity to start a session right now.",
};

const STATUS_WORDS = {
  signedout: "Signed out",
  signingin: "Signing in…",
  opening: "Opening session…",
  connecting: "Connecting…",
  starting: "Starting…",
  restarting: "Restarting…",
  ready: "Ready",
  stopped: "Stopped; type to start it again",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
  ended: "Session ended",
};

// States in which the status line says whether the task was warm.
const WARM_SHOWN = new Set(["connecting", "starting", "restarting", "ready"]);

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("signin-form"),
  user: $("user"),
  signin: $("signin"),
  account: $("account"),
  whoami: $("whoami"),
  newSession: $("new-session"),
  endSession: $("end-session"),
  reconnect: $("reconnect"),
  signout: $("signout"),
  status: $("status"),
  error: $("error"),
  terminal: $("terminal"),
};

// Everything the page knows. Only the functions below change it.
const app = {
  state: "signedout",
  user: "",
  token: "",
  sessionId: "",
  warm: null,
  resumed: null,
  startupMs: null,
  lastError: null,
  errorTransient: false,
  socket: null,
  // gen grows on every open, close and sign-out; a late answer that carries
  // an older gen is ignored.
  gen: 0,
  ended: false,
  backoffMs: BACKOFF_FIRST_MS,
  retryTimer: 0,
  retryAt: 0,
  heartbeat: 0,
  pending: [],
  pendingChars: 0,
};

// ---- stored sign-in ----

const store = {
  load() {
    app.user = localStorage.getItem("aishell.user") || "";
    app.token = localStorage.getItem("aishell.token") || "";
  },
  saveSignIn() {
    localStorage.setItem("aishell.user", app.user);
    localStorage.setItem("aishell.token", app.token);
  },
  clearSignIn() {
    localStorage.removeItem("aishell.user");
    localStorage.removeItem("aishell.token");
  },
  sessionKey(user) {
    return "aishell.session." + user;
  },
  session() {
    return localStorage.getItem(store.sessionKey(app.user)) || "";
  },
  saveSession(id) {
    if (id) localStorage.setItem(store.sessionKey(app.user), id);
    else localStorage.removeItem(store.sessionKey(app.user));
  },
};

// ---- terminal ----

const term = makeTerminal();

function makeTerminal() {
  if (typeof window.Terminal !== "function") {
    return null;
  }
  const t = new window.Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 5000,
    theme: { background: "#000000", foreground: "#e6edf3", cursor: "#58a6ff" },
  });
  // The fit addon's UMD build exposes its module, which holds the class.
  const Fit = window.FitAddon && (window.FitAddon.FitAddon || window.FitAddon);
  const fit = typeof Fit === "function" ? new Fit() : null;
  if (fit) t.loadAddon(fit);
  t.open(ui.terminal);
  t.onData(sendInput);
  t.onResize(({ cols, rows }) => sendResize(cols, rows));
  t.fitNow = () => {
    try {
      fit?.fit();
    } catch {
      // The container has no size yet (hidden); the next resize fits it.
    }
  };
  new ResizeObserver(() => t.fitNow()).observe(ui.terminal);
  t.fitNow();
  return t;
}

function screenText() {
  if (!term) return "";
  const buf = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buf.length; i++) {
    lines.push(buf.getLine(i)?.translateToString(true) ?? "");
  }
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.join("\n");
}

// ---- status and errors ----

function setState(state, detail) {
  app.state = state;
  let text = Object.hasOwn(STATUS_WORDS, state) ? STATUS_WORDS[state] : state;
  if (state === "ready" && app.startupMs != null) {
    const how = app.warm ? "warm" : "cold";
    text += ` (${how} start in ${app.startupMs} ms${app.resumed ? ", resumed" : ""})`;
  } else if (app.warm != null && WARM_SHOWN.has(state)) {
    text += app.warm ? " (warm task)" : " (cold start)";
  }
  if (detail) text += " " + detail;
  if (app.sessionId && state !== "signedout") text += ` · ${app.sessionId}`;
  ui.status.textContent = text;
  ui.status.dataset.state = state;
  renderButtons();
}

function renderButtons() {
  const signedIn = app.state !== "signedout" && app.state !== "signingin";
  ui.form.hidden = signedIn;
  ui.account.hidden = !signedIn;
  ui.whoami.textContent = signedIn ? `Signed in as ${app.user}` : "";
  ui.endSession.disabled = !app.sessionId || app.state === "ended";
  ui.reconnect.hidden = !(app.state === "disconnected" && app.sessionId && !app.ended);
  ui.signin.disabled = app.state === "signingin";
}

// showError records an error and shows it in plain words with the server's
// code and message.
// A transient error (the relay going away, the network, no capacity) is
// cleared by the next session_ready; others stay until the user acts.
function showError(code, message, words, transient = false) {
  app.lastError = Object.freeze({ code, message: message || "", text: words });
  app.errorTransient = transient;
  ui.error.textContent = `${words} (${code}${message ? ": " + message : ""})`;
  ui.error.hidden = false;
}

function clearError() {
  app.lastError = null;
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function showSocketError(err) {
  const code = err?.code || "UNKNOWN";
  const words = Object.hasOwn(SOCKET_ERRORS, code)
    ? SOCKET_ERRORS[code]
    : "The relay reported an error.";
  showError(code, err?.message, words,
    code === "RELAY_SHUTTING_DOWN");
}

function showApiError(e) {
  let words = HTTP_ERRORS[e.status] || `The server answered ${e.status}.`;
  if (e.status === 503 && e.retryAfter) words += ` Try again in ${e.retryAfter} s.`;
  showError(e.code, e.message, words, e.status === 0 || e.status >= 500);
}

// ---- session API ----

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (app.token) headers.Authorization = "Bearer " + app.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "NETWORK", String(e.message || e));
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    // Not JSON; the status alone says what went wrong.
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(
      res.status,
      err.code || `HTTP_${res.status}`,
      err.message || res.statusText,
      res.headers.get("Retry-After"),
    );
  }
  return data;
}

// ---- sign in and out ----

async function signIn(name) {
  name = name.trim();
  if (!name) return;
  const gen = ++app.gen;
  clearError();
  app.user = name;
  setState("signingin");
  try {
    const data = await api("GET", "/dev/token?user=" + encodeURIComponent(name));
    if (gen !== app.gen) return;
    if (!data || !data.token) throw new ApiError(500, "BAD_ANSWER", "no token in the answer");
    app.token = data.token;
    store.saveSignIn();
  } catch (e) {
    if (gen !== app.gen) return;
    app.token = "";
    setState("signedout");
    showApiError(e);
    return;
  }
  openSession({ fresh: false });
}

function signOut() {
  disconnect();
  app.token = "";
  app.sessionId = "";
  app.warm = null;
  app.startupMs = null;
  app.pending = [];
  app.pendingChars = 0;
  // The stored session id stays, so signing in again resumes it.
  store.clearSignIn();
  clearError();
  term?.reset();
  setState("signedout");
  ui.user.value = app.user;
  ui.user.focus();
}

// ---- open, resume, end ----

// openSession resumes the stored session (unless fresh), falls back to a new
// one when the stored one is gone or not ours, and connects to the relay.
// While reconnecting, failures that may pass (network, 5xx) retry with backoff.
async function openSession({ fresh, reconnecting = false }) {
  disconnect();
  const gen = app.gen;
  app.ended = false;
  if (!reconnecting) setState("opening");

  // A new session replaces the stored one at once, so that a retry after a
  // failed start asks for a new session again rather than the old one.
  if (fresh) {
    forgetSession();
    term?.reset();
  }
  const stored = app.sessionId || store.session();
  let session;
  try {
    if (stored) {
      try {
        session = await api("POST", "/sessions", { resume: stored });
      } catch (e) {
        if (e.status !== 404 && e.status !== 403) throw e;
        if (gen !== app.gen) return;
        session = await api("POST", "/sessions", {});
      }
    } else {
      session = await api("POST", "/sessions", {});
    }
  } catch (e) {
    if (gen !== app.gen) return;
    showApiError(e);
    if (e.status === 401) {
      signOutKeepingError();
    } else if (e.status === 0 || e.status >= 500 || reconnecting) {
      scheduleReconnect(Number(e.retryAfter) * 1000 || 0);
    } else {
      setState("disconnected");
    }
    return;
  }
  if (gen !== app.gen) return;
  if (!session || !session.sessionId || !session.relayUrl || !session.ticket) {
    showError("BAD_ANSWER", "the session object lacks sessionId, relayUrl or ticket",
      "The server's answer could not be used.");
    setState("disconnected");
    return;
  }

  if (session.sessionId !== app.sessionId) term?.reset();
  app.sessionId = session.sessionId;
  app.warm = typeof session.warm === "boolean" ? session.warm : null;
  store.saveSession(app.sessionId);
  setState(Object.hasOwn(STATUS_WORDS, session.state) ? session.state : "connecting");
  connect(session, gen);
}

function forgetSession() {
  app.sessionId = "";
  app.warm = null;
  app.resumed = null;
  app.startupMs = null;
  app.pending = [];
  app.pendingChars = 0;
  store.saveSession("");
}

function signOutKeepingError() {
  const err = app.lastError;
  signOut();
  if (err) showError(err.code, err.message, err.text);
}

async function endSession() {
  const id = app.sessionId;
  if (!id) return;
  disconnect();
  const gen = app.gen;
  app.ended = true;
  try {
    await api("DELETE", "/sessions/" + encodeURIComponent(id));
  } catch (e) {
    if (gen !== app.gen) return;
    showApiError(e);
  }
  if (gen !== app.gen) return;
  store.saveSession("");
  setState("ended");
}

// ---- socket ----

function socketUrl(relayUrl, ticket) {
  // A relative relayUrl is taken relative to this page; its host is never
  // rewritten, since the relay need not be where the page came from.
  const url = new URL(relayUrl, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  const base = url.toString();
  return base + (base.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(ticket);
}

function connect(session, gen) {
  let ws;
  try {
    ws = new WebSocket(socketUrl(session.relayUrl, session.ticket));
  } catch (e) {
    showError("BAD_RELAY_URL", String(e.message || e), "The relay address could not be used.");
    setState("disconnected");
    return;
  }
  app.socket = ws;

  ws.onopen = () => {
    if (gen !== app.gen) return;
    flushPending();
    app.heartbeat = setInterval(() => send({ type: "ping" }), HEARTBEAT_MS);
  };
  ws.onmessage = (ev) => {
    if (gen !== app.gen) return;
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return; // Not a frame of protocol.md; nothing to show.
    }
    onFrame(frame);
  };
  ws.onclose = (ev) => {
    if (gen !== app.gen) return;
    stopHeartbeat();
    app.socket = null;
    onClose(ev.code, ev.reason);
  };
}

function onFrame(frame) {
  switch (frame.type) {
    case "output":
      if (typeof frame.data === "string") term?.write(frame.data);
      break;
    case "status":
      setState(Object.hasOwn(STATUS_WORDS, frame.state) ? frame.state : String(frame.state));
      break;
    case "session_ready":
      app.backoffMs = BACKOFF_FIRST_MS;
      if (typeof frame.warm === "boolean") app.warm = frame.warm;
      app.resumed = frame.resumed === true;
      app.startupMs = typeof frame.startup_ms === "number" ? frame.startup_ms : null;
      if (app.errorTransient) clearError();
      setState("ready");
      if (term) sendResize(term.cols, term.rows);
      term?.focus();
      break;
    case "error":
      showSocketError(frame.error);
      if (frame.error?.code === "SESSION_ENDED") {
        app.ended = true;
        store.saveSession("");
        setState("ended");
      }
      break;
    case "pong":
      break;
    default:
      // Types added to protocol.md later are ignored here.
      break;
  }
}

function onClose(code, reason) {
  if (app.ended) {
    setState("ended");
    return;
  }
  if (code === 1000 || code === 1008) {
    if (code === 1008 && !app.lastError) {
      showError("POLICY", reason, "The relay closed the connection.");
    }
    setState("disconnected");
    return;
  }
  if (code === 1009 && !app.lastError) {
    showError("MESSAGE_TOO_LARGE", reason, SOCKET_ERRORS.MESSAGE_TOO_LARGE);
  }
  // 1001 (relay shutting down) and dropped connections resume and reconnect.
  scheduleReconnect();
}

// scheduleReconnect resumes after the backoff, or after the server's
// Retry-After when that is longer (up to RETRY_AFTER_MAX_MS).
function scheduleReconnect(retryAfterMs = 0) {
  clearTimeout(app.retryTimer);
  const delay = Math.max(app.backoffMs, Math.min(retryAfterMs, RETRY_AFTER_MAX_MS));
  app.backoffMs = Math.min(app.backoffMs * 2, BACKOFF_MAX_MS);
  app.retryAt = Date.now() + delay;
  setState("reconnecting", `in ${(delay / 1000).toFixed(1)} s`);
  const gen = app.gen;
  app.retryTimer = setTimeout(() => {
    if (gen !== app.gen) return;
    openSession({ fresh: false, reconnecting: true });
  }, delay);
}

// disconnect closes the socket on purpose and cancels any pending reconnect.
function disconnect() {
  app.gen++;
  clearTimeout(app.retryTimer);
  app.retryTimer = 0;
  stopHeartbeat();
  const ws = app.socket;
  app.socket = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "client closed");
}

function stopHeartbeat() {
  clearInterval(app.heartbeat);
  app.heartbeat = 0;
}

function send(frame) {
  const ws = app.socket;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function sendInput(data) {
  for (let i = 0; i < data.length; ) {
    let end = Math.min(i + INPUT_CHUNK, data.length);
    // Never split a surrogate pair between two frames.
    const last = data.charCodeAt(end - 1);
    if (end < data.length && last >= 0xd800 && last <= 0xdbff) end--;
    const chunk = data.slice(i, end);
    i = end;
    if (!send({ type: "input", data: chunk })) keepPending(chunk);
  }
}

// keepPending holds keystrokes typed while the socket is down, so they reach
// the session once it is back; past the bound they are refused visibly.
function keepPending(chunk) {
  if (!app.sessionId || app.ended || app.state === "signedout") return;
  if (app.pendingChars + chunk.length > PENDING_MAX_CHARS) {
    showError("QUEUE_FULL", "the page holds at most 1 MiB of input while disconnected",
      "Input typed while disconnected was not kept.");
    return;
  }
  app.pending.push(chunk);
  app.pendingChars += chunk.length;
}

function flushPending() {
  const chunks = app.pending;
  app.pending = [];
  app.pendingChars = 0;
  for (const chunk of chunks) send({ type: "input", data: chunk });
}

function sendResize(cols, rows) {
  if (cols > 0 && rows > 0) send({ type: "resize", cols, rows });
}

// ---- wiring ----

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn(ui.user.value);
});
ui.newSession.addEventListener("click", () => {
  clearError();
  openSession({ fresh: true });
});
ui.endSession.addEventListener("click", () => endSession());
ui.reconnect.addEventListener("click", () => {
  clearError();
  app.backoffMs = BACKOFF_FIRST_MS;
  openSession({ fresh: false });
});
ui.signout.addEventListener("click", () => signOut());
window.addEventListener("online", () => {
  if (app.state === "reconnecting") {
    app.backoffMs = BACKOFF_FIRST_MS;
    openSession({ fresh: false, reconnecting: true });
  }
});

// Read-only hooks for tests and for a curious user's console.
window.aishell = Object.freeze({
  get state() {
    return app.state;
  },
  get sessionId() {
    return app.sessionId;
  },
  get lastError() {
    return app.lastError;
  },
  get warm() {
    return app.warm;
  },
  get resumed() {
    return app.resumed;
  },
  get startupMs() {
    return app.startupMs;
  },
  get user() {
    return app.user;
  },
  screenText,
});

store.load();
if (!term) {
  showError("NO_TERMINAL", "/vendor/xterm.js did not load (run make web before building)",
    "The terminal could not be loaded.");
}
if (app.user && app.token) {
  openSession({ fresh: false });
} else {
  ui.user.value = app.user;
  setState("signedout");
  ui.user.focus();
}
