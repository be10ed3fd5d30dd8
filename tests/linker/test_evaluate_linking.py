"""evaluate_linking's protocol: composite parts, ids in any spelling, and short forms linked by
their long form when asked (`--resolve-abbreviations`); evaluate_pipeline's three score groups
on a tiny entity_ruler + sap_linker pipeline, against values computed by hand."""
import numpy as np
import pytest

from spacy_el.kb.index import ConceptIndex
from spacy_el.kb.table import ConceptTable
from spacy_el.linker.link import evaluate_linking, evaluate_pipeline

KB = [("MESH:D011125", "familial adenomatous polyposis"), ("MESH:D000001", "fap"),
      ("MESH:D003920", "diabetes mellitus")]


class ExactEncoder:
    """One-hot vectors by lower-cased exact name: the test sees the protocol, not a model."""

    dim, fingerprint = len(KB) + 1, "exact"

    def __init__(self):
        self.seen: list[str] = []

    def embed(self, texts, batch_size: int = 256):
        self.seen += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            j = next((k for k, (_, name) in enumerate(KB) if name == text.lower()), len(KB))
            out[i, j] = 1.0
        return out


def test_short_forms_are_linked_by_their_long_form(tmp_path):
    title = "Familial adenomatous polyposis (FAP) in two families."
    abstract = "FAP patients and diabetes mellitus patients were seen."
    a = len(title) + 1
    path = tmp_path / "dev.PubTator"
    path.write_text("\n".join([
        f"1|t|{title}", f"1|a|{abstract}",
        "1\t0\t30\tFamilial adenomatous polyposis\tDisease\tD011125",
        "1\t32\t35\tFAP\tDisease\tD011125",
        f"1\t{a}\t{a + 3}\tFAP\tDisease\tD011125",
        f"1\t{a + 17}\t{a + 34}\tdiabetes mellitus\tDisease\tMESH:D003920", ""]) + "\n")
    encoder = ExactEncoder()
    index = ConceptIndex.from_vectors(ConceptTable.from_rows(KB), encoder.embed([n for _, n in KB]))
    plain = evaluate_linking(path, encoder, index)
    assert plain["n"] == 4 and plain["acc@1"] == 50.0 and plain["n_abbreviations_resolved"] == 0
    resolved = evaluate_linking(path, encoder, index, resolve_abbreviations=True)
    assert resolved["acc@1"] == 100.0 and resolved["n_abbreviations_resolved"] == 2
    assert "FAP" not in encoder.seen[-3:]


# ---------------------------------------------------------------------- a pipeline end to end
E2E_KB = [("MESH:D003920", "diabetes mellitus"), ("MESH:D003920", "diabetes"), ("MESH:D009369", "cancer"),
          ("MESH:D006331", "heart disease"), ("MESH:D010051|OMIM:167000", "ovarian cancer"),
          ("MESH:D001943", "breast and ovarian cancer")]
E2E_DOCS = [  # (title, abstract, [(mention text, occurrence, type, id field)])
    ("Patients with diabetes mellitus and cancer.", "Signs of heart disease and ovarian cancer were seen.",
     [("diabetes mellitus", 0, "SpecificDisease", "D003920"),  # predicted "diabetes": span too short
      ("cancer", 0, "DiseaseClass", "D009371"),  # right span, wrong concept (D009369)
      ("heart disease", 0, "DiseaseClass", "D006331"),  # right
      ("ovarian cancer", 0, "SpecificDisease", "OMIM:167000")]),  # right: the KB concept has 2 ids
    ("Two families with breast and ovarian cancer.", "A tumour was not typed in BRCA1 carriers.",
     [("breast and ovarian cancer", 0, "CompositeMention", "D001943|D010051"),  # NER finds "ovarian cancer"
      ("tumour", 0, "DiseaseClass", "-1")]),  # NIL: left out by the reader
]


def _write_pubtator(path, docs):
    lines = []
    for pmid, (title, abstract, mentions) in enumerate(docs, start=1):
        text = f"{title} {abstract}"
        lines += [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        for mention, _, mtype, ids in mentions:
            start = text.index(mention)
            lines.append(f"{pmid}\t{start}\t{start + len(mention)}\t{mention}\t{mtype}\t{ids}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def e2e_nlp(tiny_bert_dir, tmp_path_factory):
    import spacy

    from spacy_el.build import index_from_dir
    from spacy_el.sap.encoder import SapEncoder
    from spacy_el.sap.encoders import encoder_from_path

    index_dir = tmp_path_factory.mktemp("e2e") / "index"
    encoder = SapEncoder.load(tiny_bert_dir, device="cpu")
    ConceptIndex.build(ConceptTable.from_rows(E2E_KB), encoder, use_gpu=False).save(index_dir)
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "Disease", "pattern": p} for p in ("diabetes", "cancer", "heart disease", "ovarian cancer")]
        + [{"label": "GENE", "pattern": "BRCA1"}])
    nlp.add_pipe("el_abbreviation_detector")
    # every predicted text is a KB name, which `name_lookup` links exactly whatever the tiny encoder
    linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0})
    linker.initialize(encoder_loader=encoder_from_path(str(tiny_bert_dir)), index_loader=index_from_dir(str(index_dir)))
    return nlp


