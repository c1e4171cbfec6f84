/**
 * The "Courses" side panel: courses, their stages as a checklist, the current stage's
 * goals, concepts and quiz, and the course's sandbox state.
 *
 * Native buttons, radio groups and <details> give keyboard navigation for free; every
 * control has a visible label or an aria-label, and changes that happen on their own
 * (tutor completed a stage) are read out through a polite live region.
 */

import { VDomRenderer } from '@jupyterlab/ui-components';
import * as React from 'react';

import { checklist, doneCount, progressLabel, stateLabel } from './checklist';
import { courseIcon, lockIcon } from './icons';
import { CoursesModel } from './model';
import { courseSessions, sandboxStatus } from './sessions';
import type { ICourseDetail, ICourseSummary, IStage } from './types';

const CSS = 'jp-ClaudePods';

export interface IPanelActions {
  openInstructor(): void;
}

export class CoursesPanel extends VDomRenderer<CoursesModel> {
  constructor(model: CoursesModel, private readonly _actions: IPanelActions) {
    super(model);
    this.id = 'jupyter-claude-pods-courses';
    this.addClass(`${CSS}-panel`);
    this.title.icon = courseIcon;
    this.title.caption = 'Claude Code courses';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Claude Code courses');
  }

  protected render(): React.ReactElement {
    const m = this.model;
    return (
      <div className={`${CSS}-body`}>
        <div className={`${CSS}-header`}>
          <h2 className={`${CSS}-title`}>Courses</h2>
          <button
            className={`jp-Button jp-mod-minimal ${CSS}-refresh`}
            onClick={() => void m.refresh()}
            aria-label="Refresh courses"
            title="Refresh courses"
            disabled={m.loading}
          >
            ⟳
          </button>
        </div>
        <div className={`${CSS}-sr`} aria-live="polite" role="status">
          {m.announcement}
        </div>
        {m.error && (
          <div className={`${CSS}-error`} role="alert">
            <p>{m.error}</p>
            <button className="jp-Button jp-mod-styled jp-mod-accept" onClick={() => void m.refresh()}>
              Retry
            </button>
          </div>
        )}
        {m.problems.length > 0 && (
          <section className={`${CSS}-problems`} aria-label="Courses with problems">
            <h3>Some courses could not be loaded</h3>
            <ul>
              {m.problems.map(p => (
                <li key={`${p.course}:${p.file}:${p.field}`}>
                  <strong>{p.course}</strong>: {p.file}
                  {p.field ? ` (${p.field})` : ''} — {p.message}
                </li>
              ))}
            </ul>
          </section>
        )}
        {!m.error && !m.loading && m.courses.length === 0 && (
          <p className={`${CSS}-empty`}>
            {m.status && !m.status.courses_dir_configured
              ? 'No courses directory is configured on this server. Ask your instructor, or start a plain Claude Code sandbox from the launcher.'
              : 'There are no courses yet.'}
          </p>
        )}
        <ul className={`${CSS}-courses`} aria-label="Courses">
          {m.courses.map(c => (
            <CourseItem key={c.id} model={m} course={c} />
          ))}
        </ul>
        {m.status?.instructor && (
          <div className={`${CSS}-instructor`}>
            <button
              className="jp-Button jp-mod-styled"
              onClick={() => this._actions.openInstructor()}
            >
              Learner progress (instructor)
            </button>
          </div>
        )}
      </div>
    );
  }
}

