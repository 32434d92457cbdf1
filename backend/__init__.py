"""Visual-RFT Studio back end: datasets, rewards, evaluation and (later) training."""
