import gzip

import pytest

from spacy_el.io import InputError
from spacy_el.kb.readers import guess_format, read_kb, read_medic, read_obo, read_obo_with_xrefs, read_obo_xrefs, read_tsv

MEDIC = """C565588||Epidermolysis Bullosa With Diaphragmatic Hernia
C567755|613097||Tooth Agenesis, Selective, 6|STHAG6|STHAG6
145250||Hyperkalemic periodic paralysis|HYPP

D003924||Diabetes Mellitus, Type 2|NIDDM
"""

OBO = """format-version: 1.2
ontology: doid

[Term]
id: DOID:9352
name: type 2 diabetes mellitus
synonym: "NIDDM" EXACT []
synonym: "type 2 diabetes" EXACT []
synonym: "insulin resistance" RELATED []
xref: MESH:D003924
xref: OMIM:125853
xref: NCI:C26747

[Term]
id: DOID:4
name: disease
xref: UMLS_CUI:C0012634

[Term]
id: DOID:1
name: old term
is_obsolete: true
xref: MESH:D000001
"""


def test_medic(tmp_path):
    path = tmp_path / "medic.txt"
    path.write_text(MEDIC)
    t = read_medic(path)
    assert t.n_concepts == 4
    two_ids = [n for i, n in zip(t.ids, t.names) if i == "MESH:C567755|OMIM:613097"]
    assert two_ids == ["Tooth Agenesis, Selective, 6", "STHAG6"]  # duplicate name dropped
    assert "OMIM:145250" in t.ids and "MESH:D003924" in t.ids
    assert set(t.sources) == {"kb"}


@pytest.mark.parametrize("line, message", [
    ("D000001|Acne\n", "line 2: expected MEDIC"),
    ("D000001||\n", "line 2: concept D000001 has no names"),
    ("||Acne\n", "line 2: expected MEDIC"),
])
def test_medic_bad_rows(tmp_path, line, message):
    path = tmp_path / "medic.txt"
    path.write_text("D003924||Diabetes\n" + line)
    with pytest.raises(InputError, match=message) as err:
        read_medic(path)
    assert str(path) in str(err.value)


def test_empty_kb(tmp_path):
    (tmp_path / "medic.txt").write_text("\n\n")
    with pytest.raises(InputError, match="no concepts found"):
        read_medic(tmp_path / "medic.txt")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(InputError, match="no concepts found"):
        read_tsv(tmp_path / "empty.tsv")


@pytest.mark.parametrize("gz", [False, True])
def test_obo(tmp_path, gz):
    path = tmp_path / ("do.obo.gz" if gz else "do.obo")
    path.write_bytes(gzip.compress(OBO.encode()) if gz else OBO.encode())
    t = read_kb(path)  # format by suffix
    assert sorted(zip(t.ids, t.names)) == [
        ("DOID:4", "disease"), ("DOID:9352", "NIDDM"), ("DOID:9352", "type 2 diabetes"),
        ("DOID:9352", "type 2 diabetes mellitus")]  # RELATED synonym and obsolete term left out
    assert t.names[t.ids.index("DOID:9352")] == "type 2 diabetes mellitus"  # the name comes first
    assert read_obo_xrefs(path) == {"DOID:9352": ["MESH:D003924", "OMIM:125853"]}
    folded = read_kb(path, "obo-xrefs")
    assert set(folded.ids) == {"DOID:4", "DOID:9352|MESH:D003924|OMIM:125853"}
    assert folded.names == t.names


def test_obo_rows_do_not_depend_on_the_order_pronto_gives_terms(tmp_path, monkeypatch):
    """pronto's term order changes between runs on a real ontology (with PYTHONHASHSEED);
    the table must not follow it: its row order decides the index's tie-breaks, so the same
    build gave other links from one run to the next."""
    from spacy_el.kb import readers

    path = tmp_path / "do.obo"
    path.write_text(OBO.replace("[Term]\nid: DOID:1\n", "".join(
        f"[Term]\nid: DOID:{100 + i}\nname: term {i}\n\n" for i in range(30)) + "[Term]\nid: DOID:1\n"))
    first = list(read_obo_with_xrefs(path)[0].rows())
    real = readers._load_ontology

    class Reordered:
        def __init__(self, onto):
            self.onto = onto

        def terms(self):
            terms = list(self.onto.terms())
            return terms[1::2] + terms[::2][::-1]

    monkeypatch.setattr(readers, "_load_ontology", lambda p: Reordered(real(p)))
    assert list(read_obo_with_xrefs(path)[0].rows()) == first and len(first) == 34


def test_obo_unreadable(tmp_path):
    (tmp_path / "bad.obo").write_text("[Term]\nid DOID 1 no colon\n")
    with pytest.raises(InputError, match="bad.obo"):
        read_obo(tmp_path / "bad.obo")
    with pytest.raises(InputError, match="not found"):
        read_obo(tmp_path / "missing.obo")


def test_tsv_and_dispatch(tmp_path):
    path = tmp_path / "kb.tsv"
    path.write_text("D003924\tDiabetes Mellitus, Type 2\nOMIM:145250\tHYPP\tcorpus\n")
    t = read_kb(path)
    assert list(t.rows()) == [("MESH:D003924", "Diabetes Mellitus, Type 2", "kb"),
                              ("OMIM:145250", "HYPP", "corpus")]
    assert read_kb(path, "tsv").names == t.names
    (tmp_path / "kb2.tsv").write_text("D1\n")
    with pytest.raises(InputError, match="line 1"):
        read_kb(tmp_path / "kb2.tsv")
    with pytest.raises(InputError, match="--format"):
        read_kb(tmp_path / "kb.dat")
    with pytest.raises(InputError, match="use one of"):
        read_kb(path, "csv")


