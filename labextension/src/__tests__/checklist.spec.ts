import { describe, expect, it } from 'vitest';

import {
  checklist,
  doneCount,
  emptyProgress,
  focusStage,
  progressLabel,
  stageState
} from '../checklist';
import type { IProgress } from '../types';

function progress(partial: Partial<IProgress>): IProgress {
  return { ...emptyProgress('c', 5), ...partial };
}

const done = (stage: number) => ({
  stage,
  completed_at: '2026-11-26T10:00:00Z',
  source: 'quiz'
});

describe('checklist', () => {
  it('marks done, current and locked stages for sequential unlocking', () => {
    const p = progress({ completed: [done(1)], next_stage: 2, unlocked: [1, 2] });
    expect(checklist(p, 4).map(i => i.state)).toEqual(['done', 'current', 'locked', 'locked']);
  });

  it('shows stages unlocked out of order (free unlocking) as available', () => {
    const p = progress({ completed: [done(2)], next_stage: 1, unlocked: [1, 2, 3] });
    expect(checklist(p, 3).map(i => i.state)).toEqual(['current', 'done', 'available']);
  });

  it('takes titles from the stages and keeps completion details', () => {
    const p = progress({ completed: [done(1)], next_stage: 2, unlocked: [1, 2] });
    const [first, second] = checklist(p, [
      { number: 1, title: 'Attention' },
      { number: 2, title: 'Heads' }
    ]);
    expect(first).toEqual({
      number: 1,
      title: 'Attention',
      state: 'done',
      completedAt: '2026-11-26T10:00:00Z',
      source: 'quiz'
    });
    expect(second.title).toBe('Heads');
    expect(second.completedAt).toBeUndefined();
  });

  it('treats a missing progress dict as not started', () => {
    expect(checklist(undefined, 3).map(i => i.state)).toEqual(['current', 'locked', 'locked']);
    expect(checklist(undefined, 2)[1].title).toBe('Stage 2');
  });

  it('trusts the server over the local order: a done stage stays done even if locked', () => {
    const p = progress({ completed: [done(3)], next_stage: 1, unlocked: [1] });
    expect(stageState(p, 3)).toBe('done');
    expect(stageState(p, 2)).toBe('locked');
  });
});

describe('progress labels', () => {
  it('says which stage the learner is on', () => {
    expect(progressLabel(progress({ next_stage: 2 }), 5)).toBe('stage 2 of 5');
    expect(progressLabel(undefined, 3)).toBe('stage 1 of 3');
  });

  it('says completed when the course is done', () => {
    const p = progress({
      completed: [1, 2, 3, 4, 5].map(done),
      next_stage: null,
      course_completed: true
    });
    expect(progressLabel(p, 5)).toBe('completed (5 of 5)');
    expect(focusStage(p, 5)).toBe(5);
    expect(doneCount(p)).toBe(5);
  });

  it('counts each stage once even if completed twice (quiz and tutor)', () => {
    const p = progress({ completed: [done(1), { ...done(1), source: 'tutor' }] });
    expect(doneCount(p)).toBe(1);
  });

  it('focuses the next unfinished stage', () => {
    expect(focusStage(progress({ next_stage: 3 }), 5)).toBe(3);
    expect(focusStage(undefined, 4)).toBe(4);
  });
});
