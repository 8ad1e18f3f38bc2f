"""A tiny Qwen2.5-VL built offline: a complete model folder for tests, demos and benchmarks.

:func:`build_tiny_model` writes a folder that honours the model directory contract
(:mod:`engine.modeldir`) exactly like an exported model: randomly initialised weights of the
real architecture (656 k parameters, 2.6 MB), a byte-level BPE tokenizer trained on chain text
with Qwen's special tokens, a Qwen-style chat template with ``{% generation %}`` markers (so
trl's ``assistant_only_loss`` works), a 112×112-pixel image processor (16 image tokens for a
square frame) and a manifest. Nothing is downloaded; the same seed gives the same bytes.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.chain import (
    CvsState,
    InstrumentSighting,
    Mention,
    Perception,
    Relations,
    TripletMention,
    format_box,
    render_perception,
    render_relations,
)
from engine.modeldir import Manifest, Stage
from engine.ontology import Ontology, load_ontology
from engine.prompts import load_prompts
from engine.vlm_processor import load_processor, processor_class_for

__all__ = [
    "ARCHITECTURE",
    "CHAT_TEMPLATE",
    "IMAGE_SIZE",
    "SPECIAL_TOKENS",
    "build_tiny_model",
    "chain_corpus",
    "load_processor",
]

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
IMAGE_SIZE = 112  # min_pixels = max_pixels = 112 * 112: a square frame becomes 4x4 = 16 image tokens
VOCAB_SIZE = 800
SPECIAL_TOKENS = (
    "<|endoftext|>",  # pad
    "<|im_start|>",
    "<|im_end|>",  # eos
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL's template, plus {% generation %} around what the assistant writes (its end token
# included, so a model trained with assistant_only_loss learns to stop).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'text' or 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>{% endgeneration %}\n"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' or 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SAFETY = (
    "the cystic plate is not yet exposed; do not clip.",
    "two structures are seen entering the gallbladder; clipping may proceed.",
    "bleeding from the gallbladder bed is controlled.",
    "no safety concern in this view.",
    "the view is obscured by smoke; wait before dissecting.",
    "keep the hook away from the common bile duct.",
)


@dataclass(frozen=True)
class ModelSize:
    """A tiny model's shape: the text decoder's, the vision tower's, and the pixels a frame is resized to."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    mrope: tuple[int, int, int]  # mrope sections: head_dim / 2 in all
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_intermediate: int = 128
    image_pixels: int = IMAGE_SIZE * IMAGE_SIZE  # min = max pixels: the image-token count is fixed per aspect
    # Qwen2.5-VL's vision tower knows positions only through rotary embeddings (relative); Qwen3-VL's adds learned
    # absolute position embeddings, which a box's coordinates are read from. (ONNX export: Qwen2.5-VL only.)
    architecture: str = ARCHITECTURE


