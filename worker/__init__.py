"""RQ worker for prototok encode jobs: `python -m worker`. One model per process, loaded once."""
