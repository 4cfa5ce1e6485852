"""prototok's REST service: a FastAPI front end that queues encode jobs for RQ workers on Redis,
keeps the resulting encodings in Redis, and decodes them in one forward pass."""
