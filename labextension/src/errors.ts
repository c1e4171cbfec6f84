/**
 * HTTP status / network failure → a message a learner can act on.
 *
 * The server answers errors as JSON `{"message", "reason"}` (Jupyter's APIHandler);
 * its message is shown when it says more than the status alone.
 */

export type ErrorKind =
  | 'unreachable'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'too-large'
  | 'quota'
  | 'bad-request'
  | 'unavailable'
  | 'server'
  | 'unknown';

export class ApiError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly status?: number,
    readonly detail?: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The server's own message from an error body, if it has a usable one. */
export function serverMessage(body: unknown): string | undefined {
  if (body && typeof body === 'object') {
    const record = body as Record<string, unknown>;
    for (const key of ['message', 'reason']) {
      const value = record[key];
      if (typeof value === 'string' && value.trim()) {
        return value.trim();
      }
    }
  }
  if (typeof body === 'string' && body.trim() && !body.trimStart().startsWith('<')) {
    return body.trim().slice(0, 300);
  }
  return undefined;
}

function withDetail(text: string, detail: string | undefined): string {
  return detail ? `${text}: ${detail}` : `${text}.`;
}

/**
 * An error for a non-2xx answer. `what` says what was attempted, e.g. "load the courses".
 */
export function errorFromResponse(status: number, body: unknown, what: string): ApiError {
  const detail = serverMessage(body);
  const mk = (kind: ErrorKind, text: string) => new ApiError(kind, text, status, detail);
  if (status === 401) {
    return mk('unauthorized', `Your session has expired: log in again to ${what}.`);
  }
  if (status === 403) {
    return mk('forbidden', withDetail(`You are not allowed to ${what}`, detail));
  }
  if (status === 404) {
    return mk('not-found', withDetail(`Could not ${what}: not found`, detail));
  }
  if (status === 409) {
    return mk('conflict', withDetail(`Could not ${what}`, detail ?? 'finish the earlier stages first'));
  }
  if (status === 413) {
    return mk('too-large', `Could not ${what}: the request is too large.`);
  }
  if (status === 429) {
    return mk(
      'quota',
      withDetail(`Limit reached, could not ${what}`, detail ?? 'close a Claude Code terminal and try again')
    );
  }
  if (status === 400 || status === 422) {
    return mk('bad-request', withDetail(`Could not ${what}`, detail ?? 'the request was refused'));
  }
  if (status === 502 || status === 503 || status === 504 || status === 424) {
    return mk(
      'unavailable',
      withDetail(`The server is not available right now, could not ${what}`, detail)
    );
  }
  if (status >= 500) {
    return mk('server', withDetail(`The server failed to ${what} (error ${status})`, detail));
  }
  return mk('unknown', withDetail(`Could not ${what} (HTTP ${status})`, detail));
}

/** An error for a request that never got an answer (server down, network lost). */
export function errorFromNetwork(error: unknown, what: string): ApiError {
  const detail = error instanceof Error ? error.message : undefined;
  return new ApiError(
    'unreachable',
    `Cannot reach the Jupyter server to ${what}. Check that it is running and your connection works, then retry.`,
    undefined,
    detail
  );
}

/** Any thrown value → one readable sentence. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    return error.message;
  }
  if (error instanceof Error && error.message) {
    return error.message;
  }
  return String(error);
}
