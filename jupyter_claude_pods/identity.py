"""Who a request acts for, shared by the terminal and the course handlers.

Terminals and course progress are both owned by a person; both must name that person
the same way, or a learner's terminal would report progress for someone else.
"""

from __future__ import annotations

import getpass
import os

from jupyter_server.auth.identity import (
    IdentityProvider,
    LegacyIdentityProvider,
    PasswordIdentityProvider,
)
from tornado import web

#: Jupyter's own token/password logins: one shared secret, one principal. They name
#: each new browser or API client with a random anonymous user, which identifies a
#: cookie, not a person.
SHARED_SECRET_PROVIDERS = (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)


def server_owner(handler: web.RequestHandler) -> str:
    """The person this server runs for.

    The sandbox terminal manager's ``default_owner`` when it is in use (it is
    configurable), else what that trait defaults to.
    """
    manager = handler.settings.get("terminal_manager")
    owner = getattr(manager, "default_owner", None)
    if isinstance(owner, str) and owner:
        return owner
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def username(handler: web.RequestHandler) -> str:
    """Who owns what this request creates or sees.

    Under an identity provider that knows people (JupyterHub's, or any custom one),
    the authenticated username. Under Jupyter's stock token/password login everyone
    holding the secret is the server's owner, so what they create belongs to that
    owner (as with stock terminals, which every token holder sees).
    """
    provider = handler.settings.get("identity_provider")
    if type(provider) in SHARED_SECRET_PROVIDERS:
        return server_owner(handler)
    user = handler.current_user
    return str(getattr(user, "username", None) or user)
