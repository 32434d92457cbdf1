"""Tiny random-weight models of the non-Qwen architectures, laid out like their published checkpoints:
config.json of the real class, the processor and preprocessor configs and the chat template as the hub ships
them, and a tokenizer trained locally with the architecture's special tokens (nothing is downloaded)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from backend.engine.demo.tokenizer import Specials, train_tokenizer

# google/gemma-3-*-it's chat template (tokenizer_config.json / chat_template.json), as published.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

GEMMA3 = Specials(("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                   "<end_of_image>", "<image_soft_token>"), eos="<eos>", pad="<pad>", bos="<bos>",
                  chat_template=GEMMA3_CHAT_TEMPLATE,
                  named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                         "image_token": "<image_soft_token>"})


def _gemma3(tok):
    import transformers
    ids = tok.convert_tokens_to_ids
    # google/gemma-3-4b-it's shape, shrunk: the SigLIP tower at the published 896 px / 14 px patches (its
    # 64x64 patches pooled to 256 tokens), text and vision a few layers wide.
    config = transformers.Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                         max_position_embeddings=4096, sliding_window=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id, ids("<end_of_turn>")]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=896, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=256, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"), tie_word_embeddings=True)
    image = transformers.Gemma3ImageProcessor(**{k: v for k, v in GEMMA3_PREPROCESSOR.items()
                                                 if k not in ("image_processor_type", "processor_class")})
    processor = transformers.Gemma3Processor(image_processor=image, tokenizer=tok, image_seq_length=256,
                                             chat_template=tok.chat_template)
    return transformers.Gemma3ForConditionalGeneration(config), processor, [tok.eos_token_id, ids("<end_of_turn>")]


GEMMA3_PREPROCESSOR = {  # google/gemma-3-4b-it's preprocessor_config.json
    "do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 256,
    "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
    "pan_and_scan_min_ratio_to_activate": None, "processor_class": "Gemma3Processor", "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 896, "width": 896}}


# HuggingFaceTB/SmolVLM2-*-Instruct's chat template, as published (the same text as SmolVLM's): it has no branch
# for video parts; SmolVLMProcessor.apply_chat_template swaps in its own template when a conversation holds a video.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SMOLVLM = Specials(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                    "<image>", "<global-img>", "<video>",
                    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))),
                   eos="<end_of_utterance>", pad="<|im_end|>", bos="<|im_start|>", chat_template=SMOLVLM_CHAT_TEMPLATE,
                   named={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                          "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"})

SMOLVLM_PREPROCESSOR = {  # HuggingFaceTB/SmolVLM2-256M-Video-Instruct's preprocessor_config.json (500M's alike)
    "do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SmolVLMImageProcessor",
    "image_std": [0.5, 0.5, 0.5], "max_image_size": {"longest_edge": 512}, "processor_class": "SmolVLMProcessor",
    "resample": 1, "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 2048},
    "video_sampling": {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": 512}}}


def _smolvlm(tok):
    import transformers
    # SmolVLM2-256M's shape, shrunk: 512-px tiles of 16-px patches, pixel-shuffled by 4 into 64 tokens a tile.
    config = transformers.SmolVLMConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, rope_theta=100000, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=512, patch_size=16),
        scale_factor=4, image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False)
    image = transformers.SmolVLMImageProcessor(**{k: v for k, v in SMOLVLM_PREPROCESSOR.items() if k not in
                                                  ("image_processor_type", "processor_class", "video_sampling")})
    video = transformers.SmolVLMVideoProcessor()
    processor = transformers.SmolVLMProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                                              image_seq_len=64, chat_template=tok.chat_template)
    return transformers.SmolVLMForConditionalGeneration(config), processor, [tok.eos_token_id]


# The chat template of transformers' InternVL layout (OpenGVLab/InternVL3-*-hf, InternVL3_5-*-HF): Qwen's turns,
# an image as <IMG_CONTEXT> on its own line (the processor expands it to <img>, the tiles' tokens, </img>).
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

INTERNVL = Specials(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>",
                     "<ref>", "</ref>", "<box>", "</box>"),
                    eos="<|im_end|>", pad="<|endoftext|>", chat_template=INTERNVL_CHAT_TEMPLATE,
                    named={"start_image_token": "<img>", "end_image_token": "</img>",
                           "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})

INTERNVL_PREPROCESSOR = {  # OpenGVLab/InternVL3_5-1B-HF's preprocessor_config.json
    "crop_size": None, "crop_to_patches": True, "data_format": "channels_first", "default_to_square": True,
    "do_center_crop": None, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "GotOcr2ImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225], "max_patches": 12, "min_patches": 1, "processor_class": "InternVLProcessor",
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 448, "width": 448}}


def _internvl(tok):
    import transformers
    # InternVL3.5-1B-HF's shape, shrunk: an InternViT of 448-px tiles with 14-px patches, pixel-shuffled by 0.5
    # into 256 tokens a tile, feeding a Qwen3 language model.
    config = transformers.InternVLConfig(
        text_config=dict(model_type="qwen3", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=8192, pad_token_id=tok.pad_token_id, tie_word_embeddings=True),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[448, 448], patch_size=[14, 14]),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=256, downsample_ratio=0.5,
        tie_word_embeddings=True)
    image = transformers.GotOcr2ImageProcessor(**{k: v for k, v in INTERNVL_PREPROCESSOR.items() if v is not None and
                                                  k not in ("image_processor_type", "processor_class")})
    video = transformers.InternVLVideoProcessor()
    processor = transformers.InternVLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                                               image_seq_length=256, chat_template=tok.chat_template)
    return transformers.InternVLForConditionalGeneration(config), processor, [tok.eos_token_id]


@dataclass(frozen=True)
class Layout:
    specials: Specials
    build: Callable
    """tokenizer -> (random-weight model, processor, generation eos ids)."""
    files: dict[str, dict]
    """The processor files as the hub ships them (name -> JSON)."""


LAYOUTS: dict[str, Layout] = {
    "gemma3": Layout(GEMMA3, _gemma3, {"preprocessor_config.json": GEMMA3_PREPROCESSOR,
                                       "processor_config.json": {"image_seq_length": 256,
                                                                 "processor_class": "Gemma3Processor"}}),
    "smolvlm": Layout(SMOLVLM, _smolvlm, {"preprocessor_config.json": SMOLVLM_PREPROCESSOR,
                                         "processor_config.json": {"image_seq_len": 64,
                                                                   "processor_class": "SmolVLMProcessor"}}),
    "internvl": Layout(INTERNVL, _internvl, {"preprocessor_config.json": INTERNVL_PREPROCESSOR,
                                             "processor_config.json": {"image_seq_length": 256,
                                                                       "processor_class": "InternVLProcessor"}}),
}


def build(arch: str, out: Path, corpus: list[str]):
    """A random-weight tiny model of `arch` (torch seeded by the caller), saved to `out` in the hub's layout."""
    layout = LAYOUTS[arch]
    tok = train_tokenizer(corpus, specials=layout.specials)
    model, processor, eos = layout.build(tok)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    publish(out, arch)
    return model, processor


def publish(folder: Path, arch: str) -> Path:
    for name, content in LAYOUTS[arch].files.items():
        (Path(folder) / name).write_text(json.dumps(content, indent=2))
    return Path(folder)
