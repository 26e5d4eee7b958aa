"""One greedy decode step with fixed shapes, replayed from a CUDA graph when on a GPU.

A :class:`DecodeWorkspace` owns static tensors for ``rows`` sequences that attend ``keys`` cache
positions: the next input token, its cache slot and rotary position, the step counter, the
output buffer and, with a repetition penalty, each row's mask of the token ids seen so far
(prompt and output). Its step reads them, writes the new K/V, penalizes the seen ids' logits as
``transformers``' ``RepetitionPenaltyLogitsProcessor`` does, appends the argmax token, marks it
seen and advances every counter on the device, so a replay needs no host work and no
synchronization; the host only replays and, every few steps, looks for finished rows.
"""

from __future__ import annotations

from typing import Any, Sequence

from pigbench.fastgen.decoder import TextDecoder


class DecodeWorkspace:
    """Static decode state for ``rows`` sequences; see the module docstring.

    ``k_cache``/``v_cache`` are the engine's full caches ``(layers, rows_alloc, Hkv, L_alloc, D)``;
    the workspace uses their first ``rows`` rows. ``scratch`` is a cache position no sequence
    uses (and ``scratch + 1`` too): graph capture runs the step twice there.
    """

    def __init__(self, decoder: TextDecoder, k_cache: Any, v_cache: Any, rows: int, keys: int, max_new_tokens: int,
                 eos_token_ids: Sequence[int], use_graph: bool, pool: Any = None, scratch: int = 0,
                 repetition_penalty: float = 1.0) -> None:
        import torch

        dev = decoder.device
        self.decoder, self.rows, self.keys = decoder, rows, keys
        self.k_cache, self.v_cache = k_cache[:, :rows], v_cache[:, :rows]
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.cache_pos = torch.zeros(rows, dtype=torch.long, device=dev)
        self.rope_pos = torch.zeros(rows, dtype=torch.long, device=dev)
        self.step_index = torch.zeros((), dtype=torch.long, device=dev)
        self.min_new = torch.zeros((), dtype=torch.long, device=dev)
        self.out = torch.zeros(rows, max_new_tokens, dtype=torch.long, device=dev)
        vocab = decoder.lm_head.weight.shape[0]
        self.is_eos = torch.zeros(vocab, dtype=torch.bool, device=dev)
        self.penalty = repetition_penalty
        self.seen = torch.zeros(rows, vocab, dtype=torch.bool, device=dev) if repetition_penalty != 1.0 else None
        if eos_token_ids:
            self.is_eos[list(eos_token_ids)] = True
        self.row_index = torch.arange(rows, device=dev)[:, None]
        self.key_pos = torch.arange(keys, device=dev)
        self.graph = self._capture(pool, scratch) if use_graph else None

    def step(self) -> None:
        """Decode one token for every row (the body captured in the graph)."""
        d = self.decoder
        x = d.embed_tokens(self.tokens)[:, None]
        cos, sin = d.rope(self.rope_pos[:, None])
        mask = ((self.key_pos[None] > self.cache_pos[:, None]).to(d.dtype) * d.mask_min)[:, None, None]
        hidden = d.forward(x, cos, sin, self.k_cache, self.v_cache, self.row_index, self.cache_pos[:, None], mask,
                           self.keys)
        logits = d.logits(hidden[:, -1])
        if self.seen is not None:
            logits = apply_repetition_penalty(logits, self.seen, self.penalty)
        logits = logits.masked_fill(self.is_eos & (self.step_index < self.min_new), float("-inf"))
        nxt = logits.argmax(-1)
        if self.seen is not None:
            self.seen.scatter_(1, nxt[:, None], True)
        self.out.index_copy_(1, self.step_index.view(1), nxt[:, None])
        self.tokens.copy_(nxt)
        self.cache_pos.add_(1)
        self.rope_pos.add_(1)
        self.step_index.add_(1)

    def load(self, tokens: Any, cache_pos: Any, rope_pos: Any, step: int, min_new_tokens: int, seen: Any = None) -> None:
        """Set the state before the first replay: ``step`` tokens already sit in ``out``; ``seen``
        ``(rows, vocab)`` bool marks each row's prompt and output ids (needed with a penalty)."""
        if self.seen is not None:
            self.seen.copy_(seen)
        self.tokens.copy_(tokens)
        self.cache_pos.copy_(cache_pos)
        self.rope_pos.copy_(rope_pos)
        self.step_index.fill_(step)
        self.min_new.fill_(min_new_tokens)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()

    def _capture(self, pool: Any, scratch: int) -> Any:
        import torch

        self.cache_pos.fill_(scratch)
        self.step_index.zero_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step()  # warm-up: kernels and workspaces get chosen outside the capture
            self.step()
        torch.cuda.current_stream().wait_stream(side)
        self.cache_pos.fill_(scratch)
        self.step_index.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.step()
        return graph


def apply_repetition_penalty(logits: Any, seen: Any, penalty: float) -> Any:
    """``logits`` with each ``seen`` id's divided by ``penalty`` if positive, else multiplied by it:
    ``transformers``' ``RepetitionPenaltyLogitsProcessor`` with the same floating-point operations."""
    import torch

    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
