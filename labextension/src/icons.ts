import { LabIcon } from '@jupyterlab/ui-components';

/** A mortarboard over a prompt: courses that run in a terminal. Theme-coloured via jp-icon3. */
const courseSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2 1 7l11 5 9-4.09V13h2V7L12 2z"/>
    <path d="M5 11.5v3.2C5 16.9 8.1 18.5 12 18.5s7-1.6 7-3.8v-3.2l-7 3.2-7-3.2z"/>
    <path d="M3 20h6v2H3zM11 20h10v2H11z"/>
  </g>
</svg>`;

/** A sandbox: a box with a prompt inside. */
const sandboxSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 3h18a1 1 0 0 1 1 1v16a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm1 2v14h16V5H4z"/>
    <path d="m6.3 8.7 1.4-1.4L12.4 12l-4.7 4.7-1.4-1.4L9.6 12 6.3 8.7zM13 15h5v2h-5z"/>
  </g>
</svg>`;

export const courseIcon = new LabIcon({ name: 'jupyter-claude-pods:course', svgstr: courseSvg });
export const sandboxIcon = new LabIcon({ name: 'jupyter-claude-pods:sandbox', svgstr: sandboxSvg });

const lockSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm-3 8V7a3 3 0 0 1 6 0v3H9z"/>
</svg>`;

export const lockIcon = new LabIcon({ name: 'jupyter-claude-pods:lock', svgstr: lockSvg });
