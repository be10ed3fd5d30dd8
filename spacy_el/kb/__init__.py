"""Knowledge bases: concept tables, their readers and the FAISS concept index."""
