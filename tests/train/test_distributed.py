"""DDP on CPU: a 2-process run (gloo, launched by torchrun) against the 1-process run of the same recipe.

Both processes build the same global batches and each trains on its half of every batch; the halves
cover the batch, the final weights agree across ranks, and weights and test metrics equal the 1-process
run's (the recipe has a last batch of one example, so one rank gets none and joins at weight 0; dropout
is off, as each process draws its own masks). Only rank 0 writes files. The precision is pinned to fp32: "auto"
would pick bf16 on CPUs with native bf16, whose rounding the comparison's tolerances are not made for.
"""

import json
import socket
import subprocess

import pytest
import torch
from click.testing import CliRunner
from training_utils import PYTHON, env, run_folder, share_initial_model, write_recipe

from nlpkit.cli import main
from nlpkit.run import engine
from nlpkit.train import loop as training
from nlpkit.train.batching import shard
from nlpkit.train.loop import train

RECIPE = """\
name: tiny
task: {name: classification, dataset: toy_topics, dataset_options: {train_size: 128, eval_size: 48}}
models:
  lstm: {vocab_size: 300, embedding_dim: 32, hidden_size: 16, dropout: 0.0}
train: {epochs: 6, batch_size: 7, max_train_examples: 99, subset: head, lr: 1.0e-2, log_every: 1, progress: false,
        precision: fp32}
seeds: [1]
"""

