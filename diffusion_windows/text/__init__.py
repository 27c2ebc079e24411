"""Critical windows of autoregressive language models (THEORY.md, "Autoregressive models"):
truncation of a response as the forward process, resampling the rest as the reverse one.

Modules:
- `resample`: truncate-and-resample for any transformers causal LM (one pass per base response
  gives every prefix's cache; all truncation points and restarts decode together), built on
  `sampling` (seeded inverse-CDF token draws) and `kvcache` (a cache that grows in place)
- `outcomes`: outcome classifiers text -> label (`regex:`, `answer`, `choices:`, `correct`, callables)
- `localize`: per-response token-level localization (bisection over positions)
- `lm`: loading causal LMs, prompts (chat templates), base responses
- `tasks`: the synthetic tasks of the bundled default language model (the story language of
  `theory.text` and step-by-step addition), their tokenizer and data samplers
"""
