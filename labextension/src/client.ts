/**
 * REST client for /claude-pods/api/ and /api/terminals, through ServerConnection so the
 * token, XSRF cookie and base URL are handled the way the rest of JupyterLab does it.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { errorFromNetwork, errorFromResponse } from './errors';
import type {
  IAnswerResult,
  ICourseDetail,
  ICourseList,
  IInstructorView,
  IProgress,
  IStatus,
  ITerminalModel
} from './types';

export const API_ROOT = 'claude-pods/api';

export class ClaudePodsClient {
  constructor(readonly serverSettings: ServerConnection.ISettings) {}

  /** One request; non-2xx answers and network failures become an ApiError. */
  async request<T>(path: string, what: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.serverSettings.baseUrl, path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.serverSettings);
    } catch (error) {
      throw errorFromNetwork(error, what);
    }
    const text = await response.text().catch(() => '');
    let body: unknown = text;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        // keep the text (an HTML error page from a proxy, say)
      }
    }
    if (!response.ok) {
      throw errorFromResponse(response.status, body, what);
    }
    return (text ? body : undefined) as T;
  }

  private api<T>(path: string, what: string, init?: RequestInit): Promise<T> {
    return this.request<T>(`${API_ROOT}/${path}`, what, init);
  }

  status(): Promise<IStatus> {
    return this.api('status', 'check the Claude Code status');
  }

  courses(): Promise<ICourseList> {
    return this.api('courses', 'load the courses');
  }

  course(id: string): Promise<ICourseDetail & { progress: IProgress }> {
    return this.api(`courses/${encodeURIComponent(id)}`, 'load the course');
  }

  answer(id: string, stage: number, answer: string): Promise<IAnswerResult> {
    return this.api(
      `courses/${encodeURIComponent(id)}/stages/${stage}/answer`,
      'check your answer',
      { method: 'POST', body: JSON.stringify({ answer }) }
    );
  }

  instructorProgress(course?: string): Promise<IInstructorView> {
    const query = course ? `?course=${encodeURIComponent(course)}` : '';
    return this.api(`instructor/progress${query}`, 'load the learners’ progress');
  }

  terminals(): Promise<ITerminalModel[]> {
    return this.request('api/terminals', 'list the terminals');
  }

  /**
   * Start a terminal on a course session. The stock TerminalManager.startNew only
   * sends `name` and `cwd`, so this POSTs the `course` field itself.
   */
  startCourseTerminal(course: string, stage?: number): Promise<ITerminalModel> {
    const body: Record<string, unknown> = { course };
    if (stage !== undefined) {
      body.stage = stage;
    }
    return this.request('api/terminals', 'start a course session', {
      method: 'POST',
      body: JSON.stringify(body)
    });
  }
}
