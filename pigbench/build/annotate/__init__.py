"""Stage 5, the annotation web app: store (SQLite), balanced assignment, and the WSGI app.

See :mod:`pigbench.build.annotate.cli` for the ``pigbench build annotate`` commands.
"""
