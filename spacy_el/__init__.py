"""spacy-el: find entities with a BiLSTM tagger and link them to knowledge-base concepts.

spaCy finds the components through entry points (`bilstm_ner`, `sap_linker`,
`el_abbreviation_detector`), so `nlp.add_pipe(...)` works without importing this package (spaCy
imports the component's module, which imports this package first).
"""
from spacy_el.models import install_fork_hook

__version__ = "0.1.0"

# torch, FAISS and ONNX Runtime thread pools do not survive fork: make forked workers
# (nlp.pipe(n_process=2)) safe before any model runs (see spacy_el.models).
install_fork_hook()
