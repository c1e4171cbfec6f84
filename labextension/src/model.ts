/**
 * State behind the Courses panel, the launcher cards and the instructor table.
 *
 * Refreshes are driven by the server: progress and sandbox-state events from the event
 * bus, the stock TerminalManager's `runningChanged`, and user actions. There is no timer:
 * a starting sandbox's state arrives as a `sandbox` event when it changes.
 */

import { VDomModel } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { ISignal, Signal } from '@lumino/signaling';

import { focusStage } from './checklist';
import { ClaudePodsClient } from './client';
import { ApiError, describeError } from './errors';
import {
  ISandboxEvent,
  announce,
  applySandboxEvent,
  isRelevant,
  parseProgressEvent,
  parseSandboxEvent
} from './events';
import { pickSession } from './sessions';
import type {
  ICourseDetail,
  ICourseProblem,
  ICourseSummary,
  IProgress,
  IProgressEvent,
  IStatus,
  ITerminalModel
} from './types';

export interface IFeedback {
  correct: boolean;
  message: string;
}

export class CoursesModel extends VDomModel {
  constructor(
    readonly client: ClaudePodsClient,
    private readonly _commands: CommandRegistry
  ) {
    super();
  }

  status: IStatus | null = null;
  courses: ICourseSummary[] = [];
  problems: ICourseProblem[] = [];
  details = new Map<string, ICourseDetail>();
  terminals: ITerminalModel[] = [];
  /** Page-level error (server unreachable, extension missing). */
  error: string | null = null;
  /** Errors of one course (detail load, starting its session), by course id. */
  courseErrors = new Map<string, string>();
  feedback = new Map<string, IFeedback>();
  expanded = new Set<string>();
  selected = new Map<string, number>();
  /** Polite live-region text: the last thing that changed on its own. */
  announcement = '';
  loading = false;
  busy = new Set<string>();
  /** Set while the instructor table is open, so everyone's events count. */
  instructorOpen = false;

  /** Emitted after the course list (and so the launcher cards) changed. */
  get coursesChanged(): ISignal<this, void> {
    return this._coursesChanged;
  }

  /** Every relevant progress event, after the panel refreshed (the instructor table listens). */
  get progressEvent(): ISignal<this, IProgressEvent> {
    return this._progressEvent;
  }

  courseTitle(id: string): string {
    return this.courses.find(c => c.id === id)?.title ?? id;
  }

  summary(id: string): ICourseSummary | undefined {
    return this.courses.find(c => c.id === id);
  }

  progress(id: string): IProgress | undefined {
    return this.details.get(id)?.progress ?? this.summary(id)?.progress;
  }

  selectedStage(id: string): number {
    const chosen = this.selected.get(id);
    if (chosen !== undefined) {
      return chosen;
    }
    const summary = this.summary(id);
    return focusStage(this.progress(id), summary?.stage_count ?? 1);
  }

  /** Load status, courses and terminals; keeps the page usable when parts fail. */
  async refresh(): Promise<void> {
    this.loading = true;
    this.stateChanged.emit();
    try {
      if (!this.status) {
        try {
          this.status = await this.client.status();
        } catch (error) {
          if (error instanceof ApiError && error.kind === 'not-found') {
            throw new ApiError(
              'not-found',
              'The jupyter-claude-pods server extension is not enabled on this Jupyter server, so there are no courses here.',
              404
            );
          }
          throw error;
        }
      }
      const list = await this.client.courses();
      this.courses = list.courses ?? [];
      this.problems = list.problems ?? [];
      this.error = null;
      await Promise.all([
        this.refreshTerminals(),
        ...[...this.expanded].map(id => this.loadDetail(id))
      ]);
      this._coursesChanged.emit();
    } catch (error) {
      this.error = describeError(error);
    } finally {
      this.loading = false;
      this.stateChanged.emit();
    }
  }

  async loadDetail(id: string): Promise<void> {
    try {
      const detail = await this.client.course(id);
      this.details.set(id, detail);
      this.courseErrors.delete(id);
      const i = this.courses.findIndex(c => c.id === id);
      if (i >= 0 && detail.progress) {
        this.courses[i] = { ...this.courses[i], progress: detail.progress };
      }
    } catch (error) {
      this.courseErrors.set(id, describeError(error));
    }
    this.stateChanged.emit();
  }

  async refreshTerminals(): Promise<void> {
    // Sandbox events that arrive while the list is being fetched may be newer than the
    // answer: they are replayed over it.
    const during: ISandboxEvent[] = [];
    this._fetching.add(during);
    let models: ITerminalModel[];
    try {
      models = (await this.client.terminals()) ?? [];
    } catch {
      // The page-level error comes from the course list; keep the last known sessions.
      return;
    } finally {
      this._fetching.delete(during);
    }
    this.terminals = during.reduce((list, event) => applySandboxEvent(list, event).models, models);
    this.stateChanged.emit();
  }

