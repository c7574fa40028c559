"""Learning iterations/s by critic width on the configuration the authors' code was timed on
(`python bench/throughput.py --width-sweep`; `bench/lockstep.py` times it beside that code)."""

import json
import os
from pathlib import Path

from bench.device import cpu_model
from bench.fused import bench_config, measure_fused, with_full_warmup
from purejaxbrc.config import ConfigError, Experiment, RunConfig
from purejaxbrc.sac import SACConfig


def parse_widths(text: str) -> list[tuple[int, int]]:
    """`--widths`: comma-separated critic_width:batch_size pairs."""
    try:
        pairs = [tuple(int(v) for v in pair.split(":")) for pair in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
        raise ConfigError(f"--widths {text!r}: expected positive critic_width:batch_size pairs, e.g. 512:256")
    return pairs


def width_experiment(width: int, batch: int) -> Experiment:
    """The configuration the authors' code was timed on: CartpoleSwingup (a cheap reset), one
    seed, UTD 2, the default actor (width 256), critic width and batch as given. Chunks shrink
    with width so each lasts seconds; the warm-up covers one batch."""
    chunk = max(10, 25_600 // width)
    experiment = bench_config(Experiment(RunConfig(tasks="CartpoleSwingup", batch_size=batch, utd=2,
                                                   buffer_capacity=100_000),
                                         SACConfig(critic_width=width)), chunk=chunk)
    return with_full_warmup("mjx", experiment)


def width_sweep(widths: str, reference_file: str, timed_chunks: int, log) -> list[dict]:
    """Learning iterations/s of `width_experiment` per `--widths` pair, beside the authors' code
    as measured on this CPU model (another model's figures would make a meaningless ratio)."""
    reference = {}
    if Path(reference_file).exists():
        for r in json.loads(Path(reference_file).read_text())["records"]:
            if r.get("cpu_model") == cpu_model() and r.get("cpu_count", os.cpu_count()) == os.cpu_count():
                reference[(r["task"], r["critic_width"], r["batch_size"])] = r
    if not reference:
        log(f"no figures of the authors' code on this CPU ({cpu_model()}) in {reference_file}: "
            "bench/lockstep.py --reference measures them side by side")
    records = []
    for width, batch in parse_widths(widths):
        experiment = width_experiment(width, batch)
        log(f"width sweep: critic width {width}, batch {batch} ...")
        record = dict(measure_fused("mjx", experiment, timed_chunks=timed_chunks), name=f"width={width}/batch={batch}",
                      sweep="critic_width")
        ref = reference.get(("cartpole-swingup", width, batch))
        if ref:
            record.update(reference_iterations_per_s=ref["learning_iterations_per_s"],
                          reference_cores=ref.get("learning_cores"),
                          ratio_vs_reference=record["iterations_per_s"] / ref["learning_iterations_per_s"])
            log(f"  {record['iterations_per_s']:.2f} it/s ({record['cores']:.2f} cores) vs the authors' "
                f"{ref['learning_iterations_per_s']:.2f}: {record['ratio_vs_reference']:.2f}x")
        records.append(record)
    return records
