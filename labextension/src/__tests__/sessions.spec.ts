import { describe, expect, it } from 'vitest';

import { courseSessions, pickSession, sandboxStatus } from '../sessions';
import type { ITerminalModel } from '../types';

const term = (name: string, course: string | null, state: string, reason?: string): ITerminalModel => ({
  name,
  claude_pods: { course, state, reason: reason ?? null, stage: 1 }
});

describe('sessions', () => {
  const models = [
    term('1', null, 'running'),
    term('2', 'tb', 'failed', 'image pull failed'),
    term('3', 'tb', 'running'),
    term('4', 'other', 'starting'),
    { name: '5' }
  ];

  it('lists the terminals of one course', () => {
    expect(courseSessions(models, 'tb').map(m => m.name)).toEqual(['2', '3']);
  });

  it('continues a running session, never a failed one', () => {
    expect(pickSession(models, 'tb')?.name).toBe('3');
    expect(pickSession([term('2', 'tb', 'failed')], 'tb')).toBeUndefined();
    expect(pickSession([term('7', 'tb', 'exited')], 'tb')).toBeUndefined();
    expect(pickSession(models, 'other')?.name).toBe('4');
    expect(pickSession(models, 'none')).toBeUndefined();
  });

  it('describes the sandbox state with its reason', () => {
    expect(sandboxStatus(models[1])).toEqual({
      state: 'failed',
      label: 'sandbox failed',
      reason: 'image pull failed'
    });
    expect(sandboxStatus(models[4]).state).toBe('unknown');
    expect(sandboxStatus(term('9', 'x', 'weird')).state).toBe('unknown');
  });
});
