// Drives Debian's Chromium through playwright-core against the jupyter lab started by
// test_lab.py (LAB_URL, LAB_TOKEN, LAB_USER, CHROMIUM, SCREENSHOT_DIR). Exits non-zero
// with a message on the first failed check. Every wait is on a condition, with a timeout.
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.LAB_URL;
const token = process.env.LAB_TOKEN;
const user = process.env.LAB_USER;
const shots = process.env.SCREENSHOT_DIR;
const COURSE = 'transformer-basics';
const TIMEOUT = 30_000;

async function api(p, method = 'GET', body) {
  const response = await fetch(`${url}/${p}`, {
    method,
    headers: { Authorization: `token ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${method} ${p}: ${response.status} ${text}`);
  }
  return text ? JSON.parse(text) : null;
}

async function until(what, check, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) {
        return value;
      }
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
    }
    await new Promise(r => setTimeout(r, 100));
  }
}

/** Screenshot an element whole: a tall viewport so a scrolling panel shows everything. */
async function shoot(locator, name) {
  const size = page.viewportSize();
  await page.setViewportSize({ width: size.width, height: 1400 });
  await locator.evaluate(el => el.scrollTo?.(0, 0));
  await locator.screenshot({ path: path.join(shots, name) });
  await page.setViewportSize(size);
}

