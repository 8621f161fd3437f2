//! The live terminal page's behaviour: one container's shell in xterm.js over
//! the browser terminal socket (PROTOCOL.md section 7), re-attached with its
//! byte offset whenever the socket drops, and deaf to terminal queries.
//!
//! * The API token comes from the URL fragment (`#token=…`, wiped from the
//!   address bar at once) or from localStorage. A fragment's token is saved
//!   only once the server has accepted it, and if it is refused while a saved
//!   one exists, the saved one is used: a link with a wrong token never
//!   replaces a working one. It travels only as the WebSocket subprotocol
//!   `bearer.<token>` and as an Authorization header, never in a URL.
//! * Several people in one shell: `?container=ID&session=N` joins session N
//!   (the "invite" link on the status line is that address, without a
//!   token); the status line says how many are in it, in words.
//! * Output frames are an 8-byte big-endian offset and bytes. The page keeps
//!   `received` (the next byte it expects: what a re-attach asks for, and what
//!   drops a replayed duplicate) and `consumed` (what xterm has parsed, from
//!   its write callback): acks carry `consumed`, so a flood is paced by the
//!   terminal's real speed, not by the socket's.
//! * A dropped socket (network blip, orchestrator restarted) is retried with
//!   backoff and re-attached to the same session from `received`. The session
//!   id is kept in sessionStorage, so a reload re-attaches too. A reload asks
//!   from offset 0, not from where the old page was: its screen is gone, and
//!   the agent's scrollback (1 MiB) redraws it, as re-attaching tmux would.
//! * Nothing lost silently: output that arrives past the next byte expected
//!   (it left the scrollback before anyone read it) is marked in the
//!   terminal with `… N bytes skipped …`; keys typed while the socket is away
//!   are queued (64 KiB) and sent when it is back, the server holds them while
//!   the worker is away; whatever is not delivered (more than the bound, or
//!   the session ended first) is shown on the notice line, quoted.
//! * Safety: see `guardQueries`. Replies a terminal emulator would generate to
//!   queries in the output are swallowed, so the program in the container can
//!   never make the page type something the user did not.
"use strict";