function CourseItem(props: { model: CoursesModel; course: ICourseSummary }): React.ReactElement {
  const { model, course } = props;
  const expanded = model.expanded.has(course.id);
  const progress = model.progress(course.id);
  const bodyId = `${CSS}-course-${course.id}`;
  const detail = model.details.get(course.id);
  return (
    <li className={`${CSS}-course`} data-course={course.id}>
      <button
        className={`${CSS}-courseToggle`}
        aria-expanded={expanded}
        aria-controls={bodyId}
        onClick={() => model.toggle(course.id)}
      >
        <span className={`${CSS}-caret`} aria-hidden="true">
          {expanded ? '▾' : '▸'}
        </span>
        <span className={`${CSS}-courseTitle`}>{course.title}</span>
        <span className={`${CSS}-courseProgress`}>
          {progressLabel(progress, course.stage_count)}
        </span>
      </button>
      {expanded && (
        <div id={bodyId} className={`${CSS}-courseBody`}>
          {course.description && <p className={`${CSS}-description`}>{course.description}</p>}
          <Session model={model} course={course} />
          {model.courseErrors.get(course.id) && (
            <p className={`${CSS}-error`} role="alert">
              {model.courseErrors.get(course.id)}
            </p>
          )}
          <Checklist model={model} course={course} detail={detail} />
          {detail ? (
            <StageView model={model} course={course} detail={detail} />
          ) : (
            !model.courseErrors.get(course.id) && <p className={`${CSS}-muted`}>Loading…</p>
          )}
        </div>
      )}
    </li>
  );
}

function Session(props: { model: CoursesModel; course: ICourseSummary }): React.ReactElement {
  const { model, course } = props;
  const sessions = courseSessions(model.terminals, course.id);
  const last = sessions[sessions.length - 1];
  const status = last ? sandboxStatus(last) : null;
  const busy = model.busy.has(`open:${course.id}`);
  return (
    <div className={`${CSS}-session`}>
      <button
        className={`jp-Button jp-mod-styled jp-mod-accept ${CSS}-continue`}
        onClick={() => void model.openCourse(course.id, true).catch(() => undefined)}
        disabled={busy}
        aria-label={`Continue ${course.title} in its terminal`}
      >
        {busy ? 'Opening…' : 'Continue'}
      </button>
      {status && (
        <span
          className={`${CSS}-sandbox ${CSS}-sandbox-${status.state}`}
          data-state={status.state}
          title={status.reason ?? undefined}
        >
          <span className={`${CSS}-dot`} aria-hidden="true" />
          {status.label}
          {last?.claude_pods?.stage ? ` (started at stage ${last.claude_pods.stage})` : ''}
          {status.reason && status.state !== 'running' ? ` — ${status.reason}` : ''}
        </span>
      )}
    </div>
  );
}

const MARKS: Record<string, React.ReactNode> = {
  done: '✓',
  current: '➜',
  available: '○',
  locked: <lockIcon.react tag="span" className="jp-ClaudePods-lock" />
};

function Checklist(props: {
  model: CoursesModel;
  course: ICourseSummary;
  detail?: ICourseDetail;
}): React.ReactElement {
  const { model, course, detail } = props;
  const progress = model.progress(course.id);
  const items = checklist(progress, detail?.stages ?? course.stage_count, course.id);
  const selected = model.selectedStage(course.id);
  return (
    <div className={`${CSS}-checklistWrap`}>
      <p className={`${CSS}-muted`}>
        {doneCount(progress)} of {course.stage_count} stages done
      </p>
      <ol className={`${CSS}-checklist`} aria-label={`Stages of ${course.title}`}>
        {items.map(item => (
          <li key={item.number} className={`${CSS}-stage`} data-state={item.state}>
            <button
              className={`${CSS}-stageButton${item.number === selected ? ' jp-mod-selected' : ''}`}
              aria-current={item.state === 'current' ? 'step' : undefined}
              aria-pressed={item.number === selected}
              aria-label={`Stage ${item.number}: ${item.title}, ${stateLabel(item.state)}`}
              onClick={() => model.select(course.id, item.number)}
              title={
                item.completedAt
                  ? `Completed ${new Date(item.completedAt).toLocaleString()} (${item.source})`
                  : stateLabel(item.state)
              }
            >
              <span className={`${CSS}-mark`} aria-hidden="true">
                {MARKS[item.state]}
              </span>
              <span>
                {item.number}. {item.title}
              </span>
            </button>
          </li>
        ))}
      </ol>
    </div>
  );
}

