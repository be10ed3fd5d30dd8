"""The cross-encoder reranker: it learns a hand-made case the bi-encoder cannot settle (one short
form, two concepts, told apart only by context), the linker uses it and keeps both scores, and it
survives the pipeline's disk and bytes round trips in torch and ONNX form."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import spacy

from spacy_el.io import InputError
from spacy_el.kb.index import Candidate, ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.sap.rerank.context import candidate_text, concept_names, mention_in_context
from spacy_el.sap.config import TrainConfig

NAMES = [
    ("MESH:D010009", "Schwartz-Jampel syndrome"), ("MESH:D010009", "chondrodystrophic myotonia"),
    ("MESH:D013262", "Stevens-Johnson syndrome"), ("MESH:D013262", "drug rash syndrome"),
    ("MESH:D003920", "diabetes mellitus"), ("MESH:D009369", "neoplasms"),
]
#: (title, abstract) pairs: "SJS" is Schwartz-Jampel next to myotonia, Stevens-Johnson next to a drug rash.
DOCS = [
    ("MESH:D010009", "Myotonia SJS myotonia.", "The myotonia SJS myotonia is lifelong."),
    ("MESH:D013262", "A drug rash SJS rash.", "Blistering rash SJS rash after the drug."),
    ("MESH:D010009", "Joint myotonia SJS myotonia.", "Dwarfism and myotonia SJS myotonia."),
    ("MESH:D013262", "Mucosal rash SJS rash.", "The drug rash SJS rash needs care."),
]


def write_pubtator(path, docs=DOCS):
    lines = []
    for n, (cid, title, abstract) in enumerate(docs, start=1):
        pmid = str(1000 + n)
        text = f"{title} {abstract}"
        lines += [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        start = -1
        while (start := text.find("SJS", start + 1)) != -1:
            lines.append(f"{pmid}\t{start}\t{start + 3}\tSJS\tDisease\t{cid.split(':')[1]}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    from spacy_el.sap.encoder import SapEncoder

    return SapEncoder.load(tiny_bert_dir, device="cpu")


@pytest.fixture(scope="module")
def index(encoder):
    return ConceptIndex.build(ConceptTable.from_rows(NAMES), encoder, use_gpu=False)


@pytest.fixture(scope="module", params=[False, True], ids=["pairs", "listwise"])
def trained(request, tiny_bert_dir, encoder, index, tmp_path_factory):
    """A reranker trained on the SJS case, in both input layouts: one (context, candidate) pair per
    input, and a mention's candidates in one input."""
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker

    root = tmp_path_factory.mktemp("rerank")
    corpus = write_pubtator(root / "train.txt")
    config = TrainConfig(epochs=12, lr=2e-3, seed=0, patience=None, checkpoint_every=0)
    settings = RerankerSettings(top_k=3, max_length=48, listwise=request.param, candidate_tokens=8)
    result = train_reranker([corpus], index, encoder, root / "run", dev=[corpus], base=tiny_bert_dir, layers=None,
                            settings=settings, config=config, batch_size=2, show_progress=False)
    return result, corpus, root


def test_context_marks_the_mention_and_cuts_at_words():
    text = "one two three SJS four five six"
    assert mention_in_context(text, 14, 17, window=8) == "three [SJS] four"
    assert mention_in_context(text, 14, 17, query="Stevens-Johnson syndrome", window=100) == \
        "one two three [SJS = Stevens-Johnson syndrome] four five six"
    assert candidate_text("SJS", ["Stevens-Johnson syndrome", "sjs", "erythema", "more"], 3) == \
        "SJS ; Stevens-Johnson syndrome ; erythema"
    with pytest.raises(ValueError, match="outside"):
        mention_in_context(text, 30, 40)


