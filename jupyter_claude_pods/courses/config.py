"""Operator settings for courses: where they live, where progress is kept, who teaches.

A separate Configurable (``c.CoursesConfig.…``) so course settings read as one group
in ``jupyter_server_config.py`` and can be set without touching the extension app.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from traitlets import List, Unicode, default
from traitlets.config import LoggingConfigurable

COURSES_DIR_ENV = "CLAUDE_PODS_COURSES_DIR"
PROGRESS_DB_ENV = "CLAUDE_PODS_PROGRESS_DB"


class CoursesConfig(LoggingConfigurable):
    """Courses offered to learners and where their progress is stored."""

    courses_dir = Unicode(
        config=True,
        help=f"""Directory holding one sub-directory per course (``<id>/course.yaml`` plus
        its material). Empty: no courses are offered. Defaults to the environment variable
        ``{COURSES_DIR_ENV}``.""",
    )
    progress_db = Unicode(
        config=True,
        help=f"""SQLite file recording which stages each learner completed. Defaults to the
        environment variable ``{PROGRESS_DB_ENV}``, else
        ``<jupyter data dir>/claude_pods/progress.sqlite3``.""",
    )
    instructors = List(
        Unicode(),
        config=True,
        help="""Usernames allowed to see every learner's progress and to mark stages
        complete. Empty: the server's authorizer alone decides who may (resource
        ``claude_pods_instructor``). When set, a user must be listed *and* authorized.""",
    )

    @default("courses_dir")
    def _default_courses_dir(self) -> str:
        return os.environ.get(COURSES_DIR_ENV, "").strip()

    @default("progress_db")
    def _default_progress_db(self) -> str:
        env = os.environ.get(PROGRESS_DB_ENV, "").strip()
        if env:
            return env
        return str(Path(jupyter_data_dir()) / "claude_pods" / "progress.sqlite3")

    def courses_root(self) -> Path | None:
        """The courses directory, or None when courses are switched off."""
        return Path(self.courses_dir).expanduser() if self.courses_dir else None

    def progress_path(self) -> Path:
        """The progress database file."""
        return Path(self.progress_db).expanduser()
