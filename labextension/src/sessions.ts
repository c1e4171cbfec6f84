/**
 * Terminal models (GET /api/terminals) → the course sessions the panel can continue.
 */

import type { ITerminalModel } from './types';

export type SandboxState = 'starting' | 'running' | 'failed' | 'exited' | 'unknown';

export interface ISandboxStatus {
  state: SandboxState;
  label: string;
  reason?: string;
}

const KNOWN: SandboxState[] = ['starting', 'running', 'failed', 'exited'];

export function sandboxStatus(model: ITerminalModel): ISandboxStatus {
  const info = model.claude_pods ?? {};
  const raw = info.state ?? 'unknown';
  const state = (KNOWN as string[]).includes(raw) ? (raw as SandboxState) : 'unknown';
  const labels: Record<SandboxState, string> = {
    starting: 'sandbox starting…',
    running: 'sandbox running',
    failed: 'sandbox failed',
    exited: 'sandbox ended',
    unknown: 'sandbox state unknown'
  };
  const status: ISandboxStatus = { state, label: labels[state] };
  if (info.reason) {
    status.reason = info.reason;
  }
  return status;
}

/** The terminals of one course, newest name last (names are server counters). */
export function courseSessions(models: ITerminalModel[], course: string): ITerminalModel[] {
  return models.filter(m => m.claude_pods?.course === course);
}

/**
 * The session "Continue" should open: a running one, else one still starting. A failed or
 * ended session is never reused (its sandbox is gone); the caller starts a new one.
 */
export function pickSession(
  models: ITerminalModel[],
  course: string
): ITerminalModel | undefined {
  const mine = courseSessions(models, course);
  const byState = (state: SandboxState) =>
    mine.filter(m => sandboxStatus(m).state === state).pop();
  return byState('running') ?? byState('starting');
}
