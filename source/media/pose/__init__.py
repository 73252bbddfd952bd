"""Human pose: detection (mediapipe), the 18-keypoint OpenPose skeleton, and its drawing."""
