"""One router per resource: encode, jobs, embeddings, decode, health."""
