"""Report generator: paper tables, figures and dimension analysis from a results directory.

``pigbench report --results results/ --out report/`` (or
:func:`pigbench.report.document.build_report`) admits only results files that pass validation
(metrics recomputed from their predictions), then writes the main table (PIGReward Table 2
layout), ablation tables and the similarity-metric comparison as Markdown, LaTeX and HTML, the
figures as PNG and SVG, and the dimension analysis. Modules: ``collect`` (admission, shared with
the leaderboard), ``tables``, ``similarity``, ``plots``, ``dimensions``, ``document`` (the report
folder), ``cli``. Importing this package imports none of them (matplotlib stays unloaded).
"""
