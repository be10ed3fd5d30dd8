"""spacy-el: find entities with a BiLSTM tagger and link them to knowledge-base concepts.

spaCy finds the components through entry points (`bilstm_ner`, `sap_linker`,
`abbreviation_detector`), so `nlp.add_pipe(...)` works without importing this package.
"""
__version__ = "0.1.0"
