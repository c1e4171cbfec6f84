import { describe, expect, it } from 'vitest';

import {
  ApiError,
  describeError,
  errorFromNetwork,
  errorFromResponse,
  serverMessage
} from '../errors';

describe('errorFromResponse', () => {
  it('turns a 429 into a quota message with the server’s words', () => {
    const error = errorFromResponse(
      429,
      { message: 'you already have 3 sandbox terminals open (the limit is 3); close one first' },
      'start a course session'
    );
    expect(error.kind).toBe('quota');
    expect(error.status).toBe(429);
    expect(error.message).toBe(
      'Limit reached, could not start a course session: you already have 3 sandbox terminals open (the limit is 3); close one first'
    );
  });

  it('has a useful quota message without a body', () => {
    const error = errorFromResponse(429, '', 'start a course session');
    expect(error.message).toContain('close a Claude Code terminal');
  });

  it('maps a locked stage (409) and unknown ids (404)', () => {
    expect(errorFromResponse(409, { message: 'stage 3 is locked' }, 'check your answer')).toMatchObject({
      kind: 'conflict',
      message: 'Could not check your answer: stage 3 is locked'
    });
    expect(errorFromResponse(404, { message: 'unknown course: x' }, 'load the course').kind).toBe(
      'not-found'
    );
  });

  it('ignores HTML error pages from proxies', () => {
    const error = errorFromResponse(502, '<html><body>Bad gateway</body></html>', 'load the courses');
    expect(error.kind).toBe('unavailable');
    expect(error.message).toBe('The server is not available right now, could not load the courses.');
  });

  it('covers auth, size and server failures', () => {
    expect(errorFromResponse(401, null, 'x').kind).toBe('unauthorized');
    expect(errorFromResponse(403, { message: 'Forbidden' }, 'x').kind).toBe('forbidden');
    expect(errorFromResponse(413, null, 'x').kind).toBe('too-large');
    expect(errorFromResponse(400, { reason: 'bad id' }, 'x').message).toBe('Could not x: bad id');
    expect(errorFromResponse(500, { message: 'boom' }, 'x').message).toBe(
      'The server failed to x (error 500): boom'
    );
    expect(errorFromResponse(418, null, 'x').kind).toBe('unknown');
  });
});

describe('errorFromNetwork', () => {
  it('says the server cannot be reached, keeping the cause as detail', () => {
    const error = errorFromNetwork(new TypeError('Failed to fetch'), 'load the courses');
    expect(error).toBeInstanceOf(ApiError);
    expect(error.kind).toBe('unreachable');
    expect(error.detail).toBe('Failed to fetch');
    expect(describeError(error)).toMatch(/^Cannot reach the Jupyter server to load the courses\./);
  });
});

describe('serverMessage', () => {
  it('prefers message, then reason, and trims', () => {
    expect(serverMessage({ message: '  hi ', reason: 'r' })).toBe('hi');
    expect(serverMessage({ message: '', reason: 'r' })).toBe('r');
    expect(serverMessage({})).toBeUndefined();
    expect(serverMessage(42)).toBeUndefined();
  });

  it('describes anything thrown', () => {
    expect(describeError(new Error('plain'))).toBe('plain');
    expect(describeError('text')).toBe('text');
  });
});
