"""The diffusers ``LLaDA2Pipeline``'s own sampler, run from a re-masked response (``--scheduler pipeline``).

`llada2_loop` is ``LLaDA2Pipeline.__call__``'s block-wise refinement (its step 5) started from any
state: the prompt, then the response with some positions already written and the others masked.
From a fully masked response it reproduces the stock pipeline token for token (same model calls,
same ``scheduler.step`` calls, same generator; ``tests/test_masked_pipelines.py``). Its commit
rule (the ``BlockRefinementScheduler``: the most confident tokens of a block first, a confidence
threshold, optional edits of written tokens) is *not* a sampler of the masked process's reverse
process: a restart measures that sampler's retention, not the theory's, and ``windows.json`` says
so (``describe()["reverse_process"] is False``), as deterministic image samplers are flagged.

`llada2_rows` runs the same loop for many rows in one model call per step, each row as a batch of
one (its own generator, its own scheduler steps, block ends and end-of-sequence stop): a row's
tokens equal `llada2_loop`'s for that row alone. `PipelineSampler` runs `masked.sampler.Restart`s
through it, batched across bases, times and restarts with the same prompt and response lengths:
restart ``k`` draws from a ``torch.Generator`` seeded by its unit seed, so it depends on nothing
else. ``rows`` counts each restart's own steps (rows of the batched calls); ``calls`` the calls.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from .sampler import Sampled, reveal_schedule

__all__ = ["llada2_loop", "llada2_rows", "PipelineSampler"]


@torch.no_grad()
def llada2_loop(model, scheduler, x, *, prompt_length: int, gen_length: int, mask_token_id: int,
                eos_token_id=None, block_length=None, num_inference_steps: int = 32, temperature: float = 0.0,
                top_p=None, top_k=None, sampling_method: str = "multinomial", threshold: float = 0.7,
                editing_threshold=0.5, max_post_steps: int = 16, minimal_topk: int = 1, eos_early_stop: bool = True,
                generator=None, attention_mask=None) -> tuple:
    """``(sequences [B, gen_length], model calls)``: the pipeline's refinement from ``x`` [B, prompt_length +
    gen_length] (mask tokens where the response is open), with ``LLaDA2Pipeline.__call__``'s keywords and
    defaults. ``attention_mask``: the prompt's [B, prompt_length] (ones by default)."""
    device = x.device
    batch, block_length = x.shape[0], block_length or scheduler.config.block_length
    num_inference_steps = min(num_inference_steps, gen_length // minimal_topk)
    scheduler.set_timesteps(num_inference_steps, device=device, block_length=block_length)
    num_blocks = (prompt_length + gen_length + block_length - 1) // block_length
    total = num_blocks * block_length
    attn = torch.zeros((batch, total), device=device, dtype=torch.long)
    attn[:, :prompt_length] = 1 if attention_mask is None else attention_mask
    attn[:, prompt_length:prompt_length + gen_length] = 1
    positions = torch.arange(total, device=device, dtype=torch.long).unsqueeze(0).expand(batch, -1)
    seq = torch.full((batch, total), mask_token_id, device=device, dtype=torch.long)
    seq[:, :prompt_length + gen_length] = x
    finished = torch.zeros((batch,), device=device, dtype=torch.bool)
    editing = editing_threshold is not None and editing_threshold > 0.0
    calls = 0
    for num_block in range(prompt_length // block_length, num_blocks):
        end = (num_block + 1) * block_length
        block_x = seq[:, :end]
        start = num_block * block_length
        prompt_in_block = torch.zeros(block_length, device=device, dtype=torch.bool)
        if start < prompt_length:
            prompt_in_block[:min(prompt_length - start, block_length)] = True
        post_steps, step_idx, go = 0, 0, True
        while go:
            tokens = block_x[:, -block_length:]
            masks_remaining = (tokens == mask_token_id).any()
            if not masks_remaining:
                post_steps += 1
            logits = model(block_x, attention_mask=attn[:, :end], position_ids=positions[:, :end]).logits
            calls += 1
            out = scheduler.step(model_output=logits[:, -block_length:, :], timestep=step_idx, sample=tokens,
                                 mask_token_id=mask_token_id, temperature=temperature, top_p=top_p, top_k=top_k,
                                 sampling_method=sampling_method, threshold=threshold,
                                 editing_threshold=editing_threshold, minimal_topk=minimal_topk,
                                 prompt_mask=prompt_in_block, generator=generator, return_dict=True)
            transfer = out.transfer_index | out.editing_transfer_index
            if eos_early_stop and finished.any():
                transfer = transfer & ~finished[:, None]
            if transfer.any():
                block_x[:, -block_length:] = torch.where(transfer, out.prev_sample, tokens)
            if eos_early_stop and eos_token_id is not None:
                finished = scheduler.check_eos_finished(cur_x=block_x, sampled_tokens=out.sampled_tokens,
                                                        final_transfer=transfer, finished=finished,
                                                        eos_token_id=eos_token_id, mask_token_id=mask_token_id,
                                                        prompt_length=prompt_length)
            if masks_remaining:
                step_idx += 1
            go = scheduler.check_block_should_continue(step_idx=step_idx, masks_remaining=masks_remaining,
                                                       editing_enabled=editing,
                                                       editing_transfer_index=out.editing_transfer_index,
                                                       post_steps=post_steps, max_post_steps=max_post_steps,
                                                       finished=finished)
        seq[:, :end] = block_x
        if eos_early_stop and finished.all():
            break
    return seq[:, prompt_length:prompt_length + gen_length], calls


@torch.no_grad()
def llada2_rows(model, scheduler, x, *, prompt_length: int, gen_length: int, mask_token_id: int, generators,
                eos_token_id=None, block_length=None, num_inference_steps: int = 32, temperature: float = 0.0,
                top_p=None, top_k=None, sampling_method: str = "multinomial", threshold: float = 0.7,
                editing_threshold=0.5, max_post_steps: int = 16, minimal_topk: int = 1,
                eos_early_stop: bool = True) -> tuple:
    """``(sequences [B, gen_length], forward rows per row, model calls)``: each row of ``x`` runs `llada2_loop` as a
    batch of one with its own generator (``generators[i]``), and all rows share every model call. Row ``i``'s
    tokens equal ``llada2_loop(x[i:i+1], generator=generators[i])``'s whatever the other rows (up to the last bits
    of batched logits): the scheduler's steps, block ends and end-of-sequence stops are taken row by row."""
    device, batch = x.device, x.shape[0]
    block_length = block_length or scheduler.config.block_length
    num_inference_steps = min(num_inference_steps, gen_length // minimal_topk)
    scheduler.set_timesteps(num_inference_steps, device=device, block_length=block_length)
    num_blocks = (prompt_length + gen_length + block_length - 1) // block_length
    total = num_blocks * block_length
    attn = torch.zeros((batch, total), device=device, dtype=torch.long)
    attn[:, :prompt_length + gen_length] = 1
    positions = torch.arange(total, device=device, dtype=torch.long).unsqueeze(0).expand(batch, -1)
    seq = torch.full((batch, total), mask_token_id, device=device, dtype=torch.long)
    seq[:, :prompt_length + gen_length] = x
    finished = [torch.zeros((1,), device=device, dtype=torch.bool) for _ in range(batch)]
    editing = editing_threshold is not None and editing_threshold > 0.0
    stopped, rows, calls = [False] * batch, [0] * batch, 0
    for num_block in range(prompt_length // block_length, num_blocks):
        end, start = (num_block + 1) * block_length, num_block * block_length
        prompt_in_block = torch.zeros(block_length, device=device, dtype=torch.bool)
        if start < prompt_length:
            prompt_in_block[:min(prompt_length - start, block_length)] = True
        post, step_idx, go = [0] * batch, [0] * batch, [not s for s in stopped]
        while any(go):
            live = [j for j in range(batch) if go[j]]   # rows whose block is done sit out the call (no wasted rows)
            sub = slice(None) if len(live) == batch else torch.tensor(live, device=device)
            logits = model(seq[sub, :end], attention_mask=attn[sub, :end], position_ids=positions[sub, :end]).logits
            calls += 1
            for i, j in enumerate(live):
                rows[j] += 1
                tokens = seq[j:j + 1, end - block_length:end]
                left = bool((tokens == mask_token_id).any())
                post[j] += not left
                out = scheduler.step(model_output=logits[i:i + 1, -block_length:, :], timestep=step_idx[j],
                                     sample=tokens, mask_token_id=mask_token_id, temperature=temperature, top_p=top_p,
                                     top_k=top_k, sampling_method=sampling_method, threshold=threshold,
                                     editing_threshold=editing_threshold, minimal_topk=minimal_topk,
                                     prompt_mask=prompt_in_block, generator=generators[j], return_dict=True)
                transfer = out.transfer_index | out.editing_transfer_index
                if eos_early_stop and finished[j].any():
                    transfer = transfer & ~finished[j][:, None]
                if transfer.any():
                    seq[j:j + 1, end - block_length:end] = torch.where(transfer, out.prev_sample, tokens)
                if eos_early_stop and eos_token_id is not None:
                    finished[j] = scheduler.check_eos_finished(
                        cur_x=seq[j:j + 1, :end], sampled_tokens=out.sampled_tokens, final_transfer=transfer,
                        finished=finished[j], eos_token_id=eos_token_id, mask_token_id=mask_token_id,
                        prompt_length=prompt_length)
                step_idx[j] += left
                go[j] = scheduler.check_block_should_continue(
                    step_idx=step_idx[j], masks_remaining=left, editing_enabled=editing,
                    editing_transfer_index=out.editing_transfer_index, post_steps=post[j],
                    max_post_steps=max_post_steps, finished=finished[j])
        stopped = [s or bool(eos_early_stop and f.all()) for s, f in zip(stopped, finished)]
        if all(stopped):
            break
    return seq[:, prompt_length:prompt_length + gen_length], rows, calls


@dataclass
class PipelineSampler:
    """A pipeline's own sampler for `MaskedBackend` (module docstring); ``options`` are `llada2_loop`'s keywords."""

    model: object
    scheduler: object
    pipeline: str = "LLaDA2Pipeline"
    options: dict = field(default_factory=dict)

    @classmethod
    def from_parts(cls, model, tokenizer, scheduler, folder, **options):
        if scheduler is None:
            from diffusers import BlockRefinementScheduler

            scheduler = BlockRefinementScheduler()
        name = type(scheduler).__name__
        if name != "BlockRefinementScheduler":
            raise ValueError(f"--scheduler: {name} corrupts with random tokens (DiffusionGemmaPipeline's uniform "
                             "process), not with a mask token: a LLaDA2Pipeline runs its BlockRefinementScheduler")
        return cls(model, scheduler, options={"temperature": 1.0, **options})

    def run(self, restarts, *, mask_id: int, eos_id=None, batch_size=None) -> Sampled:
        """Each restart re-masked (positions from its seed) and refined by `llada2_rows`; restarts with the same prompt
        and response lengths share model calls, ``batch_size`` rows at a time, each with its own generator."""
        device = next(self.model.parameters()).device
        out, rows, calls = [None] * len(restarts), [0] * len(restarts), 0
        groups = {}
        for i, r in enumerate(restarts):
            groups.setdefault((len(r.prompt), len(r.response)), []).append(i)
        size = int(batch_size or 64)
        for (p_len, length), members in sorted(groups.items()):
            for k in range(0, len(members), size):
                chunk = [restarts[i] for i in members[k:k + size]]
                x = torch.tensor([list(r.prompt) + list(r.response) for r in chunk], dtype=torch.long)
                masked = torch.from_numpy(np.stack([reveal_schedule(length, r.t, r.seed)[0] for r in chunk]))
                x[:, p_len:][masked] = mask_id
                gens = [torch.Generator(device=device).manual_seed(int(r.seed)) for r in chunk]
                seq, n_rows, n_calls = llada2_rows(self.model, copy.deepcopy(self.scheduler), x.to(device),
                                                   prompt_length=p_len, gen_length=length, mask_token_id=mask_id,
                                                   eos_token_id=eos_id, generators=gens, **self.options)
                calls += n_calls
                for j, i in enumerate(members[k:k + size]):
                    out[i], rows[i] = tuple(int(v) for v in seq[j].tolist()), n_rows[j]
        return Sampled(tuple(out), tuple(rows), calls)

    def describe(self) -> dict:
        return {"name": f"{self.pipeline}'s {type(self.scheduler).__name__} loop from the re-masked response",
                "stochastic": float(self.options.get("temperature", 0.0)) > 0, "reverse_process": False,
                "note": "confidence-ordered block commits: not a sampler of the masked process's reverse process; "
                        "retention measures this sampler, not the theory's quantity", **{
                            k: v for k, v in self.options.items() if isinstance(v, (int, float, str))}}
