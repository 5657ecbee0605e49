"""Runtime-neutral quantization passes (PT2E PTQ/QAT driver, observer choice)."""
