"""The files of one task, for every layer that touches them (handlers, the prepare stage, LoRA fetches, the
worker's settings): what a row may read (policy.py: input roots, public URLs, content sniffing), how its inputs
become checked local files (fetch.py: paths, URLs, other tasks' outputs), and where it writes (paths.py: its
output names and its _work folder)."""
