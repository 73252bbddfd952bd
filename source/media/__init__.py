"""Media without models of their own: video read/write, pose, depth, frame interpolation."""
