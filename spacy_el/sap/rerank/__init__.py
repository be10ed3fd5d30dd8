"""Cross-encoder reranking of the linker's top-k candidates: settings and contract (`settings`),
input layouts (`inputs`), the torch and ONNX runtimes (`cross_encoder`, `onnx`) and the loader
(`model`), which entities to rerank and how (`policy`), the texts it reads (`context`) and its
training (`train`)."""
