"""Cross-encoder reranking of the linker's top-k candidates: the model and its runtimes
(`model`), the texts it reads (`context`) and its training (`train`)."""
