"""Templates (jinja2, ``templates/``) and static assets (``static/``) of the leaderboard site.

Installed as the data-only package ``pigbench.leaderboard_site`` (see ``pyproject.toml``) so that
``pigbench leaderboard build`` finds them in a checkout, an editable install or a wheel alike.
The builder is :mod:`pigbench.leaderboard`; nothing here runs code.
"""
