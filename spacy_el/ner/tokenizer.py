"""`spacy_el.BiomedicalTokenizer.v1`: spaCy's tokenizer with a few more splits that biomedical
mentions need.

A tagger can only tag whole tokens. spaCy's English rules keep "(BHA)-induced", "thallium-201"
or "diazepam-" (before a coordinated noun) as single tokens, so the chemical inside is out of
reach (how many, and what these rules recover: RESULTS.md).
These rules split a hyphen before digits or after a closing bracket, a bracket glued to a word,
and a trailing hyphen, and nothing else: every token boundary of the default tokenizer stays.
Use it in a config as `[nlp.tokenizer] @tokenizers = "spacy_el.BiomedicalTokenizer.v1"` and
convert the corpus with the same tokenizer (`convert-ner --tokenizer biomedical`).
"""
from __future__ import annotations

from typing import Callable

from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.util import compile_infix_regex, compile_suffix_regex, registry

#: hyphen before digits ("thallium-201"), a closing bracket before a hyphen ("(BHA)-induced"),
#: an opening bracket after a word ("Na(+)"), a word after a closing bracket, a hyphen before
#: a closing bracket or comma
EXTRA_INFIXES = [r"(?<=[\w\)\]])-(?=[0-9])", r"[\)\]](?=-)", r"(?<=[0-9A-Za-z])(?=[\(\[])",
                 r"(?<=[\)\]])(?=[0-9A-Za-z])", r"(?<=\w)-(?=[\)\],])"]
#: a trailing hyphen ("diazepam- and morphine-induced")
EXTRA_SUFFIXES = [r"-"]
#: the names `blank` (and `convert-ner --tokenizer`) take
TOKENIZERS = ("default", "biomedical")


@registry.tokenizers("spacy_el.BiomedicalTokenizer.v1")
def make_biomedical_tokenizer() -> Callable[[Language], Tokenizer]:
    """spaCy's default tokenizer for the language, plus `EXTRA_INFIXES` and `EXTRA_SUFFIXES`."""
    default = registry.tokenizers.get("spacy.Tokenizer.v1")()

    def create(nlp: Language) -> Tokenizer:
        tokenizer = default(nlp)
        tokenizer.infix_finditer = compile_infix_regex(list(nlp.Defaults.infixes or []) + EXTRA_INFIXES).finditer
        tokenizer.suffix_search = compile_suffix_regex(list(nlp.Defaults.suffixes or []) + EXTRA_SUFFIXES).search
        return tokenizer

    return create


def blank(lang: str, tokenizer: str = "default") -> Language:
    """A blank pipeline with spaCy's tokenizer (`default`) or this module's (`biomedical`)."""
    import spacy

    if tokenizer == "default":
        return spacy.blank(lang)
    if tokenizer == "biomedical":
        return spacy.blank(lang, config={"nlp": {"tokenizer": {"@tokenizers": "spacy_el.BiomedicalTokenizer.v1"}}})
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
