// HTTP clients as the dashboards use them: JSON calls, live log streams and streamed
// POST answers. `Client` is shared by the runner's dashboard and the cloud's team page;
// what differs is only where the bearer token comes from (its `credentials`).
//
// The runner's dashboard uses the module-level functions below: with an `apiToken` on
// the runner, the token the user typed is kept for this browser tab only
// (sessionStorage) and sent as a bearer header.

const TOKEN_KEY = "coro.apiToken";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
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

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * A client of one server. `credentials.token()` gives the bearer token (or null);
 * `credentials.refresh()`, when given, is tried once on a 401 (it resolves true when
 * a new token is ready) before the request is retried and, failing that, the
 * `onUnauthorized` listeners are told.
 */
export class Client {
  constructor(credentials) {
    this.credentials = credentials;
    this.onUnauthorized = new Set();
  }

  headers(extra = {}) {
    const result = { Accept: "application/json", ...extra };
    const bearer = this.credentials.token();
    if (bearer) result.Authorization = `Bearer ${bearer}`;
    return result;
  }

  /** fetch with the bearer header; a 401 refreshes the token once and retries. */
  async fetch(path, init = {}, extraHeaders = {}) {
    const send = () => fetch(path, { ...init, headers: this.headers(extraHeaders) });
    let response = await send();
    if (response.status === 401 && this.credentials.refresh && (await this.credentials.refresh())) {
      response = await send();
    }
    if (response.status === 401) this.onUnauthorized.forEach((listener) => listener());
    return response;
  }

  async call(method, path, body) {
    const init = { method };
    const extra = {};
    if (body !== undefined) {
      extra["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(path, init, extra);
    const data = await bodyOf(response);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  get(path) {
    return this.call("GET", path);
  }

  post(path, body = {}) {
    return this.call("POST", path, body);
  }

  put(path, body) {
    return this.call("PUT", path, body);
  }

  patch(path, body) {
    return this.call("PATCH", path, body);
  }

  del(path) {
    return this.call("DELETE", path);
  }

  /** Plain text of a resource (artefact contents). */
  async getText(path) {
    const response = await this.fetch(path, {}, { Accept: "*/*" });
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

  /**
   * Follows a job's log at `url` (its SSE stream). `onLine(index, text)` for every line
   * (each once, in order), `onDone(status)` when the job stops,
   * `onState("live" | "reconnecting" | "closed")`. Uses EventSource (which reconnects
   * by itself and sends Last-Event-ID) when there is no token; with one it reads the
   * stream through fetch instead (EventSource cannot send headers) and resumes with
   * Last-Event-ID itself. Returns a function that closes the stream.
   */
  followLog(url, { onLine, onDone, onState }) {
    let last = -1;
    let closed = false;
    const line = (id, data) => {
      const index = Number(id);
      if (!Number.isInteger(index) || index <= last) return;
      last = index;
      onLine(index, data);
    };

    if (!this.credentials.token()) {
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

    return this.followEvents(url, {
      onState,
      lastEventId: () => (last >= 0 ? String(last) : null),
      onEvent: (event) => {
        if (event.event !== "done") {
          line(event.id, event.data);
          return false;
        }
        onState("closed");
        onDone(event.data);
        return true;
      },
    });
  }

  /**
   * Reads the SSE stream at `url` through fetch (so the bearer header goes with it),
   * reconnecting with a growing pause and sending `lastEventId()` (when not null) as
   * Last-Event-ID. `onEvent({id, event, data})` for every event, returning true to stop
   * reading; `onState("live" | "reconnecting" | "closed")`. A 401, 403 or 404 closes it.
   * Returns a function that closes the stream.
   */
  followEvents(url, { onEvent, onState = () => {}, lastEventId = () => null }) {
    let closed = false;
    const controller = new AbortController();
    (async () => {
      let attempt = 0;
      while (!closed) {
        try {
          const extra = { Accept: "text/event-stream" };
          const lastId = lastEventId();
          if (lastId !== null) extra["Last-Event-ID"] = lastId;
          const response = await this.fetch(url, { signal: controller.signal }, extra);
          if (response.status === 401 || response.status === 403 || response.status === 404) {
            // no retry can succeed: signed out, or the resource is not (or no longer) visible
            closed = true;
            onState("closed");
            return;
          }
          if (!response.ok) throw new ApiError(response.status, null);
          onState("live");
          attempt = 0;
          const parser = new SseParser();
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            for (const event of parser.feed(value)) {
              if (onEvent(event) === true) {
                closed = true;
                controller.abort();
                return;
              }
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
  async *postStream(path, body, signal) {
    const response = await this.fetch(
      path,
      { method: "POST", body: JSON.stringify(body), signal },
      { "Content-Type": "application/json", Accept: "text/event-stream" },
    );
    if (!response.ok) throw new ApiError(response.status, await bodyOf(response));
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* parser.feed(value);
    }
  }
}

// --- the runner's dashboard ------------------------------------------------------

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The runner this dashboard is served by. */
export const runner = new Client({ token });

/** Listeners told when the runner asks for a token (401). */
export const onUnauthorized = runner.onUnauthorized;

export const call = (method, path, body) => runner.call(method, path, body);
export const get = (path) => runner.get(path);
export const post = (path, body = {}) => runner.post(path, body);
export const put = (path, body) => runner.put(path, body);
export const patch = (path, body) => runner.patch(path, body);
export const del = (path) => runner.del(path);
export const getText = (path) => runner.getText(path);
export const postStream = (path, body, signal) => runner.postStream(path, body, signal);

/** Follows one of this runner's jobs' log (see `Client.followLog`). */
export function followLog(jobId, handlers) {
  return runner.followLog(`/jobs/${encodeURIComponent(jobId)}/stream`, handlers);
}