def test_evaluate_pipeline_three_score_groups_by_hand(e2e_nlp, tmp_path):
    path = tmp_path / "dev.PubTator"
    _write_pubtator(path, E2E_DOCS)
    s = evaluate_pipeline(e2e_nlp, path, label="Disease")
    # spans: gold 5 (NIL left out), predicted Disease 5 (GENE filtered by label); exact: cancer,
    # heart disease, ovarian cancer (doc 1)
    assert (s["spans"]["tp"], s["spans"]["n_pred"], s["spans"]["n_gold"]) == (3, 5, 5)
    assert s["spans"]["f"] == pytest.approx(60.0)
    # linking: exact span and concept: heart disease, ovarian cancer (OMIM:167000 among its ids)
    assert (s["linking"]["tp"], s["linking"]["n_pred"], s["linking"]["n_gold"]) == (2, 5, 5)
    assert s["linking"]["f"] == pytest.approx(40.0)
    # document concepts: doc 1 gold {D003920 D009371 D006331 OMIM:167000}, predicted {D003920}
    # {D009369} {D006331} {D010051|OMIM:167000}: 3 of 4 right, 3 of 4 found; doc 2 gold
    # {D001943 D010051}, predicted {D010051|OMIM:167000}: 1 of 1 right, 1 of 2 found
    d = s["doc_concepts"]
    assert (d["tp_pred"], d["n_pred"], d["tp"], d["n_gold"]) == (4, 5, 4, 6)
    assert d["p"] == pytest.approx(80.0) and d["r"] == pytest.approx(400 / 6)
    assert d["f"] == pytest.approx(100 * 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    # the one wrong concept (D009369) and doc 1's missed D009371 sit on the exact gold span of "cancer"
    e = s["doc_concept_errors"]
    assert e["wrong"] == {"spurious": 0, "boundary": 0, "linked": 1}
    assert sum(e["missed"].values()) == 2 and e["missed"]["linked"] >= 1
    n_tokens = sum(len(e2e_nlp.make_doc(f"{t} {a}")) for t, a, _ in E2E_DOCS)
    assert s["n_words"] == n_tokens and s["words_per_s"] > 0 and s["n_docs"] == 2 and s["n_nil_skipped"] == 1
    assert {"nel_micro_f", "ents_f", "n_gold_mentions", "corpus"} <= set(s)  # the keys it had before


def test_evaluate_pipeline_on_gold_spans(e2e_nlp, tmp_path):
    path = tmp_path / "dev.PubTator"
    _write_pubtator(path, E2E_DOCS)
    s = evaluate_pipeline(e2e_nlp, path, label="Disease", gold_ents=True)
    assert s["spans"]["f"] == pytest.approx(100.0) and s["gold_ents"]
    # every gold span is a KB name: all linked right but "cancer" (D009369, gold D009371)
    assert (s["linking"]["tp"], s["linking"]["n_pred"], s["linking"]["n_gold"]) == (4, 5, 5)
    # doc 1: 4 predicted, 3 right, 3 of 4 found; doc 2: {D001943} right, 1 of 2 found
    d = s["doc_concepts"]
    assert (d["tp_pred"], d["n_pred"], d["tp"], d["n_gold"]) == (4, 5, 4, 6)


def test_evaluate_linking_cli_prints_the_three_groups(e2e_nlp, tmp_path):
    import json

    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = tmp_path / "dev.PubTator"
    _write_pubtator(path, E2E_DOCS)
    e2e_nlp.to_disk(tmp_path / "pipeline")
    result = CliRunner().invoke(app, ["evaluate-linking", str(path), "--pipeline", str(tmp_path / "pipeline"),
                                      "--label", "Disease", "--output", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    lines = {line.split("  P ")[0].strip(): line for line in result.output.splitlines() if "  P " in line}
    assert "F  60.00" in lines["mention spans"] and "F  40.00" in lines["mention linking"]
    assert "F  72.73" in lines["document concepts"] and "words/s" in result.output
    assert "gold span linked wrong 1" in result.output
    assert json.loads((tmp_path / "m.json").read_text())["pipeline"]["doc_concepts"]["n_gold"] == 6


def test_evaluate_linking_cli_sweeps_the_nil_threshold(e2e_nlp, tmp_path):
    import json

    from typer.testing import CliRunner

    from spacy_el.cli import app

    path = tmp_path / "dev.PubTator"
    _write_pubtator(path, E2E_DOCS)
    e2e_nlp.to_disk(tmp_path / "pipeline")
    own = e2e_nlp.get_pipe("sap_linker").cfg["threshold"]
    result = CliRunner().invoke(app, ["evaluate-linking", str(path), "--pipeline", str(tmp_path / "pipeline"),
                                      "--label", "Disease", "--thresholds", f"{own},1.01",
                                      "--output", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    sweep = json.loads((tmp_path / "m.json").read_text())["threshold_sweep"]
    main = json.loads((tmp_path / "m.json").read_text())["pipeline"]
    # at the pipeline's own threshold the sweep repeats its scores; past every cosine all is NIL
    assert sweep[str(own)]["doc_concepts"] == main["doc_concepts"]
    assert sweep["1.01"]["doc_concepts"]["n_pred"] == 0 and sweep["1.01"]["doc_concepts"]["f"] == 0.0
    assert f"best by document-concept F: {own}" in result.output
    bad = CliRunner().invoke(app, ["evaluate-linking", str(path), "--pipeline", str(tmp_path / "pipeline"),
                                   "--thresholds", "0.7,high"])
    assert bad.exit_code != 0 and "--thresholds" in bad.output
