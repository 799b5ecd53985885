"""Robot-PC hardware interfaces: the arm backend protocol and camera drivers (RealSense, OpenCV)."""