def test_drug_ner_dictionary(tmp_path, bz2_pickle):
    """drug-named-entity-recognition's pickle: MeSH id first, DrugBank next, the name last; every
    variant under its drug; a pickle that would run code is refused, not run."""
    dump = bz2_pickle
    data = {"drug_canonical_to_data": {"aspirin": {"name": "Aspirin", "mesh_id": "D001241"},
                                       "ibuprofen": {"name": "Ibuprofen", "drugbank_id": "DB01050"},
                                       "herbal tea": {"name": "Herbal tea"}},
            "drug_variant_to_canonical": {"acetylsalicylic acid": ["aspirin"], "asa": ["aspirin"],
                                          "advil": ["ibuprofen"], "orphan": ["unknown"]}}
    path = dump(tmp_path / "drug_ner_dictionary.pkl.bz2", data)
    table = read_kb(path)  # format told by the file name
    assert list(table.rows()) == [
        ("MESH:D001241", "Aspirin", "kb"), ("MESH:D001241", "acetylsalicylic acid", "kb"),
        ("MESH:D001241", "asa", "kb"), ("DRUGNER:herbal tea", "Herbal tea", "kb"),
        ("DB01050", "Ibuprofen", "kb"), ("DB01050", "advil", "kb")]

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = dump(tmp_path / "evil.pkl.bz2", {"drug_canonical_to_data": Evil()})
    with pytest.raises(InputError, match="evil.pkl.bz2.*builtins.print"):
        read_kb(evil, "drug-ner")
    wrong = dump(tmp_path / "wrong.pkl.bz2", {"other": 1})
    with pytest.raises(InputError, match="wrong.pkl.bz2: not the drug-named-entity-recognition dictionary"):
        read_kb(wrong, "drug-ner")
    dump(wrong, {"drug_canonical_to_data": {"aspirin": "not a dict"}, "drug_variant_to_canonical": {}})
    with pytest.raises(InputError, match="wrong.pkl.bz2: not the drug-named-entity-recognition dictionary"):
        read_kb(wrong, "drug-ner")
    (tmp_path / "plain.pkl.bz2").write_text("not bz2")
    with pytest.raises(InputError, match="plain.pkl.bz2"):
        read_kb(tmp_path / "plain.pkl.bz2", "drug-ner")


def test_real_medic_and_disease_ontology(shared_data):
    medic = read_kb(shared_data / "dictionaries" / "medic_06Jul2012.txt")
    assert medic.n_concepts == 11915 and len(medic) == 76237
    assert "MESH:C567755|OMIM:613097" in medic.ids
    do_path = shared_data / "kb" / "disease_ontology" / "doid.obo.gz"
    do, xrefs = read_obo_with_xrefs(do_path)
    assert do.n_concepts == 11501  # non-obsolete terms (SOURCES.md)
    assert "DOID:9352" in do.ids and "NIDDM" in do.names
    assert "MESH:D003924" in xrefs["DOID:9352"] and "OMIM:125853" in xrefs["DOID:9352"]


def test_real_drug_ner_dictionary():
    """The dictionary as the PyPI package ships it (the BC5CDR tagger's chemical gazetteer)."""
    from importlib.resources import files

    pytest.importorskip("drug_named_entity_recognition")
    table = read_kb(files("drug_named_entity_recognition") / "drug_ner_dictionary.pkl.bz2")
    assert len(table) == 127206 and table.n_concepts == 17249
    concepts = {}
    for cid, name in zip(table.ids, table.names):
        concepts.setdefault(name.lower(), set()).add(cid)
    assert concepts["aspirin"] == concepts["acetylsalicylic acid"] and len(concepts["aspirin"]) == 1
    assert sum(cid.startswith("MESH:") for cid in set(table.ids)) == 5927


#: CTD's current download, CTD_diseases.tsv: comment lines, then DiseaseName, DiseaseID, AltDiseaseIDs,
#: Definition, ParentIDs, TreeNumbers, ParentTreeNumbers, Synonyms, SlimMappings by tabs.
CTD_DISEASES = (
    "# Comparative Toxicogenomics Database (CTD) - http://ctdbase.org/\n"
    "# Fields:\n"
    "# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\tParentTreeNumbers\tSynonyms\tSlimMappings\n"
    "#\n"
    "Breast Neoplasms\tMESH:D001943\tDO:DOID:1612|OMIM:114480\tTumors of the breast.\tMESH:D001941\tC04.588.180"
    "\tC04.588\tBreast Cancer|Breast Tumors|Breast Tumors\tCancer\n"
    "Acne Vulgaris\tMESH:D000152\t\t\tMESH:D000151\tC17.800.030.150\tC17.800.030\t\tSkin disease\n"
)


def test_medic_reads_ctd_diseases_tsv(tmp_path):
    path = tmp_path / "CTD_diseases.tsv"
    path.write_text(CTD_DISEASES)
    assert guess_format(path) == "medic"
    t = read_kb(path)
    names = {}
    for cid, name in zip(t.ids, t.names):
        names.setdefault(cid, []).append(name)
    assert names == {"MESH:D001943|OMIM:114480": ["Breast Neoplasms", "Breast Cancer", "Breast Tumors"],
                     "MESH:D000152": ["Acne Vulgaris"]}
    path.write_text(CTD_DISEASES + "Bad row\tMESH:D0\n")
    with pytest.raises(InputError, match="line 7: expected CTD_diseases.tsv's columns"):
        read_medic(path)
