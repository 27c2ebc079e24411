"""Block-causal attention: a model called the way its own ``generate()`` calls it (LLaDA2 checkpoints).

A LLaDA2 checkpoint (``model_type`` ``llada2_moe``, `resolve.BLOCK_ATTENTION`) is a block-diffusion model: its
``generate()`` splits prompt + response into blocks of ``block_length`` tokens (32 by default), pads the last
block with mask tokens, and calls the model with a 4-D additive attention mask ``[1, 1, T, T]``: 0 where the
query's block is at or after the key's block, ``-inf`` elsewhere (``tril`` of a blocks x blocks matrix of ones,
each entry repeated ``block_length`` times both ways; in bfloat16, its weights' dtype). Within a block attention
runs both ways; a block never reads a later one. Published copies of its modeling code either refuse a 2-D mask
("only support block attention mask") or pass it to transformers' causal-mask helper, which turns a 2-D mask of
ones into full attention both ways and one with zeros into a causal mask: neither is the attention the model was
run with. So the toolkit's samplers, which call a model with token ids, a 2-D mask and ``position_ids``, call it
through `BlockAttention`.

`BlockAttention(model, block_length, pad_id)` builds that mask for every call (in the model's dtype, expanded
to the batch) and pads a sequence that ends inside a block with ``pad_id`` (the mask token, as ``generate()``
pads), returning the logits of the given positions only. Values of a 2-D mask are not read: the pipeline's
zeros past the response are attended, as ``generate()`` attends its padding. Models that take a 2-D mask are
called unwrapped, exactly as before.
"""
from __future__ import annotations

import torch

__all__ = ["BLOCK_LENGTH", "block_causal_mask", "BlockAttention", "describe"]

BLOCK_LENGTH = 32   # LLaDA2's generate() default block_length (and diffusers' BlockRefinementScheduler's)


def block_causal_mask(total: int, block_length: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[1, 1, total, total]`` additive mask: 0 where key ``j``'s block is at or before query ``i``'s, ``-inf``
    elsewhere (the mask of LLaDA2's ``generate()``)."""
    block = torch.arange(int(total), device=device) // int(block_length)
    seen = block[:, None] >= block[None, :]
    return torch.zeros((1, 1, int(total), int(total)), dtype=dtype, device=device).masked_fill(~seen, float("-inf"))


class BlockAttention(torch.nn.Module):
    """``model`` called with `block_causal_mask` over whole blocks (module docstring); ``.logits`` of the positions
    given. ``block_length``: the blocks; ``pad_id``: the token that fills the last block (the mask token)."""

    def __init__(self, model, block_length: int = BLOCK_LENGTH, pad_id: int | None = None):
        super().__init__()
        if int(block_length) < 1:
            raise ValueError(f"block_length must be >= 1, got {block_length}")
        self.model, self.block_length, self.pad_id = model, int(block_length), pad_id

    @property
    def config(self):
        return self.model.config

    @property
    def device(self):   # what a diffusers pipeline asks of its model
        return self.model.device

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        batch, n = input_ids.shape
        total = -(-n // self.block_length) * self.block_length
        if total > n:
            if self.pad_id is None:
                raise ValueError(f"a sequence of {n} tokens ends inside a block of {self.block_length}: "
                                 "BlockAttention needs pad_id (the mask token) to fill it")
            input_ids = torch.nn.functional.pad(input_ids, (0, total - n), value=int(self.pad_id))
            if position_ids is not None:
                more = torch.arange(1, total - n + 1, device=position_ids.device, dtype=position_ids.dtype)
                position_ids = torch.cat([position_ids, position_ids[:, -1:] + more], dim=1)
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        mask = block_causal_mask(total, self.block_length, dtype=dtype, device=input_ids.device)
        out = self.model(input_ids=input_ids, attention_mask=mask.expand(batch, 1, total, total),
                         position_ids=position_ids, **kwargs)
        if total > n:
            out.logits = out.logits[:, :n]
        return out


def describe(model) -> dict:
    """What ``windows.json`` says of how the samplers call ``model``: nothing for a 2-D mask."""
    if not isinstance(model, BlockAttention):
        return {}
    return {"attention_mask": "block", "block_length": model.block_length,
            "attention_note": "block-causal 4-D mask as the checkpoint's own generate() builds it: a token reads its "
                              "own block and earlier ones, never a later block"}
