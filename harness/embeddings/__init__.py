"""Sentence embeddings: backends behind one `embed` interface, with an on-disk cache by content hash."""