function step(name) {
  console.log(`- ${name}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync'
  ]
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const consoleErrors = [];
  page.on('console', m => {
    if (m.type() === 'error') {
      consoleErrors.push(m.text());
    }
  });

  step('JupyterLab loads with the extension');
  await page.goto(`${url}/lab?token=${token}`);
  await page.waitForSelector('#jp-main-dock-panel');
  await page.waitForFunction(() => window.jupyterapp && window.jupyterapp.started !== undefined);

  step('launcher: a "Claude Code" section with the course card and the sandbox card');
  const section = page.locator('.jp-Launcher-section', {
    has: page.locator('.jp-Launcher-sectionTitle', { hasText: /^Claude Code$/ })
  });
  await section.waitFor();
  const courseCard = section.locator('.jp-LauncherCard', { hasText: 'Transformer basics' });
  await courseCard.waitFor();
  assert.match(await courseCard.innerText(), /stage 1 of 3/);
  assert.match(
    await courseCard.getAttribute('title'),
    /scaled dot-product attention/,
    'the card tooltip carries the course description'
  );
  await section.locator('.jp-LauncherCard', { hasText: 'Claude Code sandbox' }).waitFor();
  await section.screenshot({ path: path.join(shots, 'launcher.png') });

  step('the course card opens the stock terminal on a new course session');
  const before = await api('api/terminals');
  await courseCard.click();
  const created = await until('a course terminal on the server', async () => {
    const now = await api('api/terminals');
    return now.find(
      t => t.claude_pods?.course === COURSE && !before.some(b => b.name === t.name)
    );
  });
  assert.equal(created.claude_pods.stage, 1, 'a new learner resumes at stage 1');
  await page.waitForSelector('.jp-Terminal');
  await until('the terminal tab to be connected to that session', () =>
    page.evaluate(name => {
      const w = window.jupyterapp.shell.currentWidget;
      return w?.content?.session?.name === name && w.content.session.connectionStatus === 'connected';
    }, created.name)
  );
  const textarea = page.locator('.jp-Terminal textarea[aria-label="Terminal input"]');
  await textarea.waitFor({ state: 'attached' });
  const readTerminal = () =>
    page.evaluate(() => {
      const buffer = window.jupyterapp.shell.currentWidget.content._term.buffer.active;
      const lines = [];
      for (let i = 0; i < buffer.length; i++) {
        lines.push(buffer.getLine(i).translateToString(true));
      }
      return lines.join('\n');
    });
  await until('a shell prompt in the sandbox', async () => /\$ $/m.test(await readTerminal()));
  await textarea.focus();
  await page.keyboard.type('echo "course=$CLAUDE_PODS_COURSE_TITLE stage=$CLAUDE_PODS_STAGE"\n');
  await until('the course environment echoed by the sandbox', async () =>
    /course=Transformer basics: attention from scratch stage=1/.test(await readTerminal())
  );

  step('Courses panel: checklist, goals, concepts, quiz');
  await page.locator('.jp-SideBar [data-id="jupyter-claude-pods-courses"]').click();
  const panel = page.locator('#jupyter-claude-pods-courses');
  await panel.waitFor();
  const showPanel = async () => {
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('claude-pods:show-courses');
    });
    await panel.waitFor();
  };
  await panel.getByText('Some courses could not be loaded').waitFor();
  await panel.locator('.jp-ClaudePods-problems', { hasText: 'broken-course' }).waitFor();
  const toggle = panel.locator('.jp-ClaudePods-courseToggle', { hasText: 'Transformer basics' });
  await toggle.waitFor();
  assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  // Keyboard: focus the course and open it with Enter.
  await toggle.focus();
  await page.keyboard.press('Enter');
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  const stage = n => panel.locator(`.jp-ClaudePods-stage:nth-child(${n})`);
  await until('stage titles from the course', async () =>
    (await stage(1).innerText()).includes('Why attention?')
  );
  const states = async () =>
    Promise.all([1, 2, 3].map(n => stage(n).getAttribute('data-state')));
  assert.deepEqual(await states(), ['current', 'locked', 'locked']);
  assert.equal(
    await stage(1).locator('button').getAttribute('aria-current'),
    'step',
    'the current stage is announced as the current step'
  );
  await panel.getByText('Explain why a fixed-size summary vector limits sequence models').waitFor();
  await panel.locator('summary', { hasText: 'The bottleneck' }).click();
  await panel.getByText('must forget detail').waitFor();
  await panel.locator('.jp-ClaudePods-sandbox[data-state="running"]').waitFor();

  step('a wrong answer: feedback, nothing unlocked');
  const quiz = panel.locator('.jp-ClaudePods-quiz');
  const feedback = quiz.locator('.jp-ClaudePods-feedback');
  await quiz.getByLabel('The keys').check();
  await quiz.getByRole('button', { name: 'Check answer' }).click();
  await until('negative feedback', async () => /Not quite/.test(await feedback.innerText()));
  assert.match(await feedback.getAttribute('class'), /jp-ClaudePods-wrong/);
  assert.deepEqual(await states(), ['current', 'locked', 'locked']);

  step('the right answer: feedback, stage 1 done, stage 2 current');
  await quiz.getByLabel('The values').check();
  await quiz.getByRole('button', { name: 'Check answer' }).click();
  await until('positive feedback', async () => /^Correct!/.test(await feedback.innerText()));
  assert.match(await feedback.getAttribute('class'), /jp-ClaudePods-correct/);
  await until('the checklist to update', async () =>
    JSON.stringify(await states()) === JSON.stringify(['done', 'current', 'locked'])
  );
  assert.match(await toggle.innerText(), /stage 2 of 3/);
  await shoot(panel, 'panel.png');
  await page.screenshot({ path: path.join(shots, 'lab.png') });

  step('the launcher card shows the new stage');
  await page.evaluate(async () => {
    await window.jupyterapp.commands.execute('launcher:create');
  });
  await until('the card to say stage 2 of 3', async () =>
    /stage 2 of 3/.test(
      await page
        .locator('.jp-Launcher-section .jp-LauncherCard', { hasText: 'Transformer basics' })
        .last()
        .innerText()
    )
  );

  step('live update: a stage completed elsewhere reaches the panel through the event stream');
  await quiz.getByRole('button', { name: 'Go to stage 2' }).click();
  await api(`claude-pods/api/instructor/progress/${encodeURIComponent(user)}/${COURSE}/2`, 'PUT');
  await until('stage 2 done without a reload', async () =>
    JSON.stringify(await states()) === JSON.stringify(['done', 'done', 'current'])
  );
  await until('the change announced in the live region', async () =>
    /Stage 2 of Transformer basics/.test(await panel.locator('.jp-ClaudePods-sr').innerText())
  );

  step('quota: a second course session is refused with a readable message');
  const launcherCard = page
    .locator('.jp-Launcher-section .jp-LauncherCard', { hasText: 'Transformer basics' })
    .last();
  await launcherCard.click();
  const toast = page.locator('.Toastify__toast', { hasText: 'Limit reached' });
  await toast.waitFor();
  assert.match(await toast.innerText(), /close one first/);

  step('Continue focuses the running course terminal instead of starting another');
  const countBefore = (await api('api/terminals')).length;
  await panel.getByRole('button', { name: 'Continue Transformer basics: attention from scratch in its terminal' }).click();
  await until('the course terminal in front', () =>
    page.evaluate(
      name => window.jupyterapp.shell.currentWidget?.content?.session?.name === name,
      created.name
    )
  );
  assert.equal((await api('api/terminals')).length, countBefore);

  step('instructor table lists the learner and their stages');
  await showPanel();
  await panel.getByRole('button', { name: 'Learner progress (instructor)' }).click();
  const table = page.locator('.jp-ClaudePods-table');
  await table.waitFor();
  const row = table.locator(`tr[data-user="${user}"]`);
  await row.waitFor();
  const cells = await row.locator('td').evaluateAll(tds => tds.map(td => td.dataset.state ?? ''));
  assert.deepEqual(cells.slice(0, 3), ['done', 'done', 'current'], `cells: ${cells}`);
  await page.locator('.jp-ClaudePods-instructorBody').screenshot({
    path: path.join(shots, 'instructor.png')
  });

  step('dark theme: the panel uses theme variables');
  await page.evaluate(async () => {
    await window.jupyterapp.commands.execute('apputils:change-theme', {
      theme: 'JupyterLab Dark'
    });
  });
  await until('the dark theme', () =>
    page.evaluate(() => document.body.dataset.jpThemeLight === 'false')
  );
  await showPanel();
  const colors = await panel.evaluate(el => {
    const style = getComputedStyle(el);
    return { bg: style.backgroundColor, fg: style.color };
  });
  const luminance = rgb => {
    const [r, g, b] = rgb.match(/\d+/g).map(Number);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  assert.ok(luminance(colors.bg) < luminance(colors.fg), `dark panel: ${JSON.stringify(colors)}`);
  await shoot(panel, 'panel-dark.png');

  step('settings: panel on the right, launcher section hidden');
  await api('lab/api/settings/jupyter-claude-pods:plugin', 'PUT', {
    raw: JSON.stringify({ panelPosition: 'right', showLauncherSection: false })
  });
  await page.reload();
  await page.waitForSelector('#jp-main-dock-panel');
  await page.waitForFunction(() => window.jupyterapp?.commands?.hasCommand('claude-pods:show-courses'));
  await page.locator('#jp-right-stack #jupyter-claude-pods-courses').waitFor({ state: 'attached' });
  assert.equal(await page.locator('#jp-left-stack #jupyter-claude-pods-courses').count(), 0);
  await page.evaluate(async () => {
    await window.jupyterapp.commands.execute('launcher:create');
  });
  await page.locator('.jp-Launcher-sectionTitle', { hasText: 'Notebook' }).first().waitFor();
  // The course list loads after the launcher: wait for it, then the section must stay away.
  await page.evaluate(async () => {
    await window.jupyterapp.commands.execute('claude-pods:refresh');
  });
  await page.locator('#jp-right-stack .jp-ClaudePods-courseToggle').first().waitFor({ state: 'attached' });
  // Let Lumino's pending update requests (one animation frame) render the launcher.
  await page.evaluate(
    () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))
  );
  assert.equal(
    await page.locator('.jp-Launcher-sectionTitle', { hasText: /^Claude Code$/ }).count(),
    0,
    'the launcher section is hidden by the setting'
  );

  const ours = consoleErrors.filter(e => /claude|ClaudePods/i.test(e));
  assert.deepEqual(ours, [], 'no console errors from the extension');
  console.log('browser flow: all checks passed');
} catch (error) {
  if (page) {
    await page.screenshot({ path: path.join(shots, 'failure.png') }).catch(() => undefined);
  }
  console.error(error?.stack ?? String(error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
