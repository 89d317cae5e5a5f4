"""The command line: ``nlpkit run | plugins | predict | report | runs``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nlpkit.errors import NlpkitError


class _Group(click.Group):
    """Print input errors as one clear message, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NlpkitError as err:
            click.secho(f"Error: {err}", fg="red", err=True)
            sys.exit(getattr(err, "exit_code", 2))  # a run stopped by SIGTERM exits 128 + 15
        except OSError as err:  # a file fault no narrower handler caught (e.g. a full disk under a plugin's save)
            from nlpkit.files import disk_error

            click.secho(f"Error: {disk_error(err, err.filename or '(a file)', 'write or read')}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="nlpkit")
def main() -> None:
    """Plugin-based NLP experiments: one YAML recipe, every model x task x seed, one comparison report."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key.")
@click.option("--dry-run", is_flag=True, help="Print the expanded plan and exit.")
@click.option("--force", is_flag=True, help="Re-run runs that already finished.")
@click.option("--restart", is_flag=True, help="Start unfinished runs over instead of resuming their checkpoints.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of the matrix to train side by side, each with its share of the cores (or one GPU).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per run (sets train.threads; default: torch's, or cores / --jobs). On a shared "
                   "machine fewer threads can be much faster.")
@click.option("--no-report", is_flag=True, help="Skip the summary and the comparison report after the runs "
              "(`nlpkit report` writes them later).")
@click.option("--track", metavar="TRACKER[,TRACKER...]", default=None,
              help="Experiment trackers that follow every run, e.g. tensorboard,mlflow (sets the recipe's track:; "
                   "'' for none). Leaves settings hashes, and so finished runs, alone.")
@click.option("--only", multiple=True, metavar="ID", help="Run only the run with this id (`nlpkit plan`); repeat "
              "for several.")
@click.option("--shard", metavar="I/N", help="Run only shard I of N (1 <= I <= N): the runs at positions I, I+N, "
              "I+2N... of `nlpkit plan`; the N shards cover every run once.")
@click.option("--launcher", default=None, metavar="NAME", help="Where the runs are carried out: local (default: "
              "processes on this machine), slurm (submitit), ray, or a plugin's launcher.")
@click.option("--launcher-options", metavar="K=V,...", help="The launcher's options (`nlpkit plugins --options "
              "NAME` lists them).")
@click.option("--slurm", "slurm_options", metavar="K=V,...", help="--launcher slurm with these options, e.g. "
              "partition=gpu,gpus_per_run=1,time=04:00:00 (cluster=local: submitit's local executor).")
@click.option("--ray", "ray_options", metavar="K=V,...", help="--launcher ray with these options, e.g. "
              "address=auto,cpus_per_run=4 (default: a Ray instance on this machine).")
def run(recipe: str, overrides: tuple[str, ...], dry_run: bool, force: bool, restart: bool, jobs: int,
        threads: int | None, no_report: bool, track: str | None, only: tuple[str, ...], shard: str | None,
        launcher: str | None, launcher_options: str | None, slurm_options: str | None,
        ray_options: str | None) -> None:
    """Train and evaluate every model x task x seed of RECIPE, then write the comparison summary and report.

    Finished runs are skipped; an interrupted run resumes from its last checkpoint. Under
    `torchrun --nproc_per_node N -m nlpkit run ...` (or `accelerate launch`) every run trains with DDP."""
    from nlpkit.config.recipe import load_recipe

    trackers = None if track is None else "[" + ", ".join(t.strip() for t in track.split(",") if t.strip()) + "]"
    plan = load_recipe(recipe, list(overrides) + ([f"train.threads={threads}"] if threads else [])
                       + ([f"track={trackers}"] if trackers else []))
    for warning in plan.warnings:
        click.secho(f"Warning: {warning}", fg="yellow", err=True)
    sweep = None
    if plan.schema.sweep is not None:  # a search over the recipe's settings (nlpkit/sweep), checked before anything
        from nlpkit.plugins import registry
        from nlpkit.sweep.schema import load_sweep

        sweep = load_sweep(plan, registry())
        if only or shard or launcher or launcher_options or slurm_options or ray_options:
            raise NlpkitError("A recipe with a sweep: block runs its trials with this machine's pool (--jobs); "
                              "--only, --shard and other launchers are for recipes without one")
    from nlpkit.launch.cli import launch_for

    whole = plan  # the report compares every finished run of the recipe, not only those run now
    plan, launch = launch_for(plan, only, shard, launcher, jobs, launcher_options, slurm_options, ray_options)
    if not plan.runs:  # a job array larger than the matrix: its extra shards have nothing to do
        click.echo(f"Shard {shard} of the recipe's {len(whole.runs)} runs holds none: nothing to run")
        return
    if dry_run:
        from nlpkit.run.folders import is_finished, saved_settings_hash
        from nlpkit.train.checkpoint import latest_step

        click.echo(f"Recipe '{plan.name}': {len(plan.runs)} runs" +
                   (f", tracked by {', '.join(plan.runs[0].track)}" if plan.runs and plan.runs[0].track else ""))
        for spec in plan.runs:
            step = latest_step(spec.folder / "checkpoints")
            state = "finished" if is_finished(spec.folder) else f"resumes at step {step}" if step \
                else "to run"
            saved = saved_settings_hash(spec.folder)
            if saved not in (None, spec.settings_hash):
                state = f"holds a run with other settings ({saved}): moves aside, runs {spec.settings_hash}"
            opts = {**spec.model_options, **spec.train.model_dump(exclude_defaults=True)}
            click.echo(f"  {spec.folder}  [{state}]  {spec.task.dataset}  {json.dumps(opts)}")
        _echo_resolved(plan)
        if sweep:
            click.echo("\n".join(sweep.describe()))
        return
    from nlpkit.run.engine import run_recipe

    if sweep:  # the trials first; then the best settings' runs over best_seeds beside the recipe's own
        import dataclasses

        from nlpkit.sweep.driver import run_sweep

        best, _ = run_sweep(plan, sweep, jobs=jobs, restart=restart, say=click.echo)
        plan = dataclasses.replace(plan, runs=plan.runs + best)
        whole = dataclasses.replace(whole, runs=whole.runs + best)

    run_recipe(plan, force=force, echo=click.echo, restart=restart, jobs=jobs, launch=launch,
               finish=None if no_report else lambda _, say: _write_reports(made(whole), say))


def made(plan):
    """The recipe cut to the runs whose folders exist: after --only/--shard the report compares every run made so
    far, by this command or earlier ones, and skips those not made yet."""
    from dataclasses import replace

    return replace(plan, runs=[spec for spec in plan.runs if spec.folder.exists()])


@main.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one object per run.")
@click.option("--only", multiple=True, metavar="ID", help="Only the run with this id; repeat for several.")
@click.option("--shard", metavar="I/N", help="Only shard I of N (as `nlpkit run --shard`).")
def plan_command(recipe: str, overrides: tuple[str, ...], as_json: bool, only: tuple[str, ...],
                 shard: str | None) -> None:
    """The runs of RECIPE: each one's id (for `nlpkit run --only ID`), folder, settings hash and status
    (finished, unfinished: resumes at step N, failed: its error, to run)."""
    from nlpkit.config.recipe import load_recipe
    from nlpkit.launch.plan import plan_rows, select

    plan = load_recipe(recipe, list(overrides))
    rows = plan_rows(select(plan.runs, only, shard))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"Recipe '{plan.name}': {len(rows)} of {len(plan.runs)} runs")
    width = max((len(r["id"]) for r in rows), default=0)
    for row in rows:
        detail = f" ({row['detail']})" if row["detail"] else ""
        click.echo(f"  {row['id']:<{width}}  {row['settings_hash']}  {row['status']}{detail}  {row['folder']}")


def _write_reports(plan, say) -> None:
    """The summary and the comparison report over the recipe's finished runs (after ``nlpkit run``)."""
    from nlpkit.report.write import summarize, write_plugin_report
    from nlpkit.run.folders import is_finished

    folders = [spec.folder for spec in plan.runs]
    if any(is_finished(folder) for folder in folders):
        say(f"Summary: {summarize(folders, plan.reports)}")
        say(f"Report: {write_plugin_report(folders, plan.reports)}")
        if any(spec.track for spec in plan.runs):
            from nlpkit.plugins import registry
            from nlpkit.track.report import attach_report

            attach_report(plan.runs, plan.reports, registry())


def _echo_resolved(plan) -> None:
    """Every value each configuration of the plan runs with, defaults included (seeds share one)."""
    from nlpkit.plugins import registry

    reg = registry()
    seen = set()
    click.echo("Resolved settings (defaults included):")
    for spec in plan.runs:
        if (spec.task.key, spec.label) in seen:
            continue
        seen.add((spec.task.key, spec.label))
        task_cls, dataset_cls = reg.task(spec.task.name), reg.dataset(spec.task.dataset)
        kind = task_cls.kind
        model = reg.model(spec.model).options_for(kind)(**spec.model_options).model_dump(mode="json")
        task = {**spec.task.model_dump(mode="json"),
                "options": task_cls.Options(**spec.task.options).model_dump(mode="json"),
                "dataset_options": dataset_cls.Options(**spec.task.dataset_options).model_dump(mode="json")}
        seeds = ", ".join(str(r.seed) for r in plan.runs if r.label == spec.label and r.task == spec.task)
        click.echo(f"  {spec.task.key} x {spec.label} (model {spec.model}, {kind}; seeds {seeds})")
        click.echo(f"    task:  {json.dumps(task)}")
        click.echo(f"    model: {json.dumps(model)}")
        click.echo(f"    train: {json.dumps(spec.train.model_dump(mode='json'))}")


def _options_text(reg, name: str) -> str:
    """Every plugin called NAME (or ``train``: the training keys, ``task``: a task entry's keys), its distribution,
    and its typed options: type, default, allowed values, description; a model's per task kind it serves."""
    from nlpkit.config.options_help import text
    from nlpkit.config.recipe import TaskEntry
    from nlpkit.errors import NlpkitError, did_you_mean
    from nlpkit.train.options import TrainOptions

    if name == "train":
        return "\n".join(["Training keys, under train: in a recipe or in any model entry (which overrides them):",
                          *text(TrainOptions)])
    if name == "task":
        return "\n".join(["Keys of a task entry (task: or each item of tasks:):", *text(TaskEntry)])
    kinds = ("models", "tasks", "datasets", "launchers")
    found = [(kind, getattr(reg, kind)[name]) for kind in kinds if name in getattr(reg, kind)]
    if not found:
        names = {n for kind in kinds for n in getattr(reg, kind)} | {"train", "task"}
        raise NlpkitError(f"No plugin named '{name}'.{did_you_mean(name, names)} Installed: {', '.join(sorted(names))}")
    where = {"models": "models.<entry>", "tasks": "task.options", "datasets": "task.dataset_options",
             "launchers": "--launcher-options k=v,..."}
    lines = []
    for kind, cls in found:
        source = reg.sources[(kind, name)]
        keys = f"options: nlpkit run --launcher {name} {where[kind]}" if kind == "launchers" else \
            f"recipe keys under {where[kind]}"
        lines.append(f"{kind[:-1].capitalize()} '{name}' ({source}): {keys}")
        if kind == "models":
            for task_kind in cls.serves:
                lines.append(f" for {task_kind} tasks:")
                lines += text(cls.options_for(task_kind), indent="   ")
            lines.append(" + every training key (`nlpkit plugins --options train`)")
        else:
            lines += text(cls.Options)
    return "\n".join(lines)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--options", "options_of", metavar="NAME",
              help="Typed options of plugin NAME (type, default, allowed values, meaning), per task kind for a "
                   "model; `train`: the training keys; `task`: a task entry's keys.")
