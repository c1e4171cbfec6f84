/**
 * The instructor table: learners × stages, from GET /claude-pods/api/instructor/progress.
 * Opened from the panel or the palette when GET /claude-pods/api/status says
 * `instructor: true`; refreshed by everyone's progress events while it is open.
 */

import { VDomModel, VDomRenderer } from '@jupyterlab/ui-components';
import * as React from 'react';

import { stageState, stateLabel } from './checklist';
import { ClaudePodsClient } from './client';
import { describeError } from './errors';
import { courseIcon } from './icons';
import type { ICourseSummary, IInstructorView, IProgress } from './types';

const CSS = 'jp-ClaudePods';

export class InstructorModel extends VDomModel {
  constructor(private readonly _client: ClaudePodsClient) {
    super();
  }

  courses: ICourseSummary[] = [];
  view: IInstructorView | null = null;
  error: string | null = null;
  loading = false;

  async refresh(): Promise<void> {
    this.loading = true;
    this.stateChanged.emit();
    try {
      const [list, view] = await Promise.all([
        this._client.courses(),
        this._client.instructorProgress()
      ]);
      this.courses = list.courses ?? [];
      this.view = view;
      this.error = null;
    } catch (error) {
      this.error = describeError(error);
    } finally {
      this.loading = false;
      this.stateChanged.emit();
    }
  }
}

/** The table columns: every course seen in the catalog or in anyone's progress. */
export function columns(
  courses: ICourseSummary[],
  view: IInstructorView | null
): { id: string; title: string; stages: number }[] {
  const cols = courses.map(c => ({ id: c.id, title: c.title, stages: c.stage_count }));
  for (const learner of view?.learners ?? []) {
    for (const [id, p] of Object.entries(learner.courses)) {
      if (!cols.some(c => c.id === id)) {
        cols.push({ id, title: id, stages: p.stage_count });
      }
    }
  }
  return cols;
}

export class InstructorTable extends VDomRenderer<InstructorModel> {
  constructor(model: InstructorModel) {
    super(model);
    this.id = 'jupyter-claude-pods-instructor';
    this.addClass(`${CSS}-instructor-table`);
    this.title.label = 'Learner progress';
    this.title.icon = courseIcon;
    this.title.closable = true;
  }

  protected render(): React.ReactElement {
    const m = this.model;
    const cols = columns(m.courses, m.view);
    const learners = m.view?.learners ?? [];
    return (
      <div className={`${CSS}-instructorBody`}>
        <div className={`${CSS}-header`}>
          <h2 className={`${CSS}-title`}>Learner progress</h2>
          <button
            className="jp-Button jp-mod-styled"
            onClick={() => void m.refresh()}
            disabled={m.loading}
          >
            Refresh
          </button>
        </div>
        {m.error && (
          <p className={`${CSS}-error`} role="alert">
            {m.error}
          </p>
        )}
        {!m.error && learners.length === 0 && !m.loading && (
          <p className={`${CSS}-muted`}>No learner has completed a stage yet.</p>
        )}
        {learners.length > 0 && (
          <div className={`${CSS}-tableWrap`}>
            <table className={`${CSS}-table`}>
              <caption>
                {learners.length} learner{learners.length === 1 ? '' : 's'} × stages. ✓ done, ➜
                current stage.
              </caption>
              <thead>
                <tr>
                  <th scope="col" rowSpan={2}>
                    Learner
                  </th>
                  {cols.map(c => (
                    <th key={c.id} scope="colgroup" colSpan={Math.max(1, c.stages)}>
                      {c.title}
                    </th>
                  ))}
                </tr>
                <tr>
                  {cols.flatMap(c =>
                    Array.from({ length: Math.max(1, c.stages) }, (_, i) => (
                      <th key={`${c.id}:${i + 1}`} scope="col" title={`${c.title}, stage ${i + 1}`}>
                        {i + 1}
                      </th>
                    ))
                  )}
                </tr>
              </thead>
              <tbody>
                {learners.map(l => (
                  <tr key={l.user} data-user={l.user}>
                    <th scope="row">{l.user}</th>
                    {cols.flatMap(c =>
                      Array.from({ length: Math.max(1, c.stages) }, (_, i) => (
                        <Cell
                          key={`${c.id}:${i + 1}`}
                          user={l.user}
                          course={c.title}
                          stage={i + 1}
                          progress={l.courses[c.id]}
                        />
                      ))
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    );
  }
}

function Cell(props: {
  user: string;
  course: string;
  stage: number;
  progress?: IProgress;
}): React.ReactElement {
  const { user, course, stage, progress } = props;
  if (!progress) {
    return <td aria-label={`${user}, ${course} stage ${stage}: not started`} />;
  }
  const state = stageState(progress, stage);
  const done = progress.completed.find(c => c.stage === stage);
  const mark = state === 'done' ? '✓' : state === 'current' ? '➜' : '';
  const title = done
    ? `completed ${new Date(done.completed_at).toLocaleString()} (${done.source})`
    : stateLabel(state);
  return (
    <td
      className={`${CSS}-cell`}
      data-state={state}
      title={title}
      aria-label={`${user}, ${course} stage ${stage}: ${title}`}
    >
      {mark}
    </td>
  );
}
