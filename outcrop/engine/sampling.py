"""Per-request sampling parameters and the vectorized sampler.

One call samples every row of a batch at once, each row with its own temperature,
top-k, top-p, min-p and penalties. Rows at temperature 0 are greedy (argmax of the
penalized logits). Random rows draw with the exponential-race trick
(``argmax(probs / Exp(1))``), which lets a seeded row take its noise from its own
``torch.Generator`` so that the same seed gives the same text whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Neutral values: a request that sets none of them takes the greedy/argmax fast path.
DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions.


@dataclass
class SamplingParams:
    """What one sequence asks of the sampler (already validated at the HTTP edge)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None  # top-k logprobs to return per token (completions)
    logit_bias: dict[int, float] = field(default_factory=dict)
    # llguidance grammar text (``guided``): the output must match it; None = unconstrained.
    grammar: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


@dataclass
class SampleResult:
    """Per-row results, already moved to the host."""

    token_ids: list[int]
    logprobs: list[float] | None  # logprob of the chosen token, rows that asked only
    top_logprobs: list[list[tuple[int, float]]] | None


class TokenCounts:
    """Per-slot token statistics on the device, for repetition/frequency/presence penalties.

    ``output_counts``: [slots, vocab] occurrences of each token in the slot's output so far.
    ``prompt_seen``: [slots, vocab] whether the token appears in the slot's prompt.
    Allocated lazily the first time a request asks for a penalty.
    """

    def __init__(self, num_slots: int, vocab_size: int, device: torch.device) -> None:
        self.num_slots = num_slots
        self.vocab_size = vocab_size
        self.device = device
        self.output_counts: torch.Tensor | None = None
        self.prompt_seen: torch.Tensor | None = None
        self.tracked = [False] * num_slots

    def _ensure(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.output_counts is None or self.prompt_seen is None:
            self.output_counts = torch.zeros(self.num_slots, self.vocab_size, device=self.device)
            self.prompt_seen = torch.zeros(
                self.num_slots, self.vocab_size, dtype=torch.bool, device=self.device
            )
        return self.output_counts, self.prompt_seen

    def start(self, slot: int, prompt_ids: list[int], track: bool) -> None:
        self.tracked[slot] = track
        if not track:
            return
        counts, seen = self._ensure()
        counts[slot].zero_()
        seen[slot].zero_()
        ids = torch.tensor([i for i in prompt_ids if 0 <= i < self.vocab_size], dtype=torch.long)
        seen[slot, ids.to(self.device)] = True

    def record(self, slots: list[int], token_ids: torch.Tensor) -> None:
        """Count the tokens just sampled for the tracked slots. ``token_ids``: [batch] on the device."""
        if self.output_counts is None:
            return
        rows = [i for i, s in enumerate(slots) if self.tracked[s]]
        if not rows:
            return
        slot_t = torch.tensor([slots[i] for i in rows], device=self.device)
        tok = token_ids[torch.tensor(rows, device=self.device)]
        self.output_counts.index_put_(
            (slot_t, tok), torch.ones_like(tok, dtype=self.output_counts.dtype), accumulate=True
        )


class Sampler:
    """Samples the next token of every row; see the module docstring."""

    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self.vocab_size = vocab_size
        self.device = device
        self._generators: dict[int, torch.Generator] = {}  # keyed by slot

    def seed_slot(self, slot: int, seed: int | None) -> None:
        if seed is None:
            self._generators.pop(slot, None)
            return
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        self._generators[slot] = gen

    def generator_state(self, slot: int) -> torch.Tensor | None:
        """The slot's seeded generator state (None if unseeded), to resume a preempted sequence."""
        gen = self._generators.get(slot)
        return gen.get_state() if gen is not None else None

    def restore_generator(self, slot: int, state: torch.Tensor) -> None:
        self._generators[slot].set_state(state)

    def sample(
        self,
        logits: torch.Tensor,
        slots: list[int],
        params: list[SamplingParams],
        counts: TokenCounts,
        allowed: tuple[list[int], torch.Tensor] | None = None,
    ) -> SampleResult:
        """``allowed``: (rows, [len(rows), vocab] bool) for the grammar-constrained rows only."""
        # logits: [batch, vocab], any float dtype; sampling runs in float32.
        logits = logits.float()
        batch = logits.shape[0]
        want_logprobs = [p.logprobs is not None for p in params]
        raw_logprobs = torch.log_softmax(logits, dim=-1) if any(want_logprobs) else None

        if any(p.needs_penalties for p in params) and counts.output_counts is not None:
            logits = self._apply_penalties(logits, slots, params, counts)
        if any(p.logit_bias for p in params):
            logits = logits.clone()
            for row, p in enumerate(params):
                for tok, bias in p.logit_bias.items():
                    if 0 <= tok < logits.shape[1]:
                        logits[row, tok] += bias
        if allowed is not None:  # constrained rows only; the others pay nothing
            rows, mask = allowed
            index = torch.tensor(rows, device=logits.device)
            logits = logits.index_put((index,), logits[index].masked_fill(~mask, float("-inf")))

        greedy_tokens = logits.argmax(dim=-1)
        if all(p.greedy for p in params):
            next_tokens = greedy_tokens
        else:
            next_tokens = self._sample_random(logits, greedy_tokens, slots, params, batch)

        token_list: list[int] = next_tokens.tolist()
        if raw_logprobs is None:
            counts.record(slots, next_tokens)
            return SampleResult(token_list, None, None)
        chosen = raw_logprobs.gather(1, next_tokens[:, None])[:, 0].tolist()
        k_max = max((p.logprobs or 0) for p in params)
        top: list[list[tuple[int, float]]] = [[] for _ in range(batch)]
        if k_max > 0:
            values, indices = raw_logprobs.topk(k_max, dim=-1)
            v_list, i_list = values.tolist(), indices.tolist()
            for row, p in enumerate(params):
                k = p.logprobs or 0
                top[row] = list(zip(i_list[row][:k], v_list[row][:k], strict=True))
        # Counted last: if anything above raises, the engine retries rows one by one, and a
        # token must not be counted twice.
        counts.record(slots, next_tokens)
        return SampleResult(token_list, chosen, top)

    def _apply_penalties(
        self, logits: torch.Tensor, slots: list[int], params: list[SamplingParams], counts: TokenCounts
    ) -> torch.Tensor:
        assert counts.output_counts is not None and counts.prompt_seen is not None
        slot_t = torch.tensor(slots, device=self.device)
        out_counts = counts.output_counts.index_select(0, slot_t)  # [batch, vocab]
        seen = counts.prompt_seen.index_select(0, slot_t) | (out_counts > 0)
        rep = torch.tensor([p.repetition_penalty for p in params], device=self.device)[:, None]
        freq = torch.tensor([p.frequency_penalty for p in params], device=self.device)[:, None]
        pres = torch.tensor([p.presence_penalty for p in params], device=self.device)[:, None]
        # HF repetition penalty: divide positive logits, multiply negative ones, for seen tokens.
        penalized = torch.where(logits > 0, logits / rep, logits * rep)
        logits = torch.where(seen, penalized, logits)
        # OpenAI penalties count output tokens only.
        logits = logits - freq * out_counts - pres * (out_counts > 0).to(logits.dtype)
        return logits

    def _sample_random(
        self,
        logits: torch.Tensor,
        greedy_tokens: torch.Tensor,
        slots: list[int],
        params: list[SamplingParams],
        batch: int,
    ) -> torch.Tensor:
        temps = torch.tensor(
            [p.temperature if p.temperature > 0 else 1.0 for p in params], device=self.device
        )
        logits = logits / temps[:, None]
        if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
            logits = self._apply_top_k_top_p(logits, params)
        probs = torch.softmax(logits, dim=-1)
        if any(p.min_p > 0 for p in params):
            min_p = torch.tensor([p.min_p for p in params], device=self.device)[:, None]
            top_prob = probs.max(dim=-1, keepdim=True).values
            probs = torch.where(probs < min_p * top_prob, torch.zeros_like(probs), probs)
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p.
        noise = torch.empty_like(probs)
        noise.exponential_()
        for row, slot in enumerate(slots):
            gen = self._generators.get(slot)
            if gen is not None:
                noise[row].exponential_(generator=gen)
        sampled = (probs / noise).argmax(dim=-1)
        is_greedy = torch.tensor([p.greedy for p in params], device=self.device)
        return torch.where(is_greedy, greedy_tokens, sampled)

    def _apply_top_k_top_p(self, logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
        vocab = logits.shape[-1]
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)  # [batch, vocab]
        ks = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=self.device)
        ranks = torch.arange(vocab, device=self.device)[None, :]
        remove = ranks >= ks[:, None]
        top_ps = torch.tensor([p.top_p for p in params], device=self.device)[:, None]
        probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        mass_before = probs.cumsum(dim=-1) - probs
        remove = remove | (mass_before >= top_ps)
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        return torch.empty_like(logits).scatter_(1, sorted_idx, sorted_logits)
