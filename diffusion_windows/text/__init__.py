"""Critical windows of autoregressive language models (THEORY.md, "Autoregressive models"):
truncation of a response as the forward process, resampling the rest as the reverse one.

Modules: `tasks` (the synthetic tasks of the bundled default language model: the story
language of `theory.text` and step-by-step addition, their tokenizer and data samplers).
"""
