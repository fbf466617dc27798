"""Caption encoding for the cache: ComfyUI's own tokenizers and text encoders, with FLUX's T5 at the
reference pipeline's fixed length.

The reference pipeline (diffusers ``FluxPipeline``, ``max_sequence_length=512``) tokenizes T5 with
truncation and padding to exactly 512 tokens: at most 511 text tokens, the end token ``</s>`` (id 1),
then pad tokens (id 0). ComfyUI's FLUX T5 tokenizer pads to at least 256 tokens and never truncates,
so a long caption gives a longer context. :func:`fit_t5_tokens` brings ComfyUI's token list to the
reference length; every cached context then has shape [512, C] and batches stack.

Mask: ComfyUI runs FLUX's T5 without an attention mask (``T5XXLModel(attention_mask=False)``): pad
tokens are attended to like text tokens, inside T5 and by the FLUX transformer, as in the reference
pipeline (which passes no mask to T5 nor to the transformer). The cache therefore stores the plain
[512, C] context; nothing is masked, at training time as at inference.

CLIP-L keeps ComfyUI's 77-token windows; FLUX reads only its pooled output.

FLUX.2 [klein]'s Qwen3 encoders are used as ComfyUI tokenizes them (padded to at least 512 tokens, never
truncated); they give no pooled output, so the pooled vector is cached empty ([0]) and FLUX.2 training
ignores it. ComfyUI's FLUX.2 model left-pads a shorter context to 512 tokens when it samples; the trainer
does the same through the base (:meth:`infusenet.trainer.loop.FrozenBase.text_context`).
"""
from __future__ import annotations

import torch

T5_TOKENS = 512
T5_END, T5_PAD = 1, 0
T5_KEYS = ("t5xxl",)


def literal_caption(caption: str) -> str:
    """The caption with ComfyUI's prompt-weight syntax escaped: a caption's ``(`` and ``)`` are text,
    as the reference pipeline reads them, not ``(word:1.2)`` emphasis."""
    return caption.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def fit_t5_tokens(batches: list[list[tuple]], length: int = T5_TOKENS) -> list[list[tuple]]:
    """ComfyUI's T5 token list (one window of ``(token, weight[, word_id])``) truncated and padded to
    ``length``: the first ``length - 1`` text tokens, the end token, then pad tokens."""
    if length < 2:
        raise ValueError(f"a T5 context needs at least 2 tokens (text and end); got length {length}")
    flat = [t for window in batches for t in window]
    if not flat:
        raise ValueError("the T5 tokenizer returned no tokens")
    arity = len(flat[0])
    end_at = next((i for i, t in enumerate(flat) if t[0] == T5_END), len(flat))
    text = flat[:end_at][: length - 1]
    extra = (0,) * (arity - 2)
    fitted = text + [(T5_END, 1.0, *extra)]
    fitted += [(T5_PAD, 1.0, *extra)] * (length - len(fitted))
    return [fitted]


def tokenize_caption(clip, caption: str, t5_tokens: int = T5_TOKENS) -> dict:
    """ComfyUI tokens for ``caption`` with every T5 window fitted to ``t5_tokens`` (other encoders as
    ComfyUI tokenizes them)."""
    tokens = clip.tokenize(literal_caption(caption))
    return {k: (fit_t5_tokens(v, t5_tokens) if k in T5_KEYS else v) for k, v in tokens.items()}


def encode_caption(clip, caption: str, t5_tokens: int = T5_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI CLIP -> (context [T, C], pooled [P]) float32 on CPU; T = ``t5_tokens`` for FLUX's T5,
    ComfyUI's length for other encoders (77 per window for CLIP-L alone); pooled [0] for encoders without
    a pooled output (FLUX.2 [klein]'s)."""
    cond, pooled = clip.encode_from_tokens(tokenize_caption(clip, caption, t5_tokens), return_pooled=True)
    pooled = torch.zeros(0) if pooled is None else pooled[0].float().cpu()
    return cond[0].float().cpu(), pooled
