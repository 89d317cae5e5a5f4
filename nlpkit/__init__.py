"""nlpkit: plugin-based NLP experiments. One YAML recipe -> every model x task x seed -> one comparison report."""

from nlpkit.contract import (
    Dataset,
    Launcher,
    Model,
    Options,
    Output,
    RunContext,
    RunOutcome,
    Task,
    TaskSpec,
    Tracker,
    Unsupported,
)
from nlpkit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "Model", "Task", "Dataset", "Launcher", "Options", "Output", "RunContext", "RunOutcome",
           "TaskSpec", "Tracker", "Unsupported", "__version__"]