SIZES = {
    "tiny": ModelSize(128, 256, 2, 4, 2, (4, 6, 6)),  # ~0.66 M parameters: tests, demos
    "small": ModelSize(256, 768, 4, 4, 2, (8, 12, 12)),  # ~3.5 M parameters: learns chain formats on CPU
    # The demo size: a 16:9 frame is read at 336x168 (12x6 = 72 image tokens, against 15 for "tiny"),
    # by a 4-block vision tower; ~2.2 M parameters. The bundled demo model is this size, trained by
    # train/recipes/demo-size.yaml and continued at 448x252 by demo-448.yaml (the README has the figures).
    "demo": ModelSize(192, 512, 3, 4, 2, (6, 9, 9), 4, 96, 256, 336 * 196),
    # The demo size as a Qwen3-VL: 16-pixel patches, a 16:9 frame read at 384x192 (the same 72 image tokens).
    "demo-qwen3": ModelSize(192, 512, 3, 4, 2, (8, 8, 8), 4, 96, 256, 384 * 224, "Qwen3VLForConditionalGeneration"),
    # The GPU variant (train/recipes/gpu-large.yaml, bench/gpu_train.sh): twice the width and depth of the demo's
    # decoder, a vision tower twice as wide and deep, and the 640x360 frame at its own size (644x364: 26x46 patches,
    # 299 image tokens): 14.4 M parameters. On two CPU cores an SFT step of 4 frames takes 3.3 s (the demo size's:
    # 0.63 s), so the GPU recipe's 2,000 steps of 32 frames would take about 15 hours there; not yet trained on a GPU.
    "demo-large": ModelSize(384, 1024, 6, 6, 2, (8, 12, 12), 8, 192, 512, 644 * 364),
}


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    *,
    init_std: float = 0.02,
    size: str = "tiny",
) -> Path:
    """Write a complete, loadable tiny Qwen2.5-VL model folder to ``out_dir`` and return it.

    ``corpus`` replaces the generated chain corpus the tokenizer is trained on. ``init_std`` is
    the weights' initial spread: 0.02 (transformers' default, the measured SFT recipe) makes
    greedy output one token repeated; 0.1 gives varied text, as streaming tests and demos want.
    The folder is
    assembled beside ``out_dir`` and renamed into place, so a crash never leaves half a model;
    ``out_dir`` must not exist or be empty.
    """
    import torch
    import transformers
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ontology = load_ontology()
    texts = list(corpus) if corpus is not None else chain_corpus(seed=seed, ontology=ontology)
    tokenizer = _train_tokenizer(texts)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    shape = SIZES[size]
    config = _config(len(tokenizer), ids, init_std, shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, shape.architecture)(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    parameters = sum(p.numel() for p in model.parameters())

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _processor(tokenizer, shape.image_pixels, shape.architecture).save_pretrained(tmp)
        prompts = load_prompts()
        Manifest(
            name=f"tiny-qwen2.5-vl-s{seed}",
            base_architecture=shape.architecture,
            ontology_version=ontology.version,
            prompts_version=prompts.version,
            profile="surgview",
            lineage=[
                Stage(
                    name="init",
                    data=["generated chain corpus" if corpus is None else "caller's corpus"],
                    seed=seed,
                    details={
                        "parameters": parameters,
                        "vocab_size": len(tokenizer),
                        "corpus_texts": len(texts),
                        "init_std": init_std,
                    },
                )
            ],
            evaluation={},
            extra={"description": "randomly initialised; for tests, demos and benchmarks only"},
        ).write(tmp)
        for file in tmp.iterdir():  # some writers (and mkdtemp) create private files
            file.chmod(0o644)
        tmp.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def chain_corpus(seed: int = 0, chains: int = 300, ontology: Ontology | None = None) -> list[str]:
    """Chain strings in the canonical and the Surg-R1 short form, plus every prompt's text."""
    ontology = ontology or load_ontology()
    rng = random.Random(seed)
    texts = [_random_chain(rng, ontology) for _ in range(chains)]
    prompts = load_prompts()
    texts.append(prompts.system)
    for task, template in prompts.tasks.items():
        example = {"width": 854, "height": 480, "instrument": rng.choice(ontology.tool.labels).display}
        texts.append(prompts.build(task, ontology, **{k: v for k, v in example.items() if k in template.fields}))
    return texts


def _random_chain(rng: random.Random, ontology: Ontology) -> str:
    width, height = rng.choice([(854, 480), (1920, 1080), (1280, 720), (640, 360)])
    triplets = rng.sample(ontology.triplets, rng.randint(1, 3))
    named = [ontology.triplet(t.id) for t in triplets]
    sightings = []
    for instrument, _, _ in named:
        tool = ontology.tool_for_instrument(instrument)
        x1, y1 = rng.randrange(width // 2), rng.randrange(height // 2)
        box = (x1, y1, x1 + rng.randrange(40, width // 2), y1 + rng.randrange(40, height // 2))
        confidence = round(rng.uniform(0.3, 1.0), 2) if rng.random() < 0.7 else None
        sightings.append(InstrumentSighting(Mention("tool", tool.display, tool.name), box, confidence))
    anatomy = [Mention("anatomy", a.display, a.name) for a in rng.sample(ontology.anatomy.labels, rng.randint(1, 4))]
    level1 = render_perception(Perception(tuple(sightings), tuple(anatomy)))
    relations = Relations(
        tuple(
            TripletMention(
                Mention("instrument", i.display, i.name),
                Mention("verb", v.display, v.name),
                Mention("target", t.display, t.name),
                trip.id,
            )
            for trip, (i, v, t) in zip(triplets, named, strict=True)
        )
    )
    level2 = render_relations(relations)
    phase = rng.choice(ontology.phase.labels)
    cvs = [rng.choice(list(CvsState)) for _ in range(3)]
    cvs_text = ", ".join(f"C{i + 1} {state.value}" for i, state in enumerate(cvs))
    level3 = f"Phase: {phase.display}. CVS: {cvs_text}. Safety: {rng.choice(_SAFETY)}"
    triplet_text = "; ".join(f"{i.display} {v.display} {t.display}" for i, v, t in named)
    answers = [
        f"{'ABCDEFG'[phase.id]}. {phase.display}",
        triplet_text,
        cvs_text,
        format_box(sightings[0].box) if sightings[0].box else "none",
        f"Phase: {phase.display}. Triplets: {triplet_text}. CVS: {cvs_text}.",
    ]
    answer = rng.choice(answers)
    if rng.random() < 0.2:  # Surg-R1's short form: a declared level, "L1:" headers
        level = rng.randint(1, 3)
        body = " ".join(
            f"L{n}: {text}" for n, text in zip((1, 2, 3), (level1, level2, level3), strict=True) if n <= level
        )
        return f"<think> This is a Level {level} task. {body} </think> <answer>{answer}</answer>"
    return (
        f"<think>\nLevel 1 (Perception): {level1}\nLevel 2 (Relation): {level2}\n"
        f"Level 3 (Context): {level3}\n</think>\n<answer>{answer}</answer>"
    )


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # One token per digit, as Qwen's own tokenizer splits numbers: a box coordinate is then always
    # hundreds, tens, units. Merged digits ("3"+"34" for 334 but "36"+"6" for 366) give the same
    # value different token boundaries, which a small model learns far more slowly.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )


def _processor(tokenizer, pixels: int = IMAGE_SIZE * IMAGE_SIZE, architecture: str = ARCHITECTURE):
    from transformers import Qwen2VLImageProcessorPil

    qwen3 = architecture != ARCHITECTURE  # 16-pixel patches, normalised to [-1, 1]
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]} if qwen3 else {}
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=16 if qwen3 else 14, merge_size=2, **norm
    )
    return processor_class_for(architecture)(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def _config(vocab_size: int, ids: dict[str, int], init_std: float, size: ModelSize = SIZES["tiny"]):
    """Qwen2.5-VL's config, or Qwen3-VL's (16-pixel patches, absolute position embeddings, interleaved M-RoPE)."""
    import transformers

    qwen3 = size.architecture != ARCHITECTURE
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": list(size.mrope)}
    text = {
        "vocab_size": vocab_size,
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": 4096,
        "rope_parameters": rope | ({"mrope_interleaved": True} if qwen3 else {}),
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
        "initializer_range": init_std,
    }
    vision = {
        "depth": size.vision_depth,
        "hidden_size": size.vision_hidden,
        "intermediate_size": size.vision_intermediate,
        "num_heads": 4,
        "out_hidden_size": size.hidden,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": init_std,
    }
    if qwen3:
        text["head_dim"] = size.hidden // size.heads
        vision |= {
            "patch_size": 16,
            "num_position_embeddings": 576,  # a 24x24 grid, interpolated to the frame's patches
            "deepstack_visual_indexes": [size.vision_depth // 2 - 1],
        }
    else:
        vision |= {"patch_size": 14, "window_size": 112, "fullatt_block_indexes": list(range(1, size.vision_depth, 2))}
    config_class = transformers.Qwen3VLConfig if qwen3 else transformers.Qwen2_5_VLConfig
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
