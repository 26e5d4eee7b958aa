"""PIGReward's machinery: prompts, the reward model's output format and parser, the user-context
cache, and the two-step pipeline. The ``pigreward`` evaluator (``evaluators/pigreward.py``) wires
them to backends. Importing this package imports no model library.

Modules: :mod:`config` (the evaluator's options), :mod:`output_format` (format, strict parser),
:mod:`prompts`, :mod:`context_cache`, :mod:`pipeline` (the two steps), :mod:`backends` (local or
OpenAI-compatible, one per distinct model).
"""