def test_listwise_inputs_hold_the_context_once_and_each_candidate_at_its_span(tiny_bert_dir):
    from transformers import AutoTokenizer

    from spacy_el.sap.rerank.inputs import ListwiseInputs
    from spacy_el.sap.rerank.settings import RerankerSettings

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    piece = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    context = "one two three four five [SJS] six seven eight nine ten"
    # room for the context less one token at each end: [CLS] ctx [SEP] + 3 × (3 tokens + [SEP])
    max_length = 2 + len(piece(context)) - 2 + 3 * 4
    inputs = ListwiseInputs(tok.backend_tokenizer, RerankerSettings(max_length=max_length, candidate_tokens=3),
                            tok.pad_token_id)
    (ids, types, spans), = inputs.encode([context], [["drug rash syndrome", "myotonia", "a b c d e"]])
    cands = [piece("drug rash syndrome")[:3], piece("myotonia")[:3], piece("a b c d e")[:3]]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert [ids[a:b] for a, b in spans] == cands and all(ids[b] == tok.sep_token_id for _, b in spans)
    # the context is cut evenly at both ends to fit, the mention kept in the middle
    ctx = ids[1:spans[0][0] - 1]
    assert len(ids) == max_length and ctx == piece(context)[1:-1]
    assert types == [0] * (len(ctx) + 2) + [1] * (len(ids) - len(ctx) - 2)
    # batches: padded to the longest input, every input where its index says
    got = list(inputs.batches([context, "x [y] z"], [["myotonia"], ["myotonia", ""]], batch_size=8))
    (idx, feeds, batch_spans), = got
    assert sorted(idx) == [0, 1] and feeds["input_ids"].shape == feeds["attention_mask"].shape
    short = idx.index(1)
    n = int(feeds["attention_mask"][short].sum())
    assert feeds["input_ids"][short, n - 1] == feeds["input_ids"][short, n - 2] == tok.sep_token_id  # "" reads its [SEP]
    assert batch_spans[short][1] == (n - 1, n)


def test_reranker_learns_the_case_the_bi_encoder_cannot_settle(trained, encoder, index):
    from spacy_el.linker.link import evaluate_linking
    from spacy_el.sap.rerank.model import load_reranker

    result, corpus, _ = trained
    # one text, two concepts: the bi-encoder ranks every "SJS" alike, so it gets at most half right;
    # the reranker, reading the context, does better, and the kept model is the best dev epoch
    assert result.dev_bi_acc1 is not None and result.dev_bi_acc1 <= 50.0
    assert max(result.dev_scores) > result.dev_bi_acc1 and result.weight > 0
    reranker = load_reranker(result.reranker_dir)
    assert reranker.settings.score_spread > 0  # recorded on dev with the weight, for `worth_reranking`
    plain = evaluate_linking(corpus, encoder, index)
    reranked = evaluate_linking(corpus, encoder, index, reranker=reranker, rerank_top_k=3)
    assert plain["acc@1"] == result.dev_bi_acc1 and reranked["acc@1"] == max(result.dev_scores)
    assert reranked["n"] == plain["n"] == 8
    assert reranked["n_reranked"] == 8 and plain["n_reranked"] == 0
    # a reranker whose reach is nil (its scores never spread) could overturn no first candidate: none is read
    reranker.settings = dataclasses.replace(reranker.settings, score_spread=0.0)
    scores = evaluate_linking(corpus, encoder, index, reranker=reranker, rerank_top_k=3)
    assert scores["acc@1"] == plain["acc@1"] and scores["n_reranked"] == 0


def make_nlp(tiny_bert_dir, index_dir, reranker_dir, **config):
    from spacy_el.build import index_from_dir
    from spacy_el.sap.rerank.model import reranker_from_path
    from spacy_el.sap.encoders import encoder_from_path

    nlp = spacy.blank("en")
    # a token pattern: spaCy 3.8's EntityRuler.from_bytes drops phrase (string) patterns (it replaces
    # its PhraseMatcher after adding them back), which would hide the linker's own bytes round trip
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "Disease", "pattern": [{"ORTH": "SJS"}]}])
    linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, "top_k": 3, "rerank_top_k": 3, **config})
    linker.initialize(encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(index_dir)),
                      reranker_loader=reranker_from_path(str(reranker_dir)) if reranker_dir else None)
    return nlp


def pipeline_links(nlp):
    texts = [f"{t} {a}" for _, t, a in DOCS] + ["", "No entity here."]
    return [[(e.text, e.kb_id_, tuple(e._.kb_candidates)) for e in doc.ents] for doc in nlp.pipe(texts)]