(() => {
  const MAX_INPUT_MESSAGE = 64 * 1024; // PROTOCOL.md section 7
  const MAX_QUEUED_INPUT = 64 * 1024; // typed while the socket was away
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 4000;
  const TOKEN_KEY = "crops.token";
  const SESSION_GONE_AFTER = 3; // refused attaches before a new session

  const statusEl = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  const shareEl = document.getElementById("share");
  const noticeEl = document.getElementById("notice");
  const params = new URLSearchParams(location.search);
  const container = params.get("container") || "";
  const sessionKey = "crops.terminal." + container;

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusText.textContent = text;
  }

  /** Show what the user must know (input not delivered, a refusal); click to dismiss. */
  function notify(text) {
    noticeEl.textContent = text;
    noticeEl.hidden = false;
  }
  noticeEl.addEventListener("click", () => {
    noticeEl.hidden = true;
  });

  function savedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  /**
   * The API token: the fragment's (wiped from the URL at once, saved only
   * once accepted: see `tokenAccepted`) or the saved one.
   */
  function readToken() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      history.replaceState(null, "", location.pathname + location.search);
      return { token: fromHash, fromLink: true };
    }
    return { token: savedToken(), fromLink: false };
  }

  /** The container's name, for the status line (its id until known). */
  async function learnName() {
    try {
      const res = await fetch("/v1/containers/" + encodeURIComponent(container), {
        headers: { Authorization: "Bearer " + state.token },
        cache: "no-store",
      });
      const body = await res.json();
      if (res.ok && typeof body.name === "string" && body.name) {
        state.containerName = body.name;
        if (statusEl.dataset.state === "online") showOnline();
      }
    } catch (_) {} // The id serves as well.
  }

  /** The server accepted the token in use: keep it for later visits. */
  function tokenAccepted() {
    if (state.containerName === container) learnName();
    if (!state.tokenFromLink) return;
    state.tokenFromLink = false;
    try {
      localStorage.setItem(TOKEN_KEY, state.token);
    } catch (_) {
      // Storage may be disabled: the token still works for this page.
    }
  }

  /**
   * Swallow every query whose answer xterm.js would send back as input.
   *
   * A program in the container (or a file it `cat`s) can print a query such
   * as DSR `ESC[6n`; the emulator's answer is delivered through the same
   * channel as keystrokes, so it reaches the shell as if typed. Some answers
   * echo attacker-chosen text (DECRQSS, title reports), the classic terminal
   * injection; even fixed ones land in the next command line. Handlers added
   * through `term.parser` run before xterm's own; returning true ends the
   * sequence there, so no reply is ever produced. Window manipulation and
   * reports are also all off through `windowOptions`.
   *
   * Left alone on purpose: focus reports (`ESC[I`/`ESC[O`, sent only when the
   * user focuses the page), mouse reports and bracketed paste (what the user
   * did). Programs that wait for a cursor-position report get none and fall
   * back after their timeout, as they do on terminals that do not answer.
   */
  function guardQueries(term) {
    const swallow = () => true;
    const csi = [
      { final: "c" }, // DA1: primary device attributes
      { prefix: ">", final: "c" }, // DA2: secondary device attributes
      { prefix: "=", final: "c" }, // DA3: tertiary device attributes
      { final: "n" }, // DSR: status and cursor position (6n)
      { prefix: "?", final: "n" }, // DECXCPR and private status reports
      { intermediates: "$", final: "p" }, // DECRQM: mode reports
      { prefix: "?", intermediates: "$", final: "p" },
      { prefix: ">", final: "q" }, // XTVERSION
    ];
    for (const id of csi) term.parser.registerCsiHandler(id, swallow);
    // Window operations: all reports and moves; 22/23 (title stack) stay.
    term.parser.registerCsiHandler({ final: "t" }, (p) => p[0] !== 22 && p[0] !== 23);
    // Colour queries (`OSC 11;?`) answer with the colour; setting one is harmless.
    for (const ident of [4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 104, 110, 111, 112]) {
      term.parser.registerOscHandler(ident, (data) => data.includes("?"));
    }
    term.parser.registerOscHandler(52, swallow); // clipboard read/write
    term.parser.registerDcsHandler({ intermediates: "$", final: "q" }, swallow); // DECRQSS
    term.parser.registerDcsHandler({ intermediates: "+", final: "q" }, swallow); // XTGETTCAP
  }

  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace",
    fontSize: 14,
    windowOptions: {}, // every window report and manipulation off (the default, said aloud)
  });
  guardQueries(term);
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();
  term.focus();

  const given = readToken();
  const encoder = new TextEncoder();
  const state = {
    token: given.token,
    tokenFromLink: given.fromLink,
    viewers: 1,
    containerName: container,
    container,
    sessionId: null,
    received: 0,
    consumed: 0,
    acked: -1,
    socket: null,
    attempt: 0,
    exited: false,
    stopped: false,
    worker: "online",
    refused: 0,
    skipped: 0,
    queued: [],
    queuedBytes: 0,
  };
  try {
    const saved = JSON.parse(sessionStorage.getItem(sessionKey) || "null");
    if (saved && Number.isSafeInteger(saved.sessionId)) state.sessionId = saved.sessionId;
  } catch (_) {
    // Nothing usable stored: open a new session.
  }
  // An invitation (`&session=N`) names the shell to join.
  const invited = Number(params.get("session"));
  if (params.has("session") && Number.isSafeInteger(invited) && invited >= 0) {
    if (invited !== state.sessionId) state.received = 0;
    state.sessionId = invited;
  }
  window.cropsTerminal = { term, state };

  /** The address that joins this shell (no token in it: each person uses their own). */
  function inviteLink() {
    const q = new URLSearchParams({ container, session: String(state.sessionId) });
    return location.origin + location.pathname + "?" + q;
  }

  function remember() {
    if (state.sessionId === null) {
      shareEl.hidden = true;
    } else {
      shareEl.href = inviteLink();
      shareEl.hidden = false;
    }
    try {
      if (state.sessionId === null) sessionStorage.removeItem(sessionKey);
      else sessionStorage.setItem(sessionKey, JSON.stringify({ sessionId: state.sessionId }));
    } catch (_) {
      // Without storage a reload opens a new session; the old one ends after its grace period.
    }
  }

  function isOpen() {
    return state.socket !== null && state.socket.readyState === WebSocket.OPEN;
  }

  function sendJson(msg) {
    if (isOpen()) state.socket.send(JSON.stringify(msg));
  }

  function sendInput(bytes) {
    if (state.exited || state.stopped) return;
    if (!isOpen() || state.sessionId === null) {
      // Typed during a blip: sent once the session is back, up to a bound.
      if (state.queuedBytes + bytes.length <= MAX_QUEUED_INPUT) {
        state.queued.push(bytes);
        state.queuedBytes += bytes.length;
      } else {
        notify(
          "input not delivered: " + MAX_QUEUED_INPUT + " bytes already wait for the connection; " +
            bytes.length + " bytes dropped: " + JSON.stringify(new TextDecoder().decode(bytes).slice(0, 40)),
        );
      }
      return;
    }
    for (let i = 0; i < bytes.length; i += MAX_INPUT_MESSAGE) {
      state.socket.send(bytes.subarray(i, i + MAX_INPUT_MESSAGE));
    }
  }

  let ackQueued = false;
  /** One ack per batch of xterm write callbacks. */
  function scheduleAck() {
    if (ackQueued) return;
    ackQueued = true;
    queueMicrotask(() => {
      ackQueued = false;
      if (state.consumed > state.acked && isOpen()) {
        state.acked = state.consumed;
        sendJson({ type: "ack", offset: state.consumed });
      }
    });
  }

  /** Output from `state.received` to `to` is gone for good: say so in the terminal. */
  function markSkipped(to) {
    const n = to - state.received;
    if (n <= 0) return;
    state.received = to;
    state.skipped += n;
    term.write("\r\n\x1b[7m… " + n + " bytes skipped …\x1b[0m\r\n");
  }

  function onOutput(buf) {
    if (buf.byteLength < 8) return;
    const view = new DataView(buf);
    const start = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
    let bytes = new Uint8Array(buf, 8);
    const end = start + bytes.length;
    if (end <= state.received) return; // already shown: a replay overlap
    if (start < state.received) bytes = bytes.subarray(state.received - start);
    else markSkipped(start);
    state.received = end;
    term.write(bytes, () => {
      if (end > state.consumed) state.consumed = end;
      scheduleAck();
    });
  }

  /** Who is in this shell, in words. */
  function company() {
    const others = state.viewers - 1;
    return others <= 0 ? "only you are here" : "you and " + others + (others === 1 ? " other person" : " other people") + " are here";
  }

  function showOnline() {
    if (state.worker === "offline") {
      setStatus(
        "offline",
        "worker offline: the shell keeps running, and what you type is sent when it returns; " + company(),
      );
    } else {
      setStatus("online", "connected to the shell in " + state.containerName + "; " + company());
    }
  }

  function onControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (msg.type === "session") {
      if (msg.sessionId !== state.sessionId) {
        state.sessionId = msg.sessionId;
        state.received = 0;
        state.consumed = 0;
      }
      // Bytes below its offset left the agent's scrollback while no one read them.
      markSkipped(msg.offset);
      state.consumed = Math.max(state.consumed, msg.offset);
      tokenAccepted();
      state.acked = -1;
      state.attempt = 0;
      state.refused = 0;
      remember();
      showOnline();
      sendJson({ type: "resize", cols: term.cols, rows: term.rows });
      const queued = state.queued;
      state.queued = [];
      state.queuedBytes = 0;
      for (const bytes of queued) sendInput(bytes);
      scheduleAck();
    } else if (msg.type === "status") {
      state.worker = msg.worker === "offline" ? "offline" : "online";
      showOnline();
    } else if (msg.type === "viewers") {
      if (Number.isSafeInteger(msg.count)) state.viewers = msg.count;
      showOnline();
    } else if (msg.type === "error") {
      notify(String(msg.message));
    } else if (msg.type === "exited") {
      state.exited = true;
      state.sessionId = null;
      if (state.queuedBytes > 0) {
        notify("input not delivered: the session ended; " + state.queuedBytes + " bytes typed were dropped");
      }
      state.queued = [];
      state.queuedBytes = 0;
      remember();
      const code = msg.exitCode === null || msg.exitCode === undefined ? "none" : msg.exitCode;
      setStatus("exited", "exited with code " + code + " (" + msg.reason + "); press Enter for a new session");
    }
  }

  /** Why a socket never opened: the browser hides the HTTP answer, the API tells it. */
  async function diagnose() {
    try {
      const res = await fetch("/v1/containers/" + encodeURIComponent(container), {
        headers: { Authorization: "Bearer " + state.token },
        cache: "no-store",
      });
      if (res.status === 401 || res.status === 403 || res.status === 404) {
        const body = await res.json().catch(() => ({}));
        const why = (body.error && body.error.message) || res.statusText;
        return { fatal: true, status: res.status, text: "refused (" + res.status + "): " + why };
      }
      const body = await res.json().catch(() => ({}));
      if (res.ok && body.state && body.state !== "running") {
        return { fatal: false, text: "container is " + body.state };
      }
      return { fatal: false, running: res.ok, text: "reconnecting" };
    } catch (_) {
      return { fatal: false, text: "orchestrator unreachable" };
    }
  }

  function scheduleReconnect(reason) {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    state.attempt += 1;
    const jittered = Math.round(delay * (0.5 + Math.random() / 2));
    setStatus("connecting", reason + "; retrying in " + (jittered / 1000).toFixed(1) + " s");
    setTimeout(connect, jittered);
  }

  function connect() {
    if (state.stopped || state.exited) return;
    const q = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows) });
    if (state.sessionId !== null) {
      q.set("session", String(state.sessionId));
      // Re-attaching in this page: from the next byte it lacks.
      q.set("offset", String(state.received));
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = "/v1/containers/" + encodeURIComponent(container) + "/terminal?" + q;
    setStatus("connecting", "connecting");
    const ws = new WebSocket(scheme + "//" + location.host + path, ["crops.terminal.v1", "bearer." + state.token]);
    ws.binaryType = "arraybuffer";
    state.socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (ev) => {
      if (ws !== state.socket) return;
      if (typeof ev.data === "string") onControl(ev.data);
      else onOutput(ev.data);
    };
    ws.onclose = async () => {
      if (ws !== state.socket) return;
      state.socket = null;
      if (state.exited) return;
      if (opened) return scheduleReconnect("connection lost");
      const why = await diagnose();
      if (why.fatal && why.status === 401 && state.tokenFromLink) {
        // The link's token is refused: keep using (and keep) the saved one.
        const saved = savedToken();
        state.tokenFromLink = false;
        if (saved && saved !== state.token) {
          state.token = saved;
          notify("the token in the link was refused; your saved token is used instead");
          return scheduleReconnect("the link's token was refused");
        }
      }
      if (why.fatal) {
        state.stopped = true;
        setStatus("error", why.text);
        return;
      }
      // The API answers and the container runs, yet the socket is refused:
      // the stored session is unknown (404). A few in a row: start afresh.
      state.refused = why.running && state.sessionId !== null ? state.refused + 1 : 0;
      if (state.refused >= SESSION_GONE_AFTER) {
        forgetSession();
        return scheduleReconnect("the session is gone; opening a new one");
      }
      scheduleReconnect(why.text);
    };
  }

  function forgetSession() {
    state.sessionId = null;
    state.received = 0;
    state.consumed = 0;
    state.refused = 0;
    state.viewers = 1;
    remember();
    if (params.has("session")) {
      // The invitation is used up: a reload must not try that shell again.
      params.delete("session");
      history.replaceState(null, "", location.pathname + "?" + params);
    }
  }

  function newSession() {
    state.exited = false;
    state.attempt = 0;
    forgetSession();
    term.write("\r\n");
    connect();
  }

  term.onData((data) => {
    if (state.exited) {
      if (data.includes("\r")) newSession();
      return;
    }
    sendInput(encoder.encode(data));
  });
  // Some mouse reports are not UTF-8: one byte per character.
  term.onBinary((data) => sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => sendJson({ type: "resize", cols, rows }));

  let fitQueued = false;
  function refit() {
    if (fitQueued) return;
    fitQueued = true;
    requestAnimationFrame(() => {
      fitQueued = false;
      fit.fit();
    });
  }
  window.addEventListener("resize", refit);
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(refit).observe(document.getElementById("terminal"));
  }

  if (!container) {
    setStatus("error", "no container: open /ui/terminal?container=<id>#token=<API token>");
  } else if (!state.token) {
    setStatus("error", "no API token: open this page once with #token=<API token> in its address");
  } else {
    connect();
  }
})();
