"""Knowledge-base readers: MEDIC, OBO ontologies (Disease Ontology), the drug dictionary of the
`drug-named-entity-recognition` package and plain TSV → ConceptTable.

Every reader returns canonical concept ids (`spacy_el.ids`), one row per (concept, name), names
de-duplicated per concept, and raises `InputError` naming the file and line of a bad row.
"""
from __future__ import annotations

import bz2
import pickle
from pathlib import Path

from spacy_el.ids import normalize_id
from spacy_el.io import InputError, read_lines
from spacy_el.kb.table import ConceptTable

FORMATS = ("medic", "obo", "obo-xrefs", "tsv", "drug-ner")
#: Cross-reference prefixes kept by `read_obo_xrefs` (the vocabularies the corpora annotate with).
XREF_PREFIXES = ("MESH", "OMIM", "MIM")


def _nonempty(table: ConceptTable, path: Path | str) -> ConceptTable:
    if not len(table):
        raise InputError(f"{path}: no concepts found; is this the right file and --format?")
    return table


def _add_names(table: ConceptTable, cid: str, names: list[str], source: str) -> int:
    """Add each distinct non-empty name once; returns how many were added."""
    seen: set[str] = set()
    for name in names:
        name = " ".join(name.split())
        if name and name not in seen:
            seen.add(name)
            table.add(cid, name, source)
    return len(seen)


def _check_field(path: Path | str, where: int | str, what: str, value: str) -> str:
    """A concept id or name must not hold a tab or a line break: the index's table could
    not read it back. Rejected here, where the file and the line (`where`: a line number, or the
    entry of a file without lines) are known."""
    if any(c in value for c in "\t\n\r"):
        place = f"line {where}" if isinstance(where, int) else where
        raise InputError(f"{path}, {place}: the {what} {value!r} holds a tab or a line break; "
                         "remove it from the KB file")
    return value


def read_medic(path: str | Path) -> ConceptTable:
    """CTD's MEDIC disease vocabulary, in either of its two layouts:

    - `IDS||name|name…` (the file DNorm and the NCBI-disease / BC5CDR papers used, e.g.
      `medic_06Jul2012.txt`): IDS is one id or several joined by `|` (`C567755|613097`), which
      together name ONE concept, kept as `MESH:C567755|OMIM:613097`;
    - CTD's download `CTD_diseases.tsv` (`#` comment lines, then DiseaseName, DiseaseID,
      AltDiseaseIDs, Definition, ParentIDs, TreeNumbers, ParentTreeNumbers, Synonyms, … by tabs):
      the concept is DiseaseID with the MeSH and OMIM ids of AltDiseaseIDs (`MESH:D001943|OMIM:114480`),
      its names DiseaseName and the `|`-joined Synonyms.
    """
    table = ConceptTable()
    ctd = None  # the layout, decided by the first row: a stray tab in a MEDIC row is then an error, not a TSV row
    for lineno, line in read_lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        if ctd is None:
            ctd = "\t" in line
        if ctd:
            ids, names = _ctd_disease_row(path, lineno, line)
            ids_field = line.split("\t")[1]
        else:
            ids_field, sep, names_field = line.partition("||")
            ids = [normalize_id(i) for i in ids_field.split("|") if i.strip()]
            names = names_field.split("|")
            if not sep or not ids:
                raise InputError(
                    f"{path}, line {lineno}: expected MEDIC `IDS||name|name…` (ids, two pipes, names) or "
                    f"CTD_diseases.tsv's tab-separated columns, got {line[:80]!r}"
                )
        ids = [_check_field(path, lineno, "concept id", i) for i in ids]
        if not _add_names(table, "|".join(ids), names, "kb"):
            raise InputError(f"{path}, line {lineno}: concept {ids_field} has no names")
    return _nonempty(table, path)


def _ctd_disease_row(path: str | Path, lineno: int, line: str) -> tuple[list[str], list[str]]:
    """The ids and names of one row of CTD_diseases.tsv (see `read_medic`)."""
    cols = line.split("\t")
    if len(cols) < 8 or not cols[1].strip():
        raise InputError(f"{path}, line {lineno}: expected CTD_diseases.tsv's columns DiseaseName, DiseaseID, "
                         f"AltDiseaseIDs, Definition, ParentIDs, TreeNumbers, ParentTreeNumbers, Synonyms, got "
                         f"{len(cols)} column(s): {line[:80]!r}")
    ids = [normalize_id(cols[1])]
    for alt in cols[2].split("|"):
        norm = normalize_id(alt)
        if norm.startswith(("MESH:", "OMIM:")) and norm not in ids:
            ids.append(norm)
    return ids, [cols[0], *cols[7].split("|")]


def _load_ontology(path: str | Path):
    import pronto

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return pronto.Ontology(str(path))
    except Exception as err:  # pronto/fastobo raise several parser-specific types
        raise InputError(f"{path}: not a readable OBO/OWL ontology ({err})") from None


def ontology_terms(path: str | Path) -> list:
    """The ontology's terms in id order. pronto's own order follows Python's string hashing, which
    changes from process to process: tables built from it had their rows, and so the index's
    tie-breaks, in another order in every run."""
    return sorted(_load_ontology(path).terms(), key=lambda term: term.id)


