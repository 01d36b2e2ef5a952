"""Files: checkpoints (safetensors + JSON config), images with infotext."""
