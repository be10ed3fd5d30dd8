"""spaCy imports every entry-point factory module whenever it builds a `Language` (`spacy.blank`,
`spacy.load`), for every pipeline of the environment. Those modules must stay light: torch,
FAISS, transformers, ONNX Runtime and pyarrow are imported only once a spacy-el component that
needs them is created or loaded. thinc and spacy-transformers import torch and transformers on
their own, so each check records only the imports made while a spacy_el module is running."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "faiss", "transformers", "onnxruntime", "pyarrow", "onnx", "tokenizers", "pronto",
         "pytorch_metric_learning", "ray", "spacy_transformers")

#: Wraps `__import__`: a heavy import with a spacy_el module anywhere on the stack is spacy-el's.
RECORDER = """
import builtins, json, sys
HEAVY = set(%r)
real_import = builtins.__import__
by_spacy_el = {}

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in HEAVY:
        frame = sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith("spacy_el"):
                by_spacy_el.setdefault(name.split(".")[0], f"{module}:{frame.f_lineno}")
                break
            frame = frame.f_back
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import

def report(step):
    print(json.dumps({"step": step, "imported": dict(by_spacy_el)}), flush=True)
""" % (HEAVY,)


def _run(body: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", RECORDER + body], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_registering_the_factories_imports_nothing_heavy():
    steps = _run("""
import spacy
nlp = spacy.blank("en")
report("blank")
nlp.add_pipe("el_abbreviation_detector")
nlp.add_pipe("kb_gazetteer")
nlp.add_pipe("kb_span_extender")
nlp.add_pipe("sap_linker")
report("light components created")
nlp.add_pipe("bilstm_ner")
report("tagger created")
""")
    by_step = {s["step"]: s["imported"] for s in steps}
    assert by_step["blank"] == {}, "spaCy's factory registration imported " + json.dumps(by_step["blank"])
    assert by_step["light components created"] == {}
    # where torch is installed the tagger builds its PyTorch modules (to train them); FAISS and the rest stay out
    assert set(by_step["tagger created"]) == {"torch"}


def test_faiss_comes_with_the_first_index(tiny_bert_dir, tmp_path):
    from spacy_el.kb.index import ConceptIndex
    from spacy_el.kb.table import ConceptTable
    from spacy_el.sap.encoder import SapEncoder

    index = tmp_path / "index"
    ConceptIndex.build(ConceptTable.from_rows([("MESH:D003920", "diabetes mellitus")]),
                       SapEncoder.load(tiny_bert_dir, device="cpu"), use_gpu=False).save(index)
    steps = _run(f"""
import spacy
nlp = spacy.blank("en")
linker = nlp.add_pipe("sap_linker")
report("linker created")
from spacy_el.build import index_from_dir
from spacy_el.sap.encoders import encoder_from_path
linker.initialize(encoder_loader=encoder_from_path({str(tiny_bert_dir)!r}), index_loader=index_from_dir({str(index)!r}))
report("index loaded")
""")
    by_step = {s["step"]: s["imported"] for s in steps}
    assert "faiss" not in by_step["linker created"]
    assert "faiss" in by_step["index loaded"]


def test_without_faiss_spacy_still_works_and_the_linker_says_what_to_install(tmp_path):
    """An environment without FAISS (a plain spaCy user who never links) keeps a working spaCy;
    loading an index says which package is missing instead of a bare ModuleNotFoundError."""
    proc = subprocess.run([sys.executable, "-c", """
import sys
sys.modules["faiss"] = None  # as if FAISS were not installed: `import faiss` raises ModuleNotFoundError
import spacy
nlp = spacy.blank("en")
nlp.add_pipe("sap_linker")
print("blank ok", flush=True)
from spacy_el.kb.index import ConceptIndex
"""], capture_output=True, text=True)
    assert proc.stdout.strip() == "blank ok", proc.stderr[-2000:]
    assert "pip install faiss-cpu" in proc.stderr.strip().splitlines()[-1]
