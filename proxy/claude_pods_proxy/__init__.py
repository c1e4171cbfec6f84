"""claude-pods-proxy: the only holder of the real Anthropic API key.

Each sandbox (pod or local bubblewrap session) talks to this proxy with a short-lived
session token instead of a key. The proxy checks the token, forwards exactly the two
Messages API routes the Claude Code CLI needs, swaps in the real ``x-api-key``, streams
the reply back untouched and charges the usage to the token's session and user.

Importing the package must stay cheap: the Jupyter server imports
:mod:`claude_pods_proxy.tokens` (stdlib only) to mint tokens, and nothing here may pull
in Tornado, aiohttp or SQLite.
"""

__version__ = "0.1.0"
