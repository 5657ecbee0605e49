"""``edgeq run``: a pipeline file -> the model x recipes x targets x devices matrix, built,
evaluated and profiled with a content cache, resumable, on a choice of executors."""