function StageView(props: {
  model: CoursesModel;
  course: ICourseSummary;
  detail: ICourseDetail;
}): React.ReactElement | null {
  const { model, course, detail } = props;
  const number = model.selectedStage(course.id);
  const stage = detail.stages.find(s => s.number === number);
  if (!stage) {
    return null;
  }
  const [item] = checklist(model.progress(course.id), [stage], course.id);
  return (
    <section className={`${CSS}-stageView`} aria-label={`Stage ${stage.number}: ${stage.title}`}>
      <h3>
        Stage {stage.number}: {stage.title}
      </h3>
      {item.state === 'locked' ? (
        <p className={`${CSS}-muted`}>
          This stage is locked: finish the earlier stages first.
        </p>
      ) : (
        <>
          {item.state === 'done' && (
            <p className={`${CSS}-done`}>✓ You have completed this stage.</p>
          )}
          {stage.goals.length > 0 && (
            <>
              <h4>Goals</h4>
              <ul className={`${CSS}-goals`}>
                {stage.goals.map((g, i) => (
                  <li key={i}>{g}</li>
                ))}
              </ul>
            </>
          )}
          {stage.concepts.length > 0 && (
            <>
              <h4>Concepts</h4>
              {stage.concepts.map((c, i) => (
                <details key={i} className={`${CSS}-concept`}>
                  <summary>{c.title}</summary>
                  <p>{c.content}</p>
                </details>
              ))}
            </>
          )}
          {stage.quiz ? (
            <Quiz key={`${course.id}:${stage.number}`} model={model} course={course} stage={stage} />
          ) : (
            <p className={`${CSS}-muted`}>
              No quiz: this stage is completed by working through it with the tutor in the
              terminal.
            </p>
          )}
        </>
      )}
    </section>
  );
}

function Quiz(props: {
  model: CoursesModel;
  course: ICourseSummary;
  stage: IStage;
}): React.ReactElement {
  const { model, course, stage } = props;
  const quiz = stage.quiz!;
  const [value, setValue] = React.useState('');
  const key = `${course.id}:${stage.number}`;
  const busy = model.busy.has(key);
  const feedback = model.feedbackFor(course.id, stage.number);
  const name = `${CSS}-quiz-${course.id}-${stage.number}`;
  const feedbackId = `${name}-feedback`;
  const next = model.progress(course.id)?.next_stage;
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    void model.answer(course.id, stage.number, value);
  };
  return (
    <form className={`${CSS}-quiz`} onSubmit={submit} aria-describedby={feedbackId}>
      <fieldset>
        <legend>Quiz: {quiz.question}</legend>
        {quiz.type === 'multiple-choice' ? (
          <div role="radiogroup" className={`${CSS}-options`}>
            {quiz.options.map((option, i) => (
              <label key={i} className={`${CSS}-option`}>
                <input
                  type="radio"
                  name={name}
                  value={option}
                  checked={value === option}
                  onChange={() => setValue(option)}
                />
                <span>{option}</span>
              </label>
            ))}
          </div>
        ) : (
          <input
            className={`jp-mod-styled ${CSS}-answer`}
            type="text"
            aria-label="Your answer"
            value={value}
            maxLength={2000}
            onChange={e => setValue(e.target.value)}
          />
        )}
      </fieldset>
      <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" disabled={busy}>
        {busy ? 'Checking…' : 'Check answer'}
      </button>
      <p
        id={feedbackId}
        className={`${CSS}-feedback${
          feedback ? (feedback.correct ? ` ${CSS}-correct` : ` ${CSS}-wrong`) : ''
        }`}
        role="status"
        aria-live="polite"
      >
        {feedback?.message ?? ''}
      </p>
      {feedback?.correct && next && next !== stage.number && (
        <button
          type="button"
          className={`jp-Button jp-mod-styled ${CSS}-next`}
          onClick={() => model.select(course.id, next)}
        >
          Go to stage {next}
        </button>
      )}
    </form>
  );
}
