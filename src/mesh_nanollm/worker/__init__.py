"""The headless peer: `mesh-nanollm worker` serves a room on onnxruntime."""
