"""Direct generation rows: row → typed GenerationRequest, LoRA selection, progress, the handler."""
