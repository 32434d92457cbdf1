"""Scoring: what a model's answer is worth, in pure Python. Box geometry (IoU, GIoU, matching), answer parsing,
the model families (declared once, with their coordinate conventions) and the conversion at the prompt/parse edge, the reward registry, task
templates and their prompts, held-out metrics, the reward playground, GRPO's group statistics, and drawing boxes
for a person to check them: the one source of truth for both training rewards and evaluation. It imports nothing
else of the project (not storage, data, engine or jobs) and never torch, transformers, TRL or PEFT, not even inside
a function, so that it stays table-testable and cheap to import from anywhere."""
