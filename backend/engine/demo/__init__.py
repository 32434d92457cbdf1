"""The embedded demo model: a byte-level tokenizer trained locally on the demo's own text and tiny models of real
architectures, built deterministically (`python -m backend.engine.demo.builder`); the built model is `model/`."""
