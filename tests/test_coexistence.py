"""spacy-el is a guest in the user's spaCy: none of its registered names (factories, architectures,
registered functions, extension attributes) is one that spaCy or a common plugin registers, so a
pipeline that mixes them (scispaCy's models and abbreviation detector with spacy-el's linker is
the natural one) builds, and spaCy keeps working for pipelines that never use spacy-el.

The fast tests register scispaCy's names exactly as scispaCy does (a `Language.factory` per
component, `force=True` extensions); the slow one runs the real scispaCy where it is installed."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
import spacy

REPO = Path(__file__).resolve().parents[1]

#: Names other plugins register, read from their sources: factories and extension attributes.
OTHERS = {
    "scispacy": {"factories": {"abbreviation_detector", "scispacy_linker", "hyponym_detector"},
                 "extensions": {"abbreviations", "long_form", "kb_ents", "hearst_patterns"}},
    "medspacy": {"factories": {"medspacy_pyrush", "medspacy_pysbd", "medspacy_target_matcher", "medspacy_context",
                               "medspacy_sectionizer", "medspacy_preprocessor", "medspacy_postprocessor",
                               "medspacy_quickumls", "medspacy_concept_tagger", "medspacy_doc_consumer"},
                 "extensions": {"is_negated", "is_uncertain", "is_historical", "is_hypothetical", "is_family",
                                "modifiers", "context_graph", "section", "sections", "section_category",
                                "section_title", "section_body", "section_parent", "section_span", "window",
                                "target_rule", "concept_tag", "sentences", "section_titles", "section_bodies"}},
    "spacy-llm": {"factories": {"llm", "llm_ner", "llm_spancat", "llm_rel", "llm_textcat", "llm_sentiment",
                                "llm_summarization", "llm_lemma", "llm_entity_linker", "llm_translation",
                                "llm_raw"},
                  "extensions": {"llm_io", "rel", "sentiment", "summary", "translation", "llm_reply"}},
}

#: scispaCy's registrations as scispacy/abbreviation.py, linking.py and hyponym_detector.py make them.
SCISPACY_NAMES = '''
from spacy.language import Language
from spacy.tokens import Doc, Span


@Language.factory("abbreviation_detector")
class AbbreviationDetector:
    """scispaCy's: `doc._.abbreviations` of (short, long) spans and `span._.long_form` on each short form."""

    def __init__(self, nlp, name="abbreviation_detector"):
        Doc.set_extension("abbreviations", default=[], force=True)
        Span.set_extension("long_form", default=None, force=True)

    def __call__(self, doc):
        for token in doc[2:-1]:
            if doc[token.i - 1].text == "(" and doc[token.i + 1].text == ")" and token.text.isupper():
                n = len(token.text)
                short, long = doc[token.i:token.i + 1], doc[token.i - 1 - n:token.i - 1]
                short._.long_form = long
                doc._.abbreviations.append(short)
        return doc


@Language.factory("scispacy_linker")
def scispacy_linker(nlp, name):
    Span.set_extension("kb_ents", default=[], force=True)
    return lambda doc: doc


@Language.factory("hyponym_detector")
def hyponym_detector(nlp, name):
    Doc.set_extension("hearst_patterns", default=[], force=True)
    return lambda doc: doc
