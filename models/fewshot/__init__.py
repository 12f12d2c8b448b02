"""Few-shot text classification: SetFit-style contrastive fine-tuning of a mean-pooled encoder."""
