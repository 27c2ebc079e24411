"""Critical windows in autoregressive language models: truncate a response, resample the rest."""