'''


def _spacy_el_names() -> dict[str, set[str]]:
    """Every name spacy-el registers: its entry points by group, and the extension attributes its
    components set (read in a fresh process, so other tests' extensions do not count)."""
    names: dict[str, set[str]] = {}
    for ep in distribution("spacy-el").entry_points:
        if ep.group != "console_scripts":
            names.setdefault(ep.group, set()).add(ep.name)
    probe = """
import json, spacy
from spacy.tokens.underscore import Underscore
kinds = (Underscore.doc_extensions, Underscore.span_extensions, Underscore.token_extensions)
before = [set(kind) for kind in kinds]
nlp = spacy.blank("en")
for factory in ("el_abbreviation_detector", "kb_gazetteer", "kb_span_extender", "sap_linker", "bilstm_ner"):
    nlp.add_pipe(factory)
print(json.dumps(sorted({n for kind, old in zip(kinds, before) for n in set(kind) - old})))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    names["extensions"] = set(json.loads(out.strip().splitlines()[-1]))
    return names


def test_no_name_is_one_another_plugin_or_spacy_registers():
    ours = _spacy_el_names()
    assert {"el_abbreviations", "el_long_form", "kb_candidates", "kb_parts"} <= ours["extensions"]
    # spaCy's and spacy-transformers' own registrations, read from the live registry
    theirs: dict[str, set[str]] = {}
    for group, registry in (("spacy_factories", spacy.registry.factories),
                            ("spacy_architectures", spacy.registry.architectures),
                            ("spacy_misc", spacy.registry.misc), ("spacy_scorers", spacy.registry.scorers),
                            ("spacy_tokenizers", spacy.registry.tokenizers),
                            ("spacy_callbacks", spacy.registry.callbacks)):
        theirs[group] = {name for name, func in registry.get_all().items()
                         if not getattr(func, "__module__", "").startswith("spacy_el")}
    for plugin in OTHERS.values():
        theirs["spacy_factories"] |= plugin["factories"]
        theirs.setdefault("extensions", set()).update(plugin["extensions"])
    clashes = {group: sorted(ours[group] & theirs.get(group, set())) for group in ours}
    assert not any(clashes.values()), clashes


@pytest.fixture(scope="module")
def demo_parts(tmp_path_factory, tiny_bert_dir):
    """A tiny version of the demo's parts: a KB, a trained kb_gazetteer + bilstm_ner, an index."""
    from spacy.training import Example

    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.table import ConceptTable
    from spacy_el.sap.encoder import SapEncoder

    root = tmp_path_factory.mktemp("coexist")
    names = [("OMIM:175100", "adenomatous polyposis coli"), ("MESH:D003920", "diabetes mellitus"),
             ("MESH:D009369", "neoplasms")]
    kb = root / "kb.tsv"
    kb.write_text("".join(f"{cid}\t{name}\n" for cid, name in names), encoding="utf8")
    nlp = spacy.blank("en")
    nlp.add_pipe("kb_gazetteer")
    nlp.add_pipe("bilstm_ner", config={"model": {
        "@architectures": "spacy_el.BiLSTMTagger.v2", "hidden_width": 16, "depth": 1, "crf": True,
        "features": {"@architectures": "spacy_el.TokenFeatures.v1", "embed_width": 16,
                     "attrs": ["NORM", "SHAPE"], "rows": [200, 50], "include_static_vectors": False,
                     "char_width": 8, "char_length": 8, "gazetteers": ["kb_names"],
                     "transformer": None, "transformer_width": 0}}})
    text = "Mutations of adenomatous polyposis coli (APC) cause polyps."
    data = [(text, [(13, 39, "Disease")]), ("Patients with diabetes mellitus were seen.", [(14, 31, "Disease")])]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    nlp.config["initialize"]["components"]["kb_gazetteer"] = {"kb": str(kb), "kb_format": "tsv"}
    nlp.initialize(lambda: examples)
    optimizer = nlp.resume_training()
    for _ in range(30):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(root / "ner")
    ConceptIndex.build(ConceptTable.from_rows(names), SapEncoder.load(tiny_bert_dir, device="cpu"),
                       use_gpu=False).save(root / "index")
    (root / "scispacy_names.py").write_text(SCISPACY_NAMES, encoding="utf8")
    return root


def test_the_demo_pipeline_builds_and_links_beside_scispacy_names(demo_parts, tiny_bert_dir):
    root = demo_parts
    # `spacy assemble` of the demo's config, with scispaCy's names registered first (--code)
    subprocess.run([sys.executable, "-m", "spacy", "assemble", str(REPO / "configs" / "pipeline.cfg"),
                    str(root / "pipeline"), "--code", str(root / "scispacy_names.py"),
                    "--paths.ner", str(root / "ner"), "--paths.encoder", str(tiny_bert_dir),
                    "--paths.index", str(root / "index")], check=True, capture_output=True, text=True)
    probe = f"""
import json, sys, spacy
sys.path.insert(0, {str(root)!r})
import scispacy_names  # scispaCy's factories and extensions, before spaCy builds anything
spacy.blank("en")
nlp = spacy.load({str(root / "pipeline")!r})
doc = nlp.make_doc("Mutations of adenomatous polyposis coli (APC) cause polyps.")
from spacy.tokens import Span
doc.ents = [Span(doc, 2, 5, label="Disease"), Span(doc, 6, 7, label="Disease")]
scispacy = spacy.blank("en").add_pipe("abbreviation_detector")
doc = nlp.get_pipe("el_abbreviation_detector")(scispacy(doc))
doc = nlp.get_pipe("sap_linker")(doc)
print(json.dumps({{"pipes": nlp.pipe_names, "ours": [[s.text, l.text] for s, l in doc._.el_abbreviations],
                  "scispacy": [[s.text, s._.long_form.text] for s in doc._.abbreviations],
                  "links": [[e.text, e.kb_id_] for e in doc.ents]}}))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pipes"] == ["kb_gazetteer", "bilstm_ner", "el_abbreviation_detector", "sap_linker"]
    assert ["APC", "adenomatous polyposis coli"] in out["ours"]
    assert out["scispacy"] == [["APC", "adenomatous polyposis coli"]]
    # the short form is linked through its long form (resolve_abbreviations in the demo config)
    assert out["links"] == [["adenomatous polyposis coli", "OMIM:175100"], ["APC", "OMIM:175100"]]


def test_the_linker_reads_scispacys_long_forms_when_ours_are_absent(demo_parts, tiny_bert_dir):
    """With scispaCy's abbreviation detector in place of ours, `resolve_abbreviations` still links
    a short form through its long form."""
    from spacy.tokens import Span

    from spacy_el.build import index_from_dir
    from spacy_el.sap.encoders import encoder_from_path

    namespace: dict = {}
    exec(compile(SCISPACY_NAMES.replace('"abbreviation_detector"', '"scispacy_like_abbreviations"'),
                 "scispacy_names", "exec"), namespace)
    nlp = spacy.blank("en")
    nlp.add_pipe("scispacy_like_abbreviations")
    linker = nlp.add_pipe("sap_linker", config={"threshold": 0.0, "resolve_abbreviations": True})
    linker.initialize(encoder_loader=encoder_from_path(str(tiny_bert_dir)),
                      index_loader=index_from_dir(str(demo_parts / "index")))
    doc = nlp.make_doc("Mutations of adenomatous polyposis coli (APC) cause polyps.")
    doc.ents = [Span(doc, 6, 7, label="Disease")]
    doc = linker(nlp.get_pipe("scispacy_like_abbreviations")(doc))
    (apc,) = doc.ents
    assert apc.kb_id_ == "OMIM:175100" and apc._.kb_candidates[0].name == "adenomatous polyposis coli"


@pytest.mark.slow  # needs scispaCy installed (its own numpy<2 stack: docs/install.md)
def test_real_scispacy_and_sap_linker_in_one_pipeline(demo_parts, tiny_bert_dir):
    pytest.importorskip("scispacy")
    probe = f"""
import json, spacy
from scispacy.abbreviation import AbbreviationDetector  # registers scispaCy's factory and extensions
from spacy_el.build import index_from_dir
from spacy_el.sap.encoders import encoder_from_path
nlp = spacy.load({str(demo_parts / "ner")!r})
nlp.add_pipe("abbreviation_detector")
nlp.add_pipe("el_abbreviation_detector")
linker = nlp.add_pipe("sap_linker", config={{"threshold": 0.0, "resolve_abbreviations": True}})
linker.initialize(encoder_loader=encoder_from_path({str(tiny_bert_dir)!r}),
                  index_loader=index_from_dir({str(demo_parts / "index")!r}))
doc = nlp("Mutations of adenomatous polyposis coli (APC) cause polyps; APC carriers are screened.")
from spacy.tokens import Span
doc = nlp.make_doc(doc.text)
doc.ents = [Span(doc, 2, 5, label="Disease"), Span(doc, 6, 7, label="Disease")]
for name in ("abbreviation_detector", "el_abbreviation_detector", "sap_linker"):
    doc = nlp.get_pipe(name)(doc)
print(json.dumps({{"scispacy": [[s.text, s._.long_form.text] for s in doc._.abbreviations],
                  "ours": [[s.text, l.text] for s, l in doc._.el_abbreviations],
                  "links": [[e.text, e.kb_id_] for e in doc.ents]}}))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ["APC", "adenomatous polyposis coli"] in out["scispacy"]
    assert ["APC", "adenomatous polyposis coli"] in out["ours"]
    assert ["APC", "OMIM:175100"] in out["links"]
