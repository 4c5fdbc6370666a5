"""An offline CLIP tokenizer whose vocabulary is the MAM-E prompt vocabulary.

The real models ship OpenAI's 49 408-token CLIP BPE; the tiny models cannot download it and do
not need it. This module *learns* byte-pair merges over the words of the prompt grammar (every
value of :mod:`mame_eval.prompts`) plus common negative-prompt words, so each of those words is
exactly one token, and wraps them in a real :class:`transformers.CLIPTokenizer` (same
normalisation, pre-tokenisation, ``</w>`` word ends, ``<|startoftext|>``/``<|endoftext|>``
specials). It saves and loads with ``save_pretrained``/``from_pretrained`` like any other.

Graceful degradation, as in CLIP: a word outside the vocabulary is spelled out from its
characters (every printable ASCII character is a token, with and without ``</w>``); a character
outside printable ASCII becomes the unknown token. Nothing raises.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from mame_eval.prompts import INPAINT_PROMPT, Area, Density, Laterality, Vendor, View

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"  # also CLIP's padding and unknown token
WORD_END = "</w>"

#: Words people put in negative prompts for mammograms (paper: ``white background``) and
#: a few general image-quality words, so they are single tokens rather than spelled out.
NEGATIVE_WORDS = (
    "white black background blurry blur low quality worst bad ugly noise noisy artifact "
    "artifacts text label letters watermark border frame cropped distorted deformed "
    "cartoon drawing painting photo color colour colored bright dark overexposed "
    "underexposed saturated grainy jpeg"
)

#: Other words that may be useful in prompts about mammograms.
EXTRA_WORDS = (
    "mass masses lesions calcification calcifications tumor tumour breast breasts left right "
    "laterality vendor view views cranio caudal mediolateral oblique dense fatty tissue "
    "pectoral muscle nipple skin implant synthetic real image x ray of the on no"
)

# CLIP's pre-tokeniser: letters group into words, digits stand alone, punctuation runs group.
_WORD_RE = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")

# After lowercasing, these are the characters that can occur: each is a token of its own.
ALPHABET = tuple(sorted(set(string.ascii_lowercase + string.digits + string.punctuation)))


def prompt_words() -> list[str]:
    """Every word of the prompt grammar, the negative-prompt words and the extras, sorted."""
    texts = [INPAINT_PROMPT, "a mammogram in view with and density area", NEGATIVE_WORDS,
             EXTRA_WORDS]
    for enum in (Vendor, View, Laterality, Density, Area):
        texts.extend(member.value for member in enum)
    words = set()
    for text in texts:
        words.update(_WORD_RE.findall(text.lower()))
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that turn each word (plus ``</w>``) into a single token.

    The classic BPE learner: repeatedly merge the most frequent adjacent pair; ties go to the
    lexicographically smallest pair, so the result depends only on ``words``. Applying the
    merges in order to any of the words reproduces it as one token.
    """
    pieces = {w: [*w[:-1], w[-1] + WORD_END] for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter = Counter()
        for seq in pieces.values():
            counts.update(zip(seq, seq[1:], strict=False))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        joined = best[0] + best[1]
        for word, seq in pieces.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            pieces[word] = out


def build_vocab(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges): CLIP's ``vocab.json`` mapping and the ranked ``merges.txt`` pairs."""
    words = prompt_words() if words is None else words
    merges = learn_merges(words)
    tokens = [BOS, EOS, *ALPHABET, *(c + WORD_END for c in ALPHABET)]
    tokens += [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def build_tokenizer(model_max_length: int = 77, words: list[str] | None = None):
    """A :class:`transformers.CLIPTokenizer` over the prompt vocabulary (no download).

    ``model_max_length`` is 77 as in SD v1.5; the longest grammar prompt needs 15 tokens.
    """
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS,
                         eos_token=EOS, pad_token=EOS, model_max_length=model_max_length)
