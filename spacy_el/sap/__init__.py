"""SapBERT-style encoder and self-alignment pretraining."""