def test_linker_reranks_keeps_both_scores_and_round_trips(trained, tiny_bert_dir, index, tmp_path):
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import export_onnx

    result, _, _ = trained
    index.save(tmp_path / "index")
    nlp = make_nlp(tiny_bert_dir, tmp_path / "index", result.reranker_dir)
    links = pipeline_links(nlp)
    for doc_links in links[:4]:
        assert len(doc_links) == 2
        for _, kb_id, cands in doc_links:
            assert all(type(c) is Candidate and c.rerank_score is not None for c in cands)
            assert sorted(cands, key=lambda c: -(c.score + result.weight * c.rerank_score)) == list(cands)
            assert kb_id == cands[0].concept_id
    # the same text links to different concepts by its context (the bi-encoder alone cannot)
    assert len({kb for doc in links[:4] for _, kb, _ in doc}) > 1
    assert links[-2:] == [[], []]
    # without the reranker every SJS gets the same concept
    bare = pipeline_links(make_nlp(tiny_bert_dir, tmp_path / "index", None))
    assert len({kb for doc in bare[:4] for _, kb, _ in doc}) == 1
    assert all(c.rerank_score is None for doc in bare for _, _, cands in doc for c in cands)

    nlp.to_disk(tmp_path / "nlp")
    assert (tmp_path / "nlp" / "sap_linker" / "reranker" / "reranker.json").exists()
    assert pipeline_links(spacy.load(tmp_path / "nlp")) == links
    again = spacy.blank("en").from_config(nlp.config)
    again.from_bytes(nlp.to_bytes())
    assert pipeline_links(again) == links
    doc = nlp(f"{DOCS[0][1]} {DOCS[0][2]}")
    restored = spacy.tokens.Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert [e._.kb_candidates for e in restored.ents] == [e._.kb_candidates for e in doc.ents]

    # ONNX: fp32 gives the torch scores; int8 (the CPU serving form) loads, links and round-trips too
    torch_reranker = load_reranker(result.reranker_dir)
    pairs = (["a [SJS] myotonia", "drug [SJS] rash"], ["Schwartz-Jampel syndrome", "Stevens-Johnson syndrome"])
    fp32 = export_onnx(torch_reranker, tmp_path / "onnx32", quantize=False)
    assert fp32.score(*pairs) == pytest.approx(torch_reranker.score(*pairs), abs=1e-4)
    export_onnx(torch_reranker, tmp_path / "onnx8", quantize=True)
    served = make_nlp(tiny_bert_dir, tmp_path / "index", tmp_path / "onnx8")
    assert type(served.get_pipe("sap_linker").reranker).__name__ == "OnnxReranker"
    served_links = pipeline_links(served)
    served.to_disk(tmp_path / "served")
    assert pipeline_links(spacy.load(tmp_path / "served")) == served_links
    other = spacy.blank("en").from_config(served.config)
    other.from_bytes(served.to_bytes())
    assert pipeline_links(other) == served_links


def test_out_of_reach_entities_are_skipped_and_bad_settings_are_named(trained, tiny_bert_dir, index, tmp_path):
    result, _, _ = trained
    index.save(tmp_path / "index")
    nlp = make_nlp(tiny_bert_dir, tmp_path / "index", result.reranker_dir)
    linker = nlp.get_pipe("sap_linker")
    linker.reranker.settings = dataclasses.replace(linker.reranker.settings, score_spread=0.0)
    skipped = pipeline_links(nlp)
    assert all(c.rerank_score is None for doc in skipped for _, _, cands in doc for c in cands)
    with pytest.raises(InputError, match="rerank_top_k"):
        make_nlp(tiny_bert_dir, tmp_path / "index", None, rerank_top_k=0)
    from spacy_el.sap.rerank.settings import RerankerSettings

    with pytest.raises(InputError, match="candidate_tokens=0"):
        RerankerSettings(listwise=True, candidate_tokens=0)
    with pytest.raises(InputError, match="not a reranker directory"):
        from spacy_el.sap.rerank.model import load_reranker

        load_reranker(tmp_path)
    linker = make_nlp(tiny_bert_dir, tmp_path / "index", None).get_pipe("sap_linker")
    with pytest.raises(InputError, match="must score"):
        linker.reranker = object()


