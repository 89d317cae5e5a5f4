"""The conformance kit and test helpers for plugin authors (it needs pytest), split by job:

    kit.py           ModelKit, TaskKit, DatasetKit: pytest classes to subclass, naming the plugin
    model_checks.py  the model checks (plain functions raising AssertionError), and their helpers
    checks.py        the task and dataset checks
    tiny.py          tiny data in every task kind's shapes; one_module_plugin / install_package / plugins_on_path

Everything is re-exported here: ``from nlpkit.testing import ModelKit, check_overfits, install_package``.
The top layer beside the CLI: it may use every layer below; nothing in nlpkit imports it.
"""

from nlpkit.testing.checks import (
    check_bad_file,
    check_dataset,
    check_example_shape,
    check_record_shape,
    check_task,
    check_task_follows_dataset_labels,
    check_task_unknown_label,
)
from nlpkit.testing.kit import (
    DatasetKit,
    ModelKit,
    TaskKit,
)
from nlpkit.testing.model_checks import (
    batch_loss,
    build,
    check_batch_of_one_and_longest_input,
    check_bf16,
    check_builds,
    check_forward_backward,
    check_overfits,
    check_padding_invariant,
    check_padding_logits,
    check_prediction_shape,
    check_refuses,
    check_save_load,
    check_seeded,
    eval_loss,
    judge_overfit,
    make_batch,
    overfit,
    predictions,
    train_steps,
)
from nlpkit.testing.tiny import (
    FILLER,
    LEXICON,
    PLACES,
    TAGS,
    TOPICS,
    gold_predictions,
    install_package,
    label_names,
    long_example,
    one_module_plugin,
    plugins_on_path,
    tiny_examples,
    tiny_records,
    tiny_splits,
    to_example,
    wrong_predictions,
)

__all__ = [
    "FILLER",
    "gold_predictions",
    "install_package",
    "one_module_plugin",
    "label_names",
    "LEXICON",
    "long_example",
    "PLACES",
    "plugins_on_path",
    "TAGS",
    "tiny_examples",
    "tiny_records",
    "tiny_splits",
    "to_example",
    "TOPICS",
    "wrong_predictions",
    "batch_loss",
    "build",
    "check_batch_of_one_and_longest_input",
    "check_bf16",
    "check_builds",
    "check_forward_backward",
    "check_overfits",
    "check_padding_invariant",
    "check_padding_logits",
    "check_prediction_shape",
    "check_refuses",
    "check_save_load",
    "check_seeded",
    "eval_loss",
    "judge_overfit",
    "make_batch",
    "overfit",
    "predictions",
    "train_steps",
    "check_bad_file",
    "check_dataset",
    "check_example_shape",
    "check_record_shape",
    "check_task",
    "check_task_follows_dataset_labels",
    "check_task_unknown_label",
    "DatasetKit",
    "ModelKit",
    "TaskKit",
]
