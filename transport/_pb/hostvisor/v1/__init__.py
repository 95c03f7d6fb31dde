"""Generated package (python -m transport._pb.regen). DO NOT EDIT."""
