/** HTTP calls to the RepoLens API, with the server's own error message on failure. */

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** FastAPI errors carry `detail` (a string, or a list of validation problems). */
async function errorFrom(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const detail = body?.detail ?? body?.message;
    if (typeof detail === "string") message = detail;
    else if (Array.isArray(detail)) message = detail.map((item) => item.msg ?? JSON.stringify(item)).join("; ");
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(message, response.status);
}

/**
 * The server's API key (`REPOLENS_API_KEY`), asked for once when the server refuses a request with
 * code `unauthorized` and kept in sessionStorage (gone when the tab closes). HTTP sends it as
 * `X-API-Key`; the WebSocket, which browsers cannot give headers, as `?api_key=` (see socket.ts).
 */
const KEY_STORAGE = "repolens.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

function askForKey(): boolean {
  const key = window.prompt("This RepoLens server needs its API key (REPOLENS_API_KEY):")?.trim();
  if (!key) return false;
  sessionStorage.setItem(KEY_STORAGE, key);
  return true;
}

function withKey(init: RequestInit = {}): RequestInit {
  const key = apiKey();
  if (!key) return init;
  return { ...init, headers: { ...(init.headers as Record<string, string> | undefined), "X-API-Key": key } };
}

async function isKeyRefusal(response: Response): Promise<boolean> {
  if (response.status !== 401) return false;
  try {
    return (await response.clone().json())?.code === "unauthorized";
  } catch {
    return false;
  }
}

/** `fetch` with the API key; a refusal for a missing or wrong key asks for it and retries once. */
export async function send(url: string, init?: RequestInit): Promise<Response> {
  const used = apiKey();
  const response = await fetch(url, withKey(init));
  if (!(await isKeyRefusal(response))) return response;
  // Requests sent together are refused together: only the first asks, the others reuse its answer.
  if (apiKey() !== used || askForKey()) return fetch(url, withKey(init));
  return response;
}

export async function getJson<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await send(url, init);
  if (!response.ok) throw await errorFrom(response);
  return (await response.json()) as T;
}

/** The API path of a repository: ids contain slashes, which the server's `{repo_id:path}` expects verbatim. */
export function repoPath(repoId: string): string {
  return `/api/repos/${repoId.split("/").map(encodeURIComponent).join("/")}`;
}

/**
 * POST a JSON body and hand each Server-Sent Event's data to `onEvent` as it arrives.
 * A refusal before the stream starts (e.g. a malformed URL) throws the server's message.
 */
export async function postEvents(
  url: string,
  body: unknown,
  onEvent: (event: Record<string, unknown>) => void,
  signal?: AbortSignal,
): Promise<void> {
  const response = await send(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok || !response.body) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}
