/**
 * jupyter-claude-pods for JupyterLab: a "Claude Code" launcher section (one card per
 * course plus a plain sandbox), a "Courses" side panel and an instructor table.
 *
 * Terminals are JupyterLab's stock Terminal widget: a course card POSTs
 * /api/terminals with `{"course": id}` (the stock TerminalManager.startNew cannot send
 * extra fields) and then runs the stock `terminal:open` command on the new name.
 */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITerminalTracker } from '@jupyterlab/terminal';
import { DisposableSet } from '@lumino/disposable';

import { progressLabel } from './checklist';
import { ClaudePodsClient } from './client';
import { describeError } from './errors';
import { courseIcon, sandboxIcon } from './icons';
import { InstructorModel, InstructorTable } from './instructor';
import { CoursesModel } from './model';
import { CoursesPanel } from './panel';

const PLUGIN_ID = 'jupyter-claude-pods:plugin';
const CATEGORY = 'Claude Code';

export namespace CommandIDs {
  export const openCourse = 'claude-pods:open-course';
  export const continueCourse = 'claude-pods:continue-course';
  export const openSandbox = 'claude-pods:open-sandbox';
  export const showPanel = 'claude-pods:show-courses';
  export const openInstructor = 'claude-pods:open-instructor';
  export const refresh = 'claude-pods:refresh';
}

