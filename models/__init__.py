"""The shipped defect model folders (Paddle Inference) and their model cards."""
