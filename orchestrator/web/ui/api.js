//! The dashboard's one way to the API: `call(method, path, body)` with the
//! signed-in token as an `Authorization` header (never in a URL), JSON in
//! and out, and every refusal turned into an `ApiFailure` whose `words`
//! say what happened in a sentence a person can act on.
//!
//! The token lives in localStorage under `crops.token`, the key the
//! terminal page reads too, so "open terminal" needs no second sign-in.
//! `signOut` forgets it.

const TOKEN_KEY = "crops.token";

let token = "";
try {
  token = localStorage.getItem(TOKEN_KEY) || "";
} catch (_) {
  // Storage disabled: the token lasts as long as the page.
}

export function hasToken() {
  return token !== "";
}

/** Keep `t` for this and later visits (and for the terminal page). */
export function signIn(t) {
  token = t.trim();
  try {
    localStorage.setItem(TOKEN_KEY, token);
  } catch (_) {
    // The token still works for this page.
  }
}

/** Forget the token, here and in storage. */
export function signOut() {
  token = "";
  try {
    localStorage.removeItem(TOKEN_KEY);
    sessionStorage.clear();
  } catch (_) {
    // Nothing stored.
  }
}

/** A refused or failed call: `status` (0 when the server was not reached), `code`, `words`. */
export class ApiFailure extends Error {
  constructor(status, code, words) {
    super(words);
    this.status = status;
    this.code = code;
    this.words = words;
  }
}

/** What a status means to the person who asked, before the server's own message. */
function lead(status) {
  switch (status) {
    case 400:
      return "The request was not accepted";
    case 401:
      return "You are not signed in, or your token is no longer valid";
    case 403:
      return "Your role does not allow this";
    case 404:
      return "Not found, or not yours to see";
    case 409:
      return "Refused";
    case 413:
      return "Too large";
    case 429:
      return "Too many requests; wait a moment";
    case 503:
      return "Unavailable right now";
    case 504:
      return "No answer in time";
    default:
      return `Failed (HTTP ${status})`;
  }
}

/**
 * `method path` with `body` (an object sent as JSON, or a Blob/ArrayBuffer
 * sent as is with `contentType`); the parsed JSON answer, or null for an
 * empty one. Throws `ApiFailure`.
 */
export async function call(method, path, body, contentType) {
  const headers = { Authorization: "Bearer " + token };
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = contentType || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (_) {
    throw new ApiFailure(0, "unreachable", "The orchestrator cannot be reached; retrying when it is back");
  }
  const text = await resp.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
  }
  if (resp.ok) return json;
  const err = json && json.error;
  const message = err && typeof err.message === "string" ? err.message : "";
  const code = err && typeof err.code === "string" ? err.code : "http_" + resp.status;
  throw new ApiFailure(resp.status, code, message ? `${lead(resp.status)}: ${message}` : `${lead(resp.status)}.`);
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const del = (path) => call("DELETE", path);
export const put = (path, body) => call("PUT", path, body === undefined ? {} : body);
export const patch = (path, body) => call("PATCH", path, body);

/** `encodeURIComponent` for a path segment or query value. */
export const enc = encodeURIComponent;
