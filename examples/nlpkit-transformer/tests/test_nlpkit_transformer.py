"""nlpkit's conformance kit for the 'transformer' model, for each task kind it serves (tiny widths)."""

from nlpkit.testing import ModelKit


class TestTransformer(ModelKit):
    plugin = "transformer"  # looked up through the installed entry point, as nlpkit will
    options = {"d_model": 32, "heads": 2, "layers": 1, "ff_dim": 64, "dropout": 0.0, "max_length": 48,
               "label_smoothing": 0.0}
    lr = 1e-2
