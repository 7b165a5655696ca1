"""fusent: multimodal sentiment analysis with the fusion methods of the literature behind one command."""

from .threads import passive_openmp

passive_openmp()  # before anything loads torch: OpenMP reads its wait policy once, when it loads

__version__ = "0.1.0"
