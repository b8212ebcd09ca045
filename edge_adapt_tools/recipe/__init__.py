"""The recipe that rebuilds the shipped default models: tokenizer, generator, calibration set,
PRM, evaluation, manifest and model card."""