def plugins(as_json: bool, options_of: str | None) -> None:
    """List installed models, tasks, datasets and trackers, where each comes from, and which model serves which
    task."""
    from nlpkit.plugins import registry

    reg = registry()
    if options_of:
        click.echo(_options_text(reg, options_of))
        return
    info = {
        "models": {n: {"source": reg.sources[("models", n)], "serves": list(c.serves)} for n, c in reg.models.items()},
        "tasks": {n: {"source": reg.sources[("tasks", n)], "kind": c.kind, "main_metric": c.main_metric}
                  for n, c in reg.tasks.items()},
        "datasets": {n: {"source": reg.sources[("datasets", n)], "kind": c.kind} for n, c in reg.datasets.items()},
        "trackers": {n: {"source": reg.sources[("trackers", n)], "needs": list(c.requires)}
                     for n, c in reg.trackers.items()},
        "metrics": {n: {"source": reg.sources[("metrics", n)]} for n in reg.metrics},
        "launchers": {n: {"source": reg.sources[("launchers", n)]} for n in reg.launchers},
        "failed": reg.failed,
        "clashes": {f"{kind[:-1]} {name}": sources for (kind, name), sources in reg.clashes.items()},
    }
    for (kind, name), sources in reg.clashes.items():  # listed with every source; unusable until one goes
        info[kind][name]["source"] = " and ".join(sources) + " (clash)"
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for kind in ["models", "tasks", "datasets"] + [k for k in ("trackers", "metrics", "launchers") if info[k]]:
        click.echo(f"{kind.capitalize()}:")
        for name, row in sorted(info[kind].items()):
            detail = ", ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in row.items())
            click.echo(f"  {name:<16} {detail}")
    click.echo("\nModel x task (yes = the model serves the task's kind):")
    tasks = sorted(reg.tasks)
    click.echo("  " + " " * 14 + "".join(f"{t:>16}" for t in tasks))
    for m, cls in sorted(reg.models.items()):
        click.echo(f"  {m:<14}" + "".join(f"{'yes' if reg.tasks[t].kind in cls.serves else '-':>16}" for t in tasks))
    for name, err in reg.failed.items():
        click.secho(f"Failed to load plugin '{name}': {err}", fg="yellow")
    for (kind, name), sources in reg.clashes.items():
        click.secho(f"Clash: the {kind[:-1]} '{name}' is registered by {' and '.join(sources)}; a recipe naming it "
                    "fails until one is uninstalled (everything else works)", fg="yellow")


