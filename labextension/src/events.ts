/**
 * Filtering the server's event stream (`/api/events/subscribe`) down to our progress
 * events. Every subscriber receives every schema's events, so we check the schema id
 * and the shape before trusting a message.
 */

import type { IProgressEvent } from './types';

export const PROGRESS_SCHEMA = 'https://jupyter-claude-pods.readthedocs.io/events/progress';

export type { IProgressEvent };

const ACTIONS = new Set(['stage_completed', 'course_completed', 'reset']);

function optional<T>(value: unknown, check: (v: unknown) => v is T): T | null {
  return check(value) ? value : null;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** The progress event in an emission, or null when it is something else. */
export function parseProgressEvent(emission: unknown): IProgressEvent | null {
  if (!emission || typeof emission !== 'object') {
    return null;
  }
  const e = emission as Record<string, unknown>;
  if (e.schema_id !== PROGRESS_SCHEMA) {
    return null;
  }
  if (!isString(e.action) || !ACTIONS.has(e.action)) {
    return null;
  }
  if (!isString(e.user) || !isString(e.course)) {
    return null;
  }
  return {
    action: e.action as IProgressEvent['action'],
    user: e.user,
    course: e.course,
    stage: optional(e.stage, isInt),
    source: optional(e.source, isString),
    session: optional(e.session, isString)
  };
}

/**
 * Whether an event changes what this browser shows: a learner's own progress always;
 * anyone's when the instructor table is open.
 */
export function isRelevant(
  event: IProgressEvent,
  user: string | undefined,
  instructorView: boolean
): boolean {
  return instructorView || (user !== undefined && event.user === user);
}

/** A one-line announcement for screen readers and the panel's live region. */
export function announce(event: IProgressEvent, courseTitle?: string): string {
  const course = courseTitle ?? event.course;
  switch (event.action) {
    case 'stage_completed':
      return `Stage ${event.stage ?? '?'} of ${course} completed${
        event.source === 'tutor' ? ' (confirmed by the tutor)' : ''
      }.`;
    case 'course_completed':
      return `Course ${course} completed.`;
    default:
      return `Progress in ${course} was reset.`;
  }
}
