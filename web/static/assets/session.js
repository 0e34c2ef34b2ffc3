// Signing in, and every call to the API.
//
// The token comes from the one-click link's fragment (#token=…: browsers never
// send a fragment to a server, so it is in no server log) or from the sign-in
// form. It is kept in this tab's sessionStorage, taken out of the address bar
// and the history entry at once, and sent only as an Authorization header,
// never in a URL.

const STORAGE_KEY = "exportd.token";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `exportd answered ${status}`);
    this.status = status;
    this.code = body?.code || `HTTP_${status}`;
    this.field = body?.field || null;
  }
}

export const currentToken = () => sessionStorage.getItem(STORAGE_KEY);

function adoptFragmentToken() {
  if (!location.hash) return;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname + location.search);
  if (token) sessionStorage.setItem(STORAGE_KEY, token);
}

const signedOutListeners = new Set();

/** A 401: the token is gone (expired, revoked); every listener is told. */
export function signedOut(error) {
  sessionStorage.removeItem(STORAGE_KEY);
  for (const listener of signedOutListeners) listener(error);
}

export const authHeaders = () => ({ Authorization: `Bearer ${currentToken()}` });

/** fetch() with the token; the JSON body, or an ApiError with the API's code and field. */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = {
    method,
    signal,
    cache: "no-store",
    credentials: "omit",
    headers: { Accept: "application/json", ...authHeaders(), ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { code: "NETWORK", message: "exportd did not answer; try again" });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401) signedOut(error);
    throw error;
  }
  return data;
}

/** A random id (Idempotency-Key); crypto.randomUUID needs a secure context, this does not. */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Show the sign-in form until a token is accepted (GET /api/v1/me), then call
 * onSignedIn(me) — again after every new sign-in (a token can expire).
 */
export async function startSession(onSignedIn) {
  adoptFragmentToken();
  const section = document.getElementById("sign-in-section");
  const form = document.getElementById("sign-in");
  const input = form.elements.token;
  const problem = document.getElementById("token-error");
  const app = document.getElementById("app");
  const who = document.getElementById("who");

  function showSignIn(message = "") {
    app.hidden = true;
    who.hidden = true;
    section.hidden = false;
    problem.textContent = message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
  }

  async function attempt() {
    if (!currentToken()) {
      showSignIn();
      return;
    }
    let me;
    try {
      ({ data: me } = await api("/api/v1/me"));
    } catch (error) {
      if (error.status !== 401) showSignIn(error.message);
      return; // a 401 has shown the form already (signedOut)
    }
    section.hidden = true;
    document.getElementById("who-name").textContent =
      `${me.subject}${me.admin ? " (admin)" : ""}`;
    who.hidden = false;
    document.getElementById("admin-link").hidden = !me.admin && location.pathname !== "/admin";
    app.hidden = false;
    await onSignedIn(me);
  }

  signedOutListeners.add((error) => showSignIn(`The token was refused: ${error.message}.`));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showSignIn("Paste a token first.");
      return;
    }
    sessionStorage.setItem(STORAGE_KEY, token);
    input.value = "";
    attempt();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE_KEY);
    location.reload();
  });
  await attempt();
}
