"""Retrieval building blocks shared by the systems: a faiss vector index, BM25, fusion, chunking."""