type Area = 'left' | 'right';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Claude Code courses: launcher cards, a Courses panel and an instructor table.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, ILayoutRestorer, ISettingRegistry, ITerminalTracker],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    terminalTracker: ITerminalTracker | null
  ) => {
    const { commands, serviceManager, shell } = app;
    const client = new ClaudePodsClient(serviceManager.serverSettings);
    const model = new CoursesModel(client, commands);

    // ---- commands -------------------------------------------------------------------
    const reportOpenFailure = (error: unknown) => {
      Notification.error(describeError(error), { autoClose: false });
    };

    commands.addCommand(CommandIDs.openCourse, {
      label: args => {
        const id = args['course'] as string;
        const course = model.summary(id);
        if (!course) {
          return id ? `Course ${id}` : 'Open a Claude Code course';
        }
        return `${course.title} · ${progressLabel(model.progress(id), course.stage_count)}`;
      },
      caption: args => {
        const course = model.summary(args['course'] as string);
        if (!course) {
          return 'Start a Claude Code course session in a new terminal';
        }
        const where = progressLabel(model.progress(course.id), course.stage_count);
        return `${course.description ? course.description + ' — ' : ''}${where}. Opens a new terminal with the course tutor.`;
      },
      icon: courseIcon,
      execute: async args => {
        const id = args['course'] as string;
        try {
          return await model.openCourse(id, false);
        } catch (error) {
          reportOpenFailure(error);
          return undefined;
        }
      }
    });

    commands.addCommand(CommandIDs.continueCourse, {
      label: args => `Continue ${model.courseTitle(args['course'] as string)}`,
      caption: 'Open (or focus) the terminal of this course, starting one if needed',
      icon: courseIcon,
      execute: async args => {
        const id = args['course'] as string;
        // Focus an open tab directly when the tracker knows it.
        if (terminalTracker) {
          const name = model.terminals.find(
            t => t.claude_pods?.course === id && t.claude_pods?.state === 'running'
          )?.name;
          const widget = name
            ? terminalTracker.find(w => w.content.session.name === name)
            : undefined;
          if (widget) {
            shell.activateById(widget.id);
            return widget;
          }
        }
        try {
          return await model.openCourse(id, true);
        } catch (error) {
          reportOpenFailure(error);
          return undefined;
        }
      }
    });

    commands.addCommand(CommandIDs.openSandbox, {
      label: 'Claude Code sandbox',
      caption: 'A terminal with Claude Code in its own sandbox, without a course',
      icon: sandboxIcon,
      execute: () => commands.execute('terminal:create-new')
    });

    // ---- the side panel -------------------------------------------------------------
    const instructorTracker = new WidgetTracker<MainAreaWidget<InstructorTable>>({
      namespace: 'claude-pods-instructor'
    });
    const openInstructor = async () => {
      const open = instructorTracker.currentWidget;
      if (open) {
        shell.activateById(open.id);
        return open;
      }
      const table = new InstructorTable(new InstructorModel(client));
      const widget = new MainAreaWidget({ content: table });
      widget.id = 'jupyter-claude-pods-instructor-main';
      widget.title.label = 'Learner progress';
      widget.title.icon = courseIcon;
      model.instructorOpen = true;
      const onEvent = () => void table.model.refresh();
      model.progressEvent.connect(onEvent);
      widget.disposed.connect(() => {
        model.progressEvent.disconnect(onEvent);
        model.instructorOpen = false;
      });
      shell.add(widget, 'main');
      void instructorTracker.add(widget);
      shell.activateById(widget.id);
      await table.model.refresh();
      return widget;
    };

    commands.addCommand(CommandIDs.openInstructor, {
      label: 'Learner Progress (Claude Code courses)',
      caption: 'A table of every learner’s stages',
      icon: courseIcon,
      isVisible: () => !!model.status?.instructor,
      isEnabled: () => !!model.status?.instructor,
      execute: openInstructor
    });

    const panel = new CoursesPanel(model, { openInstructor: () => void openInstructor() });
    panel.title.label = '';
    let area: Area = 'left';
    // The setting wins over the side a restored workspace remembers.
    const placePanel = () => {
      if (!Array.from(shell.widgets(area)).includes(panel)) {
        shell.add(panel, area, { rank: 650 });
      }
    };
    shell.add(panel, area, { rank: 650 });
    if (restorer) {
      restorer.add(panel, 'jupyter-claude-pods-courses');
      void restorer.restore(instructorTracker, {
        command: CommandIDs.openInstructor,
        name: () => 'instructor'
      });
    }

    commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Claude Code Courses',
      caption: 'Open the Courses side panel',
      icon: courseIcon,
      execute: () => shell.activateById(panel.id)
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Claude Code Courses',
      execute: () => model.refresh()
    });

    if (palette) {
      for (const command of [
        CommandIDs.showPanel,
        CommandIDs.refresh,
        CommandIDs.openSandbox,
        CommandIDs.openInstructor
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    // ---- the launcher section -------------------------------------------------------
    let showLauncher = true;
    let currentItems = new DisposableSet();
    let launcherKey: string | null = null;
    const syncLauncher = () => {
      if (!launcher) {
        return;
      }
      const wanted = showLauncher && model.status !== null;
      // Labels carry the progress; re-adding the items makes open launchers re-render.
      const key = wanted
        ? JSON.stringify(
            model.courses.map(c => [c.id, commands.label(CommandIDs.openCourse, { course: c.id })])
          )
        : null;
      if (key === launcherKey) {
        return;
      }
      launcherKey = key;
      currentItems.dispose();
      currentItems = new DisposableSet();
      if (!wanted) {
        return;
      }
      const item = (options: ILauncher.IItemOptions) => currentItems.add(launcher.add(options));
      model.courses.forEach((course, i) =>
        item({
          command: CommandIDs.openCourse,
          args: { course: course.id },
          category: CATEGORY,
          rank: i,
          categoryRank: 30
        })
      );
      item({ command: CommandIDs.openSandbox, category: CATEGORY, rank: 1000, categoryRank: 30 });
    };
    model.coursesChanged.connect(syncLauncher);

    // ---- settings -------------------------------------------------------------------
    const applySettings = (settings: ISettingRegistry.ISettings) => {
      showLauncher = settings.get('showLauncherSection').composite !== false;
      const wantedArea = settings.get('panelPosition').composite;
      if (wantedArea === 'left' || wantedArea === 'right') {
        area = wantedArea;
        placePanel();
      }
      syncLauncher();
    };
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          applySettings(settings);
          settings.changed.connect(applySettings);
        })
        .catch(reason => console.warn('jupyter-claude-pods: settings not loaded', reason));
    }

    // ---- live updates ---------------------------------------------------------------
    serviceManager.events.stream.connect((_, emission) => model.handleEmission(emission));
    serviceManager.terminals.runningChanged.connect(() => void model.refreshTerminals());

    void app.restored.then(() => {
      placePanel();
      return model.refresh();
    });
  }
};

export default plugin;
