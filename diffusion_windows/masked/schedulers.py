"""The diffusers ``LLaDA2Pipeline``'s own sampler, run from a re-masked response (``--scheduler pipeline``).

`llada2_loop` is ``LLaDA2Pipeline.__call__``'s block-wise refinement (its step 5) started from any
state: the prompt, then the response with some positions already written and the others masked.
From a fully masked response it reproduces the stock pipeline token for token (same model calls,
same ``scheduler.step`` calls, same generator; ``tests/test_masked_pipelines.py``). Its commit
rule (the ``BlockRefinementScheduler``: the most confident tokens of a block first, a confidence
threshold, optional edits of written tokens) is *not* a sampler of the masked process's reverse
process: a restart measures that sampler's retention, not the theory's, and ``windows.json`` says
so (``describe()["reverse_process"] is False``), as deterministic image samplers are flagged.

`PipelineSampler` runs it for a batch of `masked.sampler.Restart`s, one restart at a time (the
scheduler takes one generator per call): restart ``k`` draws from ``torch.Generator`` seeded by its
unit seed, so it depends on nothing else. ``rows`` counts its model calls.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .sampler import Sampled, reveal_schedule

__all__ = ["llada2_loop", "PipelineSampler"]


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
            raise ValueError(f"--scheduler: the pipeline's {name} is not run from a re-masked state; "
                             "the LLaDA2Pipeline's BlockRefinementScheduler is")
        return cls(model, scheduler, options={"temperature": 1.0, **options})

    def run(self, restarts, *, mask_id: int, eos_id=None, batch_size=None) -> Sampled:
        device = next(self.model.parameters()).device
        out, rows, calls = [], [], 0
        for r in restarts:
            masked = reveal_schedule(len(r.response), r.t, r.seed)[0]
            resp = torch.tensor(r.response, dtype=torch.long)
            resp[torch.from_numpy(masked)] = mask_id
            x = torch.tensor(list(r.prompt), dtype=torch.long)
            x = torch.cat([x, resp])[None].to(device)
            g = torch.Generator(device=device).manual_seed(int(r.seed))
            seq, n = llada2_loop(self.model, copy.deepcopy(self.scheduler), x, prompt_length=len(r.prompt),
                                 gen_length=len(r.response), mask_token_id=mask_id, eos_token_id=eos_id,
                                 generator=g, **self.options)
            out.append(tuple(int(v) for v in seq[0].tolist()))
            rows.append(n)
            calls += n
        return Sampled(tuple(out), tuple(rows), calls)

    def describe(self) -> dict:
        return {"name": f"{self.pipeline}'s {type(self.scheduler).__name__} loop from the re-masked response",
                "stochastic": float(self.options.get("temperature", 0.0)) > 0, "reverse_process": False,
                "note": "confidence-ordered block commits: not a sampler of the masked process's reverse process; "
                        "retention measures this sampler, not the theory's quantity", **{
                            k: v for k, v in self.options.items() if isinstance(v, (int, float, str))}}
