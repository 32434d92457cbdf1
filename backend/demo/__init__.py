"""The embedded demo: synthetic shapes, a locally trained tokenizer, tiny models of real architectures."""
