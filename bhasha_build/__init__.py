"""bhasha-build: Indic OCR-correction pairs → fine-tuned model → q4_k_m GGUF → Ollama."""

__version__ = "0.1.0"
