"""Fast greedy generation for Qwen2-VL: the engine behind PIGReward's local backend.

``transformers.generate`` at batch 1 spends most of its time launching kernels (about 60 ms per
decode step for the 7B model, whatever the batch). The engine batches prompts sorted by length,
prefills a prefix shared by several prompts once, keeps a static KV cache, attends with grouped
KV heads read once (no ``repeat_kv``), replays each decode step from a CUDA graph, and stops or
shrinks a batch as its sequences finish. Greedy outputs equal ``generate``'s (tests compare them),
repetition penalty included: the backend passes the checkpoint's ``repetition_penalty`` (1.05 in
Qwen2-VL-7B-Instruct's generation config), which the engine applies as ``generate`` does, from a
per-row mask of seen token ids kept on the device (docs/footguns.md).

Modules: :mod:`inputs` (prompts and settings), :mod:`rope` (M-RoPE positions), :mod:`decoder`
(the language model over a static cache), :mod:`decode_step` (graph-captured step), :mod:`vision`
(the vision tower with same-size images batched), :mod:`engine` (orchestration), :mod:`backend`
(the judging-backend wrapper).
Importing this package imports no model library.
"""

OUTPUT_VERSION = "2"  # bump when the engine's tokens for the same inputs change: cached PIGReward contexts depend on it
