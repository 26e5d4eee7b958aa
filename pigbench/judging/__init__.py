"""LVLM judging: interleaved prompts, one answer parser, and backends (local transformers or any
OpenAI-compatible server) shared by the judge evaluators and PIGReward.

Modules: :mod:`messages` (prompts), :mod:`parsing` (verdicts), :mod:`answer_probs` (P(A) vs P(B)),
:mod:`backend` (the interface), :mod:`local_backend`, :mod:`openai_backend`, :mod:`request_cache`,
:mod:`judge` (the evaluator base), :mod:`random_models` (offline stand-ins for tests and benchmarks).
Importing this package imports no model library.
"""