  toggle(id: string): void {
    if (this.expanded.has(id)) {
      this.expanded.delete(id);
    } else {
      this.expanded.add(id);
      if (!this.details.has(id)) {
        void this.loadDetail(id);
      }
    }
    this.stateChanged.emit();
  }

  expand(id: string): void {
    if (!this.expanded.has(id)) {
      this.toggle(id);
    }
  }

  select(id: string, stage: number): void {
    this.selected.set(id, stage);
    this.stateChanged.emit();
  }

  feedbackFor(id: string, stage: number): IFeedback | undefined {
    return this.feedback.get(`${id}:${stage}`);
  }

  /** Send a quiz answer; the server checks it and answers with the new progress. */
  async answer(id: string, stage: number, value: string): Promise<void> {
    const key = `${id}:${stage}`;
    if (!value.trim()) {
      this.feedback.set(key, { correct: false, message: 'Type or choose an answer first.' });
      this.stateChanged.emit();
      return;
    }
    this.busy.add(key);
    // Keep this stage on screen while its progress changes, so the feedback stays visible.
    this.selected.set(id, stage);
    this.stateChanged.emit();
    try {
      const result = await this.client.answer(id, stage, value);
      this._applyProgress(id, result.progress);
      let message: string;
      if (!result.correct) {
        message = 'Not quite — have another look at the concepts and try again.';
      } else if (result.progress.course_completed) {
        message = 'Correct! You have completed the whole course.';
      } else if (result.progress.next_stage) {
        message = `Correct! Stage ${stage} is done; stage ${result.progress.next_stage} is open.`;
      } else {
        message = `Correct! Stage ${stage} is done.`;
      }
      this.feedback.set(key, { correct: result.correct, message });
    } catch (error) {
      this.feedback.set(key, { correct: false, message: describeError(error) });
    } finally {
      this.busy.delete(key);
      this.stateChanged.emit();
    }
  }

  /**
   * Open the stock terminal on a course session. `reuse`: focus the course's running
   * session if there is one (the panel's Continue); otherwise always a new session (the
   * launcher card).
   */
  async openCourse(id: string, reuse: boolean): Promise<unknown> {
    const key = `open:${id}`;
    this.busy.add(key);
    this.courseErrors.delete(id);
    this.stateChanged.emit();
    try {
      let name: string | undefined;
      if (reuse) {
        await this.refreshTerminals();
        name = pickSession(this.terminals, id)?.name;
      }
      if (!name) {
        const model = await this.client.startCourseTerminal(id);
        name = model.name;
        this.terminals = [...this.terminals.filter(t => t.name !== name), model];
      }
      const widget = await this._commands.execute('terminal:open', { name });
      void this.refreshTerminals();
      return widget;
    } catch (error) {
      this.courseErrors.set(id, describeError(error));
      throw error;
    } finally {
      this.busy.delete(key);
      this.stateChanged.emit();
    }
  }

  /** Handle one emission of the server's event stream. */
  handleEmission(emission: unknown): void {
    const sandbox = parseSandboxEvent(emission);
    if (sandbox) {
      this._handleSandboxEvent(sandbox);
      return;
    }
    const event = parseProgressEvent(emission);
    if (!event || !isRelevant(event, this.status?.user, this.instructorOpen)) {
      return;
    }
    if (event.user === this.status?.user) {
      this.announcement = announce(event, this.courseTitle(event.course));
      void this._refreshCourse(event.course).then(() => this._progressEvent.emit(event));
    } else {
      this._progressEvent.emit(event);
    }
  }

  /** A sandbox of this user changed state: update its session in place. */
  private _handleSandboxEvent(event: ISandboxEvent): void {
    if (this.status?.user === undefined || event.user !== this.status.user) {
      return;
    }
    for (const pending of this._fetching) {
      pending.push(event);
    }
    const { models, known } = applySandboxEvent(this.terminals, event);
    if (!known) {
      // A terminal opened elsewhere (another tab, the stock launcher): load it once.
      void this.refreshTerminals();
      return;
    }
    this.terminals = models;
    this.stateChanged.emit();
  }

  private async _refreshCourse(id: string): Promise<void> {
    try {
      const list = await this.client.courses();
      this.courses = list.courses ?? [];
      this.problems = list.problems ?? [];
      this.error = null;
      this._coursesChanged.emit();
    } catch (error) {
      this.error = describeError(error);
    }
    if (this.expanded.has(id)) {
      await this.loadDetail(id);
    }
    this.stateChanged.emit();
  }

  private _applyProgress(id: string, progress: IProgress): void {
    const detail = this.details.get(id);
    if (detail) {
      this.details.set(id, { ...detail, progress });
    }
    const i = this.courses.findIndex(c => c.id === id);
    if (i >= 0) {
      this.courses[i] = { ...this.courses[i], progress };
      this._coursesChanged.emit();
    }
  }

  /** One array per terminal-list fetch in flight, collecting the events it may miss. */
  private _fetching = new Set<ISandboxEvent[]>();
  private _coursesChanged = new Signal<this, void>(this);
  private _progressEvent = new Signal<this, IProgressEvent>(this);
}