def test_training_resumes_from_its_checkpoint(tiny_bert_dir, encoder, index, tmp_path):
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker

    corpus = write_pubtator(tmp_path / "train.txt")
    settings = RerankerSettings(top_k=3, max_length=64)
    common = dict(base=tiny_bert_dir, layers=1, settings=settings, batch_size=2, show_progress=False)
    config = TrainConfig(epochs=2, lr=1e-3, checkpoint_every=1)
    full = train_reranker([corpus], index, encoder, tmp_path / "full", config=config, **common)
    train_reranker([corpus], index, encoder, tmp_path / "part", config=dataclasses.replace(config, max_steps=3), **common)
    resumed = train_reranker([corpus], index, encoder, tmp_path / "part", config=config, resume=True, **common)
    assert resumed.steps == full.steps == 8
    from spacy_el.sap.rerank.model import load_reranker

    pairs = (["x [SJS] y"], ["Stevens-Johnson syndrome"])
    assert load_reranker(resumed.reranker_dir).score(*pairs) == pytest.approx(
        load_reranker(full.reranker_dir).score(*pairs), abs=1e-5)
    assert concept_names(index.table)["MESH:D010009"] == ["Schwartz-Jampel syndrome", "chondrodystrophic myotonia"]


MP_SCRIPT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2]) * 3
def run(n):
    return [[(e.text, e.kb_id_, [tuple(c) for c in e._.kb_candidates]) for e in d.ents]
            for d in nlp.pipe(texts, n_process=n, batch_size=2)]
one = run(1)
two = run(2)
print(json.dumps({"same": one == two, "reranked": all(c[4] is not None for d in two for _, _, cs in d for c in cs),
                  "n": sum(len(d) for d in two)}))
