// Server-Sent Events over fetch(). A browser's EventSource cannot send an
// Authorization header, and the token must not travel in a URL, so the
// text/event-stream body is read as it arrives and parsed here (exportd
// sends LF line ends; `retry:` is honoured by the caller).

import { ApiError, authHeaders, signedOut } from "./session.js";

/**
 * Follow `path` until the server ends the stream; onEvent(name, data) for each
 * event. Resolves with the last `retry:` value (ms) or null; rejects with an
 * ApiError when the stream cannot be opened.
 */
export async function readEvents(path, onEvent, signal) {
  const response = await fetch(path, {
    headers: { Accept: "text/event-stream", ...authHeaders() },
    cache: "no-store",
    credentials: "omit",
    signal,
  });
  if (!response.ok) {
    const error = new ApiError(response.status, await response.json().catch(() => null));
    if (response.status === 401) signedOut(error);
    throw error;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let retry = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return retry;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // a comment: keep-alive
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let text = colon === -1 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
        else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      end = buffer.indexOf("\n\n");
    }
  }
}
