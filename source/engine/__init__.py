"""Generation engine: model definitions, diffusers pipelines per family, outputs (wrapped by ``wgp.py``)."""
