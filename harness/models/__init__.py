"""The model registry, users' models by import path, and torchvision's zoo."""
