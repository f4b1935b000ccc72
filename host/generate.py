"""Token generation on the host above an `Engine` in decoder mode: sampling, stop criteria, streaming (numpy only).

Sampling of the next token from logits l (V,), in this order (the order Hugging Face's warpers use):
  greedy:       argmax l (lowest index on ties); computed on the device when the overlay allows
                (only the id comes back);
  temperature:  l / T  (T > 0);
  top-k:        keep the k largest logits (ties at the k-th value kept), others -inf (k = 0: all);
  top-p:        sort by probability, keep the smallest prefix whose probability reaches p (at least one
                token), others -inf (p = 1: all);
  draw:         from softmax of what is left with a numpy Generator seeded by ``seed``.
Stop criteria: a token in ``stop_ids`` (not yielded), ``max_new_tokens`` reached, or the context full.
``max_new_tokens = 0`` generates nothing (nothing is launched; the prompt's ids are still checked); a negative
count, prompt ids outside [0, vocab) and non-integer ids are refused (ValueError) before anything is sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .engine import Engine, RunStats


@dataclass
class Sampling:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        real = (int, float, np.integer, np.floating)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, real) \
                or not 0 < self.temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0 (use greedy for argmax), got "
                             f"{self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, real) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0: no top-k), got {self.top_k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def filter_logits(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """Temperature, top-k, top-p applied to logits (float64); removed entries are -inf."""
    x = np.asarray(logits, np.float64) / s.temperature
    if s.top_k and s.top_k < x.size:
        kth = np.partition(x, -s.top_k)[-s.top_k]
        x = np.where(x >= kth, x, -np.inf)
    if s.top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        p = np.exp(x[order] - x[order[0]])
        p /= p.sum()
        cum = np.cumsum(p)
        keep = int(np.searchsorted(cum, s.top_p) + 1)  # smallest prefix reaching top_p
        removed = order[keep:]
        x = x.copy()
        x[removed] = -np.inf
    return x


def sample_token(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    if s.greedy:
        return int(np.argmax(logits))
    x = filter_logits(logits, s)
    p = np.exp(x - np.max(x))
    p /= p.sum()
    return int(rng.choice(p.size, p=p))


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish: str = ""          # "stop" | "length" | "context"
    stats: RunStats | None = None
    first_token_s: float = 0.0


class Generator:
    """Prefill then step the engine, sampling on the host; `stream` yields token ids as they come."""

    def __init__(self, engine: Engine, sampling: Sampling | None = None, stop_ids=(), device_argmax: bool = True):
        if engine.kind != "decoder":
            raise ValueError("text generation needs a decoder overlay")
        self.engine = engine
        self.sampling = sampling or Sampling()
        stop_ids = list(stop_ids)
        self.stop_ids = set(int(i) for i in engine.token_ids(stop_ids)) if stop_ids else set()
        self.device_argmax = device_argmax
        self.last = Generation()

    def stream(self, prompt_ids, max_new_tokens: int) -> Iterator[int]:
        e, s = self.engine, self.sampling
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        prompt = e.token_ids(prompt_ids)  # checked before anything is cast or sent
        rng = np.random.default_rng(s.seed)
        argmax = s.greedy and self.device_argmax
        self.last = gen = Generation()
        e.reset_stats()
        if max_new_tokens == 0:
            gen.finish, gen.stats = "length", e.stats
            return
        t0 = time.perf_counter()
        try:
            out = e.prefill(prompt, argmax=argmax)
            produced = 0
            while True:
                token = out if argmax else sample_token(out, s, rng)
                if token in self.stop_ids:
                    gen.finish = "stop"
                    return
                gen.tokens.append(token)
                produced += 1
                e.stats.new_tokens = produced
                if produced == 1:
                    gen.first_token_s = time.perf_counter() - t0
                yield token
                if produced >= max_new_tokens:
                    gen.finish = "length"
                    return
                if e.position >= e.context:
                    gen.finish = "context"
                    return
                out = e.step(token, argmax=argmax)
        finally:
            e.stats.wall_s = time.perf_counter() - t0
            gen.stats = e.stats

    def generate(self, prompt_ids, max_new_tokens: int) -> list[int]:
        return list(self.stream(prompt_ids, max_new_tokens))