@main.command("new-plugin")
@click.argument("name")
@click.option("--kind", "kinds", required=True, metavar="KIND[,KIND...]",
              help="What the package adds, one or more of model, task, dataset, metric, report (e.g. model,task).")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), help="Folder (default ./nlpkit-NAME).")
def new_plugin(name: str, kinds: str, out: str | None) -> None:
    """Write a working third-party plugin package: one module per plugin, entry point, tests, recipe, README.

    NAME is the plugin name (a lowercase identifier, e.g. cnn) or its package name (nlpkit-cnn: plugin 'cnn')."""
    from nlpkit.scaffold import new_plugin as scaffold

    folder, files, plan = scaffold(name, kinds, out)
    what = " and ".join(plan.kinds)
    click.echo(f"Created {what} plugin{'s' * (len(plan.kinds) > 1)} '{plan.name}' in package {plan.dist} "
               f"({folder}):")
    for path in files:
        click.echo(f"  {path.relative_to(folder)}")
    click.echo(f"Next: cd {folder} && pip install -e '.[dev]' && pytest && nlpkit run recipe.yaml")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("texts", nargs=-1)
@click.option("--file", "input_file", type=click.Path(dir_okay=False, allow_dash=True), metavar="PATH",
              help="Read inputs from PATH, one per line ('-' reads stdin).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N, mps or auto (default: the run's device if here).")
