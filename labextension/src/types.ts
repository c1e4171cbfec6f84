/**
 * Shapes of the server's JSON, as documented in docs/openapi.yaml (routes under
 * /claude-pods/api/) and of the terminal models of /api/terminals.
 *
 * Kept free of JupyterLab imports so the pure modules (and their unit tests) do not
 * pull in the browser-only packages.
 */

export interface ICompletion {
  stage: number;
  completed_at: string;
  source: string;
}

/** A learner's progress in one course (CourseService.progress). */
export interface IProgress {
  course: string;
  completed: ICompletion[];
  course_completed: boolean;
  /** First unfinished stage; null when every stage is done. */
  next_stage: number | null;
  stage_count: number;
  /** Stages the learner may open (sequential: done stages + the next one). */
  unlocked: number[];
}

export interface ICourseSummary {
  id: string;
  title: string;
  description: string;
  stage_count: number;
  trust_tutor_markers: boolean;
  unlock: 'sequential' | 'free' | string;
  progress?: IProgress;
}

export interface IConcept {
  title: string;
  content: string;
}

export interface IQuiz {
  question: string;
  type: 'multiple-choice' | 'free-response' | string;
  options: string[];
}

export interface IStage {
  number: number;
  title: string;
  goals: string[];
  concepts: IConcept[];
  quiz: IQuiz | null;
}

export interface ICourseDetail extends ICourseSummary {
  stages: IStage[];
}

export interface ICourseProblem {
  course: string;
  file: string;
  field: string;
  message: string;
}

export interface ICourseList {
  courses: ICourseSummary[];
  problems: ICourseProblem[];
}

export interface IStatus {
  user: string;
  instructor: boolean;
  backend: string;
  courses_dir_configured: boolean;
  version: string;
}

export interface IAnswerResult {
  correct: boolean;
  stage: number;
  newly_completed: boolean;
  progress: IProgress;
}

export interface IInstructorView {
  learners: { user: string; courses: Record<string, IProgress> }[];
}

/** The extra block our server adds to each terminal model of /api/terminals. */
export interface IClaudePodsTerminalInfo {
  state?: 'starting' | 'running' | 'failed' | 'exited' | string;
  reason?: string | null;
  sandbox?: string | null;
  course?: string | null;
  stage?: number | null;
}

export interface ITerminalModel {
  name: string;
  last_activity?: string;
  claude_pods?: IClaudePodsTerminalInfo;
}

/** The data of one progress event (jupyter_claude_pods/events/progress.yaml, version 1). */
export interface IProgressEvent {
  action: 'stage_completed' | 'course_completed' | 'reset';
  user: string;
  course: string;
  stage: number | null;
  source: string | null;
  session: string | null;
}
