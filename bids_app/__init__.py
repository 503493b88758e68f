"""llmfbn: brain-like functional organisation of artificial neurons in language models.

A BIDS-App that couples the temporal responses of a language model's feed-forward
artificial neurons (ANs) to human functional brain networks (FBNs), following
Sun et al., "Brain-like Functional Organization within Large Language Models"
(arXiv 2410.19542).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