def predict(run_dir: str, texts: tuple[str, ...], input_file: str | None, device: str | None) -> None:
    """Load the model of the finished run RUN_DIR and predict on TEXTS ('-' alone reads stdin, one input per
    line). Given a recipe's folder of runs, lists the finished runs to choose from."""
    from nlpkit.run.predict import load_run, parse_inputs, predict_examples, read_lines

    if texts == ("-",) and not input_file:
        input_file = "-"
        texts = ()
    inputs = [(f"argument {i}", t) for i, t in enumerate(texts, 1)]
    if input_file == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        inputs += read_lines(stdin.read() if stdin else sys.stdin.read().encode("utf-8"), "stdin")
    elif input_file:
        try:
            data = Path(input_file).read_bytes()
        except OSError as err:
            raise NlpkitError(f"--file {input_file}: cannot be read ({err.strerror or err})") from None
        inputs += read_lines(data, input_file)
    if not texts and not input_file:
        raise NlpkitError("No inputs: give texts as arguments, '-' to read stdin, or --file PATH (one per line)")
    task, model = load_run(Path(run_dir), device)
    examples = parse_inputs(task, inputs)
    for (_, text), ex, pred in zip(inputs, examples, predict_examples(model, examples)):
        click.echo(f"{text}\n  -> {task.render(ex, pred)}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", default="reports/overview", show_default=True, type=click.Path(file_okay=False),
              help="Folder for results.csv, report.md / report.html and figures/.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["md", "html"]),
              help="Report format; repeat for both (default: md and html). results.csv is always written.")
def report(run_dirs: tuple[str, ...], out: str, formats: tuple[str, ...]) -> None:
    """Compare the finished runs in RUN_DIRS (run folders or folders above them, e.g. runs/agnews):
    tables of mean ± std over seeds, figures, significance tests and sample predictions."""
    from nlpkit.report.write import FORMATS, write_plugin_report
    from nlpkit.sweep.section import register

    register()  # a recipe's sweep section, where the runs' folders hold one (nlpkit/sweep)
    written = write_plugin_report(run_dirs, out, formats or FORMATS)
    click.echo(f"Report: {written}")


@main.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--changed", is_flag=True, help="Add the settings that differ between the listed runs (dotted keys).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV output.")
def runs(folders: tuple[str, ...], changed: bool, as_json: bool, as_csv: bool) -> None:
    """List the run folders under FOLDERS (e.g. runs/agnews): task, dataset, model, seed, status, main metric, time,
    examples/s. `nlpkit runs diff A B` lists the settings and metrics in which run folders A and B differ."""
    from nlpkit.report import runs_table

    if folders[0] == "diff":
        if len(folders) != 3:
            raise NlpkitError("nlpkit runs diff takes two run folders: nlpkit runs diff A B")
        found = runs_table.diff(folders[1], folders[2])
        click.echo(json.dumps(found, indent=2, default=str) if as_json else
                   runs_table.render_diff(folders[1], folders[2], found))
        return
    rows = runs_table.table(list(folders), changed)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    elif as_csv:
        click.echo(runs_table.render_csv(rows), nl=False)
    else:
        click.echo(runs_table.render_table(rows))


if __name__ == "__main__":
    main()
