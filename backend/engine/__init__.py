"""Engine: models and what they do with images. The model families (transformers class, coordinate convention, LoRA
targets, image-size limits), what a loaded processor makes of an image (`model_input`, one rule per kind of processor in `image_rules`), loading with LoRA or 4-bit
QLoRA (`models`), generation (`inference`), held-out evaluation of a loaded model (`heldout`), the training methods
on TRL (`grpo`, `sft`) and a job's processes, the training settings, GPUs and the GPU memory estimate, the
pre-flight check, and the builder of the embedded demo model and of tiny hub-layout models of every family (`demo/`, the built model in `demo/model`). It may
import data/, scoring/ and storage/, never jobs/ or ui/. torch, transformers, TRL and PEFT are imported inside the
functions that need them, so that the worker and the page can import settings, GPUs and families without them."""
