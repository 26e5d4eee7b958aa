"""Cost per decode step of the repetition penalty in :mod:`pigbench.fastgen`: the penalty's ops alone.

One decode step of the engine ends with the argmax over the LM head's float32 logits. With a
repetition penalty (Qwen2-VL-7B-Instruct's checkpoint sets 1.05) it also rescales the logits of
the ids each row has seen (:func:`pigbench.fastgen.decode_step.apply_repetition_penalty`) and marks
the new token seen (a scatter into the ``(rows, vocab)`` mask). This times those ops with the
argmax against the argmax alone (the baseline, measured in the same run), on random logits with
``--seen`` of the ids seen, after a warm-up; compare the difference with a full decode step
(docs/benchmarks.md, PIGReward section).

    python benchmarks/repetition_penalty.py [--rows 256] [--vocab 152064] [--device cuda]
    python benchmarks/repetition_penalty.py --device cpu --rows 4 --vocab 1000 --steps 5   # smoke test
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _device import require_device
from pigbench.fastgen.decode_step import apply_repetition_penalty


def per_step(step, steps: int, device: str) -> float:
    """Seconds per call of ``step``, after 10 warm-up calls."""
    for _ in range(10):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    from _args import positive_int
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=positive_int, default=256, help="sequences decoded together")
    ap.add_argument("--vocab", type=positive_int, default=152064, help="LM head outputs (Qwen2-VL's vocabulary)")
    ap.add_argument("--seen", type=float, default=0.01, help="fraction of ids already seen per row")
    ap.add_argument("--penalty", type=float, default=1.05)
    ap.add_argument("--steps", type=positive_int, default=200)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    require_device(a.device)
    logits = torch.randn(a.rows, a.vocab, device=a.device)
    seen = torch.rand(a.rows, a.vocab, device=a.device) < a.seen
    new = torch.randint(0, a.vocab, (a.rows,), device=a.device)

    def penalized() -> torch.Tensor:
        out = apply_repetition_penalty(logits, seen, a.penalty)
        seen.scatter_(1, new[:, None], True)
        return out.argmax(-1)

    base, with_penalty = per_step(lambda: logits.argmax(-1), a.steps, a.device), per_step(penalized, a.steps, a.device)
    device = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(json.dumps({"device": device, "torch": torch.__version__, "rows": a.rows, "vocab": a.vocab,
                      "argmax_ms": round(base * 1e3, 3), "penalty_and_argmax_ms": round(with_penalty * 1e3, 3),
                      "penalty_adds_ms": round((with_penalty - base) * 1e3, 3), "ratio": round(with_penalty / base, 2)}))


if __name__ == "__main__":
    main()
