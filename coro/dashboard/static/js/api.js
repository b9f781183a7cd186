// The runner's HTTP API as the dashboard uses it: JSON calls, the live log stream and
// plan mode's streamed chat. With an `apiToken` on the runner, the token the user typed
// is kept for this browser tab only (sessionStorage) and sent as a bearer header.

const TOKEN_KEY = "coro.apiToken";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const result = { Accept: "application/json", ...extra };
  const bearer = token();
  if (bearer) result.Authorization = `Bearer ${bearer}`;
  return result;
}

/** Listeners told when the runner asks for a token (401). */
export const onUnauthorized = new Set();

export async function call(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (response.status === 401) onUnauthorized.forEach((listener) => listener());
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

/** Plain text of a resource (artefact contents). */
export async function getText(path) {
  const response = await fetch(path, { headers: headers({ Accept: "*/*" }) });
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, body);
  }
  return response.text();
}

/** Parses a text/event-stream body: yields {id, event, data} per event. */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.event = { id: null, event: "message", data: [] };
  }

  *feed(chunk) {
    this.buffer += chunk;
    let newline;
    while ((newline = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, newline).replace(/\r$/, "");
      this.buffer = this.buffer.slice(newline + 1);
      if (line === "") {
        if (this.event.data.length) {
          yield { id: this.event.id, event: this.event.event, data: this.event.data.join("\n") };
        }
        this.event = { id: null, event: "message", data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") this.event.data.push(value);
        else if (field === "id") this.event.id = value;
        else if (field === "event") this.event.event = value;
      }
    }
  }
}

/**
 * Follows a job's log. `onLine(index, text)` for every line (each once, in order),
 * `onDone(status)` when the job stops, `onState("live" | "reconnecting" | "closed")`.
 * Uses EventSource (which reconnects by itself and sends Last-Event-ID); with a token it
 * reads the stream through fetch instead (EventSource cannot send headers) and resumes
 * with Last-Event-ID itself. Returns a function that closes the stream.
 */
export function followLog(jobId, { onLine, onDone, onState }) {
  let last = -1;
  let closed = false;
  const url = `/jobs/${encodeURIComponent(jobId)}/stream`;
  const line = (id, data) => {
    const index = Number(id);
    if (!Number.isInteger(index) || index <= last) return;
    last = index;
    onLine(index, data);
  };

  if (!token()) {
    const source = new EventSource(url);
    source.onopen = () => onState("live");
    source.onmessage = (event) => line(event.lastEventId, event.data);
    source.addEventListener("done", (event) => {
      closed = true;
      source.close();
      onState("closed");
      onDone(event.data);
    });
    source.onerror = () => {
      if (!closed) onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    };
    return () => {
      closed = true;
      source.close();
    };
  }

  const controller = new AbortController();
  (async () => {
    let attempt = 0;
    while (!closed) {
      try {
        const extra = last >= 0 ? { "Last-Event-ID": String(last) } : {};
        const response = await fetch(url, {
          headers: headers({ Accept: "text/event-stream", ...extra }),
          signal: controller.signal,
        });
        if (!response.ok) throw new ApiError(response.status, null);
        onState("live");
        attempt = 0;
        const parser = new SseParser();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.feed(value)) {
            if (event.event === "done") {
              closed = true;
              onState("closed");
              onDone(event.data);
              return;
            }
            line(event.id, event.data);
          }
        }
      } catch (error) {
        if (closed || error.name === "AbortError") return;
      }
      onState("reconnecting");
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * attempt, 5000)));
    }
  })();
  return () => {
    closed = true;
    controller.abort();
  };
}

/** POST a JSON body and read the answer as Server-Sent Events (plan mode). */
export async function* postStream(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, data);
  }
  const parser = new SseParser();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    yield* parser.feed(value);
  }
}
