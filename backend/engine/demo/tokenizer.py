"""A byte-level BPE tokenizer trained locally on the demo's own text, digits one per token, with the special
tokens of the architecture it is built for (Qwen's by default)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Tags and the answer's keys as single tokens: short, stable completions for a tiny model.
EXTRA_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "'Position'", "'Confidence'"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Specials:
    """An architecture's special tokens as its published tokenizer declares them."""
    tokens: tuple[str, ...]
    eos: str
    pad: str
    chat_template: str
    bos: str | None = None
    named: dict[str, str] = field(default_factory=dict)
    """Model-specific named tokens (`boi_token`, `image_token`, ...) its processor reads off the tokenizer."""


QWEN = Specials(tuple(SPECIAL_TOKENS), eos="<|im_end|>", pad="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, specials: Specials = QWEN):
    """A transformers fast tokenizer trained on `corpus`, with `specials` (Qwen's by default)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials.tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    named = {"bos_token": specials.bos} if specials.bos else {}
    others = [t for t in specials.tokens if t not in (specials.pad, specials.bos)]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials.eos, pad_token=specials.pad,
                                   additional_special_tokens=others, **named, **specials.named)
    fast.add_tokens(EXTRA_TOKENS)
    fast.chat_template = specials.chat_template
    return fast
