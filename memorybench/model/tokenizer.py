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


def build_clip_tokenizer(folder, pad_token: str = EOS, max_length: int = 77):
    """A real ``transformers.CLIPTokenizer`` built offline from the byte-pair vocabulary that
    ``open_clip`` ships (the same 49,408 tokens and merges as OpenAI's CLIP tokenizer).

    The vocabulary files are written into ``folder`` (``vocab.json``, ``merges.txt``) so the
    tokenizer can be saved with a pipeline and loaded again without a hub. SD 1.x pads with
    EOS; SD 2.x and SDXL's second encoder (OpenCLIP) pad with ``"!"`` (token 0).
    """
    import gzip
    import json
    from pathlib import Path

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # open_clip's rule: the first line is a header, then 49152 - 256 - 2 merges
    merges = lines[1:49152 - 256 - 2 + 1]
    byte_symbols = list(bytes_to_unicode().values())
    vocab_list = byte_symbols + [s + "</w>" for s in byte_symbols]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(vocab_list)}

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         pad_token=pad_token, model_max_length=max_length)
