/**
 * Progress dict → what the Courses panel and the launcher show.
 *
 * Pure functions: the server decides what is done and unlocked (`completed`,
 * `next_stage`, `unlocked`); the frontend only renders it, so a learner cannot unlock a
 * stage by editing the page.
 */

import type { IProgress } from './types';

/** done: completed · current: the next unfinished stage · available: unlocked (free order) · locked. */
export type StageState = 'done' | 'current' | 'available' | 'locked';

export interface IStageRef {
  number: number;
  title?: string;
}

export interface IChecklistItem {
  number: number;
  title: string;
  state: StageState;
  completedAt?: string;
  source?: string;
}

/** The progress of a learner who has not started (sequential unlocking). */
export function emptyProgress(course: string, stageCount: number): IProgress {
  return {
    course,
    completed: [],
    course_completed: false,
    next_stage: stageCount > 0 ? 1 : null,
    stage_count: stageCount,
    unlocked: stageCount > 0 ? [1] : []
  };
}

/** The state of one stage, from the server's progress dict alone. */
export function stageState(progress: IProgress, stage: number): StageState {
  if (progress.completed.some(c => c.stage === stage)) {
    return 'done';
  }
  if (progress.next_stage === stage) {
    return 'current';
  }
  return progress.unlocked.includes(stage) ? 'available' : 'locked';
}

/**
 * One checklist row per stage. `stages` is either the course's stages (with titles)
 * or just the stage count (the course list has no titles).
 */
export function checklist(
  progress: IProgress | undefined,
  stages: IStageRef[] | number,
  course = ''
): IChecklistItem[] {
  const refs: IStageRef[] =
    typeof stages === 'number'
      ? Array.from({ length: stages }, (_, i) => ({ number: i + 1 }))
      : stages;
  const p = progress ?? emptyProgress(course, refs.length);
  return refs.map(ref => {
    const done = p.completed.find(c => c.stage === ref.number);
    const item: IChecklistItem = {
      number: ref.number,
      title: ref.title ?? `Stage ${ref.number}`,
      state: stageState(p, ref.number)
    };
    if (done) {
      item.completedAt = done.completed_at;
      item.source = done.source;
    }
    return item;
  });
}

/** How many stages are done (distinct stage numbers). */
export function doneCount(progress: IProgress | undefined): number {
  return new Set((progress?.completed ?? []).map(c => c.stage)).size;
}

/** The stage the panel opens on: the next unfinished one, else the last. */
export function focusStage(progress: IProgress | undefined, stageCount: number): number {
  if (progress?.next_stage) {
    return progress.next_stage;
  }
  return Math.max(1, stageCount);
}

/** "stage 2 of 5", or "completed" once every stage is done. */
export function progressLabel(progress: IProgress | undefined, stageCount: number): string {
  const count = progress?.stage_count ?? stageCount;
  if (progress?.course_completed || (progress && progress.next_stage === null && count > 0)) {
    return `completed (${count} of ${count})`;
  }
  const next = progress?.next_stage ?? 1;
  return `stage ${next} of ${count}`;
}

/** Screen-reader wording for a checklist row. */
export function stateLabel(state: StageState): string {
  switch (state) {
    case 'done':
      return 'done';
    case 'current':
      return 'current stage';
    case 'available':
      return 'open';
    default:
      return 'locked';
  }
}
