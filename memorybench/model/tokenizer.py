"""A word-level tokenizer shaped like SD's CLIP tokenizer (BOS, EOS, pad = EOS).

Tiny in-code pipelines cannot fetch ``CLIPTokenizer`` files from a hub, so they use a
``PreTrainedTokenizerFast`` over a fixed word list. It behaves like SD 1.x's tokenizer where
the harness and methods care: position 0 is BOS, the prompt ends with EOS, padding repeats
EOS up to ``model_max_length``.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
UNK = "<|unk|>"


def build_word_tokenizer(vocabulary: Iterable[str], max_length: int):
    """Return a ``PreTrainedTokenizerFast`` over ``vocabulary`` (lower-case words)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {BOS: 0, EOS: 1, UNK: 2}
    for word in sorted(set(vocabulary)):
        if word not in vocab:
            vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 0), (EOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,
        model_max_length=max_length,
    )
