"""Where a model's weights come from and how its pipeline is built: pipeline.py (hub folder, local folder or tiny
build, then from_pretrained), single_file.py (components from single-file checkpoints, a WanGP ckpts/ folder),
inventory.py (what this box has and what a definition needs in memory), download.py (prefetch on a connected
machine)."""
