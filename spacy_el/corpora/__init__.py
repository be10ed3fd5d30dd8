"""Readers for annotated corpora (PubTator)."""
