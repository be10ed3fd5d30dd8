"""The `sap_linker` component (`pipe.py`, with its mention search `search.py`, coordinations
`composite.py`, the tagger's alternatives `alternatives.py` and its saved parts `storage.py`),
linking/evaluation helpers (`link.py`), spaCy `entity_linker` candidates (`candidates.py`) and
displaCy rendering of links (`display.py`).

After `sap_linker`, each linked entity has `ent.kb_id_` (best concept or the NIL id) and
`ent._.kb_candidates`: `[Candidate(concept_id, score, name, source), …]` best first, where
`score` is the cosine of the concept's best-matching name and `source` is "kb" or the corpus
file a mention alias came from. The extension is registered when the component is imported.
"""
