import { describe, expect, it } from 'vitest';

import {
  PROGRESS_SCHEMA,
  SANDBOX_SCHEMA,
  announce,
  applySandboxEvent,
  isRelevant,
  parseProgressEvent,
  parseSandboxEvent
} from '../events';
import { sandboxStatus } from '../sessions';
import type { ITerminalModel } from '../types';

const base = {
  schema_id: PROGRESS_SCHEMA,
  action: 'stage_completed',
  user: 'alice',
  course: 'transformer-basics',
  stage: 2,
  source: 'quiz',
  session: null
};

describe('parseProgressEvent', () => {
  it('accepts our schema and normalises optional fields', () => {
    expect(parseProgressEvent(base)).toEqual({
      action: 'stage_completed',
      user: 'alice',
      course: 'transformer-basics',
      stage: 2,
      source: 'quiz',
      session: null
    });
    expect(parseProgressEvent({ ...base, action: 'reset', stage: undefined, source: 7 })).toMatchObject({
      action: 'reset',
      stage: null,
      source: null
    });
  });

  it('drops other schemas and malformed events', () => {
    expect(
      parseProgressEvent({ ...base, schema_id: 'https://events.jupyter.org/jupyter_server/contents_service/v1' })
    ).toBeNull();
    expect(parseProgressEvent({ ...base, action: 'hacked' })).toBeNull();
    expect(parseProgressEvent({ ...base, user: 3 })).toBeNull();
    expect(parseProgressEvent({ ...base, course: undefined })).toBeNull();
    expect(parseProgressEvent(null)).toBeNull();
    expect(parseProgressEvent('text')).toBeNull();
    expect(parseProgressEvent({ ...base, stage: 1.5 })?.stage).toBeNull();
  });
});

describe('isRelevant', () => {
  const event = parseProgressEvent(base)!;
  it('keeps a learner’s own events only', () => {
    expect(isRelevant(event, 'alice', false)).toBe(true);
    expect(isRelevant(event, 'bob', false)).toBe(false);
    expect(isRelevant(event, undefined, false)).toBe(false);
  });
  it('keeps everyone’s while the instructor table is open', () => {
    expect(isRelevant(event, 'bob', true)).toBe(true);
  });
});

describe('announce', () => {
  it('says what happened', () => {
    const event = parseProgressEvent({ ...base, source: 'tutor' })!;
    expect(announce(event, 'Transformer basics')).toBe(
      'Stage 2 of Transformer basics completed (confirmed by the tutor).'
    );
    expect(announce({ ...event, action: 'course_completed' })).toBe(
      'Course transformer-basics completed.'
    );
  });
});

const sandbox = {
  schema_id: SANDBOX_SCHEMA,
  terminal: '2',
  user: 'alice',
  state: 'running',
  reason: null,
  course: 'transformer-basics',
  stage: 1
};

describe('parseSandboxEvent', () => {
  it('accepts our schema and normalises optional fields', () => {
    expect(parseSandboxEvent(sandbox)).toEqual({
      terminal: '2',
      user: 'alice',
      state: 'running',
      reason: null,
      course: 'transformer-basics',
      stage: 1
    });
    expect(
      parseSandboxEvent({ ...sandbox, state: 'failed', reason: 'no quota left', course: 3, stage: 'x' })
    ).toMatchObject({ state: 'failed', reason: 'no quota left', course: null, stage: null });
  });

  it('drops other schemas and malformed events', () => {
    expect(parseSandboxEvent({ ...sandbox, schema_id: PROGRESS_SCHEMA })).toBeNull();
    expect(parseProgressEvent(sandbox)).toBeNull();
    expect(parseSandboxEvent({ ...sandbox, state: 'hacked' })).toBeNull();
    expect(parseSandboxEvent({ ...sandbox, terminal: 2 })).toBeNull();
    expect(parseSandboxEvent({ ...sandbox, user: undefined })).toBeNull();
    expect(parseSandboxEvent(null)).toBeNull();
  });
});

describe('applySandboxEvent', () => {
  const models: ITerminalModel[] = [
    { name: '1', claude_pods: { state: 'running', reason: '', course: null, stage: null } },
    {
      name: '2',
      last_activity: '2026-01-01T00:00:00Z',
      claude_pods: { state: 'starting', reason: '', sandbox: 'sbx-alice-1', course: 'transformer-basics', stage: 1 }
    }
  ];
  const event = (data: Record<string, unknown>) => parseSandboxEvent({ ...sandbox, ...data })!;

  it('updates the state of a known terminal, keeping the rest of its model', () => {
    const { models: next, known } = applySandboxEvent(models, event({}));
    expect(known).toBe(true);
    expect(sandboxStatus(next[1])).toEqual({ state: 'running', label: 'sandbox running' });
    expect(next[1].claude_pods?.sandbox).toBe('sbx-alice-1');
    expect(next[1].last_activity).toBe('2026-01-01T00:00:00Z');
    expect(next[0]).toBe(models[0]);
    expect(sandboxStatus(models[1]).state).toBe('starting'); // not mutated
  });

  it('carries a failure reason', () => {
    const { models: next } = applySandboxEvent(models, event({ state: 'failed', reason: 'no quota left' }));
    expect(sandboxStatus(next[1])).toEqual({
      state: 'failed',
      label: 'sandbox failed',
      reason: 'no quota left'
    });
  });

  it('drops terminals that are gone', () => {
    for (const state of ['terminated', 'exited']) {
      const { models: next, known } = applySandboxEvent(models, event({ state }));
      expect(known).toBe(true);
      expect(next.map(m => m.name)).toEqual(['1']);
    }
  });

  it('reports a terminal it does not know (so the list is reloaded once)', () => {
    const { models: next, known } = applySandboxEvent(models, event({ terminal: '9' }));
    expect(known).toBe(false);
    expect(next).toBe(models);
    expect(applySandboxEvent(models, event({ terminal: '9', state: 'terminated' })).known).toBe(true);
  });
});