def read_obo_with_xrefs(path: str | Path, prefixes: tuple[str, ...] = XREF_PREFIXES
                        ) -> tuple[ConceptTable, dict[str, list[str]]]:
    """One parse of an OBO ontology (gzip ok) via pronto: the concept table of `read_obo` and,
    per non-obsolete term, its canonical MESH/OMIM cross-references (`MESH:D003924`,
    `OMIM:601407`), so corpus ids annotated in MeSH/OMIM can be mapped onto ontology terms."""
    table = ConceptTable()
    xrefs: dict[str, list[str]] = {}
    for term in ontology_terms(path):
        if term.obsolete or not term.name:
            continue
        synonyms = sorted(s.description for s in term.synonyms if s.scope == "EXACT")
        _add_names(table, term.id, [term.name, *synonyms], "kb")
        refs = {normalize_id(x.id) for x in term.xrefs if x.id.split(":", 1)[0].upper() in prefixes}
        if refs:
            xrefs[term.id] = sorted(refs)
    return _nonempty(table, path), xrefs


def read_obo(path: str | Path) -> ConceptTable:
    """Each non-obsolete term's name (first) and EXACT synonyms; id `DOID:n` as in the file."""
    return read_obo_with_xrefs(path)[0]


def read_obo_folded(path: str | Path) -> ConceptTable:
    """`read_obo`, with each term's MESH/OMIM cross-references folded into its concept id
    (`DOID:9352|MESH:D003924|OMIM:125853`, the term id first), the way MEDIC spells a concept
    with several ids: corpora annotated in MeSH/OMIM then match ontology terms, both when their
    mentions are added as aliases and when links are scored (any shared id counts)."""
    table, xrefs = read_obo_with_xrefs(path)
    table.ids = ["|".join([cid, *xrefs.get(cid, [])]) for cid in table.ids]
    return table


def read_obo_xrefs(path: str | Path, prefixes: tuple[str, ...] = XREF_PREFIXES) -> dict[str, list[str]]:
    """Term id → canonical MESH/OMIM cross-references (see `read_obo_with_xrefs`)."""
    return read_obo_with_xrefs(path, prefixes)[1]


def read_tsv(path: str | Path) -> ConceptTable:
    """`concept_id<TAB>name[<TAB>source]` rows (ids normalised)."""
    table = ConceptTable.from_tsv(path)
    table.ids = ["|".join(normalize_id(i) for i in cid.split("|")) for cid in table.ids]
    return _nonempty(table, path)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles containers, strings and numbers only: a pickle that names any class or function
    (the way a pickle runs code) is refused instead of run."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only plain data is read")


def read_drug_ner(path: str | Path) -> ConceptTable:
    """Fast Data Science's drug dictionary (`drug_ner_dictionary.pkl.bz2` inside the MIT-licensed
    PyPI package `drug-named-entity-recognition`: ~20k drugs and chemicals from MeSH, DrugBank's open
    vocabulary, MedlinePlus and Wikipedia, with ~107k name variants): the one chemical vocabulary that
    can be had offline, as a gazetteer for Chemical mentions. A concept's id is its MeSH id when it
    has one, else its DrugBank id, else `DRUGNER:<name>`; its names are the canonical name first,
    then every variant that resolves to it (variant order as stored). The package's MeSH ids are
    often a drug class's rather than the substance's (cocaine → D018765, local anesthetics), so
    the table is a list of names to mark, not a KB to link chemicals to."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with bz2.open(path, "rb") as f:
            data = _PlainDataUnpickler(f).load()
        canonical, variants = data["drug_canonical_to_data"], data["drug_variant_to_canonical"]
        names: dict[str, list[str]] = {key: [info.get("name") or key] for key, info in canonical.items()}
        for variant, keys in variants.items():
            for key in keys:
                if key in names:
                    names[key].append(variant)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not the drug-named-entity-recognition dictionary "
                         f"(drug_ner_dictionary.pkl.bz2) ({err})") from None
    table = ConceptTable()
    for key in sorted(names):
        info = canonical[key]
        cid = normalize_id(info["mesh_id"]) if info.get("mesh_id") else info.get("drugbank_id") or f"DRUGNER:{key}"
        _add_names(table, _check_field(path, f"drug {key!r}", "concept id", cid), names[key], "kb")
    return _nonempty(table, path)


def guess_format(path: str | Path) -> str:
    """`medic` for MEDIC-named files and CTD_diseases.tsv, `obo` for .obo/.obo.gz, `tsv` for .tsv, `drug-ner` for
    the drug-named-entity-recognition package's `drug_ner_dictionary.pkl.bz2`."""
    name = Path(path).name.lower()
    if name.startswith("drug_ner_dictionary"):
        return "drug-ner"
    if name.startswith("ctd_diseases"):
        return "medic"
    if name.endswith((".obo", ".obo.gz")):
        return "obo"
    if name.endswith(".tsv"):
        return "tsv"
    if "medic" in name:
        return "medic"
    raise InputError(f"{path}: cannot tell the KB format from the file name; pass --format {'|'.join(FORMATS)}")


def read_kb(path: str | Path, format: str = "auto") -> ConceptTable:
    """Read a KB in `format` (`medic`, `obo`, `tsv`, `drug-ner`, or `auto` by file name)."""
    fmt = guess_format(path) if format == "auto" else format
    readers = {"medic": read_medic, "obo": read_obo, "obo-xrefs": read_obo_folded, "tsv": read_tsv,
               "drug-ner": read_drug_ner}
    if fmt not in readers:
        raise InputError(f"KB format {format!r}: use one of {', '.join(FORMATS)} or auto")
    return readers[fmt](path)
