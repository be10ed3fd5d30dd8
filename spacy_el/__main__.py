from spacy_el.cli import app

app(prog_name="spacy-el")
