"""Frame interpolation between two images: an OpenCV optical-flow method and RIFE (IFNet)."""