# Runs the nlpkit command line in this process and records, per rank: the global batches and this rank's
# part of each, every file this process writes or removes under the runs folder (audit hook), how often
# it saved a model, and the weights at the end of training.
DRIVER = """
import json, os, sys
import torch
from nlpkit.run import engine
from nlpkit.train import loop as training
from nlpkit_plugins.models.shared.recurrent import RecurrentModel

out, runs = sys.argv[1], os.path.realpath(sys.argv[2])
rank = int(os.environ.get("RANK", "0"))
record = {"batches": [], "parts": [], "writes": [], "saves": 0}

shard = training.shard
def recording_shard(batch, r, world):
    part = shard(batch, r, world)
    record["batches"].append(list(batch))
    record["parts"].append(list(part))
    return part
training.shard = recording_shard

save = RecurrentModel.save
def counting_save(self, folder):
    record["saves"] += 1
    return save(self, folder)
RecurrentModel.save = counting_save

train = engine.train
def train_and_keep_weights(model, *args, **kwargs):
    fit = train(model, *args, **kwargs)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f"{out}/weights-rank{rank}.pt")
    return fit
engine.train = train_and_keep_weights

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "shutil.rmtree"}
def audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)) and (args[2] or 0) & WRITES:
        path = args[0]
    elif event in CHANGES and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = args[0]
    else:
        return
    path = os.path.realpath(os.fsdecode(path))
    if path.startswith(runs):
        record["writes"].append(event + " " + path)
sys.addaudithook(audit)

from nlpkit.cli import main
try:
    main(sys.argv[3:], standalone_mode=False)
finally:
    with open(f"{out}/record-rank{rank}.json", "w") as f:
        json.dump(record, f)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same recipe trained by 2 processes (torchrun, in the background) and by 1 (in this process),
    from one initial model."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(root, RECIPE)
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    share_initial_model(recipe, [root / "two" / "runs", root / "one" / "runs", root / "nodes" / "runs"])
    out = root / "two"
    ddp = subprocess.Popen([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(driver), str(out), str(out / "runs"), "run", str(recipe), "--set", f"output={out / 'runs'}", "--set", f"reports={out / 'runs'}/reports"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        single = run_in_process(recipe, root / "one")
    finally:
        output, _ = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, output[-3000:]
    return {"root": root, "recipe": recipe, "driver": driver, "one": single, "two": [record(root, "two", 0), record(root, "two", 1)],
            "weights": {"one": single.pop("weights"), "two": [torch.load(out / f"weights-rank{r}.pt") for r in (0, 1)]}}


def run_in_process(recipe, out):
    """The 1-process run, recording the same things the driver records (but file writes)."""
    seen = {"batches": [], "parts": []}

    def recording_shard(batch, rank, world):
        part = shard(batch, rank, world)
        seen["batches"].append(list(batch))
        seen["parts"].append(list(part))
        return part

    def train_and_keep_weights(model, *args, **kwargs):
        fit = train(model, *args, **kwargs)
        seen["weights"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return fit

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NLPKIT_IN_PROCESS", "1")  # the patches below must reach the run: this very process
        patch.setattr(training, "shard", recording_shard)
        patch.setattr(engine, "train", train_and_keep_weights)
        torch.set_num_threads(1)
        try:
            result = CliRunner().invoke(main, ["run", str(recipe), "--set", f"output={out / 'runs'}", "--set", f"reports={out / 'runs'}/reports"])
        finally:
            torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return seen


def record(root, name, rank):
    return json.loads((root / name / f"record-rank{rank}.json").read_text())


def results(root, name):
    return json.loads((run_folder(root / name / "runs") / "results.json").read_text())


def test_each_rank_trains_on_its_half_of_the_same_global_batches(runs):
    one, (rank0, rank1) = runs["one"], runs["two"]
    assert rank0["batches"] == rank1["batches"] == one["batches"]
    assert one["parts"] == one["batches"]
    for batch, part0, part1 in zip(rank0["batches"], rank0["parts"], rank1["parts"]):
        assert sorted(part0 + part1) == sorted(batch) and not set(part0) & set(part1)
    assert any(len(b) == 1 for b in one["batches"]), "the recipe should give one rank an empty part"


def test_final_weights_agree_across_ranks_and_with_one_process(runs):
    single, (rank0, rank1) = runs["weights"]["one"], runs["weights"]["two"]
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for k in single:
        torch.testing.assert_close(rank0[k], single[k], rtol=1e-4, atol=1e-5)


def test_test_metrics_and_losses_equal_the_one_process_run(runs):
    runs = runs["root"]
    two, one = results(runs, "two"), results(runs, "one")
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["precision"] == one["precision"] == "fp32"  # pinned: equality up to fp32 rounding is the claim
    assert two["effective_batch_size"] == one["effective_batch_size"] == 7
    assert two["steps"] == one["steps"] and two["best_step"] == one["best_step"]
    assert two["test"] == pytest.approx(one["test"], abs=1e-6)
    assert two["validation"] == pytest.approx(one["validation"], abs=1e-6)
    assert one["test"]["accuracy"] > 0.4, "a run that learns nothing would make equality meaningless"
    losses = {name: [json.loads(line)["loss"] for line in
                     (run_folder(runs / name / "runs") / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
              for name in ("one", "two")}
    assert losses["two"] == pytest.approx(losses["one"], rel=1e-4)
    predictions = {name: [json.loads(line)["prediction"] for line in
                          (run_folder(runs / name / "runs") / "predictions.jsonl").read_text().splitlines()]
                   for name in ("one", "two")}
    assert len(predictions["two"]) == 48 and predictions["two"] == predictions["one"]


def test_only_rank_zero_writes(runs):
    rank0, rank1 = runs["two"]
    assert rank1["writes"] == [] and rank1["saves"] == 0
    assert rank0["saves"] == 1 and any("results.json" in w for w in rank0["writes"])


# --------------------------------------------------------------------- two nodes, by c10d rendezvous (multi-node)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_by_c10d_rendezvous_train_exactly_as_one_process(runs):
    """Two torchrun invocations, one per "node" (``--nnodes 2 --nproc_per_node 1``), meet at a c10d rendezvous
    on 127.0.0.1, as two machines of a cluster would: the run equals the 1-process run."""
    root, port = runs["root"], free_port()
    out = root / "nodes"
    nodes = [subprocess.Popen([PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint",
                               f"127.0.0.1:{port}", "--rdzv-id", "nlpkit-test", str(runs["driver"]), str(out),
                               str(out / "runs"), "run", str(runs["recipe"]), "--set", f"output={out / 'runs'}",
                               "--set", f"reports={out / 'runs'}/reports"], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n---\n".join(o[-2000:] for o in outputs)
    two, one = results(root, "nodes"), results(root, "one")
    assert two["processes"] == 2 and two["steps"] == one["steps"] and two["best_step"] == one["best_step"]
    assert two["test"] == pytest.approx(one["test"], abs=1e-6)
    assert two["validation"] == pytest.approx(one["validation"], abs=1e-6)
    rank0, rank1 = (torch.load(out / f"weights-rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for k, v in runs["weights"]["one"].items():
        torch.testing.assert_close(rank0[k], v, rtol=1e-4, atol=1e-5)
    assert record(root, "nodes", 1)["writes"] == [], "only the global rank 0 writes"


# ------------------------------------------------------------------ an error rank 0 finds reaches every rank


def torchrun(tmp_path, recipe_text, timeout=120):
    recipe = write_recipe(tmp_path, recipe_text)
    out = tmp_path / "out"
    return subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                           "nlpkit", "run", str(recipe), "--set", f"output={out / 'runs'}",
                           "--set", f"reports={out / 'reports'}"], env=env(), capture_output=True, text=True,
                          timeout=timeout), out / "runs" / "tiny" / "classification-lstm-seed1"


def test_a_run_held_by_another_process_is_skipped_by_every_rank_at_once(tmp_path):
    """Only rank 0 takes the run folder's lock: when another process holds it, every rank must skip the run
    together (the others would wait for rank 0 in the next collective while it went on)."""
    from nlpkit.run.folders import run_lock

    held = tmp_path / "out" / "runs" / "tiny" / "classification-lstm-seed1"
    held.mkdir(parents=True)
    with run_lock(held):
        done, _ = torchrun(tmp_path, RECIPE.replace("epochs: 6", "epochs: 1"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "classification-lstm-seed1: skipped" in done.stdout and "in use by process" in done.stdout
    assert [p.name for p in held.iterdir()] == [], "no rank touched the held run's folder"


def test_changed_settings_rank_0_cannot_move_aside_stop_every_rank_with_its_error(tmp_path):
    """Rank 0 moves a run made with other settings aside before anything trains; when it cannot (another process
    holds that folder), every rank stops with its error instead of waiting for rank 0 at the next barrier."""
    from nlpkit.run.folders import run_lock

    old = tmp_path / "out" / "runs" / "tiny" / "classification-lstm-seed1"
    old.mkdir(parents=True)
    (old / "recipe.yaml").write_text("recipe: tiny\nseed: 1\ntrain: {lr: 0.5}\n")
    with run_lock(old):
        done, _ = torchrun(tmp_path, RECIPE)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2, done.stderr[-3000:]  # each rank says it: rank 1 heard it from rank 0
    assert errors[0] == errors[1] and "is in use by process" in errors[0]  # the holder's host:pid, as rank 0 saw it


# ----------------------------------------------------------------------------------- a saved fast-layout BERT

BERT_RECIPE = """\
name: tiny
task: {{name: classification, dataset: toy_topics, dataset_options: {{train_size: 64, eval_size: 16}}}}
models:
  bert: {{pretrained: {pretrained}, dropout: 0.0, max_length: 32}}
