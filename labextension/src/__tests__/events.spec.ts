import { describe, expect, it } from 'vitest';

import { PROGRESS_SCHEMA, announce, isRelevant, parseProgressEvent } from '../events';

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
