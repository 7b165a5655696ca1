"""fusent: multimodal sentiment analysis with the fusion methods of the literature behind one command."""

__version__ = "0.1.0"
