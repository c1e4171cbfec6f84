/**
 * Filtering the server's event stream (`/api/events/subscribe`) down to our progress
 * and sandbox events. Every subscriber receives every schema's events, so we check the
 * schema id and the shape before trusting a message.
 */

import type { IProgressEvent, ITerminalModel } from './types';

export const PROGRESS_SCHEMA = 'https://jupyter-claude-pods.readthedocs.io/events/progress';
export const SANDBOX_SCHEMA = 'https://jupyter-claude-pods.readthedocs.io/events/sandbox';

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

/** The data of one sandbox event (jupyter_claude_pods/events/sandbox.yaml, version 1). */
export interface ISandboxEvent {
  terminal: string;
  user: string;
  state: 'starting' | 'running' | 'failed' | 'exited' | 'terminated';
  reason: string | null;
  course: string | null;
  stage: number | null;
}

const SANDBOX_STATES = new Set(['starting', 'running', 'failed', 'exited', 'terminated']);

/** The sandbox event in an emission, or null when it is something else. */
export function parseSandboxEvent(emission: unknown): ISandboxEvent | null {
  if (!emission || typeof emission !== 'object') {
    return null;
  }
  const e = emission as Record<string, unknown>;
  if (e.schema_id !== SANDBOX_SCHEMA) {
    return null;
  }
  if (!isString(e.terminal) || !isString(e.user)) {
    return null;
  }
  if (!isString(e.state) || !SANDBOX_STATES.has(e.state)) {
    return null;
  }
  return {
    terminal: e.terminal,
    user: e.user,
    state: e.state as ISandboxEvent['state'],
    reason: optional(e.reason, isString),
    course: optional(e.course, isString),
    stage: optional(e.stage, isInt)
  };
}

/**
 * The terminal list after a sandbox event. `known` is false when the event names a
 * terminal the list does not have yet (opened elsewhere): the caller then reloads the
 * list once. Exited and terminated terminals are no longer listed by the server.
 */
export function applySandboxEvent(
  models: ITerminalModel[],
  event: ISandboxEvent
): { models: ITerminalModel[]; known: boolean } {
  const i = models.findIndex(m => m.name === event.terminal);
  const gone = event.state === 'exited' || event.state === 'terminated';
  if (i < 0) {
    return { models, known: gone };
  }
  if (gone) {
    return { models: models.filter((_, j) => j !== i), known: true };
  }
  const current = models[i];
  const updated: ITerminalModel = {
    ...current,
    claude_pods: {
      ...current.claude_pods,
      state: event.state,
      reason: event.reason,
      course: event.course,
      stage: event.stage
    }
  };
  return { models: models.map((m, j) => (j === i ? updated : m)), known: true };
}