"""


@pytest.mark.slow
def test_n_process_2_reranks_like_one_process(trained, tiny_bert_dir, index, tmp_path):
    """A warm parent forks two workers, whose ONNX reranker sessions are rebuilt after the fork:
    same links and both scores, from a fresh interpreter. Marked slow: in its first runs the forked
    workers blocked on a lock (futex) inherited from the parent; see the module's fork handling."""
    import json
    import subprocess
    import sys

    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import export_onnx

    result, _, _ = trained
    index.save(tmp_path / "index")
    export_onnx(load_reranker(result.reranker_dir), tmp_path / "onnx8", quantize=True)
    make_nlp(tiny_bert_dir, tmp_path / "index", tmp_path / "onnx8").to_disk(tmp_path / "nlp")
    texts = [f"{t} {a}" for _, t, a in DOCS]
    out = subprocess.run([sys.executable, "-c", MP_SCRIPT, str(tmp_path / "nlp"), json.dumps(texts)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"same": True, "reranked": True, "n": 24}


def test_pairs_longer_than_max_length_are_cut_not_refused(trained, tmp_path):
    """A candidate text (a name and its synonyms) can outgrow `max_length` on its own: both the
    torch and the ONNX reranker cut the longer side instead of failing the batch."""
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import export_onnx

    result, _, _ = trained
    torch_reranker = load_reranker(result.reranker_dir)
    long_candidate = " ; ".join(["Stevens-Johnson syndrome toxic epidermal necrolysis"] * 20)
    pairs = (["short [SJS] context", "x " * 200 + "[SJS]"], [long_candidate, long_candidate])
    onnx_reranker = export_onnx(torch_reranker, tmp_path / "onnx", quantize=False)
    for reranker in (torch_reranker, onnx_reranker):
        scores = reranker.score(*pairs)
        assert scores.shape == (2,) and np.isfinite(scores).all()


def test_a_process_holding_an_onnx_reranker_still_forks_working_workers(trained, tmp_path):
    """Forked workers (`nlp.pipe(n_process=2)`) of a process that has used an ONNX reranker must
    not destroy its inherited session: that waits on the parent's thread pool and hangs."""
    import subprocess
    import sys

    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import export_onnx

    result, _, _ = trained
    export_onnx(load_reranker(result.reranker_dir), tmp_path / "onnx8", quantize=True)
    script = (
        "import spacy\n"
        "from spacy_el.sap.rerank.model import load_reranker\n"
        f"reranker = load_reranker({str(tmp_path / 'onnx8')!r}, num_threads=2)\n"
        "reranker.score(['a [SJS] rash'] * 8, ['Stevens-Johnson syndrome'] * 8)\n"
        "nlp = spacy.blank('en')\n"
        "nlp.add_pipe('el_abbreviation_detector')\n"
        "docs = list(nlp.pipe(['Wilms tumour (WT) recurs.'] * 8, n_process=2))\n"
        "print(sum(len(d._.el_abbreviations) for d in docs))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "8"


def test_the_corpus_prior_still_counts_after_reranking():
    from spacy_el.sap.rerank.policy import rerank
    from spacy_el.sap.rerank.settings import RerankerSettings

    class Flat:  # a reranker with no opinion: every candidate scores the same
        settings = RerankerSettings(top_k=3, weight=1.0)

        def score_groups(self, contexts, groups, batch_size=64):
            return [np.zeros(len(g)) for g in groups]

    cands = [[Candidate("A", 0.80, "a", "kb"), Candidate("B", 0.79, "b", "kb"), Candidate("C", 0.70, "c", "kb")]]
    assert [c.concept_id for c in rerank(Flat(), ["ctx"], cands, {})[0]] == ["A", "B", "C"]
    index = ConceptIndex.from_vectors(ConceptTable.from_rows([("A", "a", "kb"), ("B", "b", "kb")]),
                                      np.eye(2, 4, dtype="float32"), use_gpu=False)
    index.set_prior({"B": 9}, weight=0.02)  # 0.02 · log(10) = 0.046 lifts B past A's 0.01 lead
    assert index.concept_bonus() == pytest.approx({"B": 0.02 * np.log(10)})
    ranked = rerank(Flat(), ["ctx"], cands, {}, bonus=index.concept_bonus())[0]
    assert [c.concept_id for c in ranked] == ["B", "A", "C"] and ranked[0].score == 0.79  # the cosine stays


def test_only_mentions_whose_first_candidate_the_reranker_could_overturn_are_read():
    from spacy_el.sap.rerank.policy import SPREAD_HEADROOM, rerank, worth_reranking
    from spacy_el.sap.rerank.settings import RerankerSettings

    # weight 0.1 × spread 2 (× headroom): the reranker moves a key by at most 0.2 × headroom
    settings = RerankerSettings(top_k=3, weight=0.1, score_spread=2.0)
    reach = 0.2 * SPREAD_HEADROOM
    def cands(lead, third=0.1):
        return [Candidate("A", 0.8, "a", "kb"), Candidate("B", 0.8 - lead, "b", "kb"), Candidate("C", third, "c", "kb")]
    assert worth_reranking(cands(reach - 0.01), settings, 3)
    assert not worth_reranking(cands(reach + 0.01), settings, 3)
    assert worth_reranking(cands(reach + 0.01, third=0.8 - reach + 0.02), settings, 3)  # any rival within reach
    assert not worth_reranking(cands(reach + 0.01, third=0.8 - reach + 0.02), settings, 2)  # beyond top_k: not
    assert worth_reranking(cands(reach + 0.01), settings, 3, bonus={"B": 0.03})  # the prior counts as rerank adds it
    assert worth_reranking(cands(5.0), dataclasses.replace(settings, score_spread=None), 3)  # spread unknown: all
    assert not worth_reranking(cands(0.0)[:1], settings, 3)  # nothing to reorder

    class Extreme:  # a reranker spreading its scores as widely as its settings allow, for the rival
        def __init__(self, spread):
            self.settings, self.spread = dataclasses.replace(settings, score_spread=spread), spread

        def score_groups(self, contexts, groups, batch_size=64):
            return [np.array([0.0] + [self.spread] * (len(g) - 1)) for g in groups]

    # outside the reach (with headroom) even the widest spread seen cannot move the first candidate
    for lead in (0.05, 0.19, 0.21, 0.5):
        skipped = not worth_reranking(cands(lead), settings, 3)
        first = rerank(Extreme(2.0), ["ctx"], [cands(lead)], {})[0][0].concept_id
        assert not skipped or first == "A"
        assert skipped == (lead >= reach)


def test_the_weight_is_tuned_in_the_order_the_linker_gives_with_the_prior():
    from spacy_el.sap.rerank.train import Mention, tune_weight

    # the gold B trails A by 0.01 in cosine; the reranker prefers B by 0.1; the prior lifts A by 0.05
    cands = [Candidate("A", 0.80, "a", "kb", rerank_score=0.0), Candidate("B", 0.79, "b", "kb", rerank_score=0.1)]
    dev = [Mention("ctx", ["B"], cands)]
    assert tune_weight(dev, [cands], grid=(0.0, 0.2, 1.0))[:2] == (0.2, 100.0)  # without the prior 0.2 suffices
    weight, acc, per = tune_weight(dev, [cands], grid=(0.0, 0.2, 1.0), bonus={"A": 0.05})
    assert (weight, acc) == (1.0, 100.0) and per[0.2] == 0.0  # with it, only a larger weight gets B first


def test_cli_trains_and_exports_a_listwise_reranker(tiny_bert_dir, index, tmp_path):
    from typer.testing import CliRunner

    from spacy_el.cli import app
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.onnx import OnnxReranker

    index.save(tmp_path / "index")
    corpus = write_pubtator(tmp_path / "train.txt")
    runner = CliRunner()
    res = runner.invoke(app, ["train-reranker", str(corpus), "--encoder", str(tiny_bert_dir), "--index",
                              str(tmp_path / "index"), "--output", str(tmp_path / "run"), "--base", str(tiny_bert_dir),
                              "--layers", "1", "--top-k", "3", "--listwise", "--candidate-tokens", "6",
                              "--max-length", "40", "--epochs", "1", "--batch-size", "4", "--num-threads", "1"])
    assert res.exit_code == 0, res.output
    assert "Trained 2 steps on 8 mentions" in res.output
    res = runner.invoke(app, ["export-reranker", str(tmp_path / "run" / "reranker"), str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    served = load_reranker(tmp_path / "onnx")
    assert isinstance(served, OnnxReranker) and served.settings.listwise and served.settings.candidate_tokens == 6
    scores = served.score_groups(["a [SJS] rash"], [["Stevens-Johnson syndrome", "Schwartz-Jampel syndrome", ""]])
    assert len(scores) == 1 and scores[0].shape == (3,) and np.isfinite(scores[0]).all()
    res = runner.invoke(app, ["train-reranker", str(corpus), "--encoder", str(tiny_bert_dir), "--index",  # distil it
                              str(tmp_path / "index"), "--output", str(tmp_path / "student"), "--base", str(tiny_bert_dir),
                              "--layers", "1", "--top-k", "3", "--listwise", "--candidate-tokens", "6",
                              "--max-length", "40", "--epochs", "1", "--batch-size", "4", "--num-threads", "1",
                              "--teacher", str(tmp_path / "onnx"), "--soft-weight", "0.7"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "student" / "rerank.json").read_text())["teacher"]["soft_weight"] == 0.7
    res = runner.invoke(app, ["train-reranker", str(corpus), "--encoder", str(tiny_bert_dir), "--index",
                              str(tmp_path / "index"), "--output", str(tmp_path / "bad"), "--listwise",
                              "--candidate-tokens", "0"])
    assert res.exit_code == 1 and "candidate_tokens=0" in res.output and "Traceback" not in res.output


def test_distillation_pulls_the_student_towards_the_teachers_scores():
    import torch

    from spacy_el.sap.rerank.train import Example, GroupLoss

    class Fixed:  # a student whose scores are the leaf tensors below
        def __init__(self, logits):
            self.logits = logits

        def group_logits(self, contexts, groups, model=None):
            return self.logits

    def grad(soft_weight, teacher):
        logits = [torch.zeros(3, requires_grad=True)]
        GroupLoss(soft_weight)(Fixed(logits), [Example("ctx", ("a", "b", "c"), 0, teacher)]).backward()
        return logits[0].grad

    # the gold label alone pushes every wrong candidate down; a teacher that finds candidate 1 nearly
    # as good as the gold pulls it up instead
    assert grad(0.0, (4.0, 3.5, -2.0))[1] > 0 and grad(1.0, (4.0, 3.5, -2.0))[1] < 0
    assert torch.allclose(grad(1.0, (0.0, 0.0, 0.0)), torch.zeros(3), atol=1e-6)  # the student already agrees
    assert torch.equal(grad(0.5, None), grad(0.0, None))  # no teacher: the gold label only


@pytest.mark.parametrize("trained", [False], ids=["pair_teacher"], indirect=True)
def test_a_listwise_student_learns_the_case_from_the_teacher_alone(trained, tiny_bert_dir, encoder, index, tmp_path):
    from spacy_el.sap.rerank.model import load_reranker
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker

    teacher_result, corpus, _ = trained
    teacher = load_reranker(teacher_result.reranker_dir)
    config = TrainConfig(epochs=12, lr=2e-3, seed=0, patience=None, checkpoint_every=0)
    settings = RerankerSettings(top_k=3, max_length=48, listwise=True, candidate_tokens=8)
    kwargs = dict(dev=[corpus], base=tiny_bert_dir, layers=None,
                  settings=settings, config=config, batch_size=2, show_progress=False)
    # soft_weight 1: no gold label, only the teacher's scores, and the student still settles SJS
    result = train_reranker([corpus], index, encoder, tmp_path / "run", teacher=teacher, soft_weight=1.0, **kwargs)
    assert max(result.dev_scores) > result.dev_bi_acc1
    stats = json.loads((tmp_path / "run" / "rerank.json").read_text())
    assert stats["teacher"]["soft_weight"] == 1.0 and stats["teacher"]["settings"] == dataclasses.asdict(teacher.settings)
    with pytest.raises(InputError, match="soft_weight=1.5"):
        train_reranker([corpus], index, encoder, tmp_path / "bad", teacher=teacher, soft_weight=1.5, **kwargs)


def test_train_files_get_candidates_from_their_own_fold_linker(tiny_bert_dir, encoder, index, tmp_path):
    """Cross-fitting: each train file is searched by the linker given for it, not the served one;
    dev is always searched by the served one; a count that does not match is named."""
    from typer.testing import CliRunner

    from spacy_el.cli import app
    from spacy_el.sap.rerank.settings import RerankerSettings
    from spacy_el.sap.rerank.train import train_reranker

    corpus = write_pubtator(tmp_path / "train.txt")
    # a fold index without either SJS concept: no train mention finds its gold among its candidates
    fold_index = ConceptIndex.build(ConceptTable.from_rows(NAMES[4:]), encoder, use_gpu=False)
    config = TrainConfig(epochs=1, lr=2e-3, seed=0, patience=None, checkpoint_every=0)
    settings = RerankerSettings(top_k=3, max_length=48)
    kwargs = dict(dev=[corpus], base=tiny_bert_dir, layers=1, settings=settings, config=config, batch_size=4,
                  show_progress=False)
    served = train_reranker([corpus], index, encoder, tmp_path / "served", **kwargs)
    folded = train_reranker([corpus], index, encoder, tmp_path / "folded", train_linkers=[(encoder, fold_index)],
                            **kwargs)
    assert served.train_bi_acc1 == served.dev_bi_acc1 > 0  # same file as train and dev, same linker
    assert folded.train_bi_acc1 == 0.0 and folded.dev_bi_acc1 == served.dev_bi_acc1
    assert folded.n_train_groups == served.n_train_groups == 8  # the gold's names come from the served KB
    stats = json.loads((tmp_path / "folded" / "rerank.json").read_text())
    assert stats["train_acc@1_of_candidates"] == 0.0
    with pytest.raises(InputError, match="2 fold linkers .* for 1 train files"):
        train_reranker([corpus], index, encoder, tmp_path / "bad", train_linkers=[(encoder, index)] * 2, **kwargs)

    index.save(tmp_path / "index")
    fold_index.save(tmp_path / "fold_index")
    args = ["train-reranker", str(corpus), "--encoder", str(tiny_bert_dir), "--index", str(tmp_path / "index"),
            "--base", str(tiny_bert_dir), "--layers", "1", "--top-k", "3", "--max-length", "40", "--epochs", "1",
            "--batch-size", "4", "--num-threads", "1", "--fold-encoder", str(tiny_bert_dir)]
    res = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "cli"), "--fold-index", str(tmp_path / "fold_index")])
    assert res.exit_code == 0, res.output
    assert "candidate lists' Acc@1 0.00" in res.output
    res = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "cli_bad")])
    assert res.exit_code == 1 and "1 --fold-encoder but 0 --fold-index" in res.output and "Traceback" not in res.output
