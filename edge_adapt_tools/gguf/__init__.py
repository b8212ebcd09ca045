"""Hugging Face checkpoint to GGUF: reading the checkpoint, converting tensors and tokenizer,
quantizing with llama.cpp, and verifying tokenization and logits against PyTorch."""
