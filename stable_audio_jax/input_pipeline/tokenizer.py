"""Text tokenizers for the text conditioner, built on the `tokenizers` library (no network).

`TextTokenizer` turns a batch of prompts into fixed-length token ids and an attention
mask, the two inputs of `stable_audio_jax.models.text_encoder.TextEncoder`:

    tokenizer = TextTokenizer.from_file(path, max_length=77)
    ids, mask = tokenizer(["upbeat synth pop, 120 BPM", ""])   # int32 / bool [2, 77]

`from_file` understands the usual on-disk layouts of Hugging Face tokenizers:

- a `tokenizer.json` file, or a directory holding one (any model type, e.g. the WordPiece
  tokenizer shipped with all-MiniLM-L6-v2);
- a directory with RoBERTa/GPT-2 style `vocab.json` + `merges.txt` (byte-level BPE, with
  RoBERTa's `<s> ... </s>` framing when those tokens are in the vocabulary);
- a directory with a BERT WordPiece `vocab.txt` (`[CLS] ... [SEP]`, lower-cased unless a
  `tokenizer_config.json` next to it says `"do_lower_case": false`).
- a directory with a T5 SentencePiece `spiece.model` (Unigram, `... </s>` framing, as HF's
  `T5Tokenizer`; needs the `sentencepiece` package to parse the file).

The reference CLAP text tower uses RoBERTa's tokenizer, which is not available offline
(its weights are not available offline); `train_bpe_tokenizer` trains a byte-level BPE of the same shape (same
special tokens, ids and framing) on the dataset captions instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

DEFAULT_MAX_LENGTH = 77

# RoBERTa's special tokens, in id order (ids 0..4 in a trained tokenizer).
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Tried in order when the tokenizer itself has no padding setting.
_PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|endoftext|>")


class TextTokenizer:
    """Fixed-length batch tokenizer around a `tokenizers.Tokenizer`.

    Every call returns exactly `max_length` tokens per prompt: shorter encodings are padded
    with `pad_id`, longer ones truncated. Truncation happens before the post-processor adds
    its special tokens, so a RoBERTa/BERT tokenizer keeps its closing `</s>` / `[SEP]` as
    the last real token.

    Attributes:
      tokenizer: the configured `tokenizers.Tokenizer` (a private copy; padding and
        truncation are set to `max_length`).
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int = DEFAULT_MAX_LENGTH, pad_token: str | None = None):
        """Wraps `tokenizer` (copied, not modified).

        Args:
          tokenizer: any `tokenizers.Tokenizer`.
          max_length: tokens per prompt, special tokens included.
          pad_token: the padding token; default: the tokenizer's own padding setting, else
            the first of `<pad>`, `[PAD]`, `<|pad|>`, `<|endoftext|>` in its vocabulary,
            else id 0 (padded positions are masked out either way).
        """
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if int(max_length) < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._max_length = int(max_length)
        tok = Tokenizer.from_str(tokenizer.to_str())
        num_special = tok.post_processor.num_special_tokens_to_add(False) if tok.post_processor else 0
        if self._max_length <= num_special:
            raise ValueError(
                f"max_length {max_length} leaves no room for text next to the "
                f"{num_special} special tokens the tokenizer adds"
            )
        pad_id, pad_token = _resolve_pad(tok, pad_token)
        tok.enable_truncation(max_length=self._max_length)
        tok.enable_padding(length=self._max_length, pad_id=pad_id, pad_token=pad_token)
        self.tokenizer = tok
        self._pad_id = pad_id

    # ----------------------------------------------------------------- loading / saving

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_length: int | None = DEFAULT_MAX_LENGTH) -> "TextTokenizer":
        """Loads a tokenizer from disk (see the module docstring for the layouts).

        Args:
          path: a `tokenizer.json` file or a directory.
          max_length: tokens per prompt. None uses the fixed padding (else truncation)
            length stored in the `tokenizer.json` (as `save` writes it), falling back to 77.

        Raises:
          FileNotFoundError: `path` does not exist.
          ValueError: a directory without any of the recognised files.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"tokenizer path {path!r} does not exist")
        if os.path.isdir(path):
            json_path = os.path.join(path, "tokenizer.json")
            if os.path.isfile(json_path):
                tok = Tokenizer.from_file(json_path)
            elif all(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt")):
                tok = _byte_level_bpe_from_files(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
            elif os.path.isfile(os.path.join(path, "vocab.txt")):
                tok = _wordpiece_from_vocab(os.path.join(path, "vocab.txt"), _do_lower_case(path))
            elif os.path.isfile(os.path.join(path, "spiece.model")):
                tok = _t5_unigram_from_spiece(os.path.join(path, "spiece.model"))
            else:
                raise ValueError(
                    f"no tokenizer found in directory {path!r}: looked for tokenizer.json, "
                    "vocab.json + merges.txt (byte-level BPE), vocab.txt (WordPiece) and spiece.model (T5)"
                )
        else:
            try:
                tok = Tokenizer.from_file(path)
            except Exception as e:  # the Rust side raises a bare Exception on bad JSON
                raise ValueError(f"{path!r} is not a tokenizers tokenizer.json file: {e}") from e
        if max_length is None:
            max_length = _stored_length(tok) or DEFAULT_MAX_LENGTH
        return cls(tok, max_length=max_length)

    def save(self, path: str | os.PathLike) -> str:
        """Writes `tokenizer.json` (to `path`, or into `path` if it is a directory).

        The file carries the fixed padding and truncation length, so
        `TextTokenizer.from_file(saved, max_length=None)` restores `max_length` too.
        Returns the file written.
        """
        path = os.fspath(path)
        if os.path.isdir(path) or not path.endswith(".json"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, "tokenizer.json")
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.tokenizer.save(path)
        return path

    # ----------------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, added/special tokens included; every id is below it."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def max_length(self) -> int:
        return self._max_length

    # ------------------------------------------------------------------------- encoding

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenizes a batch.

        Args:
          prompts: `batch` strings; empty strings are fine.

        Returns:
          `(token_ids, mask)`: int32 `[batch, max_length]` and bool `[batch, max_length]`,
          True on real tokens. Every row has at least one True: a prompt that encodes to no
          tokens at all (only possible without special tokens) gets position 0, holding the
          pad id, marked real, so attention never sees a fully masked row.
        """
        if isinstance(prompts, (str, bytes)):
            raise TypeError("prompts must be a sequence of strings, not a single string; wrap it in a list")
        prompts = list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} is a {type(p).__name__}, expected str: {p!r}")
        ids = np.full((len(prompts), self._max_length), self._pad_id, np.int32)
        mask = np.zeros((len(prompts), self._max_length), bool)
        for i, enc in enumerate(self.tokenizer.encode_batch(prompts)):
            ids[i] = enc.ids
            mask[i] = np.asarray(enc.attention_mask, bool)
        mask[~mask.any(axis=1), 0] = True
        return ids, mask

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids (one row) back to text; padding is dropped with the special tokens."""
        return self.tokenizer.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        model = type(self.tokenizer.model).__name__
        return (
            f"TextTokenizer({model}, vocab_size={self.vocab_size}, max_length={self.max_length}, pad_id={self.pad_id})"
        )


def train_bpe_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2, max_length: int = DEFAULT_MAX_LENGTH
) -> TextTokenizer:
    """Trains a RoBERTa-style byte-level BPE tokenizer on `texts`, offline.

    Same layout as RoBERTa's: byte-level pre-tokenizer without a prefix space, no
    normalizer (case-sensitive), special tokens `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
    `<mask>`=4, then the 256 byte symbols, then the learned merges; prompts are framed as
    `<s> ... </s>`. Any text encodes (no unknown tokens), so `vocab_size` only bounds the
    number of merges; a small corpus gives a smaller vocabulary.

    Args:
      texts: training strings (e.g. dataset captions); consumed once.
      vocab_size: upper bound on the vocabulary, special and byte tokens included.
      min_frequency: a pair must occur this often to be merged.
      max_length: `max_length` of the returned tokenizer.
    """
    if vocab_size < len(ROBERTA_SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size must be at least {len(ROBERTA_SPECIAL_TOKENS) + 256} "
            f"(special tokens + 256 bytes), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(ROBERTA_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def checked(items: Iterable[str]) -> Iterable[str]:
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"training text {i} is a {type(t).__name__}, expected str")
            yield t

    tok.train_from_iterator(checked(texts), trainer=trainer)
    _set_roberta_framing(tok)
    return TextTokenizer(tok, max_length=max_length, pad_token="<pad>")


# --------------------------------------------------------------------------- helpers


def _resolve_pad(tok: Tokenizer, pad_token: str | None) -> tuple[int, str]:
    if pad_token is not None:
        pad_id = tok.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the vocabulary")
        return pad_id, pad_token
    if tok.padding is not None:
        return int(tok.padding["pad_id"]), tok.padding["pad_token"]
    for candidate in _PAD_CANDIDATES:
        pad_id = tok.token_to_id(candidate)
        if pad_id is not None:
            return pad_id, candidate
    return 0, tok.id_to_token(0) or "[PAD]"


def _stored_length(tok: Tokenizer) -> int | None:
    strategy = (tok.padding or {}).get("length")
    if strategy:
        return int(strategy)
    if tok.truncation is not None:
        return int(tok.truncation["max_length"])
    return None


def _set_roberta_framing(tok: Tokenizer) -> None:
    """`<s> ... </s>` post-processing, when both tokens exist; registers the special tokens."""
    present = [t for t in ROBERTA_SPECIAL_TOKENS if tok.token_to_id(t) is not None]
    tok.add_special_tokens(present)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if bos is not None and eos is not None:
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", eos), ("<s>", bos), trim_offsets=True, add_prefix_space=False
        )


def _byte_level_bpe_from_files(vocab_json: str, merges_txt: str) -> Tokenizer:
    try:
        model = models.BPE.from_file(vocab_json, merges_txt)
    except Exception as e:
        raise ValueError(f"cannot read byte-level BPE files {vocab_json!r} / {merges_txt!r}: {e}") from e
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    _set_roberta_framing(tok)
    return tok


def _do_lower_case(folder: str) -> bool:
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", True))
    return True


def _wordpiece_from_vocab(vocab_txt: str, lowercase: bool = True) -> Tokenizer:
    """BERT's tokenizer from its `vocab.txt`: BertNormalizer, BertPreTokenizer, WordPiece."""
    try:
        model = models.WordPiece.from_file(vocab_txt, unk_token="[UNK]")
    except Exception as e:
        raise ValueError(f"cannot read WordPiece vocabulary {vocab_txt!r}: {e}") from e
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([t for t in BERT_SPECIAL_TOKENS if tok.token_to_id(t) is not None])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is not None and sep_id is not None:
        tok.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    return tok


def _t5_unigram_from_spiece(spiece_model: str, extra_ids: int = 100) -> Tokenizer:
    """T5's tokenizer from its SentencePiece `spiece.model`, as HF's `T5Tokenizer` builds it.

    Unigram over the model's pieces and scores; the model's precompiled normalisation
    table; whitespace split + Metaspace (`▁` prepended to every word); `</s>` appended;
    `extra_ids` sentinels `<extra_id_{i}>` after the pieces, `<extra_id_0>` last (the
    layout of the released T5 vocabularies).
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:
        raise ImportError(
            f"reading {spiece_model!r} needs the `sentencepiece` package "
            "(pip install sentencepiece), or use a tokenizer.json instead"
        ) from e
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        with open(spiece_model, "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"{spiece_model!r} is not a SentencePiece model: {e}") from e
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError(f"{spiece_model!r} is not a Unigram SentencePiece model (T5's kind)")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    tok = Tokenizer(
        models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id, byte_fallback=proto.trainer_spec.byte_fallback)
    )
    if proto.normalizer_spec.precompiled_charsmap:
        tok.normalizer = normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.add_special_tokens([t for t in ("<pad>", "</s>", "<unk>") if tok.token_to_id(t) is not None])
    tok.add_special_tokens([f"<extra_id_{i}>" for i in range(extra_ids - 1, -1, -1)])
    eos = tok.token_to_id("</s>")
    if eos is None:
        raise ValueError(f"{spiece_model!r} has no </s> piece, which T5 appends to every prompt")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return tok
