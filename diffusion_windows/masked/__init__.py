"""Critical windows of masked (absorbing-state) diffusion language models (THEORY.md, "Masked
diffusion"): re-masking a response as the forward process, the model's reverse process as the
restart.

Modules:
- `resolve`: the kind's registration (`backends.KINDS`): the bundled ``default-masked``, the folders
  it claims (diffusers ``LLaDA2Pipeline`` / ``DiffusionGemmaPipeline`` folders, masked-LM folders)
- `models`: loading (``load_backend``, ``load_masked_lm``: mask token, bidirectional attention checked)
- `sampler`: the ancestral sampler of the masked process, batched over restarts and times
- `schedulers`: ``LLaDA2Pipeline``'s own loop run from a re-masked state, batched over restarts
- `gemma`: ``DiffusionGemmaPipeline``'s own loop (uniform corruption, three schedulers) run from a
  corrupted state, batched over restarts
- `backend`: `MaskedBackend`, the engine's backend (time: fraction masked)
- `default`: the bundled model's tasks, labels and exact theory; `language`: its tokenizer and lengths
"""