train: {{max_steps: 4, batch_size: 8, lr: 1.0e-3, weight_decay: 0.0, precision: fp32, log_every: 1, progress: false}}
seeds: [1]
"""


def test_ddp_on_a_saved_fast_layout_bert_trains_the_same_weights_on_every_rank(tmp_path):
    """The initial model is saved by one CPU process, in the fast layout (its word embedding's gradient bypasses
    autograd, so DDP would never all-reduce it and the ranks would drift apart silently). Under torchrun the
    speed rule takes the stock layout: the saved model is converted on load, and every rank ends identical."""
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from safetensors import safe_open
    from transformers import AutoTokenizer, BertConfig
    from transformers import BertModel as HFBertModel

    folder = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    HFBertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    recipe = write_recipe(tmp_path, BERT_RECIPE.format(pretrained=folder))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "two"
    share_initial_model(recipe, [out / "runs"])
    initial = run_folder(out / "runs", name="classification-bert-seed1") / "checkpoints" / "model"
    with safe_open(initial / "model.safetensors", "pt") as saved:
        assert "encoder.word.table" in saved.keys()  # the fast layout, as a 1-process run writes it
    ddp = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
                          str(out), str(out / "runs"), "run", str(recipe), "--set", f"output={out / 'runs'}",
                          "--set", f"reports={out / 'runs'}/reports"], env=env(), capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-3000:]
    rank0, rank1 = (torch.load(out / f"weights-rank{r}.pt") for r in (0, 1))
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not different, f"weights differ between ranks: {different[:5]}"
    assert "encoder.embeddings.word_embeddings.weight" in rank0  # trained in the stock layout
    initial_weights = HFBertModel.from_pretrained(folder, add_pooling_layer=False).state_dict()
    moved = [k for k in initial_weights if not torch.equal(initial_weights[k], rank0[f"encoder.{k}"])]
    assert "embeddings.word_embeddings.weight" in moved, "training should have changed the word embeddings"
    res = json.loads((run_folder(out / "runs", name="classification-bert-seed1") / "results.json").read_text())
    assert res["processes"] == 2 and res["precision"] == "fp32" and res["steps"] == 4
